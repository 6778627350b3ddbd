// The framework world's part of the library: offers, statuses and HTTP as
// plain structs; kv, the driver and the clock as plain functions.
#include "internal.h"

static const char *const STATE_NAMES[] = {
    "TASK_STAGING", "TASK_STARTING", "TASK_RUNNING", "TASK_KILLING",    "TASK_FINISHED",
    "TASK_FAILED",  "TASK_KILLED",   "TASK_ERROR",   "TASK_LOST",       "TASK_DROPPED",
    "TASK_UNREACHABLE", "TASK_GONE", "TASK_GONE_BY_OPERATOR", "TASK_UNKNOWN",
};

const char *wasmos_state_name(wasmos_task_state s) {
    return (unsigned)s < sizeof STATE_NAMES / sizeof *STATE_NAMES ? STATE_NAMES[s] : "TASK_UNKNOWN";
}

bool wasmos_is_terminal(wasmos_task_state s) {
    switch (s) {
    case WASMOS_TASK_FINISHED:
    case WASMOS_TASK_FAILED:
    case WASMOS_TASK_KILLED:
    case WASMOS_TASK_ERROR:
    case WASMOS_TASK_LOST:
    case WASMOS_TASK_DROPPED:
    case WASMOS_TASK_GONE:
    case WASMOS_TASK_GONE_BY_OPERATOR:
        return true;
    default:
        return false;
    }
}

static void set(wit_string_t *out, const char *s) {
    wit_string_set(out, s ? s : "");
}

static char *opt(const wit_option_string_t *o) {
    return o->is_some ? WASMOS__CSTR(o->val) : NULL;
}

// ---- exports ----------------------------------------------------------

__attribute__((weak)) void wasmos_offers(const wasmos_offer *offers, size_t len) {
    for (size_t i = 0; i < len; i++) wasmos_decline(offers[i].id, -1);
}

void exports_wit_offers(wit_list_offer_t *raw) {
    size_t n = raw->len;
    wasmos_offer *offers = calloc(n ? n : 1, sizeof *offers);
    if (!offers) abort();
    for (size_t i = 0; i < n; i++) {
        const wit_offer_t *o = &raw->ptr[i];
        uint16_t(*ports)[2] = calloc(o->resources.ports.len ? o->resources.ports.len : 1, sizeof *ports);
        if (!ports) abort();
        for (size_t k = 0; k < o->resources.ports.len; k++) {
            ports[k][0] = o->resources.ports.ptr[k].begin;
            ports[k][1] = o->resources.ports.ptr[k].end;
        }
        offers[i] = (wasmos_offer){
            .id = WASMOS__CSTR(o->id),
            .agent_id = WASMOS__CSTR(o->agent_id),
            .hostname = WASMOS__CSTR(o->hostname),
            .cpus = o->resources.cpus,
            .mem = o->resources.mem,
            .disk = o->resources.disk,
            .gpus = o->resources.gpus,
            .ports = (const uint16_t(*)[2])ports,
            .ports_len = o->resources.ports.len,
            .attributes = wasmos__pairs(o->attributes.ptr, o->attributes.len),
        };
    }
    wasmos_offers(offers, n);
    for (size_t i = 0; i < n; i++) {
        free((char *)offers[i].id);
        free((char *)offers[i].agent_id);
        free((char *)offers[i].hostname);
        free((void *)offers[i].ports);
        wasmos__pairs_free(&offers[i].attributes);
    }
    free(offers);
    wit_list_offer_free(raw);
}

__attribute__((weak)) void wasmos_status(const wasmos_task_status *update) {
    (void)update;
}

void exports_wit_status(wit_task_status_t *raw) {
    wasmos_task_status s = {
        .task_id = WASMOS__CSTR(raw->task_id),
        .state = (wasmos_task_state)raw->state,
        .agent_id = opt(&raw->agent_id),
        .message = opt(&raw->message),
        .reason = opt(&raw->reason),
        .has_exit_code = raw->exit_code.is_some,
        .exit_code = raw->exit_code.is_some ? raw->exit_code.val : 0,
        .timestamp = raw->timestamp,
        .uuid = WASMOS__CSTR(raw->uuid),
    };
    wasmos_status(&s);
    free((char *)s.task_id);
    free((char *)s.agent_id);
    free((char *)s.message);
    free((char *)s.reason);
    free((char *)s.uuid);
    wit_task_status_free(raw);
}

__attribute__((weak)) void wasmos_tick(uint64_t now_ms) {
    (void)now_ms;
}

void exports_wit_tick(uint64_t now_ms) {
    wasmos_tick(now_ms);
}

__attribute__((weak)) void wasmos_http(const wasmos_request *request, wasmos_response *response) {
    (void)request;
    response->status = 404;
    response->body = wasmos_strf("{\"message\":\"no such endpoint\"}");
}

void exports_wit_handle_http(wit_http_request_t *raw, wit_http_response_t *ret) {
    wasmos_request r = {
        .method = WASMOS__CSTR(raw->method),
        .path = WASMOS__CSTR(raw->path),
        .query = WASMOS__CSTR(raw->query),
        .headers = wasmos__pairs(raw->headers.ptr, raw->headers.len),
        .body = wasmos__cstr(raw->body.ptr, raw->body.len),
        .body_len = raw->body.len,
    };
    wasmos_response out = {.status = 200};
    wasmos_http(&r, &out);
    free((char *)r.method);
    free((char *)r.path);
    free((char *)r.query);
    free((char *)r.body);
    wasmos__pairs_free(&r.headers);
    wit_http_request_free(raw);
    memset(ret, 0, sizeof *ret);
    ret->status = out.status;
    ret->headers.ptr = malloc(sizeof *ret->headers.ptr);
    if (!ret->headers.ptr) abort();
    ret->headers.len = 1;
    wit_string_dup(&ret->headers.ptr[0].key, "content-type");
    wit_string_dup(&ret->headers.ptr[0].value, out.content_type ? out.content_type : "application/json");
    if (out.body) {
        ret->body.ptr = (uint8_t *)out.body;
        ret->body.len = strlen(out.body);
    }
}

// ---- kv -----------------------------------------------------------------

char *wasmos_kv_get(const char *key, size_t *len) {
    wit_string_t k;
    set(&k, key);
    wit_list_u8_t value = {0};
    if (!wasmos_plugin_state_get(&k, &value)) return NULL;
    char *out = wasmos__cstr(value.ptr, value.len);
    if (len) *len = value.len;
    wit_list_u8_free(&value);
    return out;
}

char *wasmos_kv_set(const char *key, const void *value, size_t len) {
    wit_string_t k;
    set(&k, key);
    wit_list_u8_t v = {.ptr = (uint8_t *)value, .len = len};
    wit_string_t err = {0};
    if (wasmos_plugin_state_set(&k, &v, &err)) return NULL;
    char *why = WASMOS__CSTR(err);
    wit_string_free(&err);
    return why;
}

void wasmos_kv_delete(const char *key) {
    wit_string_t k;
    set(&k, key);
    wasmos_plugin_state_delete(&k);
}

char **wasmos_kv_keys(const char *prefix, size_t *len) {
    wit_string_t p;
    set(&p, prefix);
    wit_list_string_t keys = {0};
    wasmos_plugin_state_keys(&p, &keys);
    char **out = calloc(keys.len ? keys.len : 1, sizeof *out);
    if (!out) abort();
    for (size_t i = 0; i < keys.len; i++) out[i] = WASMOS__CSTR(keys.ptr[i]);
    *len = keys.len;
    wit_list_string_free(&keys);
    return out;
}

void wasmos_free_keys(char **keys, size_t len) {
    for (size_t i = 0; i < len; i++) free(keys[i]);
    free(keys);
}

// ---- driver -------------------------------------------------------------

char *wasmos_launch(const char *offer_id, const wasmos_task_spec *tasks, size_t len,
                    double refuse_seconds) {
    wit_string_t id;
    set(&id, offer_id);
    wit_list_string_t ids = {.ptr = &id, .len = 1};
    wasmos_plugin_types_task_spec_t *specs = calloc(len ? len : 1, sizeof *specs);
    if (!specs) abort();
    for (size_t i = 0; i < len; i++) {
        const wasmos_task_spec *t = &tasks[i];
        wasmos_plugin_types_task_spec_t *s = &specs[i];
        set(&s->task_id, t->task_id);
        set(&s->name, t->name ? t->name : t->task_id);
        s->resources.cpus = t->cpus;
        s->resources.mem = t->mem;
        s->resources.disk = t->disk;
        s->resources.ports.len = t->ports_len;
        s->resources.ports.ptr = calloc(t->ports_len ? t->ports_len : 1, sizeof *s->resources.ports.ptr);
        if (!s->resources.ports.ptr) abort();
        for (size_t k = 0; k < t->ports_len; k++) {
            s->resources.ports.ptr[k].begin = t->ports[k];
            s->resources.ports.ptr[k].end = t->ports[k];
        }
        s->command.shell = true;
        set(&s->command.value, t->command);
        s->command.environment.len = t->env.len;
        s->command.environment.ptr = calloc(t->env.len ? t->env.len : 1, sizeof *s->command.environment.ptr);
        if (!s->command.environment.ptr) abort();
        for (size_t k = 0; k < t->env.len; k++) {
            set(&s->command.environment.ptr[k].key, t->env.items[k].key);
            set(&s->command.environment.ptr[k].value, t->env.items[k].value);
        }
        if (t->user) {
            s->command.user.is_some = true;
            set(&s->command.user.val, t->user);
        }
    }
    wasmos_plugin_driver_list_task_spec_t list = {.ptr = specs, .len = len};
    wit_string_t err = {0};
    bool ok = wasmos_plugin_driver_launch(&ids, &list, refuse_seconds < 0 ? NULL : &refuse_seconds, &err);
    // The strings point into the caller's memory (wit_string_set): free
    // only what was allocated here.
    for (size_t i = 0; i < len; i++) {
        free(specs[i].resources.ports.ptr);
        free(specs[i].command.environment.ptr);
    }
    free(specs);
    if (ok) return NULL;
    char *why = WASMOS__CSTR(err);
    wit_string_free(&err);
    return why;
}

void wasmos_decline(const char *offer_id, double refuse_seconds) {
    wit_string_t id;
    set(&id, offer_id);
    wit_list_string_t ids = {.ptr = &id, .len = 1};
    wasmos_plugin_driver_decline(&ids, refuse_seconds < 0 ? NULL : &refuse_seconds);
}

void wasmos_kill(const char *task_id) {
    wit_string_t id;
    set(&id, task_id);
    wasmos_plugin_driver_kill(&id);
}

void wasmos_revive(void) {
    wasmos_plugin_driver_revive();
}

void wasmos_suppress(void) {
    wasmos_plugin_driver_suppress();
}

uint64_t wasmos_now_ms(void) {
    return wasmos_plugin_clock_now_ms();
}
