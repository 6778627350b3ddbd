// The part of the library every world shares: pairs, strings, log, init.
#include <stdarg.h>
#include <stdio.h>

#include "internal.h"

char *wasmos__cstr(const uint8_t *ptr, size_t len) {
    char *s = malloc(len + 1);
    if (!s) abort();
    if (len) memcpy(s, ptr, len);
    s[len] = '\0';
    return s;
}

wasmos_pairs wasmos__pairs(const wit_key_value_t *kv, size_t len) {
    wasmos_pair *items = calloc(len ? len : 1, sizeof *items);
    if (!items) abort();
    for (size_t i = 0; i < len; i++) {
        items[i].key = WASMOS__CSTR(kv[i].key);
        items[i].value = WASMOS__CSTR(kv[i].value);
    }
    return (wasmos_pairs){.items = items, .len = len};
}

void wasmos__pairs_free(wasmos_pairs *pairs) {
    for (size_t i = 0; i < pairs->len; i++) {
        free((char *)pairs->items[i].key);
        free((char *)pairs->items[i].value);
    }
    free((wasmos_pair *)pairs->items);
    pairs->items = NULL;
    pairs->len = 0;
}

void wasmos__give(wit_string_t *out, char *s) {
    if (!s) s = wasmos_strf("%s", "");
    out->ptr = (uint8_t *)s;
    out->len = strlen(s);
}

const char *wasmos_get(const wasmos_pairs *pairs, const char *key) {
    const char *found = NULL;
    for (size_t i = 0; i < pairs->len; i++)
        if (strcmp(pairs->items[i].key, key) == 0) found = pairs->items[i].value;
    return found;
}

static char *vstrf(const char *fmt, va_list ap) {
    va_list again;
    va_copy(again, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    if (n < 0) n = 0;
    char *s = malloc((size_t)n + 1);
    if (!s) abort();
    vsnprintf(s, (size_t)n + 1, fmt, again);
    va_end(again);
    return s;
}

char *wasmos_strf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *s = vstrf(fmt, ap);
    va_end(ap);
    return s;
}

void wasmos_log(wasmos_level level, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *s = vstrf(fmt, ap);
    va_end(ap);
    static const wasmos_plugin_log_level_t levels[] = {
        WASMOS_PLUGIN_LOG_LEVEL_TRACE, WASMOS_PLUGIN_LOG_LEVEL_DEBUG, WASMOS_PLUGIN_LOG_LEVEL_INFO,
        WASMOS_PLUGIN_LOG_LEVEL_WARN,  WASMOS_PLUGIN_LOG_LEVEL_ERROR,
    };
    wit_string_t message = {.ptr = (uint8_t *)s, .len = strlen(s)};
    wasmos_plugin_log_log(levels[level <= WASMOS_ERROR ? level : WASMOS_ERROR], &message);
    free(s);
}

__attribute__((weak)) char *wasmos_init(const wasmos_pairs *config) {
    (void)config;
    return NULL;
}

// The init export every world has.
bool exports_wit_init(wit_list_key_value_t *config, wit_string_t *err) {
    wasmos_pairs pairs = wasmos__pairs(config->ptr, config->len);
    char *why = wasmos_init(&pairs);
    wasmos__pairs_free(&pairs);
    wit_list_key_value_free(config);
    if (why) {
        wasmos__give(err, why);
        return false;
    }
    return true;
}
