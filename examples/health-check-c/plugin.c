// A TCP health check written in C with the Wasmos library (sdk/c): healthy
// when a TCP connection to the task's port opens. Check parameters: `port`
// or `port-index` (default 0). The plugin has no sockets of its own: it
// asks the host to probe, and the host reaches only the task's own ports.
#include "wasmos.h"

char *wasmos_init(const wasmos_pairs *config) {
    (void)config;
    wasmos_log(WASMOS_DEBUG, "health-tcp-c ready");
    return NULL;
}

bool wasmos_check(const wasmos_target *target, char **message) {
    uint16_t port = 0;
    // A bad parameter or a refused connection comes back unhealthy, with
    // the reason.
    char *why = wasmos_target_port(target, &port);
    if (!why) why = wasmos_tcp_connect(port, target->timeout_ms);
    if (why) {
        *message = why;
        return false;
    }
    *message = wasmos_strf("port %u accepts connections (C)", port);
    return true;
}
