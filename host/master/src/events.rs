//! The cluster event stream (`GET /api/wasmos/v1/events`, server-sent
//! events). Events are made from committed log entries, so a client sees
//! only what is durable.

use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::broadcast;
use wasmos_state::{Command, Response, State, StatusOutcome};

use crate::views::TaskView;

/// One event: its type (the SSE `event:` field) and its data.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub data: Value,
}

/// Fans events out to every connected client. A client that falls more
/// than the buffer behind is told it lagged and should re-read the state.
#[derive(Debug, Clone)]
pub struct EventHub {
    tx: broadcast::Sender<Event>,
}

impl Default for EventHub {
    fn default() -> Self {
        let (tx, _) = broadcast::channel(4096);
        EventHub { tx }
    }
}

impl EventHub {
    pub fn publish(&self, e: Event) {
        // No subscribers is fine.
        let _ = self.tx.send(e);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}

/// The events a committed command makes, read against the state after it.
pub fn events_for(cmd: &Command, resp: &Response, state: &State) -> Vec<Event> {
    let task = |id: &wasmos_core::TaskId| {
        state.tasks.get(id).map(|t| Event {
            kind: "task_updated",
            data: serde_json::to_value(TaskView::new(t, state)).unwrap_or(Value::Null),
        })
    };
    match (cmd, resp) {
        (Command::LaunchTasks { .. }, Response::TasksLaunched { accepted, .. }) => {
            accepted.iter().filter_map(task).collect()
        }
        (
            Command::StatusUpdate { status },
            Response::Status {
                outcome: StatusOutcome::Applied,
            },
        ) => task(&status.task_id).into_iter().collect(),
        (Command::RegisterAgent { info, .. }, Response::AgentRegistered { agent_id, new }) => {
            vec![Event {
                kind: if *new {
                    "agent_added"
                } else {
                    "agent_reregistered"
                },
                data: json!({ "id": agent_id, "hostname": info.hostname }),
            }]
        }
        (Command::SetAgentState { agent_id, state: s }, Response::Ok) => vec![Event {
            kind: "agent_updated",
            data: json!({ "id": agent_id, "state": s }),
        }],
        (
            Command::RegisterFramework {
                framework_id, info, ..
            },
            Response::Ok,
        ) => vec![Event {
            kind: "framework_added",
            data: json!({ "id": framework_id, "name": info.name }),
        }],
        (Command::RemoveFramework { framework_id, .. }, Response::Ok) => vec![Event {
            kind: "framework_removed",
            data: json!({ "id": framework_id }),
        }],
        (Command::InstallPlugin { record }, Response::Ok) => vec![Event {
            kind: "plugin_installed",
            data: json!({ "name": record.manifest.name, "version": record.manifest.version, "digest": record.digest }),
        }],
        (Command::RemovePlugin { name }, Response::Ok) => vec![Event {
            kind: "plugin_removed",
            data: json!({ "name": name }),
        }],
        (Command::RollbackPlugin { name }, Response::Ok) => vec![Event {
            kind: "plugin_rolled_back",
            data: json!({ "name": name }),
        }],
        (Command::ConfigurePlugin { name, .. }, Response::Ok) => vec![Event {
            kind: "plugin_configured",
            data: json!({ "name": name }),
        }],
        (Command::BeginTerm { term, leader, .. }, Response::Ok) => vec![Event {
            kind: "leader_elected",
            data: json!({ "term": term, "master_id": leader.master_id, "address": leader.address }),
        }],
        _ => Vec::new(),
    }
}
