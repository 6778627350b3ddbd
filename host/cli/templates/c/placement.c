// {{name}}: a placement plugin, made by `wasmos plugin new`.
//
// `[field, AVOID, value]` keeps a task off agents whose `field` (`hostname`
// or an attribute) equals `value`; among the rest it prefers agents with
// more free cpus. The library keeps the agents (wasmos_agent_at); filter
// and score get candidates as indices with what is free there. The
// library is in wasmos/c (wasmos.h).
#include <string.h>

#include "wasmos.h"

char *wasmos_validate(const wasmos_constraint *rules, size_t len) {
    for (size_t i = 0; i < len; i++)
        if (!rules[i].value) return wasmos_strf("[%s, AVOID] needs a value to avoid", rules[i].field);
    return NULL;
}

void wasmos_filter(const wasmos_task *task, const wasmos_candidate *candidates, size_t len, bool *fits) {
    for (size_t i = 0; i < len; i++) {
        const wasmos_agent *agent = wasmos_agent_at(candidates[i].agent);
        fits[i] = agent != NULL;
        for (size_t r = 0; agent && r < task->constraints_len; r++) {
            const char *have = wasmos_agent_field(agent, task->constraints[r].field);
            const char *avoid = task->constraints[r].value;
            if (have && avoid && strcmp(have, avoid) == 0) fits[i] = false;
        }
    }
}

void wasmos_score(const wasmos_task *task, const wasmos_candidate *candidates, size_t len,
                  double *scores) {
    (void)task;
    for (size_t i = 0; i < len; i++) scores[i] = candidates[i].cpus;
}
