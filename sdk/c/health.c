// The health-check world's part of the library.
#include <stdio.h>

#include "internal.h"

void exports_wit_check(wit_check_target_t *raw, wit_check_result_t *ret) {
    wasmos_target target = {
        .task_id = WASMOS__CSTR(raw->task_id),
        .host = WASMOS__CSTR(raw->host),
        .ports = raw->ports.ptr,
        .ports_len = raw->ports.len,
        .params = wasmos__pairs(raw->config.ptr, raw->config.len),
        .timeout_ms = raw->timeout_ms,
    };
    char *message = NULL;
    ret->healthy = wasmos_check(&target, &message);
    wasmos__give(&ret->message, message);
    free((char *)target.task_id);
    free((char *)target.host);
    wasmos__pairs_free(&target.params);
    wit_check_target_free(raw);
}

char *wasmos_target_port(const wasmos_target *t, uint16_t *port) {
    const char *given = wasmos_get(&t->params, "port");
    char *end = NULL;
    if (given) {
        unsigned long p = strtoul(given, &end, 10);
        if (end == given || *end || p == 0 || p > 65535)
            return wasmos_strf("port '%s' is not a port number", given);
        *port = (uint16_t)p;
        return NULL;
    }
    const char *raw_index = wasmos_get(&t->params, "port-index");
    unsigned long index = 0;
    if (raw_index) {
        index = strtoul(raw_index, &end, 10);
        if (end == raw_index || *end) return wasmos_strf("port-index '%s' is not a number", raw_index);
    }
    if (index >= t->ports_len)
        return wasmos_strf("the task has no port at index %lu (it has %zu)", index, t->ports_len);
    *port = t->ports[index];
    return NULL;
}

char *wasmos_tcp_connect(uint16_t port, uint32_t timeout_ms) {
    wit_string_t err = {0};
    if (wasmos_plugin_probe_tcp_connect(port, timeout_ms, &err)) return NULL;
    char *why = WASMOS__CSTR(err);
    wit_string_free(&err);
    return why;
}

char *wasmos_http_get(uint16_t port, const char *path, uint32_t timeout_ms, bool tls,
                      uint16_t *status, char **body) {
    wit_string_t p;
    wit_string_set(&p, path);
    wasmos_plugin_probe_http_response_t resp = {0};
    wit_string_t err = {0};
    bool ok = tls ? wasmos_plugin_probe_https_get(port, &p, timeout_ms, &resp, &err)
                  : wasmos_plugin_probe_http_get(port, &p, timeout_ms, &resp, &err);
    if (!ok) {
        char *why = WASMOS__CSTR(err);
        wit_string_free(&err);
        return why;
    }
    *status = resp.status;
    if (body) *body = wasmos__cstr(resp.body.ptr, resp.body.len);
    wasmos_plugin_probe_http_response_free(&resp);
    return NULL;
}

char *wasmos_exec(const char *command, uint32_t timeout_ms, int32_t *exit_code, char **output) {
    wit_string_t c;
    wit_string_set(&c, command);
    wasmos_plugin_probe_exec_result_t res = {0};
    wit_string_t err = {0};
    if (!wasmos_plugin_probe_exec(&c, timeout_ms, &res, &err)) {
        char *why = WASMOS__CSTR(err);
        wit_string_free(&err);
        return why;
    }
    *exit_code = res.exit_code;
    if (output) *output = wasmos__cstr(res.output.ptr, res.output.len);
    wasmos_plugin_probe_exec_result_free(&res);
    return NULL;
}
