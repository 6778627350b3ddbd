// {{name}}: a health check, made by `wasmos plugin new`.
//
// Healthy when `GET <path>` on the task's port answers 2xx and its body
// contains `expect` (check parameters `path`, `expect`, `port` or
// `port-index`). The plugin cannot open sockets: it asks the host, which
// lets it reach only the task's own ports. The library is in wasmos/c
// (wasmos.h).
#include <stdlib.h>
#include <string.h>

#include "wasmos.h"

bool wasmos_check(const wasmos_target *target, char **message) {
    uint16_t port = 0, status = 0;
    char *body = NULL;
    const char *path = wasmos_get(&target->params, "path");
    const char *expect = wasmos_get(&target->params, "expect");
    char *why = wasmos_target_port(target, &port);
    if (!why) why = wasmos_http_get(port, path ? path : "/", target->timeout_ms, false, &status, &body);
    if (why) {
        *message = why;
        return false;
    }
    bool healthy = status >= 200 && status < 300 && (!expect || strstr(body, expect));
    if (status < 200 || status >= 300)
        *message = wasmos_strf("HTTP %u", status);
    else if (!healthy)
        *message = wasmos_strf("the body does not contain '%s'", expect);
    else
        *message = wasmos_strf("HTTP %u", status);
    free(body);
    return healthy;
}
