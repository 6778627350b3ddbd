// The Wasmos plugin library for C.
//
// Plain functions and structs over wit-bindgen's C bindings: strings are
// NUL-terminated, lists are pointer and length, and no canonical-ABI
// bookkeeping is left to the plugin. A plugin implements its world's
// callbacks below (those marked "default" may be left out) and is built
// with `sdk/c/build.sh WORLD OUT.wasm plugin.c ...`, which defines
// WASMOS_WORLD_<WORLD> and links the world's part of this library.
//
// Memory: everything the library hands a callback (strings, lists,
// structs) is valid during the callback only; copy what must last. What a
// callback returns as `char *` (an error or a message) is malloc'ed, best
// with wasmos_strf, and freed by the library.
#ifndef WASMOS_H
#define WASMOS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// ---------------------------------------------------------------------
// Every world

// A list of key/value pairs (configuration, labels, attributes,
// parameters, environment).
typedef struct {
    const char *key;
    const char *value;
} wasmos_pair;

typedef struct {
    const wasmos_pair *items;
    size_t len;
} wasmos_pairs;

// The value of `key` (the last one, if repeated), or NULL.
const char *wasmos_get(const wasmos_pairs *pairs, const char *key);

// `printf` into a malloc'ed string (what callbacks return as errors and
// messages).
char *wasmos_strf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

typedef enum {
    WASMOS_TRACE,
    WASMOS_DEBUG,
    WASMOS_INFO,
    WASMOS_WARN,
    WASMOS_ERROR,
} wasmos_level;

// A line in the host's log, tagged with the plugin's name (cut at 4 KiB).
void wasmos_log(wasmos_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

// Callback (default: accept): the plugin's configuration, on every new
// instance before anything else. Return NULL, or an error that marks the
// plugin failed.
char *wasmos_init(const wasmos_pairs *config);

// ---------------------------------------------------------------------
// framework: a scheduler inside the leading master. Every call is a
// transaction: kv writes and driver actions take effect together when it
// returns (and not at all if it traps). Keep what must last in kv.
#ifdef WASMOS_WORLD_FRAMEWORK

// Mesos' task states, in the contract's order.
typedef enum {
    WASMOS_TASK_STAGING,
    WASMOS_TASK_STARTING,
    WASMOS_TASK_RUNNING,
    WASMOS_TASK_KILLING,
    WASMOS_TASK_FINISHED,
    WASMOS_TASK_FAILED,
    WASMOS_TASK_KILLED,
    WASMOS_TASK_ERROR,
    WASMOS_TASK_LOST,
    WASMOS_TASK_DROPPED,
    WASMOS_TASK_UNREACHABLE,
    WASMOS_TASK_GONE,
    WASMOS_TASK_GONE_BY_OPERATOR,
    WASMOS_TASK_UNKNOWN,
} wasmos_task_state;

// Whether a task in `state` will not change again.
bool wasmos_is_terminal(wasmos_task_state state);
// Its Mesos name, e.g. "TASK_RUNNING".
const char *wasmos_state_name(wasmos_task_state state);

// Free resources on one agent. `ports` are inclusive ranges.
typedef struct {
    const char *id;
    const char *agent_id;
    const char *hostname;
    double cpus, mem, disk;
    uint32_t gpus;
    const uint16_t (*ports)[2];
    size_t ports_len;
    wasmos_pairs attributes;
} wasmos_offer;

typedef struct {
    const char *task_id;
    wasmos_task_state state;
    const char *agent_id; // NULL when unknown
    const char *message;  // NULL when none
    const char *reason;   // Mesos' reason name, or NULL
    bool has_exit_code;
    int32_t exit_code;
    double timestamp;
    // The same on a redelivery.
    const char *uuid;
} wasmos_task_status;

typedef struct {
    const char *method;
    // Below /frameworks/<name>, starting with `/`.
    const char *path;
    const char *query;
    wasmos_pairs headers;
    // NUL-terminated as well, for text bodies.
    const char *body;
    size_t body_len;
} wasmos_request;

typedef struct {
    uint16_t status;
    // Default: application/json.
    const char *content_type;
    // malloc'ed (e.g. wasmos_strf), freed by the library; NULL: no body.
    char *body;
} wasmos_response;

// A task to launch: a shell command with the usual defaults.
typedef struct {
    const char *task_id;
    // Default: the task id.
    const char *name;
    // Run with /bin/sh -c.
    const char *command;
    double cpus, mem, disk;
    // Host ports it gets (from its offer's ranges): PORT0, PORT1...
    const uint16_t *ports;
    size_t ports_len;
    wasmos_pairs env;
    // NULL: the agent's default task user.
    const char *user;
} wasmos_task_spec;

// Callback (default: decline all for 5 s): new offers, one batch per
// allocation cycle.
void wasmos_offers(const wasmos_offer *offers, size_t len);
// Callback (default: nothing): a task's status changed (in order per task,
// at least once).
void wasmos_status(const wasmos_task_status *update);
// Callback (default: nothing): about once a second.
void wasmos_tick(uint64_t now_ms);
// Callback (default: 404): a request to /frameworks/<name>/...
void wasmos_http(const wasmos_request *request, wasmos_response *response);

// The framework's replicated store. wasmos_kv_get: the value (malloc'ed,
// NUL-terminated, *len its length when len is not NULL) or NULL.
char *wasmos_kv_get(const char *key, size_t *len);
// Returns NULL, or why the store refused (key over 1 KiB, value over 1 MiB).
char *wasmos_kv_set(const char *key, const void *value, size_t len);
void wasmos_kv_delete(const char *key);
// Keys starting with `prefix`, in byte order: a malloc'ed array of
// malloc'ed strings; free with wasmos_free_keys.
char **wasmos_kv_keys(const char *prefix, size_t *len);
void wasmos_free_keys(char **keys, size_t len);

// The master's actions. refuse_seconds < 0: the default (5 s).
// Returns NULL, or why a task is malformed (nothing was launched).
char *wasmos_launch(const char *offer_id, const wasmos_task_spec *tasks, size_t len,
                    double refuse_seconds);
void wasmos_decline(const char *offer_id, double refuse_seconds);
void wasmos_kill(const char *task_id);
void wasmos_revive(void);
void wasmos_suppress(void);
// Milliseconds since the Unix epoch, as the master sees it.
uint64_t wasmos_now_ms(void);

#endif

// ---------------------------------------------------------------------
// health-check: a check the agent runs on its interval for every task
// that names the plugin.
#ifdef WASMOS_WORLD_HEALTH_CHECK

typedef struct {
    const char *task_id;
    const char *host;
    const uint16_t *ports;
    size_t ports_len;
    // The check's parameters (`port-index=0`, `path=/health`, ...).
    wasmos_pairs params;
    uint32_t timeout_ms;
} wasmos_target;

// Callback: checks the task once. Set *message (malloc'ed, e.g. with
// wasmos_strf) to what users see; return whether it is healthy.
bool wasmos_check(const wasmos_target *target, char **message);

// The port to check: `port` if given, else the task's port at
// `port-index` (default 0). Returns NULL, or an error for users.
char *wasmos_target_port(const wasmos_target *target, uint16_t *port);

// Probes reach only the task's own host and ports. Each returns NULL, or
// why the probe could not be made.
char *wasmos_tcp_connect(uint16_t port, uint32_t timeout_ms);
// GET http(s)://<task host>:<port><path>: the status and the first 4 KiB
// of the body (NUL-terminated, malloc'ed: free it).
char *wasmos_http_get(uint16_t port, const char *path, uint32_t timeout_ms, bool tls,
                      uint16_t *status, char **body);
// `/bin/sh -c command` where the task runs: its exit code and output
// (NUL-terminated, malloc'ed: free it).
char *wasmos_exec(const char *command, uint32_t timeout_ms, int32_t *exit_code, char **output);

#endif

// ---------------------------------------------------------------------
// isolator: computes how a container is set up; the agent validates and
// enforces.
#ifdef WASMOS_WORLD_ISOLATOR

typedef struct {
    const char *container_id;
    const char *task_id;
    const char *framework_id;
    // NULL: the agent's default task user.
    const char *user;
    double cpus, mem, disk;
    uint32_t gpus;
    wasmos_pairs labels;
    // The environment the task would get.
    wasmos_pairs environment;
} wasmos_container;

// What the isolator asks for; filled by the functions below.
typedef struct wasmos_adjustments wasmos_adjustments;

// Adds a variable to the task's environment.
void wasmos_set_env(wasmos_adjustments *a, const char *key, const char *value);
// A resource limit by its name without RLIMIT_ (nofile, nproc, core,
// stack, fsize, memlock, as, cpu, data). Returns NULL, or an error (an
// unknown name, soft above hard).
char *wasmos_set_rlimit(wasmos_adjustments *a, const char *name, uint64_t soft, uint64_t hard);
// cgroup limits (the host refuses values above the task's allocation).
void wasmos_set_memory_mb(wasmos_adjustments *a, uint64_t mb);
void wasmos_set_cpu_shares(wasmos_adjustments *a, uint64_t shares);
void wasmos_set_pids_max(wasmos_adjustments *a, uint64_t pids);
// A bind mount; `source` must be in the agent's allowed set.
void wasmos_add_mount(wasmos_adjustments *a, const char *source, const char *target, bool read_only);

// Callback: before a container starts. Return NULL, or an error that stops
// the launch (the task fails with the message).
char *wasmos_prepare(const wasmos_container *container, wasmos_adjustments *out);

// Callback (default: nothing): the container ended.
void wasmos_cleanup(const char *container_id);

#endif

// ---------------------------------------------------------------------
// placement: which agents may take a task, and which are better.
#ifdef WASMOS_WORLD_PLACEMENT

// An agent as placement sees it: what it offers in all.
typedef struct {
    uint32_t index;
    const char *id;
    const char *hostname;
    wasmos_pairs attributes;
    double cpus, mem, disk;
    uint32_t gpus;
} wasmos_agent;

// The library keeps the agents up to date from the host's changes.
// The agent at `index`, or NULL.
const wasmos_agent *wasmos_agent_at(uint32_t index);
// One more than the highest index in use (iterate 0..capacity, skipping
// NULLs).
uint32_t wasmos_agents_capacity(void);
// Changes whenever the agents do: caches built from them are valid while
// it stays the same.
uint64_t wasmos_agents_version(void);
// `hostname` (or `@hostname`) is the host name, anything else an
// attribute (`@zone` is `zone`); NULL when the agent has none.
const char *wasmos_agent_field(const wasmos_agent *agent, const char *field);

typedef struct {
    const char *field;
    // Upper case, e.g. `UNIQUE`.
    const char *op;
    // NULL when the rule has none.
    const char *value;
} wasmos_constraint;

typedef struct {
    // The group the task belongs to (an app id).
    const char *group;
    // Only the constraints whose operator this plugin declares.
    const wasmos_constraint *constraints;
    size_t constraints_len;
    double cpus, mem, disk;
    uint32_t gpus;
    // Where the group's live tasks run: agent index and how many.
    const uint32_t (*placed)[2];
    size_t placed_len;
} wasmos_task;

// A place the task could go: an agent and what is free on it.
typedef struct {
    uint32_t agent;
    double cpus, mem, disk;
} wasmos_candidate;

// How many of the group's tasks run on agent `index`.
uint32_t wasmos_placed_on(const wasmos_task *task, uint32_t index);

// Callback (default: accept): checks constraints before they are used.
// Return NULL, or what is wrong.
char *wasmos_validate(const wasmos_constraint *constraints, size_t len);
// Callback: for each candidate, whether the task may go there (`fits`
// comes all true).
void wasmos_filter(const wasmos_task *task, const wasmos_candidate *candidates, size_t len,
                   bool *fits);
// Callback (default: 0 for all): for each candidate, how good a place it
// is (higher is better; `scores` comes all 0).
void wasmos_score(const wasmos_task *task, const wasmos_candidate *candidates, size_t len,
                  double *scores);

#endif

#ifdef __cplusplus
}
#endif

#endif
