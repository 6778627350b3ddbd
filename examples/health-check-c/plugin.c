// A TCP health check written in C: healthy when a TCP connection to the
// task's port opens. Check parameters: `port-index` (default 0).
//
// Bindings come from `wit-bindgen c` (see build.sh). Ownership follows the
// canonical ABI: arguments of exported functions belong to this code and
// are freed here; strings returned are malloc'ed and freed by the glue.

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "health_check.h"

// The value of `key` in the check's parameters, as a NUL-terminated copy
// in `buf`; false if absent.
static bool param(const health_check_check_target_t *t, const char *key, char *buf, size_t cap) {
    size_t klen = strlen(key);
    for (size_t i = 0; i < t->config.len; i++) {
        const health_check_key_value_t *kv = &t->config.ptr[i];
        if (kv->key.len == klen && memcmp(kv->key.ptr, key, klen) == 0) {
            size_t n = kv->value.len < cap - 1 ? kv->value.len : cap - 1;
            memcpy(buf, kv->value.ptr, n);
            buf[n] = '\0';
            return true;
        }
    }
    return false;
}

static void result(health_check_check_result_t *ret, bool healthy, const char *message) {
    ret->healthy = healthy;
    health_check_string_dup(&ret->message, message);
}

bool exports_health_check_init(health_check_list_key_value_t *config, health_check_string_t *err) {
    (void)err;
    health_check_list_key_value_free(config);
    health_check_string_t hello;
    health_check_string_set(&hello, "health-tcp-c ready");
    wasmos_plugin_log_log(WASMOS_PLUGIN_LOG_LEVEL_DEBUG, &hello);
    return true;
}

void exports_health_check_check(health_check_check_target_t *target, health_check_check_result_t *ret) {
    char buf[32];
    char message[256];
    unsigned long index = 0;
    if (param(target, "port-index", buf, sizeof buf)) {
        char *end = NULL;
        index = strtoul(buf, &end, 10);
        if (end == buf || *end != '\0') {
            result(ret, false, "port-index is not a number");
            health_check_check_target_free(target);
            return;
        }
    }
    if (index >= target->ports.len) {
        snprintf(message, sizeof message, "the task has no port at index %lu (it has %zu)", index, target->ports.len);
        result(ret, false, message);
        health_check_check_target_free(target);
        return;
    }
    uint16_t port = target->ports.ptr[index];
    health_check_string_t err = {0};
    if (wasmos_plugin_probe_tcp_connect(port, target->timeout_ms, &err)) {
        snprintf(message, sizeof message, "port %u accepts connections (C)", port);
        result(ret, true, message);
    } else {
        snprintf(message, sizeof message, "%.*s", (int)err.len, (const char *)err.ptr);
        result(ret, false, message);
        health_check_string_free(&err);
    }
    health_check_check_target_free(target);
}
