//! `/master/state` at scale. Its tasks are most of it (about 400 bytes
//! each: 42 MiB at 100,000 tasks), and building the whole answer as one JSON
//! tree per request took seconds there (issue 19's B10). A task's JSON
//! changes only when a status is appended to it, and every appended status
//! carries a uuid the task has not had before (`TaskRecord::knows_update`
//! refuses repeats), so the last status' uuid (with the task's id) names a
//! task's bytes: they are serialised once per status and kept, and an
//! answer is the parts sent one after another. The state's lock is held
//! only to collect the parts (and clone the few tasks whose JSON is not kept
//! yet); everything else is done after.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use wasmos_core::{AgentId, AgentState, ExecutorSpec, Resources, TaskId};
use wasmos_state::TaskRecord;

use super::operator::{
    AgentSnap, FrameworkSnap, Live, legacy_agent, legacy_executor, legacy_framework,
    legacy_state_head, legacy_task,
};
use crate::leader::Leader;

/// The legacy JSON of every task, by the uuid of its last status.
#[derive(Default)]
pub struct TaskJson {
    inner: Mutex<Kept>,
}

#[derive(Default)]
struct Kept {
    /// Agents' JSON with what it was made from (10,000 agents' JSON, made
    /// afresh, was most of an answer's CPU once tasks' JSON was kept).
    agents: HashMap<AgentId, AgentEntry>,
    /// By the uuid of the task's last status (16 bytes to hash, where a
    /// task id is up to hundreds).
    tasks: HashMap<uuid::Uuid, Entry>,
    /// Counts answers; an entry not used by the latest is of a task gone,
    /// or of a status since followed by another.
    generation: u64,
}

struct AgentEntry {
    made_of: AgentSnap,
    json: Arc<str>,
    used: u64,
}

struct Entry {
    task: TaskId,
    json: Arc<str>,
    used: u64,
}

/// One task in an answer: its kept JSON, or the index of the task still to
/// serialise.
#[derive(Clone)]
enum Part {
    Kept(Arc<str>),
    Todo(usize),
}

/// A framework's tasks, live and ended, and its executors with their live
/// tasks, in the order the answer lists them.
struct Tasks<P> {
    live: Vec<P>,
    ended: Vec<P>,
    executors: BTreeMap<(AgentId, wasmos_core::ExecutorId), (ExecutorSpec, Vec<P>)>,
}

impl<P> Default for Tasks<P> {
    fn default() -> Self {
        Tasks {
            live: Vec::new(),
            ended: Vec::new(),
            executors: BTreeMap::new(),
        }
    }
}

impl Tasks<Part> {
    fn resolve(self, fresh: &[Arc<str>]) -> Tasks<Arc<str>> {
        let all = |v: Vec<Part>| resolve(v, fresh);
        Tasks {
            live: all(self.live),
            ended: all(self.ended),
            executors: self
                .executors
                .into_iter()
                .map(|(k, (e, p))| (k, (e, all(p))))
                .collect(),
        }
    }
}

/// The JSON of each part: kept, or made (`fresh`, by todo index).
fn resolve(parts: Vec<Part>, fresh: &[Arc<str>]) -> Vec<Arc<str>> {
    parts
        .into_iter()
        .map(|p| match p {
            Part::Kept(j) => j,
            Part::Todo(i) => fresh[i].clone(),
        })
        .collect()
}

/// The body of `/master/state`.
pub(super) fn legacy_state(l: &Leader) -> Pieces {
    let live = Live::of(l);
    let read = l.store.read(|s| {
        let used = l.usage(s);
        let frameworks = live.frameworks(s, &used);
        let offered = live.offered();
        let mut kept = l.task_json.inner.lock().unwrap_or_else(|p| p.into_inner());
        kept.generation += 1;
        let generation = kept.generation;
        // Agents: their kept JSON while nothing it shows changed.
        let (mut activated, mut unreachable) = (0, 0);
        let mut agents: Vec<Part> = Vec::new();
        let mut agent_todo: Vec<AgentSnap> = Vec::new();
        let none = Resources::default();
        for a in s.agents.values() {
            let connected = live.connected(&a.id);
            activated += usize::from(a.state == AgentState::Active && connected);
            unreachable += usize::from(a.state == AgentState::Unreachable);
            if a.state == AgentState::Gone {
                continue;
            }
            let used = used.by_agent.get(&a.id).unwrap_or(&none);
            let offered = offered.get(&a.id).unwrap_or(&none);
            agents.push(match kept.agents.get_mut(&a.id) {
                Some(e)
                    if e.made_of.connected == connected
                        && &e.made_of.used == used
                        && &e.made_of.offered == offered
                        && &e.made_of.rec == a =>
                {
                    e.used = generation;
                    Part::Kept(e.json.clone())
                }
                _ => {
                    agent_todo.push(AgentSnap {
                        rec: a.clone(),
                        used: used.clone(),
                        offered: offered.clone(),
                        connected,
                    });
                    Part::Todo(agent_todo.len() - 1)
                }
            });
        }
        // Tasks, by framework.
        let at: HashMap<&wasmos_core::FrameworkId, usize> = frameworks
            .iter()
            .enumerate()
            .map(|(i, f)| (&f.rec.id, i))
            .collect();
        let mut tasks: Vec<Tasks<Part>> = frameworks.iter().map(|_| Tasks::default()).collect();
        let mut todo: Vec<TaskRecord> = Vec::new();
        for t in s.tasks.values() {
            let Some(&i) = at.get(&t.framework_id) else {
                continue;
            };
            let part = match kept.tasks.get_mut(&t.status().uuid) {
                Some(e) if e.task == t.spec.task_id => {
                    e.used = generation;
                    Part::Kept(e.json.clone())
                }
                _ => {
                    todo.push(t.clone());
                    Part::Todo(todo.len() - 1)
                }
            };
            let f = &mut tasks[i];
            if t.state().is_terminal() {
                f.ended.push(part);
                continue;
            }
            if let Some(e) = &t.spec.executor {
                f.executors
                    .entry((t.agent_id.clone(), e.executor_id.clone()))
                    .or_insert_with(|| (e.clone(), Vec::new()))
                    .1
                    .push(part.clone());
            }
            f.live.push(part);
        }
        drop(kept);
        Read {
            counts: (activated, unreachable),
            agents,
            agent_todo,
            frameworks,
            tasks,
            todo,
            generation,
        }
    });
    // What was not kept, made outside the lock, then kept.
    let fresh_agents: Vec<Arc<str>> = read
        .agent_todo
        .iter()
        .map(|a| Arc::from(legacy_agent(a).to_string()))
        .collect();
    let fresh: Vec<Arc<str>> = read
        .todo
        .iter()
        .map(|t| Arc::from(legacy_task(t).to_string()))
        .collect();
    let parts: usize = read
        .tasks
        .iter()
        .map(|f| f.live.len() + f.ended.len())
        .sum();
    {
        let generation = read.generation;
        let mut kept = l.task_json.inner.lock().unwrap_or_else(|p| p.into_inner());
        for (t, json) in read.todo.iter().zip(&fresh) {
            kept.tasks.insert(
                t.status().uuid,
                Entry {
                    task: t.spec.task_id.clone(),
                    json: json.clone(),
                    used: generation,
                },
            );
        }
        if kept.tasks.len() > parts {
            kept.tasks.retain(|_, e| e.used >= generation);
        }
        for (a, json) in read.agent_todo.into_iter().zip(&fresh_agents) {
            let entry = AgentEntry {
                json: json.clone(),
                made_of: a,
                used: generation,
            };
            kept.agents.insert(entry.made_of.rec.id.clone(), entry);
        }
        if kept.agents.len() > read.agents.len() {
            kept.agents.retain(|_, e| e.used >= generation);
        }
    }
    let agents = resolve(read.agents, &fresh_agents);
    let tasks: Vec<Tasks<Arc<str>>> = read.tasks.into_iter().map(|t| t.resolve(&fresh)).collect();
    write(l, read.counts, &agents, &read.frameworks, &tasks)
}

/// What `legacy_state` collects under the state's lock.
struct Read {
    /// Agents active and connected, and unreachable.
    counts: (usize, usize),
    agents: Vec<Part>,
    agent_todo: Vec<AgentSnap>,
    frameworks: Vec<FrameworkSnap>,
    tasks: Vec<Tasks<Part>>,
    todo: Vec<TaskRecord>,
    generation: u64,
}

fn write(
    l: &Leader,
    (activated, unreachable): (usize, usize),
    agents: &[Arc<str>],
    frameworks: &[FrameworkSnap],
    tasks: &[Tasks<Arc<str>>],
) -> Pieces {
    let mut out = Pieces::default();
    let head = legacy_state_head(l, activated, unreachable);
    splice(&head, &mut out, |out| {
        list(out, "slaves", agents);
        out.bytes(b",");
        for (key, removed) in [("frameworks", false), ("completed_frameworks", true)] {
            out.bytes(format!("\"{key}\":[").as_bytes());
            let mut first = true;
            for (f, t) in frameworks.iter().zip(tasks) {
                if f.rec.removed_at.is_some() != removed {
                    continue;
                }
                if !std::mem::take(&mut first) {
                    out.bytes(b",");
                }
                framework(out, f, t);
            }
            out.bytes(if removed { b"]" } else { b"]," });
        }
    });
    out
}

/// One framework: its JSON from `legacy_framework`, with its tasks spliced
/// in.
fn framework(out: &mut Pieces, f: &FrameworkSnap, t: &Tasks<Arc<str>>) {
    let mut v = legacy_framework(f);
    if let Some(o) = v.as_object_mut() {
        for k in ["tasks", "completed_tasks", "executors"] {
            o.remove(k);
        }
    }
    splice(&v, out, |out| {
        list(out, "tasks", &t.live);
        out.bytes(b",");
        list(out, "completed_tasks", &t.ended);
        out.bytes(b",\"executors\":[");
        for (i, ((agent, _), (e, parts))) in t.executors.iter().enumerate() {
            if i > 0 {
                out.bytes(b",");
            }
            splice(&legacy_executor(&f.rec.id, agent, e), out, |out| {
                list(out, "tasks", parts)
            });
        }
        out.bytes(b"]");
    });
}

/// `"key":[part,part,...]`.
fn list(out: &mut Pieces, key: &str, parts: &[Arc<str>]) {
    out.bytes(format!("\"{key}\":[").as_bytes());
    for (i, j) in parts.iter().enumerate() {
        if i > 0 {
            out.bytes(b",");
        }
        out.kept(j);
    }
    out.bytes(b"]");
}

/// Writes the JSON object `obj` with the members `more` writes added at its
/// end.
fn splice(obj: &Value, out: &mut Pieces, more: impl FnOnce(&mut Pieces)) {
    let start = out.len;
    serde_json::to_writer(&mut *out, obj).expect("a JSON value always serialises");
    let closing = out.pop();
    debug_assert_eq!(closing, Some(b'}'), "splice takes an object");
    if out.len - start > 1 {
        out.bytes(b",");
    }
    more(out);
    out.bytes(b"}");
}

/// An answer as the pieces it is made of: bytes written for it, and kept
/// tasks' JSON referred to, not copied. It is sent in chunks made as the
/// connection takes them, so that a 40 MiB answer is not one 40 MiB buffer
/// (fresh pages the kernel zeroes, per request: the most of a request's CPU
/// once the tasks' JSON was kept).
#[derive(Default)]
pub(super) struct Pieces {
    done: Vec<Piece>,
    current: Vec<u8>,
    /// Bytes so far.
    pub(super) len: usize,
}

enum Piece {
    Bytes(Vec<u8>),
    Kept(Arc<str>),
}

impl Piece {
    fn as_bytes(&self) -> &[u8] {
        match self {
            Piece::Bytes(b) => b,
            Piece::Kept(j) => j.as_bytes(),
        }
    }
}

/// How big the chunks sent are.
const CHUNK: usize = 64 << 10;

impl Pieces {
    fn bytes(&mut self, b: &[u8]) {
        // Only here, before writing, is `current` handed on: so the byte
        // just written is always in it, for `pop`.
        if self.current.len() >= CHUNK {
            self.done
                .push(Piece::Bytes(std::mem::take(&mut self.current)));
        }
        self.current.extend_from_slice(b);
        self.len += b.len();
    }

    fn kept(&mut self, j: &Arc<str>) {
        if !self.current.is_empty() {
            self.done
                .push(Piece::Bytes(std::mem::take(&mut self.current)));
        }
        self.done.push(Piece::Kept(j.clone()));
        self.len += j.len();
    }

    /// Takes back the last byte written (never a kept piece's).
    fn pop(&mut self) -> Option<u8> {
        let b = self.current.pop();
        if b.is_some() {
            self.len -= 1;
        }
        b
    }

    /// The chunks to send, made one at a time as they are taken.
    pub(super) fn into_chunks(mut self) -> impl Iterator<Item = Vec<u8>> + Send {
        if !self.current.is_empty() {
            self.done
                .push(Piece::Bytes(std::mem::take(&mut self.current)));
        }
        let mut pieces = self.done.into_iter().peekable();
        std::iter::from_fn(move || {
            pieces.peek()?;
            let mut chunk = Vec::with_capacity(CHUNK + 4096);
            while chunk.len() < CHUNK
                && let Some(p) = pieces.next()
            {
                chunk.extend_from_slice(p.as_bytes());
            }
            Some(chunk)
        })
    }
}

impl std::io::Write for Pieces {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.bytes(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pieces make the same bytes as one buffer would, in chunks of about
    /// `CHUNK`, kept parts included whole.
    #[test]
    fn pieces_make_the_bytes_they_were_given_in_bounded_chunks() {
        let kept: Arc<str> = Arc::from(format!("{{\"id\":\"{}\"}}", "t".repeat(10_000)));
        let mut p = Pieces::default();
        let mut want = Vec::new();
        let obj = serde_json::json!({"a": 1, "b": "x".repeat(100_000)});
        splice(&obj, &mut p, |p| {
            for _ in 0..20 {
                list(p, "tasks", &[kept.clone(), kept.clone()]);
                p.bytes(b",");
            }
            p.bytes(b"\"end\":true");
        });
        let mut o = serde_json::to_string(&obj).unwrap();
        o.pop();
        want.extend_from_slice(o.as_bytes());
        want.push(b',');
        for _ in 0..20 {
            want.extend_from_slice(format!("\"tasks\":[{kept},{kept}],").as_bytes());
        }
        want.extend_from_slice(b"\"end\":true}");
        assert_eq!(p.len, want.len());
        let chunks: Vec<Vec<u8>> = p.into_chunks().collect();
        assert!(chunks.len() > 2, "{} chunks", chunks.len());
        assert!(chunks.iter().all(|c| c.len() < 2 * CHUNK));
        assert_eq!(chunks.concat(), want);
        let v: Value = serde_json::from_slice(&chunks.concat()).unwrap();
        assert_eq!(v["a"], 1);
        assert_eq!(v["tasks"][1]["id"].as_str().map(str::len), Some(10_000));
    }
}
