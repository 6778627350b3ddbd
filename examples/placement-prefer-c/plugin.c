// Soft placement preferences, written in C with the Wasmos library
// (sdk/c): Nomad's affinities for Marathon-style constraints.
//
// `[field, PREFER, value]` (field: `hostname` or an agent attribute;
// value: one value, or several separated by `|`) never refuses an agent:
// among those with room, agents whose field matches score higher, so the
// task goes there while it can and elsewhere when it cannot — where
// `CLUSTER` would leave it waiting. Rules add up; a configured `weight`
// (default 1) scales them.
#include <stdlib.h>
#include <string.h>

#include "wasmos.h"

static double weight = 1.0;

char *wasmos_init(const wasmos_pairs *config) {
    const char *w = wasmos_get(config, "weight");
    if (w) {
        char *end = NULL;
        weight = strtod(w, &end);
        if (end == w || *end || weight <= 0) return wasmos_strf("weight '%s' is not a positive number", w);
    }
    return NULL;
}

char *wasmos_validate(const wasmos_constraint *rules, size_t len) {
    for (size_t i = 0; i < len; i++)
        if (!rules[i].value || !*rules[i].value)
            return wasmos_strf("[%s, PREFER] needs the value(s) to prefer, e.g. [%s, PREFER, a|b]",
                               rules[i].field, rules[i].field);
    return NULL;
}

// Whether `have` is one of the `|`-separated `wanted`.
static bool one_of(const char *have, const char *wanted) {
    size_t n = strlen(have);
    for (const char *p = wanted;;) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && strncmp(p, have, n) == 0) return true;
        if (!bar) return false;
        p = bar + 1;
    }
}

void wasmos_filter(const wasmos_task *task, const wasmos_candidate *candidates, size_t len, bool *fits) {
    // A preference refuses nothing; only agents placement does not know.
    (void)task;
    for (size_t i = 0; i < len; i++) fits[i] = wasmos_agent_at(candidates[i].agent) != NULL;
}

void wasmos_score(const wasmos_task *task, const wasmos_candidate *candidates, size_t len,
                  double *scores) {
    for (size_t i = 0; i < len; i++) {
        const wasmos_agent *agent = wasmos_agent_at(candidates[i].agent);
        if (!agent) continue;
        for (size_t r = 0; r < task->constraints_len; r++) {
            const wasmos_constraint *rule = &task->constraints[r];
            const char *have = wasmos_agent_field(agent, rule->field);
            if (have && rule->value && one_of(have, rule->value)) scores[i] += weight;
        }
    }
}
