// The isolator world's part of the library.
#include "internal.h"

struct wasmos_adjustments {
    wit_adjustments_t *out;
};

// Appends one zeroed element to a WIT list (`ptr`, `len`) of `size` bytes
// each; returns it.
static void *push(void **ptr, size_t *len, size_t size) {
    void *grown = realloc(*ptr, (*len + 1) * size);
    if (!grown) abort();
    *ptr = grown;
    void *item = (char *)grown + *len * size;
    memset(item, 0, size);
    *len += 1;
    return item;
}

#define PUSH(list) push((void **)&(list).ptr, &(list).len, sizeof *(list).ptr)

void wasmos_set_env(wasmos_adjustments *a, const char *key, const char *value) {
    wit_key_value_t *kv = PUSH(a->out->environment);
    wit_string_dup(&kv->key, key);
    wit_string_dup(&kv->value, value);
}

static const char *const RLIMITS[] = {"nofile", "nproc", "core", "stack", "fsize",
                                      "memlock", "as", "cpu", "data"};

char *wasmos_set_rlimit(wasmos_adjustments *a, const char *name, uint64_t soft, uint64_t hard) {
    bool known = false;
    for (size_t i = 0; i < sizeof RLIMITS / sizeof *RLIMITS; i++) known |= strcmp(RLIMITS[i], name) == 0;
    if (!known)
        return wasmos_strf("rlimit '%s' is not one of nofile, nproc, core, stack, fsize, memlock, as, cpu, data",
                           name);
    if (soft > hard)
        return wasmos_strf("rlimit %s: soft %llu is above hard %llu", name, (unsigned long long)soft,
                           (unsigned long long)hard);
    wasmos_plugin_isolator_types_rlimit_t *r = PUSH(a->out->rlimits);
    wit_string_dup(&r->name, name);
    r->soft = soft;
    r->hard = hard;
    return NULL;
}

void wasmos_set_memory_mb(wasmos_adjustments *a, uint64_t mb) {
    a->out->cgroup.memory_mb.is_some = true;
    a->out->cgroup.memory_mb.val = mb;
}

void wasmos_set_cpu_shares(wasmos_adjustments *a, uint64_t shares) {
    a->out->cgroup.cpu_shares.is_some = true;
    a->out->cgroup.cpu_shares.val = shares;
}

void wasmos_set_pids_max(wasmos_adjustments *a, uint64_t pids) {
    a->out->cgroup.pids_max.is_some = true;
    a->out->cgroup.pids_max.val = pids;
}

void wasmos_add_mount(wasmos_adjustments *a, const char *source, const char *target, bool read_only) {
    wasmos_plugin_isolator_types_mount_t *m = PUSH(a->out->mounts);
    wit_string_dup(&m->source, source);
    wit_string_dup(&m->target, target);
    m->read_only = read_only;
}

bool exports_wit_prepare(wit_container_spec_t *raw, wit_adjustments_t *ret, wit_string_t *err) {
    wasmos_container c = {
        .container_id = WASMOS__CSTR(raw->container_id),
        .task_id = WASMOS__CSTR(raw->task_id),
        .framework_id = WASMOS__CSTR(raw->framework_id),
        .user = raw->user.is_some ? WASMOS__CSTR(raw->user.val) : NULL,
        .cpus = raw->resources.cpus,
        .mem = raw->resources.mem,
        .disk = raw->resources.disk,
        .gpus = raw->resources.gpus,
        .labels = wasmos__pairs(raw->labels.ptr, raw->labels.len),
        .environment = wasmos__pairs(raw->environment.ptr, raw->environment.len),
    };
    memset(ret, 0, sizeof *ret);
    wasmos_adjustments a = {.out = ret};
    char *why = wasmos_prepare(&c, &a);
    free((char *)c.container_id);
    free((char *)c.task_id);
    free((char *)c.framework_id);
    free((char *)c.user);
    wasmos__pairs_free(&c.labels);
    wasmos__pairs_free(&c.environment);
    wit_container_spec_free(raw);
    if (why) {
        wit_adjustments_free(ret);
        wasmos__give(err, why);
        return false;
    }
    return true;
}

__attribute__((weak)) void wasmos_cleanup(const char *container_id) {
    (void)container_id;
}

void exports_wit_cleanup(wit_string_t *raw) {
    char *id = WASMOS__CSTR(*raw);
    wasmos_cleanup(id);
    free(id);
    wit_string_free(raw);
}
