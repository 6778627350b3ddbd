//! The checker: what a run's history and the cluster's final state must
//! satisfy. Each rule broken is one violation, printed with the part of
//! the history that breaks it.

use std::collections::{BTreeMap, HashMap};

use crate::history::Event;
use crate::linear::{self, Call, RegOp};

/// What the cluster said at the end, with the faults healed.
#[derive(Debug, Default)]
pub struct Finals {
    /// `exec`'s tasks: id → state.
    pub exec: BTreeMap<String, String>,
    /// The master's tasks: id → every state it recorded, in order.
    pub statuses: BTreeMap<String, Vec<String>>,
    /// How many times each task ran, from the marks it left.
    pub runs: BTreeMap<String, usize>,
    /// The Chronos job: when it was first due, when it was stopped (ms
    /// since the epoch), the instants its runs marked, and its counts.
    pub chronos: Option<ChronosFinal>,
    /// Marathon's apps, the master's tasks of Marathon, the marks.
    pub marathon: Option<crate::marathon::MarathonFinal>,
    /// The external (pymesos) framework's history and marks.
    pub framework: Option<crate::framework::FrameworkFinal>,
}

#[derive(Debug, Default)]
pub struct ChronosFinal {
    pub start_ms: u64,
    pub period_ms: u64,
    /// From when the cluster was whole again (plus a margin).
    pub whole_ms: u64,
    pub stopped_ms: u64,
    pub marks: Vec<u64>,
    /// When each marked instant first ran (real time, ms).
    pub ran_at: BTreeMap<u64, u64>,
    pub success: u64,
    pub errors: u64,
}

/// Every instant the job was due ran at most once, at an instant it was
/// due; every success left its mark; once the cluster was whole again,
/// every instant ran. (During faults, Chronos' own rules may fold an
/// instant into a run still queued, or skip instants older than the job's
/// epsilon: those instants have no run of their own.)
fn check_chronos(c: &ChronosFinal, v: &mut Vec<String>) {
    let mut per: BTreeMap<u64, usize> = BTreeMap::new();
    for m in &c.marks {
        *per.entry(*m).or_default() += 1;
    }
    for (due, n) in &per {
        if *n > 1 {
            v.push(format!("chronos: the run due at {due} ran {n} times"));
        }
        if *due < c.start_ms || !(due - c.start_ms).is_multiple_of(c.period_ms) {
            v.push(format!(
                "chronos: a run marked {due}, which is no instant of the schedule (from {} every {} ms)",
                c.start_ms, c.period_ms
            ));
        }
    }
    // Instants due on the whole cluster, at least 10 s before the job was
    // stopped: each ran — unless a run for it or a later instant had
    // already happened before it was due (a leader whose wall clock ran
    // ahead ran the schedule early; Chronos goes by its leader's clock).
    let passed_early = |d: u64| c.ran_at.range(d..).any(|(_, at)| *at < d);
    let missing: Vec<u64> = (0..)
        .map(|k| c.start_ms + k * c.period_ms)
        .take_while(|d| d + 10_000 <= c.stopped_ms)
        .filter(|d| *d >= c.whole_ms && !per.contains_key(d) && !passed_early(*d))
        .collect();
    if !missing.is_empty() {
        v.push(format!(
            "chronos: {} instants due after the cluster was whole again never ran: {missing:?}",
            missing.len()
        ));
    }
    if c.success > per.len() as u64 {
        v.push(format!(
            "chronos: {} runs succeeded but only {} instants were marked",
            c.success,
            per.len()
        ));
    }
}

const TERMINAL: &[&str] = &[
    "TASK_FINISHED",
    "TASK_FAILED",
    "TASK_KILLED",
    "TASK_LOST",
    "TASK_ERROR",
    "TASK_DROPPED",
    "TASK_GONE",
    "TASK_GONE_BY_OPERATOR",
];

/// Where a state is in the life cycle (4: terminal).
pub fn rank(state: &str) -> u8 {
    match state {
        "QUEUED" => 0,
        "TASK_STAGING" => 1,
        "TASK_STARTING" => 2,
        "TASK_RUNNING" | "TASK_UNREACHABLE" | "TASK_KILLING" => 3,
        _ => 4,
    }
}

/// Whether a task may go from `a` to `b`: never back, never out of a
/// terminal state.
fn legal(a: &str, b: &str) -> bool {
    if TERMINAL.contains(&a) {
        return a == b;
    }
    rank(b) >= rank(a)
}

/// The first step of `seq` that breaks the life cycle: its index, the
/// state it is measured from and the state it went to. TASK_UNREACHABLE is
/// a detour, not a stage: a task whose agent comes back reports the state
/// it is really in (a launch still STARTING, say), so each state is
/// measured from the last one before any TASK_UNREACHABLE; nothing follows
/// a terminal state.
pub(crate) fn illegal_step(seq: &[String]) -> Option<(usize, &str, &str)> {
    let mut from: Option<&str> = None;
    for (i, s) in seq.iter().enumerate() {
        let s = s.as_str();
        if s == "TASK_UNREACHABLE" && from.is_none_or(|f| !TERMINAL.contains(&f)) {
            continue;
        }
        if let Some(f) = from
            && !legal(f, s)
        {
            return Some((i, f, s));
        }
        from = Some(s);
    }
    None
}

fn ms(ns: u64) -> String {
    format!("{:.3}s", ns as f64 / 1e9)
}

fn show(c: &Call, client: &HashMap<usize, usize>) -> String {
    let ret = c.ret.map_or("?".to_string(), ms);
    let who = client
        .get(&c.id)
        .map_or(String::new(), |c| format!("c{c} "));
    let what = match &c.op {
        RegOp::Read { value } => format!("read → {value:?}"),
        RegOp::Write { value } => format!("write {value:?}"),
        RegOp::Cas { from, to, swapped } => {
            let r = if c.ret.is_none() {
                "unknown"
            } else if *swapped {
                "swapped"
            } else {
                "refused"
            };
            format!("cas {from:?} → {to:?}: {r}")
        }
    };
    format!("    #{} {who}[{} .. {ret}] {what}", c.id, ms(c.call))
}

/// Every rule the run broke.
pub fn check(events: &[Event], finals: &Finals) -> Vec<String> {
    let mut v = Vec::new();
    // 1. Each register's history is linearizable (which includes: every
    //    acknowledged write is visible until overwritten).
    let mut keys: BTreeMap<&str, Vec<Call>> = BTreeMap::new();
    let mut clients = HashMap::new();
    for (id, e) in events.iter().enumerate() {
        if let Event::Register {
            client,
            key,
            call,
            ret,
            op,
            ..
        } = e
        {
            clients.insert(id, *client);
            keys.entry(key).or_default().push(Call {
                id,
                call: *call,
                ret: *ret,
                op: op.clone(),
            });
        }
    }
    for (key, calls) in &keys {
        if let Err(x) = linear::check(calls) {
            let mut s = format!(
                "register {key}: {} ({} operations)\n  the last operations of the longest order found, leaving {:?}:\n",
                if x.undecided {
                    "the checker gave up (too many orders to try) — not shown linearizable"
                } else {
                    "not linearizable"
                },
                calls.len(),
                x.state
            );
            for c in &x.linearized_tail {
                s += &show(c, &clients);
                s.push('\n');
            }
            s += "  none of these could come next, yet this one had to:\n";
            s += &show(&x.stuck, &clients);
            s += "\n  the window:\n";
            for c in x.window.iter().rev().take(30).rev() {
                s += &show(c, &clients);
                s.push('\n');
            }
            v.push(s);
        }
    }
    // Valid requests refused outright.
    for e in events {
        if let Event::Refused {
            client,
            at,
            request,
            answer,
        } = e
        {
            v.push(format!(
                "c{client} at {}: {request} was refused: {answer}",
                ms(*at)
            ));
        }
    }
    // 2. Every acknowledged submission survived.
    let mut submitted = BTreeMap::new();
    for e in events {
        if let Event::Submit {
            task, acked, call, ..
        } = e
        {
            submitted.insert(task.clone(), (*acked, *call));
            if *acked && !finals.exec.contains_key(task) {
                v.push(format!(
                    "task {task}: its submission at {} was acknowledged, and exec does not know it",
                    ms(*call)
                ));
            }
        }
    }
    // 3. No task ran twice; a finished one ran once.
    for (task, n) in &finals.runs {
        if *n > 1 {
            v.push(format!(
                "task {task} ran {n} times (its marks), exec says {:?}",
                finals.exec.get(task)
            ));
        }
        if !submitted.contains_key(task) {
            v.push(format!("task {task} ran, and nobody submitted it"));
        }
    }
    for (task, state) in &finals.exec {
        let ran = finals.runs.get(task).copied().unwrap_or(0);
        if state == "TASK_FINISHED" && ran != 1 {
            v.push(format!("task {task} is TASK_FINISHED but ran {ran} times"));
        }
        if crate::framework::NEVER_RAN.contains(&state.as_str()) && ran > 0 {
            v.push(format!(
                "task {task} is {state} (it never ran) but ran {ran} times"
            ));
        }
    }
    // 4. Every task's states, as clients saw them and as the master
    //    recorded them, follow the life cycle.
    let mut seen: BTreeMap<&str, Vec<(u64, String)>> = BTreeMap::new();
    for e in events {
        if let Event::TaskState { at, task, state } = e {
            seen.entry(task).or_default().push((*at, state.clone()));
        }
    }
    for (task, seq) in &seen {
        let states: Vec<String> = seq.iter().map(|(_, s)| s.clone()).collect();
        if let Some((i, a, b)) = illegal_step(&states) {
            v.push(format!(
                "task {task}: a client saw it go from {a} to {b} at {} (all it saw: {})",
                ms(seq[i].0),
                seq.iter()
                    .map(|(t, s)| format!("{s}@{}", ms(*t)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    if let Some(c) = &finals.chronos {
        check_chronos(c, &mut v);
    }
    // 5. Marathon: every acknowledged app change survived, no task id ran
    //    twice, nothing runs for it that no app lists.
    if let Some(m) = &finals.marathon {
        let mut changes: BTreeMap<String, Vec<crate::marathon::Change>> = BTreeMap::new();
        for e in events {
            if let Event::AppChange {
                app,
                op,
                call,
                outcome,
                want,
                answer,
                ..
            } = e
            {
                changes
                    .entry(app.clone())
                    .or_default()
                    .push(crate::marathon::Change {
                        op: *op,
                        call: *call,
                        outcome: *outcome,
                        want: *want,
                        answer,
                    });
            }
        }
        crate::marathon::check(&changes, m, &mut v);
    }
    // 6. The external framework: no task ran twice, every task ended.
    if let Some(f) = &finals.framework {
        crate::framework::check(f, &mut v);
    }
    for (task, states) in &finals.statuses {
        if let Some((_, a, b)) = illegal_step(states) {
            v.push(format!(
                "task {task}: the master recorded {a} then {b} ({})",
                states.join(" → ")
            ));
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn submit(task: &str, acked: bool) -> Event {
        Event::Submit {
            client: 0,
            task: task.into(),
            call: 1,
            ret: 2,
            acked,
            answer: "201".into(),
        }
    }

    #[test]
    fn a_clean_run_has_no_violation() {
        let events = vec![submit("t1", true), submit("t2", false)];
        let finals = Finals {
            exec: [("t1".to_string(), "TASK_FINISHED".to_string())].into(),
            statuses: [(
                "t1".to_string(),
                vec![
                    "TASK_STARTING".into(),
                    "TASK_RUNNING".into(),
                    "TASK_FINISHED".into(),
                ],
            )]
            .into(),
            runs: [("t1".to_string(), 1)].into(),
            chronos: None,
            marathon: None,
            framework: None,
        };
        assert_eq!(check(&events, &finals), Vec::<String>::new());
    }

    #[test]
    fn a_lost_acknowledged_task_a_second_run_and_a_resurrection_are_each_named() {
        let events = vec![
            submit("gone", true),
            submit("twice", true),
            Event::TaskState {
                at: 5,
                task: "twice".into(),
                state: "TASK_FINISHED".into(),
            },
            Event::TaskState {
                at: 9,
                task: "twice".into(),
                state: "TASK_RUNNING".into(),
            },
        ];
        let finals = Finals {
            exec: [("twice".to_string(), "TASK_RUNNING".to_string())].into(),
            statuses: [(
                "twice".to_string(),
                vec!["TASK_RUNNING".into(), "TASK_STAGING".into()],
            )]
            .into(),
            runs: [("twice".to_string(), 2)].into(),
            chronos: None,
            marathon: None,
            framework: None,
        };
        let v = check(&events, &finals);
        assert_eq!(v.len(), 4, "{v:#?}");
        assert!(v[0].contains("gone") && v[0].contains("does not know it"));
        assert!(v[1].contains("ran 2 times"));
        assert!(v[2].contains("from TASK_FINISHED to TASK_RUNNING"));
        assert!(v[3].contains("TASK_RUNNING then TASK_STAGING"));
    }

    #[test]
    fn a_task_that_ended_as_never_run_and_left_a_mark_is_named() {
        let events = vec![submit("dropped", true), submit("lost", true)];
        let finals = Finals {
            exec: [
                ("dropped".to_string(), "TASK_DROPPED".to_string()),
                ("lost".to_string(), "TASK_LOST".to_string()),
            ]
            .into(),
            statuses: Default::default(),
            runs: [("dropped".to_string(), 1), ("lost".to_string(), 1)].into(),
            chronos: None,
            marathon: None,
            framework: None,
        };
        let v = check(&events, &finals);
        assert_eq!(v.len(), 1, "{v:#?}");
        assert!(v[0].contains("dropped is TASK_DROPPED (it never ran) but ran 1 times"));
    }

    #[test]
    fn a_chronos_instant_run_twice_lost_on_a_whole_cluster_or_unmarked_is_named() {
        let ok = ChronosFinal {
            start_ms: 1_000_000,
            period_ms: 3_000,
            // Whole again from 6 s; stopped at 30 s: 6 … 18 s must run.
            whole_ms: 1_006_000,
            stopped_ms: 1_030_000,
            // 3 s folded into a run during the faults.
            marks: vec![
                1_000_000, 1_006_000, 1_009_000, 1_012_000, 1_015_000, 1_018_000,
            ],
            ran_at: BTreeMap::new(),
            success: 6,
            errors: 0,
        };
        let mut v = Vec::new();
        check_chronos(&ok, &mut v);
        assert_eq!(v, Vec::<String>::new());
        let bad = ChronosFinal {
            marks: vec![
                1_000_000, 1_003_000, 1_003_000, 1_004_000, 1_006_000, 1_012_000, 1_015_000,
                1_018_000,
            ],
            success: 8,
            ..ok
        };
        check_chronos(&bad, &mut v);
        assert_eq!(v.len(), 4, "{v:#?}");
        assert!(v[0].contains("due at 1003000 ran 2 times"));
        assert!(v[1].contains("1004000, which is no instant"));
        assert!(v[2].contains("whole again never ran: [1009000]"));
        assert!(v[3].contains("8 runs succeeded but only 7 instants"));
    }

    #[test]
    fn instants_a_leader_ahead_of_time_ran_past_early_are_not_owed_a_run() {
        // A leader 12.5 s ahead ran the instant due at 1 021 000 at
        // 1 008 500 real time, folding 9, 12 … 18 s into it.
        let c = ChronosFinal {
            start_ms: 1_000_000,
            period_ms: 3_000,
            whole_ms: 1_006_000,
            stopped_ms: 1_040_000,
            marks: vec![
                1_000_000, 1_003_000, 1_006_000, 1_021_000, 1_024_000, 1_027_000, 1_030_000,
            ],
            ran_at: [
                (1_000_000, 1_000_100),
                (1_003_000, 1_003_100),
                (1_006_000, 1_006_100),
                (1_021_000, 1_008_500),
                (1_024_000, 1_024_100),
                (1_027_000, 1_027_100),
                (1_030_000, 1_030_100),
            ]
            .into(),
            success: 7,
            errors: 0,
        };
        let mut v = Vec::new();
        check_chronos(&c, &mut v);
        assert_eq!(v, Vec::<String>::new());
        // Run on time, the same marks leave 9 … 18 s owed.
        let on_time = ChronosFinal {
            ran_at: c.ran_at.keys().map(|d| (*d, d + 100)).collect(),
            ..c
        };
        check_chronos(&on_time, &mut v);
        assert_eq!(v.len(), 1, "{v:#?}");
        assert!(
            v[0].contains("[1009000, 1012000, 1015000, 1018000]"),
            "{v:#?}"
        );
    }

    #[test]
    fn an_unreachable_detour_is_measured_from_the_state_before_it() {
        let seq = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        // Back from an agent's partition, a launch still starting.
        assert_eq!(
            illegal_step(&seq(&[
                "TASK_STAGING",
                "TASK_UNREACHABLE",
                "TASK_STARTING",
                "TASK_RUNNING",
                "TASK_FINISHED",
            ])),
            None
        );
        // A framework may hear of a task first as unreachable.
        assert_eq!(
            illegal_step(&seq(&[
                "TASK_UNREACHABLE",
                "TASK_STARTING",
                "TASK_FINISHED"
            ])),
            None
        );
        // Running before the detour, starting after it: backwards.
        assert_eq!(
            illegal_step(&seq(&["TASK_RUNNING", "TASK_UNREACHABLE", "TASK_STARTING"])),
            Some((2, "TASK_RUNNING", "TASK_STARTING"))
        );
        // Nothing after a terminal state, not even unreachable.
        assert_eq!(
            illegal_step(&seq(&["TASK_FINISHED", "TASK_UNREACHABLE"])),
            Some((1, "TASK_FINISHED", "TASK_UNREACHABLE"))
        );
    }

    #[test]
    fn a_stale_read_is_reported_with_its_window() {
        let reg = |id: usize, call: u64, ret: u64, op: RegOp| Event::Register {
            client: id,
            key: "k".into(),
            call,
            ret: Some(ret),
            gave_up: None,
            op,
            error: None,
        };
        let events = vec![
            reg(0, 0, 1, RegOp::Write { value: "a".into() }),
            reg(1, 2, 3, RegOp::Write { value: "b".into() }),
            reg(
                2,
                4,
                5,
                RegOp::Read {
                    value: Some("a".into()),
                },
            ),
        ];
        let v = check(&events, &Finals::default());
        assert_eq!(v.len(), 1, "{v:#?}");
        assert!(v[0].contains("register k: not linearizable"), "{}", v[0]);
        assert!(v[0].contains("#2 c2"), "{}", v[0]);
    }
}
