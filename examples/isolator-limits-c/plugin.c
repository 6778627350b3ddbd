// Per-task limits from labels, written in C with the Wasmos library
// (sdk/c).
//
// A task labelled `limits/<name>=<value>` gets that limit:
//   limits/nofile=1024, limits/nproc=64, ... any rlimit (nofile, nproc, core,
//   stack, fsize, memlock, as, cpu, data), as N or SOFT:HARD;
//   limits/pids=32 and limits/memory-mb=128 for the task's cgroup (where the
//   agent puts tasks in cgroups).
// The task sees what it got in WASMOS_LIMITS. A malformed label, or a limit
// above the configured ceiling (`max-nofile`, default 65536; `max-nproc`,
// default 4096), fails the launch with the reason. The agent enforces.
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wasmos.h"

#define PREFIX "limits/"

static uint64_t max_nofile = 65536;
static uint64_t max_nproc = 4096;

// A whole number; false if `s` is not one.
static bool number(const char *s, uint64_t *out) {
    if (!s || !*s || *s == '-') return false;
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end) return false;
    *out = v;
    return true;
}

static char *ceiling(const wasmos_pairs *config, const char *key, uint64_t *out) {
    const char *v = wasmos_get(config, key);
    if (v && !number(v, out)) return wasmos_strf("%s '%s' is not a whole number", key, v);
    return NULL;
}

char *wasmos_init(const wasmos_pairs *config) {
    char *why = ceiling(config, "max-nofile", &max_nofile);
    if (!why) why = ceiling(config, "max-nproc", &max_nproc);
    if (!why) wasmos_log(WASMOS_DEBUG, "limits-c ready: max-nofile %llu, max-nproc %llu",
                         (unsigned long long)max_nofile, (unsigned long long)max_nproc);
    return why;
}

// One label: applies it, or says what is wrong with it.
static char *apply(wasmos_adjustments *out, const char *name, const char *value) {
    uint64_t n = 0;
    if (strcmp(name, "pids") == 0 || strcmp(name, "memory-mb") == 0) {
        if (!number(value, &n) || n == 0)
            return wasmos_strf("label %s%s=%s: not a positive whole number", PREFIX, name, value);
        if (name[0] == 'p')
            wasmos_set_pids_max(out, n);
        else
            wasmos_set_memory_mb(out, n);
        return NULL;
    }
    uint64_t soft = 0, hard = 0;
    const char *colon = strchr(value, ':');
    if (colon) {
        char soft_text[32];
        size_t len = (size_t)(colon - value);
        if (len >= sizeof soft_text) len = sizeof soft_text - 1;
        memcpy(soft_text, value, len);
        soft_text[len] = '\0';
        if (!number(soft_text, &soft) || !number(colon + 1, &hard))
            return wasmos_strf("label %s%s=%s: expected N or SOFT:HARD", PREFIX, name, value);
    } else if (number(value, &soft)) {
        hard = soft;
    } else {
        return wasmos_strf("label %s%s=%s: expected N or SOFT:HARD", PREFIX, name, value);
    }
    uint64_t max = strcmp(name, "nofile") == 0 ? max_nofile
                   : strcmp(name, "nproc") == 0 ? max_nproc
                                                 : UINT64_MAX;
    if (hard > max)
        return wasmos_strf("label %s%s=%s: above this cluster's ceiling of %llu", PREFIX, name,
                           value, (unsigned long long)max);
    char *why = wasmos_set_rlimit(out, name, soft, hard);
    if (why) {
        char *labelled = wasmos_strf("label %s%s=%s: %s", PREFIX, name, value, why);
        free(why);
        return labelled;
    }
    return NULL;
}

char *wasmos_prepare(const wasmos_container *c, wasmos_adjustments *out) {
    char seen[1024] = "";
    size_t used = 0;
    for (size_t i = 0; i < c->labels.len; i++) {
        const wasmos_pair *label = &c->labels.items[i];
        if (strncmp(label->key, PREFIX, strlen(PREFIX)) != 0) continue;
        const char *name = label->key + strlen(PREFIX);
        char *why = apply(out, name, label->value);
        if (why) return why;
        int n = snprintf(seen + used, sizeof seen - used, "%s%s=%s", used ? "," : "", name,
                         label->value);
        if (n > 0 && (size_t)n < sizeof seen - used) used += (size_t)n;
    }
    if (used) {
        wasmos_set_env(out, "WASMOS_LIMITS", seen);
        wasmos_log(WASMOS_DEBUG, "task %s: %s", c->task_id, seen);
    }
    return NULL;
}
