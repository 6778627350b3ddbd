//! The history of a run: every request the clients made with its call and
//! return times (nanoseconds from the run's start) and what they learned,
//! every task state an observer saw, every fault the nemesis did.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::linear::RegOp;
use crate::nemesis::Applied;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum Event {
    /// An operation on register `key`; `ret` is `None` when its outcome is
    /// unknown (then `gave_up` says when the client stopped waiting, and
    /// `error` why).
    Register {
        client: usize,
        key: String,
        call: u64,
        ret: Option<u64>,
        gave_up: Option<u64>,
        #[serde(flatten)]
        op: RegOp,
        error: Option<String>,
    },
    /// A task submitted to `exec`: `acked` once a 201 (or a 409 naming a
    /// submission of ours that went through) came back.
    Submit {
        client: usize,
        task: String,
        call: u64,
        ret: u64,
        acked: bool,
        answer: String,
    },
    /// A change to a Marathon app: what the client asked for (`want`:
    /// the definition it leaves, `None` for a delete) and what came of it.
    AppChange {
        client: usize,
        app: String,
        op: crate::marathon::Op,
        call: u64,
        ret: u64,
        outcome: crate::marathon::Outcome,
        want: Option<crate::marathon::AppWant>,
        answer: String,
    },
    /// A valid request a master refused outright (4xx): nothing happened.
    Refused {
        client: usize,
        at: u64,
        request: String,
        answer: String,
    },
    /// A task's state as a client read it from the masters.
    TaskState {
        at: u64,
        task: String,
        state: String,
    },
    /// The nemesis started (`end: false`) or ended a fault.
    Nemesis {
        at: u64,
        end: bool,
        applied: Applied,
    },
}

/// Where clients record; cloned into each.
#[derive(Clone)]
pub struct Recorder {
    start: Instant,
    events: Arc<Mutex<Vec<Event>>>,
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder {
            start: Instant::now(),
            events: Arc::default(),
        }
    }

    /// Nanoseconds since the run started.
    pub fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    pub fn push(&self, e: Event) {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(e);
    }

    pub fn events(&self) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}
