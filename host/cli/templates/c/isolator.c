// {{name}}: an isolator, made by `wasmos plugin new`.
//
// Every task gets RLIMIT_NOFILE set to the configured `limit` and
// WASMOS_NOFILE in its environment. An isolator only computes adjustments;
// the agent validates and enforces them. Returning an error stops the
// launch with that message. The library is in wasmos/c (wasmos.h).
#include <stdio.h>
#include <stdlib.h>

#include "wasmos.h"

static unsigned long long limit = 4096;

char *wasmos_init(const wasmos_pairs *config) {
    const char *raw = wasmos_get(config, "limit");
    if (raw) {
        char *end = NULL;
        limit = strtoull(raw, &end, 10);
        if (end == raw || *end) return wasmos_strf("limit '%s' is not a number", raw);
    }
    return NULL;
}

char *wasmos_prepare(const wasmos_container *container, wasmos_adjustments *out) {
    (void)container;
    char *why = wasmos_set_rlimit(out, "nofile", limit, limit);
    if (why) return why;
    char value[32];
    snprintf(value, sizeof value, "%llu", limit);
    wasmos_set_env(out, "WASMOS_NOFILE", value);
    return NULL;
}
