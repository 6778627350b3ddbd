// {{name}}: a framework plugin, made by `wasmos plugin new`.
//
// `POST /frameworks/{{name}}/run` queues one task that echoes the
// configured greeting; the next offer that fits runs it. `GET
// /frameworks/{{name}}/` shows how many ran. The counts live in the
// framework's replicated key-value store, so they survive master restarts
// and failovers. The library is in wasmos/c (wasmos.h).
#include <stdlib.h>
#include <string.h>

#include "wasmos.h"

static char *greeting;

// A count kept in kv as decimal text.
static unsigned long count(const char *key) {
    char *v = wasmos_kv_get(key, NULL);
    unsigned long n = v ? strtoul(v, NULL, 10) : 0;
    free(v);
    return n;
}

static void set_count(const char *key, unsigned long n) {
    char *v = wasmos_strf("%lu", n);
    char *why = wasmos_kv_set(key, v, strlen(v));
    if (why) {
        wasmos_log(WASMOS_ERROR, "cannot store %s: %s", key, why);
        free(why);
    }
    free(v);
}

char *wasmos_init(const wasmos_pairs *config) {
    const char *g = wasmos_get(config, "greeting");
    free(greeting);
    greeting = wasmos_strf("%s", g ? g : "hello");
    if (count("waiting") == 0) wasmos_suppress();
    return NULL;
}

void wasmos_offers(const wasmos_offer *offers, size_t len) {
    unsigned long waiting = count("waiting"), launched = count("launched");
    for (size_t i = 0; i < len; i++) {
        const wasmos_offer *o = &offers[i];
        if (waiting == 0 || o->cpus < 0.1 || o->mem < 32) {
            wasmos_decline(o->id, 30);
            continue;
        }
        char *id = wasmos_strf("{{name}}-%lu", launched + 1);
        char *command = wasmos_strf("echo '%s'", greeting);
        wasmos_task_spec task = {.task_id = id, .command = command, .cpus = 0.1, .mem = 32};
        char *why = wasmos_launch(o->id, &task, 1, 30);
        if (why) {
            wasmos_log(WASMOS_ERROR, "launch of %s refused: %s", id, why);
            free(why);
        } else {
            launched++;
            waiting--;
        }
        free(id);
        free(command);
    }
    set_count("waiting", waiting);
    set_count("launched", launched);
    if (waiting == 0) wasmos_suppress();
}

void wasmos_status(const wasmos_task_status *s) {
    wasmos_log(WASMOS_INFO, "%s: %s", s->task_id, wasmos_state_name(s->state));
}

void wasmos_http(const wasmos_request *r, wasmos_response *out) {
    if (strcmp(r->path, "/") == 0 && strcmp(r->method, "GET") == 0) {
        out->body = wasmos_strf("{\"launched\":%lu,\"waiting\":%lu}", count("launched"), count("waiting"));
        return;
    }
    if (strcmp(r->path, "/run") == 0 && strcmp(r->method, "POST") == 0) {
        unsigned long waiting = count("waiting") + 1;
        set_count("waiting", waiting);
        wasmos_revive();
        out->status = 202;
        out->body = wasmos_strf("{\"waiting\":%lu}", waiting);
        return;
    }
    out->status = 404;
    out->body = wasmos_strf("{\"message\":\"no such endpoint: GET / or POST /run\"}");
}
