//! Is a history of compare-and-set register operations linearizable?
//!
//! Wing & Gong's search, with Lowe's memo of visited (linearized set,
//! register state) pairs, checked one register at a time: linearizability is
//! compositional, so each key's history is checked on its own (as Porcupine
//! does). An operation whose outcome the client never learned (a timeout, a
//! connection cut) may have taken effect at any time after its call, or
//! never: it has no return and is never required.
//!
//! No crate fit: `todc-utils`' WGL checker has no operations of unknown
//! outcome, and stateright's tester records histories online only.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

/// One operation on a register, as its client saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "op")]
pub enum RegOp {
    /// Read the register: `None` is "no such key".
    Read {
        value: Option<String>,
    },
    Write {
        value: String,
    },
    /// Set `to` if it holds `from`; `swapped` is what the answer said (an
    /// operation of unknown outcome is taken as one that may have swapped).
    Cas {
        from: String,
        to: String,
        swapped: bool,
    },
}

/// An operation with its real-time interval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Call {
    /// Its index in the whole history (for reports).
    pub id: usize,
    pub call: u64,
    /// `None`: the outcome is unknown.
    pub ret: Option<u64>,
    pub op: RegOp,
}

/// Why a register's history is not linearizable.
#[derive(Debug, Clone)]
pub struct Violation {
    /// The longest order found that the register could have followed, at
    /// its end: the last few operations it linearized.
    pub linearized_tail: Vec<Call>,
    /// The register's value after that order.
    pub state: Option<String>,
    /// The operation that could not come next: it returned before any
    /// other order was possible.
    pub stuck: Call,
    /// Every operation not yet linearized that overlaps `stuck` or came
    /// before it: the window that breaks the rule.
    pub window: Vec<Call>,
    /// The search gave up (too many states) rather than proving a violation.
    pub undecided: bool,
}

/// How many (set, state) pairs the search may visit before giving up.
const BUDGET: usize = 500_000;

#[derive(Clone, PartialEq, Eq, Hash)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Bits {
        Bits(vec![0; n.div_ceil(64)])
    }
    fn has(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
    fn with(&self, i: usize) -> Bits {
        let mut b = self.clone();
        b.0[i / 64] |= 1 << (i % 64);
        b
    }
}

/// Values as small numbers (0 is "absent").
struct Interned {
    ids: HashMap<String, u32>,
    names: Vec<Option<String>>,
    observed: HashSet<String>,
}

impl Interned {
    fn id(&mut self, v: Option<&String>) -> u32 {
        let Some(v) = v else { return 0 };
        if !self.observed.contains(v) {
            return 1;
        }
        if let Some(i) = self.ids.get(v) {
            return *i;
        }
        let i = self.names.len() as u32;
        self.names.push(Some(v.clone()));
        self.ids.insert(v.clone(), i);
        i
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Step {
    Read(u32),
    Write(u32),
    Cas(u32, u32, bool),
}

impl Step {
    /// The state after this step from `s`, or `None` if it cannot happen there.
    fn apply(self, s: u32) -> Option<u32> {
        match self {
            Step::Read(v) => (v == s).then_some(s),
            Step::Write(v) => Some(v),
            Step::Cas(from, to, true) => (from == s).then_some(to),
            Step::Cas(from, _, false) => (from != s).then_some(s),
        }
    }
}

struct Frame {
    lin: Bits,
    state: u32,
    /// Linearized determinate operations on this path.
    done: usize,
    cands: Vec<usize>,
    next: usize,
    chosen: Option<usize>,
}

/// Checks one register's history, starting from "absent".
pub fn check(history: &[Call]) -> Result<(), Box<Violation>> {
    // A read of unknown outcome says nothing.
    let mut ops: Vec<Call> = history
        .iter()
        .filter(|c| c.ret.is_some() || !matches!(c.op, RegOp::Read { .. }))
        .cloned()
        .collect();
    ops.sort_by_key(|c| (c.call, c.id));
    let n = ops.len();
    // Values nobody read or swapped from act alike: one value stands for
    // them all, and operations of unknown outcome that do the same are
    // tried one at a time (the earliest called first), which keeps many
    // lost writes from multiplying the orders to try.
    let observed: HashSet<String> = ops
        .iter()
        .filter_map(|c| match &c.op {
            RegOp::Read { value } => value.clone(),
            RegOp::Cas { from, .. } => Some(from.clone()),
            RegOp::Write { .. } => None,
        })
        .collect();
    let mut values = Interned {
        ids: HashMap::new(),
        names: vec![None, Some("(a value nobody read)".into())],
        observed,
    };
    let steps: Vec<Step> = ops
        .iter()
        .map(|c| match &c.op {
            RegOp::Read { value } => Step::Read(values.id(value.as_ref())),
            RegOp::Write { value } => Step::Write(values.id(Some(value))),
            RegOp::Cas { from, to, swapped } => Step::Cas(
                values.id(Some(from)),
                values.id(Some(to)),
                *swapped || c.ret.is_none(),
            ),
        })
        .collect();
    let ret = |i: usize| ops[i].ret.unwrap_or(u64::MAX);
    let required = ops.iter().filter(|c| c.ret.is_some()).count();
    let candidates = |lin: &Bits| -> Vec<usize> {
        // Whatever is not linearized yet and was called no later than
        // the first return among those may come next.
        let horizon = (0..n)
            .filter(|i| !lin.has(*i))
            .map(ret)
            .min()
            .unwrap_or(u64::MAX);
        let mut c: Vec<usize> = (0..n)
            .filter(|i| !lin.has(*i) && ops[*i].call <= horizon)
            .collect();
        // Operations that must happen first, those that may never last.
        c.sort_by_key(|i| (ops[*i].ret.is_none(), ret(*i), ops[*i].call));
        let mut alike = HashSet::new();
        c.retain(|i| ops[*i].ret.is_some() || alike.insert(steps[*i]));
        c
    };
    let root = Bits::new(n);
    let mut stack = vec![Frame {
        cands: candidates(&root),
        lin: root,
        state: 0,
        done: 0,
        next: 0,
        chosen: None,
    }];
    let mut seen: HashSet<(Bits, u32)> = HashSet::new();
    let mut best: (usize, Vec<usize>, u32, Bits) = (0, Vec::new(), 0, Bits::new(n));
    let mut undecided = false;
    while let Some(top) = stack.last() {
        if top.done == required {
            return Ok(());
        }
        if top.done > best.0 {
            best = (
                top.done,
                stack.iter().filter_map(|f| f.chosen).collect(),
                top.state,
                top.lin.clone(),
            );
        }
        let top = stack.last_mut().expect("a frame");
        let Some(&i) = top.cands.get(top.next) else {
            stack.pop();
            continue;
        };
        top.next += 1;
        let Some(state) = steps[i].apply(top.state) else {
            continue;
        };
        let lin = top.lin.with(i);
        if !seen.insert((lin.clone(), state)) {
            continue;
        }
        if seen.len() > BUDGET {
            undecided = true;
            break;
        }
        let done = top.done + usize::from(ops[i].ret.is_some());
        stack.push(Frame {
            cands: candidates(&lin),
            lin,
            state,
            done,
            next: 0,
            chosen: Some(i),
        });
    }
    let (_, path, state, lin) = best;
    let stuck = (0..n)
        .filter(|i| !lin.has(*i) && ops[*i].ret.is_some())
        .min_by_key(|i| ret(*i))
        .expect("a required operation is left when the search fails");
    let window = (0..n)
        .filter(|i| !lin.has(*i) && ops[*i].call <= ret(stuck))
        .map(|i| ops[i].clone())
        .collect();
    Err(Box::new(Violation {
        linearized_tail: path[path.len().saturating_sub(4)..]
            .iter()
            .map(|i| ops[*i].clone())
            .collect(),
        state: values.names[state as usize].clone(),
        stuck: ops[stuck].clone(),
        window,
        undecided,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(id: usize, call: u64, ret: Option<u64>, op: RegOp) -> Call {
        Call { id, call, ret, op }
    }
    fn read(v: Option<&str>) -> RegOp {
        RegOp::Read {
            value: v.map(str::to_string),
        }
    }
    fn write(v: &str) -> RegOp {
        RegOp::Write {
            value: v.to_string(),
        }
    }
    fn cas(from: &str, to: &str, swapped: bool) -> RegOp {
        RegOp::Cas {
            from: from.to_string(),
            to: to.to_string(),
            swapped,
        }
    }

    #[test]
    fn a_sequential_history_of_writes_reads_and_swaps_is_linearizable() {
        let h = vec![
            op(0, 0, Some(1), read(None)),
            op(1, 2, Some(3), write("a")),
            op(2, 4, Some(5), read(Some("a"))),
            op(3, 6, Some(7), cas("a", "b", true)),
            op(4, 8, Some(9), cas("a", "c", false)),
            op(5, 10, Some(11), read(Some("b"))),
        ];
        assert!(check(&h).is_ok());
    }

    #[test]
    fn overlapping_operations_may_take_effect_in_either_order() {
        // The read overlaps the write: it may see the old or the new value.
        for seen in [None, Some("a")] {
            let h = vec![
                op(0, 0, Some(10), write("a")),
                op(1, 5, Some(6), read(seen)),
            ];
            assert!(check(&h).is_ok(), "{seen:?}");
        }
    }

    #[test]
    fn a_stale_read_after_an_acknowledged_write_is_a_violation_shown_with_its_window() {
        let h = vec![
            op(0, 0, Some(1), write("a")),
            op(1, 2, Some(3), write("b")),
            op(2, 4, Some(5), read(Some("a"))),
            op(3, 6, Some(7), read(Some("b"))),
        ];
        let v = check(&h).expect_err("the read of a after b was acknowledged");
        assert_eq!(v.stuck.id, 2, "{v:?}");
        assert!(!v.undecided);
        assert_eq!(v.state.as_deref(), Some("b"));
        assert!(v.window.iter().any(|c| c.id == 2));
        assert!(v.linearized_tail.iter().any(|c| c.id == 1));
    }

    #[test]
    fn a_lost_acknowledged_write_is_a_violation() {
        let h = vec![op(0, 0, Some(1), write("a")), op(1, 2, Some(3), read(None))];
        assert!(check(&h).is_err());
    }

    #[test]
    fn a_write_of_unknown_outcome_may_land_late_or_never() {
        let late = vec![
            op(0, 0, None, write("a")),
            op(1, 2, Some(3), read(None)),
            op(2, 4, Some(5), read(Some("a"))),
        ];
        assert!(check(&late).is_ok());
        let never = vec![op(0, 0, None, write("a")), op(1, 2, Some(3), read(None))];
        assert!(check(&never).is_ok());
        // But not before it was called.
        let early = vec![
            op(0, 0, Some(1), read(Some("a"))),
            op(1, 2, None, write("a")),
        ];
        assert!(check(&early).is_err());
    }

    #[test]
    fn two_swaps_from_the_same_value_cannot_both_succeed() {
        let h = vec![
            op(0, 0, Some(1), write("a")),
            op(1, 2, Some(5), cas("a", "b", true)),
            op(2, 3, Some(6), cas("a", "c", true)),
        ];
        assert!(check(&h).is_err());
        // One of them failing is fine, whichever.
        let h = vec![
            op(0, 0, Some(1), write("a")),
            op(1, 2, Some(5), cas("a", "b", true)),
            op(2, 3, Some(6), cas("a", "c", false)),
            op(3, 7, Some(8), read(Some("b"))),
        ];
        assert!(check(&h).is_ok());
    }

    #[test]
    fn a_failed_swap_needs_another_value_in_the_register() {
        let h = vec![
            op(0, 0, Some(1), write("a")),
            op(1, 2, Some(3), cas("a", "b", false)),
        ];
        assert!(check(&h).is_err());
    }

    #[test]
    fn hundreds_of_writes_of_unknown_outcome_do_not_multiply_the_search() {
        // Every write's answer lost, some read back, some never: the search
        // must still end (without the budget) and find the order.
        let mut h = Vec::new();
        for i in 0..300u64 {
            h.push(op(h.len(), i * 10, None, write(&format!("w{i}"))));
            if i % 7 == 0 {
                h.push(op(
                    h.len(),
                    i * 10 + 5,
                    Some(i * 10 + 6),
                    read(Some(&format!("w{i}"))),
                ));
            }
            h.push(op(
                h.len(),
                i * 10 + 7,
                Some(i * 10 + 8),
                cas("nobody", "x", false),
            ));
        }
        let r = check(&h);
        assert!(r.is_ok(), "{:?}", r.err());
        // And a read of a value from before an acknowledged overwrite is
        // still found out among them.
        h.push(op(h.len(), 4000, Some(4001), write("last")));
        h.push(op(h.len(), 4002, Some(4003), read(Some("w7"))));
        let v = check(&h).expect_err("w7 was overwritten by an acknowledged write");
        assert!(!v.undecided, "{v:?}");
    }

    #[test]
    fn many_concurrent_clients_are_checked_quickly() {
        // 8 clients, 400 operations each overlapping its neighbours: a
        // linearizable history (each write then a read of it by the same
        // client, concurrent with the others').
        let mut h = Vec::new();
        let mut t = 0;
        for i in 0..400usize {
            let v = format!("v{i}");
            h.push(op(h.len(), t, Some(t + 3), write(&v)));
            h.push(op(h.len(), t + 4, Some(t + 5), read(Some(&v))));
            h.push(op(h.len(), t + 1, None, write(&format!("lost{i}"))));
            t += 6;
        }
        let r = check(&h);
        assert!(r.is_ok(), "{:?}", r.err());
    }
}
