// The placement world's part of the library: the agents view and the
// calls by index.
#include "internal.h"

// Agents by index; `present` marks the slots in use.
static wasmos_agent *agents;
static bool *present;
static uint32_t capacity;
static uint64_t version;

static void clear(uint32_t i) {
    if (i >= capacity || !present[i]) return;
    wasmos_agent *a = &agents[i];
    free((char *)a->id);
    free((char *)a->hostname);
    wasmos__pairs_free(&a->attributes);
    present[i] = false;
}

static void upsert(const wasmos_plugin_placement_types_agent_view_t *v) {
    uint32_t i = v->index;
    if (i >= capacity) {
        uint32_t n = i + 1 > capacity * 2 ? i + 1 : capacity * 2;
        agents = realloc(agents, n * sizeof *agents);
        present = realloc(present, n * sizeof *present);
        if (!agents || !present) abort();
        memset(present + capacity, 0, (n - capacity) * sizeof *present);
        capacity = n;
    }
    clear(i);
    agents[i] = (wasmos_agent){
        .index = i,
        .id = WASMOS__CSTR(v->id),
        .hostname = WASMOS__CSTR(v->hostname),
        .attributes = wasmos__pairs(v->attributes.ptr, v->attributes.len),
        .cpus = v->resources.cpus,
        .mem = v->resources.mem,
        .disk = v->resources.disk,
        .gpus = v->resources.gpus,
    };
    present[i] = true;
}

void exports_wit_agents_changed(wit_list_agent_change_t *changes) {
    if (changes->len) version++;
    for (size_t k = 0; k < changes->len; k++) {
        wit_agent_change_t *c = &changes->ptr[k];
        if (c->tag == WASMOS_PLUGIN_PLACEMENT_TYPES_AGENT_CHANGE_UPSERT)
            upsert(&c->val.upsert);
        else
            clear(c->val.removed);
    }
    wit_list_agent_change_free(changes);
}

const wasmos_agent *wasmos_agent_at(uint32_t index) {
    return index < capacity && present[index] ? &agents[index] : NULL;
}

uint32_t wasmos_agents_capacity(void) {
    return capacity;
}

uint64_t wasmos_agents_version(void) {
    return version;
}

const char *wasmos_agent_field(const wasmos_agent *agent, const char *field) {
    if (strcmp(field, "hostname") == 0 || strcmp(field, "@hostname") == 0) return agent->hostname;
    return wasmos_get(&agent->attributes, field[0] == '@' ? field + 1 : field);
}

uint32_t wasmos_placed_on(const wasmos_task *task, uint32_t index) {
    uint32_t n = 0;
    for (size_t i = 0; i < task->placed_len; i++)
        if (task->placed[i][0] == index) n += task->placed[i][1];
    return n;
}

// Plain copies of constraints; free with constraints_free.
static wasmos_constraint *constraints(const wit_constraint_t *raw, size_t len) {
    wasmos_constraint *out = calloc(len ? len : 1, sizeof *out);
    if (!out) abort();
    for (size_t i = 0; i < len; i++) {
        out[i].field = WASMOS__CSTR(raw[i].field);
        out[i].op = WASMOS__CSTR(raw[i].operator_);
        out[i].value = raw[i].value.is_some ? WASMOS__CSTR(raw[i].value.val) : NULL;
    }
    return out;
}

static void constraints_free(wasmos_constraint *c, size_t len) {
    for (size_t i = 0; i < len; i++) {
        free((char *)c[i].field);
        free((char *)c[i].op);
        free((char *)c[i].value);
    }
    free(c);
}

__attribute__((weak)) char *wasmos_validate(const wasmos_constraint *c, size_t len) {
    (void)c;
    (void)len;
    return NULL;
}

bool exports_wit_validate(wit_list_constraint_t *raw, wit_string_t *err) {
    wasmos_constraint *c = constraints(raw->ptr, raw->len);
    char *why = wasmos_validate(c, raw->len);
    constraints_free(c, raw->len);
    wit_list_constraint_free(raw);
    if (why) {
        wasmos__give(err, why);
        return false;
    }
    return true;
}

// The task and candidates as plain structs, for the duration of a call.
typedef struct {
    wasmos_task task;
    uint32_t (*placed)[2];
    wasmos_candidate *candidates;
    size_t len;
} call;

static call call_of(const wit_placement_task_t *t, const wit_list_candidate_t *cands) {
    call c = {0};
    c.placed = calloc(t->placed.len ? t->placed.len : 1, sizeof *c.placed);
    c.candidates = calloc(cands->len ? cands->len : 1, sizeof *c.candidates);
    if (!c.placed || !c.candidates) abort();
    for (size_t i = 0; i < t->placed.len; i++) {
        c.placed[i][0] = t->placed.ptr[i].f0;
        c.placed[i][1] = t->placed.ptr[i].f1;
    }
    for (size_t i = 0; i < cands->len; i++)
        c.candidates[i] = (wasmos_candidate){
            .agent = cands->ptr[i].agent,
            .cpus = cands->ptr[i].cpus,
            .mem = cands->ptr[i].mem,
            .disk = cands->ptr[i].disk,
        };
    c.len = cands->len;
    c.task = (wasmos_task){
        .group = WASMOS__CSTR(t->group),
        .constraints = constraints(t->constraints.ptr, t->constraints.len),
        .constraints_len = t->constraints.len,
        .cpus = t->resources.cpus,
        .mem = t->resources.mem,
        .disk = t->resources.disk,
        .gpus = t->resources.gpus,
        .placed = (const uint32_t(*)[2])c.placed,
        .placed_len = t->placed.len,
    };
    return c;
}

static void call_free(call *c) {
    free((char *)c->task.group);
    constraints_free((wasmos_constraint *)c->task.constraints, c->task.constraints_len);
    free(c->placed);
    free(c->candidates);
}

void exports_wit_filter(wit_placement_task_t *t, wit_list_candidate_t *cands, wit_list_bool_t *ret) {
    call c = call_of(t, cands);
    ret->len = c.len;
    ret->ptr = malloc(c.len ? c.len * sizeof *ret->ptr : 1);
    if (!ret->ptr) abort();
    for (size_t i = 0; i < c.len; i++) ret->ptr[i] = true;
    wasmos_filter(&c.task, c.candidates, c.len, ret->ptr);
    call_free(&c);
    wit_placement_task_free(t);
    wit_list_candidate_free(cands);
}

__attribute__((weak)) void wasmos_score(const wasmos_task *task, const wasmos_candidate *candidates,
                                        size_t len, double *scores) {
    (void)task;
    (void)candidates;
    (void)len;
    (void)scores;
}

void exports_wit_score(wit_placement_task_t *t, wit_list_candidate_t *cands, wit_list_f64_t *ret) {
    call c = call_of(t, cands);
    ret->len = c.len;
    ret->ptr = calloc(c.len ? c.len : 1, sizeof *ret->ptr);
    if (!ret->ptr) abort();
    wasmos_score(&c.task, c.candidates, c.len, ret->ptr);
    call_free(&c);
    wit_placement_task_free(t);
    wit_list_candidate_free(cands);
}
