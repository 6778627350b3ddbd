use super::*;
use wasmos_core::{CommandSpec, Source};

fn agent_info() -> AgentInfo {
    AgentInfo {
        hostname: "h1".into(),
        endpoint: "http://127.0.0.1:5051".into(),
        resources: "cpus:2;mem:1024".parse().unwrap(),
        reserved: Default::default(),
        attributes: Default::default(),
        boot_id: "b".into(),
        version: "0".into(),
    }
}

fn fw() -> FrameworkId {
    FrameworkId::new("exec").unwrap()
}

fn spec(id: &str) -> TaskSpec {
    TaskSpec::shell(
        TaskId::new(id).unwrap(),
        "true",
        Resources::cpus_mem(0.5, 64.0).unwrap(),
    )
}

fn uuid(n: u128) -> uuid::Uuid {
    uuid::Uuid::from_u128(n)
}

fn status(id: &str, state: TaskState, n: u128) -> TaskStatus {
    TaskStatus {
        task_id: TaskId::new(id).unwrap(),
        state,
        agent_id: None,
        source: Source::Agent,
        reason: None,
        message: None,
        exit_code: None,
        signal: None,
        healthy: None,
        ready: None,
        timestamp: 1.0,
        uuid: uuid(n),
        data: None,
        executor_id: None,
    }
}

/// A state with one agent, one framework, and task `t1` STAGING.
fn with_task() -> (State, AgentId) {
    let mut s = State::default();
    s.apply(Command::BeginTerm {
        term: 1,
        leader: LeaderInfo {
            master_id: "m".into(),
            address: "http://m".into(),
            term: 1,
            plain_address: None,
        },
        cluster_id: "abcd-ef".into(),
    });
    let Response::AgentRegistered { agent_id, .. } = s.apply(Command::RegisterAgent {
        agent_id: None,
        info: agent_info(),
        principal: None,
        now: 1.0,
    }) else {
        panic!("agent not registered")
    };
    s.apply(Command::RegisterFramework {
        framework_id: fw(),
        info: FrameworkInfo::plugin("exec", "*"),
        now: 1.0,
    });
    let r = s.apply(Command::LaunchTasks {
        framework_id: fw(),
        agent_id: agent_id.clone(),
        tasks: vec![spec("t1")],
        staging_uuids: vec![uuid(100)],
        now: 2.0,
    });
    assert!(matches!(r, Response::TasksLaunched { ref rejected, .. } if rejected.is_empty()));
    (s, agent_id)
}

#[test]
fn agent_ids_derive_from_the_cluster_id_and_never_repeat() {
    let (mut s, first) = with_task();
    assert_eq!(first.as_str(), "abcd-S0");
    let Response::AgentRegistered { agent_id, new } = s.apply(Command::RegisterAgent {
        agent_id: None,
        info: agent_info(),
        principal: None,
        now: 3.0,
    }) else {
        panic!()
    };
    assert!(new);
    assert_eq!(agent_id.as_str(), "abcd-S1");
    let again = s.apply(Command::RegisterAgent {
        agent_id: Some(first.clone()),
        info: agent_info(),
        principal: None,
        now: 4.0,
    });
    assert_eq!(
        again,
        Response::AgentRegistered {
            agent_id: first.clone(),
            new: false
        }
    );
    assert_eq!(s.agents[&first].reregistered_at, Some(4.0));
}

#[test]
fn an_agent_registered_with_a_certificate_cannot_be_claimed_by_another() {
    let mut s = State::default();
    let register = |s: &mut State, id: Option<AgentId>, who: Option<&str>| {
        s.apply(Command::RegisterAgent {
            agent_id: id,
            info: agent_info(),
            principal: who.map(str::to_string),
            now: 1.0,
        })
    };
    let Response::AgentRegistered { agent_id, .. } = register(&mut s, None, Some("cert-a")) else {
        panic!()
    };
    assert_eq!(s.agents[&agent_id].principal.as_deref(), Some("cert-a"));
    // Another agent's certificate, or none, claiming that id: refused, unchanged.
    for who in [Some("cert-b"), None] {
        let r = register(&mut s, Some(agent_id.clone()), who);
        assert!(
            matches!(&r, Response::Rejected { reason } if reason.contains("another certificate")),
            "{who:?}: {r:?}"
        );
        assert_eq!(s.agents[&agent_id].principal.as_deref(), Some("cert-a"));
        assert_eq!(s.agents[&agent_id].reregistered_at, None);
    }
    // The same certificate re-registers.
    assert!(matches!(
        register(&mut s, Some(agent_id.clone()), Some("cert-a")),
        Response::AgentRegistered { new: false, .. }
    ));
}

#[test]
fn launched_tasks_start_staging_and_use_their_agents_resources() {
    let (s, agent) = with_task();
    assert_eq!(
        s.tasks[&TaskId::new("t1").unwrap()].state(),
        TaskState::Staging
    );
    assert_eq!(
        s.used_by_agent()[&agent],
        Resources::cpus_mem(0.5, 64.0).unwrap()
    );
}

#[test]
fn duplicate_task_ids_are_rejected_without_touching_the_first() {
    let (mut s, agent) = with_task();
    let before = s.tasks.clone();
    let r = s.apply(Command::LaunchTasks {
        framework_id: fw(),
        agent_id: agent,
        tasks: vec![spec("t1")],
        staging_uuids: vec![uuid(101)],
        now: 3.0,
    });
    let Response::TasksLaunched { accepted, rejected } = r else {
        panic!()
    };
    assert!(accepted.is_empty());
    assert_eq!(rejected.len(), 1);
    assert_eq!(s.tasks, before);
}

#[test]
fn launch_on_an_unknown_agent_or_framework_changes_nothing() {
    let (mut s, agent) = with_task();
    let before = s.clone();
    let r = s.apply(Command::LaunchTasks {
        framework_id: FrameworkId::new("nope").unwrap(),
        agent_id: agent,
        tasks: vec![spec("t2")],
        staging_uuids: vec![uuid(5)],
        now: 3.0,
    });
    assert!(matches!(r, Response::Rejected { .. }));
    let r = s.apply(Command::LaunchTasks {
        framework_id: fw(),
        agent_id: AgentId::new("ghost").unwrap(),
        tasks: vec![spec("t2")],
        staging_uuids: vec![uuid(5)],
        now: 3.0,
    });
    assert!(matches!(r, Response::Rejected { .. }));
    assert_eq!(s, before);
}

#[test]
fn a_retried_status_update_is_applied_once() {
    let (mut s, _) = with_task();
    let up = Command::StatusUpdate {
        status: status("t1", TaskState::Running, 1),
    };
    assert_eq!(
        s.apply(up.clone()),
        Response::Status {
            outcome: StatusOutcome::Applied
        }
    );
    let after_first = s.clone();
    assert_eq!(
        s.apply(up),
        Response::Status {
            outcome: StatusOutcome::Duplicate
        }
    );
    assert_eq!(s, after_first);
    let t = &s.tasks[&TaskId::new("t1").unwrap()];
    assert_eq!(t.pending.len(), 1, "queued once for the framework");
}

#[test]
fn a_returning_agents_tasks_are_live_again_only_in_the_state_last_seen() {
    let (mut s, agent) = with_task();
    let id = |n: &str| TaskId::new(n).unwrap();
    let r = s.apply(Command::LaunchTasks {
        framework_id: fw(),
        agent_id: agent.clone(),
        tasks: vec![spec("t2"), spec("t3")],
        staging_uuids: vec![uuid(101), uuid(102)],
        now: 2.0,
    });
    assert!(matches!(r, Response::TasksLaunched { ref rejected, .. } if rejected.is_empty()));
    // t1 was seen RUNNING, t2 STARTING, t3 only STAGING; then the agent fell silent.
    for (n, (task, state)) in [
        ("t1", TaskState::Starting),
        ("t1", TaskState::Running),
        ("t2", TaskState::Starting),
    ]
    .into_iter()
    .enumerate()
    {
        s.apply(Command::StatusUpdate {
            status: status(task, state, n as u128 + 1),
        });
    }
    for (n, task) in ["t1", "t2", "t3"].into_iter().enumerate() {
        let mut st = status(task, TaskState::Unreachable, n as u128 + 10);
        st.source = Source::Master;
        s.apply(Command::StatusUpdate { status: st });
    }
    assert_eq!(
        s.tasks[&id("t2")].state_before_unreachable(),
        Some(TaskState::Starting)
    );
    // Back, the agent reports all three RUNNING: t2 and t3 have STARTING
    // and RUNNING updates on their way, so only t1 is live again now.
    let reported = ["t1", "t2", "t3"].map(|t| (id(t), TaskState::Running));
    assert_eq!(
        s.tasks_back_on(&agent, reported),
        vec![(id("t1"), TaskState::Running)]
    );
    // A task reported in the state last seen is live again in that state,
    // whatever it is; one that ended is not (its update says how).
    let reported = [
        (id("t2"), TaskState::Starting),
        (id("t3"), TaskState::Finished),
    ];
    assert_eq!(
        s.tasks_back_on(&agent, reported.clone()),
        vec![(id("t2"), TaskState::Starting)]
    );
    // Only tasks of that agent, and only unreachable ones.
    let other = AgentId::new("other").unwrap();
    assert!(s.tasks_back_on(&other, reported).is_empty());
    let running = status("t1", TaskState::Running, 20);
    s.apply(Command::StatusUpdate { status: running });
    assert!(
        s.tasks_back_on(&agent, [(id("t1"), TaskState::Running)])
            .is_empty()
    );
}

#[test]
fn tasks_a_returning_agent_does_not_know_end_dropped_if_they_never_started_and_gone_if_they_did() {
    let (mut s, agent) = with_task();
    let id = |n: &str| TaskId::new(n).unwrap();
    s.apply(Command::LaunchTasks {
        framework_id: fw(),
        agent_id: agent.clone(),
        tasks: vec![spec("t2"), spec("t3"), spec("t4")],
        staging_uuids: vec![uuid(101), uuid(102), uuid(103)],
        now: 2.0,
    });
    // t1 started; t2 was launched while the agent was away and never left
    // STAGING; t3 is STAGING still (its launch goes again); t4 started too
    // and the agent reports it.
    for (n, (task, state)) in [("t1", TaskState::Running), ("t4", TaskState::Running)]
        .into_iter()
        .enumerate()
    {
        s.apply(Command::StatusUpdate {
            status: status(task, state, n as u128 + 1),
        });
    }
    for (n, task) in ["t1", "t2", "t4"].into_iter().enumerate() {
        s.apply(Command::StatusUpdate {
            status: status(task, TaskState::Unreachable, n as u128 + 10),
        });
    }
    let reported = |t: &TaskId| t.as_str() == "t4";
    assert_eq!(
        s.missing_on_return(&agent, reported),
        vec![
            (id("t1"), TaskState::Gone, Reason::ReasonAgentRestarted),
            (id("t2"), TaskState::Dropped, Reason::ReasonTaskUnknown),
        ]
    );
    // A framework that is not partition aware hears TASK_LOST for both.
    s.frameworks.get_mut(&fw()).unwrap().info.partition_aware = false;
    let states: Vec<TaskState> = s
        .missing_on_return(&agent, reported)
        .into_iter()
        .map(|(_, st, _)| st)
        .collect();
    assert_eq!(states, vec![TaskState::Lost, TaskState::Lost]);
}

#[test]
fn a_machine_that_rebooted_replaces_its_earlier_agent_and_keeps_its_certificate() {
    let mut s = State::default();
    let register = |s: &mut State, boot: &str, principal: Option<&str>, endpoint: &str| {
        let info = AgentInfo {
            boot_id: boot.into(),
            endpoint: endpoint.into(),
            ..agent_info()
        };
        let Response::AgentRegistered { agent_id, .. } = s.apply(Command::RegisterAgent {
            agent_id: None,
            info,
            principal: principal.map(str::to_string),
            now: 1.0,
        }) else {
            panic!("agent not registered")
        };
        agent_id
    };
    let info = |boot: &str, endpoint: &str| AgentInfo {
        boot_id: boot.into(),
        endpoint: endpoint.into(),
        ..agent_info()
    };
    let first = register(&mut s, "boot-1", Some("cert-a"), "https://h1:5051");
    let other = register(&mut s, "boot-1", Some("cert-b"), "https://h1:5052");
    // The same certificate on a new boot: the same machine, rebooted.
    assert_eq!(
        s.replaced_by(&info("boot-2", "https://h1:5051/"), Some("cert-a")),
        vec![first.clone()]
    );
    // On the same boot its tasks may still run; another certificate is
    // another machine (whatever its endpoint).
    assert!(
        s.replaced_by(&info("boot-1", "https://h1:5051"), Some("cert-a"))
            .is_empty()
    );
    assert!(
        s.replaced_by(&info("boot-2", "https://h1:5051"), Some("cert-c"))
            .is_empty()
    );
    // Without certificates: the same hostname and endpoint.
    let plain = register(&mut s, "boot-1", None, "http://h1:6051");
    assert_eq!(
        s.replaced_by(&info("boot-2", "http://h1:6051"), None),
        vec![plain]
    );
    assert!(
        s.replaced_by(&info("boot-2", "http://h1:6052"), None)
            .is_empty()
    );
    // The rebooted machine serves under a new id with its certificate:
    // marking the old id gone does not revoke it; marking the new one
    // gone does.
    let second = register(&mut s, "boot-2", Some("cert-a"), "https://h1:5051");
    s.apply(Command::SetAgentState {
        agent_id: first.clone(),
        state: AgentState::Gone,
    });
    assert!(!s.revoked_agents.contains_key("cert-a"));
    assert!(
        s.replaced_by(&info("boot-3", "https://h1:5051"), Some("cert-a"))
            .iter()
            .all(|a| *a == second),
        "a gone agent is never replaced again"
    );
    s.apply(Command::SetAgentState {
        agent_id: second.clone(),
        state: AgentState::Gone,
    });
    assert_eq!(s.revoked_agents.get("cert-a"), Some(&second));
    assert_ne!(first, other);
}

#[test]
fn updates_after_a_terminal_state_are_dropped() {
    let (mut s, _) = with_task();
    s.apply(Command::StatusUpdate {
        status: status("t1", TaskState::Finished, 1),
    });
    let r = s.apply(Command::StatusUpdate {
        status: status("t1", TaskState::Running, 2),
    });
    assert_eq!(
        r,
        Response::Status {
            outcome: StatusOutcome::AlreadyTerminal
        }
    );
    assert_eq!(
        s.tasks[&TaskId::new("t1").unwrap()].state(),
        TaskState::Finished
    );
}

#[test]
fn framework_acknowledgements_go_in_order_and_retire_terminal_tasks() {
    let (mut s, agent) = with_task();
    let id = TaskId::new("t1").unwrap();
    s.apply(Command::StatusUpdate {
        status: status("t1", TaskState::Running, 1),
    });
    s.apply(Command::StatusUpdate {
        status: status("t1", TaskState::Finished, 2),
    });
    // Out of order: refused.
    let r = s.apply(Command::AcknowledgeStatus {
        task_id: id.clone(),
        uuid: uuid(2),
    });
    assert!(matches!(r, Response::Rejected { .. }));
    assert_eq!(
        s.apply(Command::AcknowledgeStatus {
            task_id: id.clone(),
            uuid: uuid(1)
        }),
        Response::Ok
    );
    assert!(s.completed.is_empty(), "FINISHED not yet acknowledged");
    s.apply(Command::AcknowledgeStatus {
        task_id: id.clone(),
        uuid: uuid(2),
    });
    assert_eq!(s.completed, VecDeque::from([id]));
    assert!(!s.used_by_agent().contains_key(&agent), "resources freed");
}

#[test]
fn completed_tasks_beyond_the_limit_are_forgotten_oldest_first() {
    let (mut s, agent) = with_task();
    for i in 0..(MAX_COMPLETED_TASKS as u128 + 3) {
        let id = format!("c{i}");
        s.apply(Command::LaunchTasks {
            framework_id: fw(),
            agent_id: agent.clone(),
            tasks: vec![spec(&id)],
            staging_uuids: vec![uuid(1_000_000 + i)],
            now: 3.0,
        });
        s.apply(Command::StatusUpdate {
            status: status(&id, TaskState::Finished, 2_000_000 + i),
        });
        s.apply(Command::AcknowledgeStatus {
            task_id: TaskId::new(id).unwrap(),
            uuid: uuid(2_000_000 + i),
        });
    }
    assert_eq!(s.completed.len(), MAX_COMPLETED_TASKS);
    assert!(!s.tasks.contains_key("c0"));
    assert!(s.tasks.contains_key("c3"));
    assert!(s.tasks.contains_key("t1"), "live tasks are never pruned");
}

#[test]
fn a_removed_framework_stays_removed_and_cannot_register_again() {
    let (mut s, _) = with_task();
    let info = s.frameworks[&fw()].info.clone();
    assert_eq!(
        s.apply(Command::RemoveFramework {
            framework_id: fw(),
            now: 9.0
        }),
        Response::Ok
    );
    assert_eq!(s.frameworks[&fw()].removed_at, Some(9.0));
    assert!(s.tasks[&TaskId::new("t1").unwrap()].pending.is_empty());
    // Its task's last update is recorded and retires it: nobody will
    // acknowledge it.
    let mut killed = status("t1", TaskState::Killed, 50);
    killed.agent_id = s.tasks[&TaskId::new("t1").unwrap()].statuses[0]
        .agent_id
        .clone();
    s.apply(Command::StatusUpdate { status: killed });
    let t = &s.tasks[&TaskId::new("t1").unwrap()];
    assert_eq!(t.state(), TaskState::Killed);
    assert!(t.pending.is_empty());
    assert!(s.completed.contains(&TaskId::new("t1").unwrap()));
    let again = s.apply(Command::RegisterFramework {
        framework_id: fw(),
        info,
        now: 10.0,
    });
    assert!(matches!(again, Response::Rejected { .. }), "{again:?}");
    assert!(matches!(
        s.apply(Command::RemoveFramework {
            framework_id: fw(),
            now: 11.0
        }),
        Response::Rejected { .. }
    ));
    assert_eq!(s.frameworks[&fw()].removed_at, Some(9.0));
}

fn plugin(name: &str, version: &str, kind: wasmos_core::PluginKind, digest: &str) -> Command {
    Command::InstallPlugin {
        record: Box::new(PluginRecord {
            manifest: PluginManifest {
                name: name.into(),
                version: version.into(),
                kind,
                world_version: "0.5.0".into(),
                description: String::new(),
                capabilities: vec![],
                config: Default::default(),
                http_prefixes: vec![],
                event_streams: vec![],
                operators: vec![],
                tick_ms: None,
            },
            digest: digest.into(),
            component: wasmos_core::bytes::Blob(vec![0, 97, 115, 109]),
            config: Default::default(),
            installed_at: 1.0,
            source: "upload".into(),
            signed_by: Some("ops".into()),
        }),
    }
}

#[test]
fn an_upgrade_keeps_the_version_it_replaced_and_rollback_swaps_them() {
    use wasmos_core::PluginKind::{Framework, Placement};
    let mut s = State::default();
    let version = |s: &State| s.plugins["q"].manifest.version.clone();
    let rejected = |r: Response| match r {
        Response::Rejected { reason } => reason,
        other => panic!("not rejected: {other:?}"),
    };
    assert_eq!(
        s.apply(plugin("q", "1", Framework, "sha256:01")),
        Response::Ok
    );
    let why = rejected(s.apply(Command::RollbackPlugin { name: "q".into() }));
    assert!(why.contains("no earlier version"), "{why}");
    // The same version again is no upgrade: nothing to roll back to.
    assert_eq!(
        s.apply(plugin("q", "1", Framework, "sha256:01")),
        Response::Ok
    );
    assert!(s.previous_plugins.is_empty());
    assert_eq!(
        s.apply(plugin("q", "2", Framework, "sha256:02")),
        Response::Ok
    );
    assert_eq!(s.previous_plugins["q"].manifest.version, "1");
    // Another world under the same name is refused, and changes nothing.
    let why = rejected(s.apply(plugin("q", "3", Placement, "sha256:03")));
    assert!(why.contains("is a framework plugin"), "{why}");
    assert_eq!(version(&s), "2");
    assert_eq!(
        s.apply(Command::RollbackPlugin { name: "q".into() }),
        Response::Ok
    );
    assert_eq!(version(&s), "1");
    assert_eq!(s.previous_plugins["q"].manifest.version, "2");
    assert_eq!(
        s.apply(Command::RollbackPlugin { name: "q".into() }),
        Response::Ok
    );
    assert_eq!(version(&s), "2");
    let why = rejected(s.apply(Command::RollbackPlugin {
        name: "nope".into(),
    }));
    assert!(why.contains("no plugin named nope"), "{why}");
    assert_eq!(
        s.apply(Command::RemovePlugin { name: "q".into() }),
        Response::Ok
    );
    assert!(
        s.previous_plugins.is_empty(),
        "removal forgets both versions"
    );
}

#[test]
fn oversized_kv_values_are_refused() {
    let (mut s, _) = with_task();
    let r = s.apply(Command::KvSet {
        framework_id: fw(),
        key: "k".into(),
        value: Blob(vec![0; MAX_KV_VALUE + 1]),
    });
    assert!(matches!(r, Response::Rejected { .. }));
    assert!(s.kv.get(&fw()).is_none_or(|ns| ns.is_empty()));
}

#[test]
fn stale_terms_are_refused() {
    let (mut s, _) = with_task();
    let r = s.apply(Command::BeginTerm {
        term: 1,
        leader: LeaderInfo {
            master_id: "old".into(),
            address: "x".into(),
            term: 1,
            plain_address: None,
        },
        cluster_id: "zzz".into(),
    });
    assert!(matches!(r, Response::Rejected { .. }));
    assert_eq!(s.leader.as_ref().unwrap().master_id, "m");
    // The same leader may record its term again (it restarted its duties
    // without losing the raft term); an older term is always refused.
    let term = |n: u64, who: &str| Command::BeginTerm {
        term: n,
        leader: LeaderInfo {
            master_id: who.into(),
            address: "x".into(),
            term: n,
            plain_address: None,
        },
        cluster_id: "zzz".into(),
    };
    assert_eq!(s.apply(term(1, "m")), Response::Ok);
    assert_eq!(s.apply(term(3, "n")), Response::Ok);
    assert!(matches!(s.apply(term(2, "m")), Response::Rejected { .. }));
    assert_eq!(s.term, 3);
    assert_eq!(s.leader.as_ref().unwrap().master_id, "n");
}

#[test]
fn snapshots_round_trip_and_refuse_newer_schemas() {
    let (s, _) = with_task();
    let snap = Snapshot {
        schema_version: SCHEMA_VERSION,
        last_index: 7,
        state: s.clone(),
    };
    let back = Snapshot::decode(&snap.encode()).unwrap();
    assert_eq!(back.state, s);
    assert_eq!(back.last_index, 7);
    let newer = br#"{"schema_version": 99, "last_index": 1, "state": {}}"#;
    assert!(matches!(
        Snapshot::decode(newer),
        Err(SnapshotError::TooNew { found: 99 })
    ));
}

#[test]
fn variables_are_written_with_check_and_set_and_bad_ones_change_nothing() {
    let mut s = State::default();
    let items = |v: &str| BTreeMap::from([("k".to_string(), v.to_string())]);
    let set = |path: &str, v: &str, cas: Option<u64>| Command::VarSet {
        path: path.into(),
        items: items(v),
        cas,
    };
    assert_eq!(
        s.apply(set("app/db", "1", Some(0))),
        Response::Var { modify_index: 1 }
    );
    // cas=0 only creates.
    assert!(matches!(
        s.apply(set("app/db", "2", Some(0))),
        Response::Conflict { .. }
    ));
    // A stale index loses; the current one wins.
    assert!(matches!(
        s.apply(set("app/db", "2", Some(7))),
        Response::Conflict { .. }
    ));
    assert_eq!(
        s.apply(set("app/db", "2", Some(1))),
        Response::Var { modify_index: 2 }
    );
    assert_eq!(s.vars["app/db"].items["k"], "2");
    assert_eq!(s.vars["app/db"].create_index, 1);
    // Bad paths and empty items are refused without a trace.
    for bad in ["", "/x", "a//b", "a/../b", "a b", &"x".repeat(300)] {
        assert!(
            matches!(s.apply(set(bad, "v", None)), Response::Rejected { .. }),
            "{bad:?}"
        );
    }
    assert!(matches!(
        s.apply(Command::VarSet {
            path: "e".into(),
            items: BTreeMap::new(),
            cas: None
        }),
        Response::Rejected { .. }
    ));
    assert_eq!(s.vars.len(), 1);
    assert_eq!(s.vars_index, 2);
    // Deleting checks cas too.
    assert!(matches!(
        s.apply(Command::VarDelete {
            path: "app/db".into(),
            cas: Some(1)
        }),
        Response::Conflict { .. }
    ));
    assert_eq!(
        s.apply(Command::VarDelete {
            path: "app/db".into(),
            cas: Some(2)
        }),
        Response::Var { modify_index: 3 }
    );
    assert!(s.vars.is_empty());
}

fn acl_token(name: &str, hash: &str, management: bool) -> crate::acl::TokenRecord {
    crate::acl::TokenRecord {
        accessor: format!("acc-{name}"),
        secret_hash: hash.into(),
        name: name.into(),
        management,
        policies: vec![],
        created_at: 6.0,
        expires_at: Some(1e12),
        created_by: "test".into(),
        session: false,
        parent: None,
    }
}

/// A master keeps what it derived from the ACLs while their generation
/// stays: every command that changes them must say so.
#[test]
fn every_command_that_changes_the_acls_gives_them_a_new_generation() {
    let (mut s, agent_id) = with_task();
    let mut acl_commands = 0;
    for c in every_command(&agent_id) {
        let (before, generation) = (s.acl.clone(), s.acl.generation.get());
        let says = c.may_change_acl();
        let shown = format!("{c:?}");
        s.apply(c);
        // (The derived comparison ignores the generation.)
        let changed = before != s.acl;
        assert!(
            !changed || says,
            "{shown} changed the ACLs without saying so"
        );
        assert_eq!(s.acl.generation.get() != generation, says, "{shown}");
        acl_commands += usize::from(changed);
    }
    assert!(
        acl_commands >= 9,
        "only {acl_commands} commands changed the ACLs"
    );
}

/// One command of every kind, with the optional parts filled in.
fn every_command(agent_id: &AgentId) -> Vec<Command> {
    let mut rich = spec("t2");
    rich.labels.insert("wasmos.network".into(), "none".into());
    rich.kill_grace_period_ms = Some(3000);
    let mut done = status("t1", TaskState::Finished, 7);
    done.agent_id = Some(agent_id.clone());
    done.reason = Some(wasmos_core::Reason::ReasonCommandExecutorFailed);
    done.message = Some("exited with \"0\"\n".into());
    done.exit_code = Some(0);
    done.healthy = Some(true);
    done.ready = Some(false);
    vec![
        Command::RegisterAgent {
            agent_id: Some(agent_id.clone()),
            info: agent_info(),
            principal: None,
            now: 3.5,
        },
        Command::SetAgentState {
            agent_id: agent_id.clone(),
            state: wasmos_core::AgentState::Unreachable,
        },
        Command::LaunchTasks {
            framework_id: fw(),
            agent_id: agent_id.clone(),
            tasks: vec![rich],
            staging_uuids: vec![uuid(u128::MAX)],
            now: 4.25,
        },
        Command::StatusUpdate { status: done },
        Command::AcknowledgeStatus {
            task_id: TaskId::new("t1").unwrap(),
            uuid: uuid(7),
        },
        Command::KvSet {
            framework_id: fw(),
            key: "apps/\u{e9}".into(),
            value: wasmos_core::bytes::Blob(vec![0, 255, 10]),
        },
        Command::KvDelete {
            framework_id: fw(),
            key: "apps/\u{e9}".into(),
        },
        Command::InstallPlugin {
            record: Box::new(PluginRecord {
                manifest: PluginManifest {
                    name: "p".into(),
                    version: "1.0.0".into(),
                    kind: wasmos_core::PluginKind::Placement,
                    world_version: "0.5.0".into(),
                    description: String::new(),
                    capabilities: vec![],
                    config: [("k".to_string(), "v".to_string())].into(),
                    http_prefixes: vec![],
                    event_streams: vec![],
                    operators: vec!["UNIQUE".into()],
                    tick_ms: None,
                },
                digest: "sha256:00".into(),
                component: wasmos_core::bytes::Blob(vec![0, 97, 115, 109]),
                config: Default::default(),
                installed_at: 5.0,
                source: "oci://r/p:1".into(),
                signed_by: Some("ops".into()),
            }),
        },
        Command::ConfigurePlugin {
            name: "p".into(),
            config: [("k".to_string(), "w".to_string())].into(),
        },
        Command::RollbackPlugin { name: "p".into() },
        Command::RemovePlugin { name: "p".into() },
        Command::VarSet {
            path: "a/b".into(),
            items: [("v".to_string(), "x".repeat(256))].into(),
            cas: Some(0),
        },
        Command::VarSet {
            path: "a/c".into(),
            items: Default::default(),
            cas: None,
        },
        Command::VarDelete {
            path: "a/b".into(),
            cas: None,
        },
        Command::PluginKeySet {
            key: trusted_key("ops", "sha256:aa"),
            bootstrap: true,
        },
        Command::PluginKeyRemove { name: "ops".into() },
        Command::AclBootstrap {
            token: acl_token("root", "sha256:r", true),
        },
        Command::AclTokenCreate {
            token: acl_token("ci", "sha256:c", false),
        },
        Command::AclTokenRevoke {
            accessor: "acc-ci".into(),
        },
        Command::AclPolicySet {
            policy: crate::acl::Policy {
                name: "readers".into(),
                description: "read \u{e9}".into(),
                rules: vec![crate::acl::Rule {
                    area: crate::acl::Area::Apps,
                    prefix: "/team-a/".into(),
                    access: crate::acl::Access::Read,
                }],
                run_as: vec!["nobody".into()],
            },
        },
        Command::AclUserSet {
            user: crate::acl::UserRecord {
                name: "alice".into(),
                password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
                policies: vec!["readers".into()],
                created_at: 6.5,
            },
        },
        Command::AclUserRemove {
            name: "alice".into(),
        },
        Command::AclPolicyRemove {
            name: "readers".into(),
        },
        Command::RemoveFramework {
            framework_id: fw(),
            now: 6.5,
        },
        Command::RoleWeightsSet {
            weights: [("eng".to_string(), 2.5)].into(),
        },
        Command::RoleQuotasSet {
            quotas: [(
                "eng/batch".to_string(),
                crate::roles::Quota {
                    guarantees: [("cpus".to_string(), 1.0), ("mem".to_string(), 512.0)].into(),
                    limits: [("cpus".to_string(), 4.0)].into(),
                },
            )]
            .into(),
        },
    ]
}

#[test]
fn role_weights_and_quotas_are_set_all_or_nothing() {
    let mut s = State::default();
    let bad = s.apply(Command::RoleWeightsSet {
        weights: [("a".to_string(), 2.0), ("b".to_string(), -1.0)].into(),
    });
    assert!(matches!(bad, Response::Rejected { .. }), "{bad:?}");
    assert!(s.roles.is_empty());
    let bad = s.apply(Command::RoleWeightsSet {
        weights: [("a b".to_string(), 2.0)].into(),
    });
    assert!(matches!(bad, Response::Rejected { .. }));
    assert_eq!(
        s.apply(Command::RoleWeightsSet {
            weights: [("a".to_string(), 2.0)].into(),
        }),
        Response::Ok
    );
    assert_eq!(s.roles["a"].weight, 2.0);
    let too_much = crate::roles::Quota {
        guarantees: [("cpus".to_string(), 3.0)].into(),
        limits: [("cpus".to_string(), 2.0)].into(),
    };
    let bad = s.apply(Command::RoleQuotasSet {
        quotas: [("b".to_string(), too_much)].into(),
    });
    assert!(matches!(bad, Response::Rejected { .. }));
    assert!(!s.roles.contains_key("b"));
    // Back to the defaults: the role is forgotten.
    s.apply(Command::RoleWeightsSet {
        weights: [("a".to_string(), 1.0)].into(),
    });
    assert!(s.roles.is_empty());
}

fn trusted_key(name: &str, fingerprint: &str) -> crate::acl::TrustedKey {
    crate::acl::TrustedKey {
        name: name.into(),
        public_key: "-----BEGIN PUBLIC KEY-----\n...".into(),
        fingerprint: fingerprint.into(),
        added_at: 1.0,
        added_by: "test".into(),
    }
}

#[test]
fn plugin_keys_are_trusted_once_by_name_and_fingerprint_and_the_bootstrap_key_only_once() {
    let mut s = State::default();
    let set = |key, bootstrap| Command::PluginKeySet { key, bootstrap };
    assert_eq!(
        s.apply(set(trusted_key("ops", "sha256:1"), false)),
        Response::Ok
    );
    // The same key under a second name, a second key under the same name,
    // a bad name: refused, nothing changes.
    let before = s.clone();
    for c in [
        set(trusted_key("again", "sha256:1"), false),
        set(trusted_key("ops", "sha256:2"), false),
        set(trusted_key("bad name", "sha256:3"), false),
    ] {
        assert!(matches!(s.apply(c), Response::Rejected { .. }));
    }
    assert_eq!(s, before);
    // The bootstrap key is the operator's key already: left as it is, and
    // never offered again (removing `ops` does not bring it back).
    assert_eq!(
        s.apply(set(trusted_key("bootstrap", "sha256:1"), true)),
        Response::Ok
    );
    assert_eq!(s.acl.plugin_keys.len(), 1);
    assert!(s.acl.plugin_keys_bootstrapped);
    assert_eq!(
        s.apply(Command::PluginKeyRemove { name: "ops".into() }),
        Response::Ok
    );
    assert!(matches!(
        s.apply(set(trusted_key("bootstrap", "sha256:1"), true)),
        Response::Rejected { .. }
    ));
    assert!(s.acl.plugin_keys.is_empty());
    // On a fresh cluster it is added, once.
    let mut fresh = State::default();
    assert_eq!(
        fresh.apply(set(trusted_key("bootstrap", "sha256:9"), true)),
        Response::Ok
    );
    assert_eq!(fresh.acl.plugin_keys["bootstrap"].fingerprint, "sha256:9");
    assert!(matches!(
        s.apply(Command::PluginKeyRemove {
            name: "nobody".into()
        }),
        Response::Rejected { .. }
    ));
}

#[test]
fn commands_responses_and_state_survive_messagepack_and_older_json() {
    use crate::codec::{self, Codec};
    let (mut s, agent_id) = with_task();
    let commands = every_command(&agent_id);
    let mut responses = Vec::new();
    for c in &commands {
        responses.push(s.apply(c.clone()));
    }
    assert!(responses.iter().any(|r| matches!(r, Response::Var { .. })));
    for c in &commands {
        let packed = codec::encode(c).unwrap();
        assert!(packed[0] >= 0x80, "MessagePack maps start at 0x80: {c:?}");
        assert_eq!(&codec::decode::<Command>(&packed).unwrap(), c);
        let json = Codec::Json.encode(c).unwrap();
        assert_eq!(&codec::decode::<Command>(&json).unwrap(), c, "older JSON");
    }
    for r in &responses {
        assert_eq!(
            &codec::decode::<Response>(&codec::encode(r).unwrap()).unwrap(),
            r
        );
    }
    let packed = codec::encode(&s).unwrap();
    assert_eq!(codec::decode::<State>(&packed).unwrap(), s);
    // Options and nil at the top level, as the log store writes them.
    let none: Option<u64> = None;
    assert_eq!(
        codec::decode::<Option<u64>>(&codec::encode(&none).unwrap()).unwrap(),
        None
    );
    assert_eq!(codec::decode::<Option<u64>>(b"null").unwrap(), None);
    // A damaged record is an error, not a default.
    assert!(codec::decode::<State>(&packed[..packed.len() / 2]).is_err());
}

mod acl_rules {
    use crate::acl::{Access, Acl, Area, Grants, Policy, Rule};

    fn rule(area: Area, prefix: &str, access: Access) -> Rule {
        Rule {
            area,
            prefix: prefix.into(),
            access,
        }
    }

    #[test]
    fn nothing_is_allowed_without_a_rule_and_write_includes_read() {
        let g = Grants::default();
        assert!(!g.allows(Area::Tasks, "", Access::Read));
        let g = Grants {
            rules: vec![rule(Area::Apps, "", Access::Write)],
            ..Default::default()
        };
        assert!(g.allows(Area::Apps, "/x", Access::Read));
        assert!(g.allows(Area::Apps, "/x", Access::Write));
        assert!(!g.allows(Area::Jobs, "x", Access::Read));
    }

    #[test]
    fn prefixes_limit_objects_and_a_matching_deny_always_wins() {
        let g = Grants {
            rules: vec![
                rule(Area::Apps, "/team-a/", Access::Write),
                rule(Area::Apps, "", Access::Read),
                rule(Area::Apps, "/team-a/secret", Access::Deny),
            ],
            ..Default::default()
        };
        assert!(g.allows(Area::Apps, "/team-a/web", Access::Write));
        assert!(!g.allows(Area::Apps, "/team-b/web", Access::Write));
        assert!(g.allows(Area::Apps, "/team-b/web", Access::Read));
        assert!(!g.allows(Area::Apps, "/team-a/secret/db", Access::Read));
        assert!(Grants::all().allows(Area::Acl, "", Access::Write));
        // A listing shows all of an area only without a deny in it.
        assert!(!g.whole(Area::Apps, Access::Read));
        assert!(g.some(Area::Apps, Access::Write));
        assert!(!g.some(Area::Jobs, Access::Read));
        let only_a = Grants {
            rules: vec![rule(Area::Apps, "/team-a/", Access::Read)],
            ..Default::default()
        };
        assert!(!only_a.whole(Area::Apps, Access::Read));
        assert!(only_a.some(Area::Apps, Access::Read));
        assert!(!only_a.some(Area::Apps, Access::Write));
        assert!(Grants::all().whole(Area::Apps, Access::Read));
    }

    #[test]
    fn grants_are_the_union_of_known_policies_and_run_as_lists_users() {
        let mut acl = Acl::default();
        acl.policies.insert(
            "a".into(),
            Policy {
                name: "a".into(),
                description: String::new(),
                rules: vec![rule(Area::Vars, "x/", Access::Read)],
                run_as: vec!["nobody".into()],
            },
        );
        let g = acl.grants(false, &["a".into(), "missing".into()]);
        assert!(g.allows(Area::Vars, "x/y", Access::Read));
        assert!(g.may_run_as("nobody"));
        assert!(!g.may_run_as("root"));
    }
}

/// A master keeps a token's principal while the ACLs' generation stays the
/// same: every change to them, and every state read from a snapshot, must
/// show a generation never seen before.
#[test]
fn every_acl_change_and_every_state_read_back_gives_the_acls_a_new_generation() {
    use crate::acl::Policy;
    let mut s = State::default();
    let mut seen = std::collections::HashSet::from([s.acl.generation.get()]);
    let mut changed = |s: &State| assert!(seen.insert(s.acl.generation.get()));
    s.apply(Command::AclPolicySet {
        policy: Policy {
            name: "p".into(),
            description: String::new(),
            rules: vec![],
            run_as: vec![],
        },
    });
    changed(&s);
    // Refused or not, an ACL command moves the generation on.
    s.apply(Command::AclUserRemove {
        name: "nobody".into(),
    });
    changed(&s);
    s.apply(Command::AclPolicyRemove { name: "p".into() });
    changed(&s);
    let before = s.acl.generation.get();
    s.apply(Command::VarSet {
        path: "a".into(),
        items: BTreeMap::from([("k".to_string(), "v".to_string())]),
        cas: None,
    });
    assert_eq!(
        s.acl.generation.get(),
        before,
        "a var write is not an ACL change"
    );
    let back: State = serde_json::from_value(serde_json::to_value(&s).unwrap()).unwrap();
    assert_eq!(back, s, "the generation is not compared");
    changed(&back);
    changed(&State::default());
}

#[test]
fn acl_commands_keep_hashes_refuse_a_second_bootstrap_and_drop_expired_tokens() {
    use crate::acl::TokenRecord;
    let token = |name: &str, hash: &str, created: f64, expires: Option<f64>| TokenRecord {
        accessor: format!("acc-{name}"),
        secret_hash: hash.into(),
        name: name.into(),
        management: false,
        policies: vec![],
        created_at: created,
        expires_at: expires,
        created_by: "test".into(),
        session: false,
        parent: None,
    };
    let mut s = State::default();
    assert_eq!(
        s.apply(Command::AclBootstrap {
            token: token("root", "sha256:1", 1.0, None)
        }),
        Response::Ok
    );
    assert!(matches!(
        s.apply(Command::AclBootstrap {
            token: token("again", "sha256:2", 1.0, None)
        }),
        Response::Rejected { .. }
    ));
    assert_eq!(
        s.apply(Command::AclTokenCreate {
            token: token("short", "sha256:3", 2.0, Some(5.0))
        }),
        Response::Ok
    );
    assert!(s.acl.token("sha256:3", 4.0).is_some());
    assert!(s.acl.token("sha256:3", 6.0).is_none());
    // A bad name is refused; the next creation drops the expired token.
    assert!(matches!(
        s.apply(Command::AclTokenCreate {
            token: token("bad name", "sha256:4", 10.0, None)
        }),
        Response::Rejected { .. }
    ));
    assert_eq!(
        s.apply(Command::AclTokenCreate {
            token: token("later", "sha256:5", 10.0, None)
        }),
        Response::Ok
    );
    assert!(!s.acl.tokens.contains_key("sha256:3"));
    assert_eq!(
        s.apply(Command::AclTokenRevoke {
            accessor: "acc-later".into()
        }),
        Response::Ok
    );
    assert!(matches!(
        s.apply(Command::AclTokenRevoke {
            accessor: "acc-later".into()
        }),
        Response::Rejected { .. }
    ));
}

#[test]
fn sessions_end_with_the_token_or_user_they_were_made_from() {
    use crate::acl::{TokenRecord, UserRecord};
    let session = |accessor: &str, hash: &str, parent: &str| TokenRecord {
        accessor: accessor.into(),
        secret_hash: hash.into(),
        name: "x".into(),
        management: false,
        policies: vec![],
        created_at: 1.0,
        expires_at: Some(100.0),
        created_by: "x".into(),
        session: true,
        parent: Some(parent.into()),
    };
    let mut s = State::default();
    let parent = TokenRecord {
        session: false,
        parent: None,
        name: "ops".into(),
        expires_at: None,
        ..session("acc-ops", "sha256:ops", "")
    };
    let user = UserRecord {
        name: "ann".into(),
        password_hash: "phc".into(),
        policies: vec![],
        created_at: 1.0,
    };
    assert_eq!(
        s.apply(Command::AclUserSet { user: user.clone() }),
        Response::Ok
    );
    for t in [
        parent,
        session("s1", "sha256:s1", "token:acc-ops"),
        // A session made from a session of the token.
        session("s2", "sha256:s2", "token:s1"),
        session("s3", "sha256:s3", "user:ann"),
    ] {
        assert_eq!(s.apply(Command::AclTokenCreate { token: t }), Response::Ok);
    }
    s.apply(Command::AclTokenRevoke {
        accessor: "acc-ops".into(),
    });
    assert!(s.acl.token("sha256:s1", 2.0).is_none());
    assert!(s.acl.token("sha256:s2", 2.0).is_none());
    assert!(s.acl.token("sha256:s3", 2.0).is_some());
    // A new password (or policies) ends the user's sessions.
    s.apply(Command::AclUserSet {
        user: UserRecord {
            password_hash: "other".into(),
            ..user
        },
    });
    assert!(s.acl.token("sha256:s3", 2.0).is_none());
}

#[test]
fn a_principal_keeps_a_bounded_number_of_sessions_and_the_oldest_end_first() {
    use crate::acl::{MAX_SESSIONS_PER_PRINCIPAL, TokenRecord};
    let session = |n: usize, name: &str| TokenRecord {
        accessor: format!("{name}-{n}"),
        secret_hash: format!("sha256:{name}-{n}"),
        name: name.into(),
        management: false,
        policies: vec![],
        created_at: n as f64,
        expires_at: Some(1e9),
        created_by: name.into(),
        session: true,
        parent: Some(format!("user:{name}")),
    };
    let mut s = State::default();
    for n in 0..MAX_SESSIONS_PER_PRINCIPAL + 3 {
        let t = session(n, "ann");
        assert_eq!(s.apply(Command::AclTokenCreate { token: t }), Response::Ok);
    }
    assert_eq!(
        s.apply(Command::AclTokenCreate {
            token: session(0, "bob")
        }),
        Response::Ok
    );
    let live = |s: &State, name: &str| s.acl.tokens.values().filter(|t| t.name == name).count();
    assert_eq!(live(&s, "ann"), MAX_SESSIONS_PER_PRINCIPAL);
    assert_eq!(live(&s, "bob"), 1, "another principal's sessions stay");
    assert!(
        s.acl.token("sha256:ann-2", 1.0).is_none(),
        "the oldest ended"
    );
    assert!(s.acl.token("sha256:ann-3", 1.0).is_some());
}

fn volume(id: &str, role: &str, disk: u64) -> Volume {
    Volume {
        id: id.into(),
        role: role.into(),
        disk: wasmos_core::Scalar::whole(disk),
        container_path: "data".into(),
        principal: None,
        uuid: format!("{:032x}", id.len()),
    }
}

#[test]
fn reservations_take_only_free_unreserved_resources_and_unreserve_only_what_is_unused() {
    // The agent has cpus:2;mem:1024 and t1 (cpus:0.5;mem:64) runs on it.
    let (mut s, agent) = with_task();
    let reserve = |s: &mut State, r: &str| {
        s.apply(Command::ReserveResources {
            agent_id: agent.clone(),
            role: "db".into(),
            resources: r.parse().unwrap(),
        })
    };
    assert!(matches!(
        reserve(&mut s, "cpus:2"),
        Response::Rejected { .. }
    ));
    assert_eq!(reserve(&mut s, "cpus:1.5;mem:512"), Response::Ok);
    assert!(matches!(
        s.apply(Command::ReserveResources {
            agent_id: agent.clone(),
            role: "*".into(),
            resources: "mem:1".parse().unwrap(),
        }),
        Response::Rejected { .. }
    ));
    let pools = s.agent_pools(&agent).unwrap();
    assert_eq!(pools.unreserved.to_string(), "cpus:0;mem:448;disk:0");
    assert_eq!(pools.reserved["db"].to_string(), "cpus:1.5;mem:512;disk:0");
    let before = s.clone();
    assert!(matches!(
        s.apply(Command::UnreserveResources {
            agent_id: agent.clone(),
            role: "db".into(),
            resources: "cpus:2".parse().unwrap(),
        }),
        Response::Rejected { .. }
    ));
    assert_eq!(s, before, "a refused unreserve changes nothing");
    assert_eq!(
        s.apply(Command::UnreserveResources {
            agent_id: agent.clone(),
            role: "db".into(),
            resources: "cpus:1.5;mem:512".parse().unwrap(),
        }),
        Response::Ok
    );
    assert!(s.agents[&agent].reservations.is_empty());
}

#[test]
fn volumes_come_from_reserved_disk_and_a_used_one_cannot_be_destroyed() {
    let (mut s, agent) = with_task();
    s.agents.get_mut(&agent).unwrap().info.resources.disk = wasmos_core::Scalar::whole(1000);
    let create = |s: &mut State, v: Volume| {
        s.apply(Command::CreateVolumes {
            agent_id: agent.clone(),
            volumes: vec![v],
        })
    };
    // No reserved disk yet.
    assert!(matches!(
        create(&mut s, volume("v1", "db", 100)),
        Response::Rejected { .. }
    ));
    s.apply(Command::ReserveResources {
        agent_id: agent.clone(),
        role: "db".into(),
        resources: "disk:300;cpus:0.5;mem:64".parse().unwrap(),
    });
    assert_eq!(create(&mut s, volume("v1", "db", 100)), Response::Ok);
    assert!(
        matches!(
            create(&mut s, volume("v1", "db", 100)),
            Response::Rejected { .. }
        ),
        "ids are unique"
    );
    assert!(
        matches!(
            create(&mut s, volume("v2", "db", 250)),
            Response::Rejected { .. }
        ),
        "only 200 left"
    );
    // The reservation cannot be given back while the volume holds it.
    assert!(matches!(
        s.apply(Command::UnreserveResources {
            agent_id: agent.clone(),
            role: "db".into(),
            resources: "disk:300".parse().unwrap(),
        }),
        Response::Rejected { .. }
    ));
    // A task uses the volume: it cannot be destroyed, nor used twice.
    let mut t = spec("t2");
    t.reserved
        .insert("db".into(), "cpus:0.5;mem:64".parse().unwrap());
    t.volumes.push(wasmos_core::VolumeMount {
        id: "v1".into(),
        role: "db".into(),
        container_path: "data".into(),
        read_only: false,
        uuid: String::new(),
        create_mb: None,
    });
    let mut t3 = t.clone();
    t3.task_id = TaskId::new("t3").unwrap();
    let Response::TasksLaunched { accepted, rejected } = s.apply(Command::LaunchTasks {
        framework_id: fw(),
        agent_id: agent.clone(),
        tasks: vec![t, t3],
        staging_uuids: vec![uuid(20), uuid(21)],
        now: 2.0,
    }) else {
        panic!("launch refused")
    };
    assert_eq!(accepted.len(), 1);
    assert_eq!(rejected.len(), 1, "one volume, one task");
    let destroy = |s: &mut State| {
        s.apply(Command::DestroyVolumes {
            agent_id: agent.clone(),
            volumes: vec![volume("v1", "db", 100)],
        })
    };
    // Named with another role, it is not found.
    assert!(matches!(
        s.apply(Command::DestroyVolumes {
            agent_id: agent.clone(),
            volumes: vec![volume("v1", "web", 100)],
        }),
        Response::Rejected { .. }
    ));
    assert!(matches!(destroy(&mut s), Response::Rejected { .. }));
    assert!(
        s.agent_pools(&agent).unwrap().volumes.is_empty(),
        "in use: not free"
    );
    s.apply(Command::StatusUpdate {
        status: status("t2", TaskState::Finished, 22),
    });
    assert_eq!(
        s.agent_pools(&agent).unwrap().volumes.len(),
        1,
        "free again"
    );
    assert_eq!(destroy(&mut s), Response::Ok);
    assert_eq!(
        s.agent_pools(&agent).unwrap().reserved["db"].disk,
        wasmos_core::Scalar::whole(300),
        "the disk stays reserved"
    );
}

#[test]
fn an_agent_marked_gone_never_comes_back() {
    let (mut s, agent) = with_task();
    assert_eq!(
        s.apply(Command::SetAgentState {
            agent_id: agent.clone(),
            state: AgentState::Gone,
        }),
        Response::Ok
    );
    let before = s.clone();
    assert!(matches!(
        s.apply(Command::RegisterAgent {
            agent_id: Some(agent.clone()),
            info: agent_info(),
            principal: None,
            now: 9.0,
        }),
        Response::Rejected { .. }
    ));
    assert!(matches!(
        s.apply(Command::SetAgentState {
            agent_id: agent.clone(),
            state: AgentState::Active,
        }),
        Response::Rejected { .. }
    ));
    assert_eq!(s, before);
}

fn executor(command: &str) -> wasmos_core::ExecutorSpec {
    wasmos_core::ExecutorSpec {
        executor_id: wasmos_core::ExecutorId::new("e1").unwrap(),
        kind: wasmos_core::ExecutorKind::Custom,
        name: "e1".into(),
        command: Some(CommandSpec {
            shell: true,
            value: command.into(),
            ..Default::default()
        }),
        resources: Resources::cpus_mem(0.25, 32.0).unwrap(),
        fetch: Vec::new(),
        shutdown_grace_period_ms: None,
        info: None,
    }
}

fn by_executor(id: &str, command: &str) -> TaskSpec {
    let mut t = spec(id);
    t.command = CommandSpec::default();
    t.executor = Some(executor(command));
    t
}

#[test]
fn an_executor_is_held_once_while_any_of_its_tasks_lives_and_must_keep_its_description() {
    let (mut s, agent) = with_task();
    let launch = |s: &mut State, tasks: Vec<TaskSpec>, n: u128| {
        let uuids = (0..tasks.len() as u128).map(|i| uuid(n + i)).collect();
        let Response::TasksLaunched { accepted, rejected } = s.apply(Command::LaunchTasks {
            framework_id: fw(),
            agent_id: agent.clone(),
            tasks,
            staging_uuids: uuids,
            now: 3.0,
        }) else {
            panic!("not a launch answer")
        };
        (accepted, rejected)
    };
    let (ok, refused) = launch(
        &mut s,
        vec![
            by_executor("x1", "./run"),
            by_executor("x2", "./run"),
            by_executor("x3", "./other"),
        ],
        200,
    );
    assert_eq!(ok.len(), 2, "{refused:?}");
    assert_eq!(refused[0].0.as_str(), "x3");
    assert!(refused[0].1.contains("another description"), "{refused:?}");
    // t1 (0.5) + x1 + x2 (0.5 each) + the executor (0.25), once.
    assert_eq!(
        s.used_by_agent()[&agent],
        Resources::cpus_mem(1.75, 224.0).unwrap()
    );
    assert_eq!(s.live_executors().len(), 1);
    assert_eq!(
        s.agent_pools(&agent).unwrap().unreserved,
        Resources::cpus_mem(0.25, 800.0).unwrap()
    );
    for (id, n) in [("x1", 300), ("x2", 301)] {
        s.apply(Command::StatusUpdate {
            status: status(id, TaskState::Finished, n),
        });
    }
    // Its tasks ended: the executor holds nothing, and a new one may
    // differ.
    assert!(s.live_executors().is_empty());
    assert_eq!(
        s.used_by_agent()[&agent],
        Resources::cpus_mem(0.5, 64.0).unwrap()
    );
    let (ok, refused) = launch(&mut s, vec![by_executor("x4", "./other")], 400);
    assert_eq!((ok.len(), refused.len()), (1, 0));
}

#[test]
fn a_task_group_is_recorded_whole_or_not_at_all() {
    let (mut s, agent) = with_task();
    let member = |id: &str| {
        let mut t = spec(id);
        t.executor = Some(wasmos_core::ExecutorSpec {
            kind: wasmos_core::ExecutorKind::Default,
            command: None,
            ..executor("unused")
        });
        t.group = Some(TaskId::new("g1").unwrap());
        t
    };
    // g2 reuses t1's id: g1 must not be recorded either.
    let mut dup = member("t1");
    dup.group = Some(TaskId::new("g1").unwrap());
    let r = s.apply(Command::LaunchTasks {
        framework_id: fw(),
        agent_id: agent,
        tasks: vec![member("g1"), dup],
        staging_uuids: vec![uuid(500), uuid(501)],
        now: 3.0,
    });
    let Response::TasksLaunched { accepted, rejected } = r else {
        panic!("not a launch answer")
    };
    assert!(accepted.is_empty(), "{accepted:?}");
    assert_eq!(rejected.len(), 2, "{rejected:?}");
    assert!(!s.tasks.contains_key(&TaskId::new("g1").unwrap()));
    assert!(s.live_executors().is_empty());
}

#[test]
fn a_package_install_owns_its_parts_until_it_is_uninstalled() {
    let install = |id: &str, app: Option<&str>, job: Option<&str>, plugins: &[&str]| {
        Command::PackageInstalled {
            install: Box::new(PackageInstall {
                id: id.into(),
                name: "pkg".into(),
                version: "1".into(),
                source: "file:///c".into(),
                options: "{}".into(),
                package: "{}".into(),
                app: app.map(str::to_string),
                job: job.map(str::to_string),
                plugins: plugins.iter().map(|p| p.to_string()).collect(),
                installed_at: 1,
            }),
        }
    };
    let mut s = State::default();
    assert_eq!(
        s.apply(install("/web", Some("/web"), Some("report"), &["check"])),
        Response::Ok
    );
    // The same id, or a part of it under another id: refused, unchanged.
    for (cmd, why) in [
        (install("/web", None, None, &[]), "already installed"),
        (install("/other", None, Some("report"), &[]), "job:report"),
        (
            install("/other", None, None, &["x", "check"]),
            "plugin:check",
        ),
    ] {
        match s.apply(cmd) {
            Response::Rejected { reason } => assert!(reason.contains(why), "{reason}"),
            other => panic!("accepted: {other:?}"),
        }
    }
    assert_eq!(s.package_installs.len(), 1);
    assert_eq!(
        s.apply(Command::PackageUninstalled { id: "/web".into() }),
        Response::Ok
    );
    assert!(matches!(
        s.apply(Command::PackageUninstalled { id: "/web".into() }),
        Response::Rejected { .. }
    ));
    // Its parts are free again.
    assert_eq!(
        s.apply(install("/other", None, Some("report"), &["check"])),
        Response::Ok
    );
}

#[test]
fn a_draining_agent_takes_no_launch_is_drained_only_when_empty_and_cannot_be_reactivated_before() {
    let (mut s, agent) = with_task();
    let launch = |s: &mut State, id: &str| {
        s.apply(Command::LaunchTasks {
            framework_id: fw(),
            agent_id: agent.clone(),
            tasks: vec![spec(id)],
            staging_uuids: vec![uuid(900)],
            now: 2.0,
        })
    };
    assert_eq!(
        s.apply(Command::DrainAgent {
            agent_id: agent.clone(),
            max_grace_period_secs: Some(-1.0),
            mark_gone: false,
            let_finish: false,
            now: 2.0,
        }),
        Response::Rejected {
            reason: "max_grace_period must be between 0 and a year".into()
        }
    );
    assert!(
        s.agents[&agent].drain.is_none(),
        "a refused drain changes nothing"
    );
    assert_eq!(
        s.apply(Command::DrainAgent {
            agent_id: agent.clone(),
            max_grace_period_secs: Some(5.0),
            mark_gone: false,
            let_finish: false,
            now: 2.0,
        }),
        Response::Ok
    );
    assert!(s.agents[&agent].deactivated);
    assert!(matches!(launch(&mut s, "t2"), Response::Rejected { .. }));
    // t1 still lives: not drained, and the drain cannot be cancelled.
    assert!(matches!(
        s.apply(Command::AgentDrained {
            agent_id: agent.clone()
        }),
        Response::Rejected { .. }
    ));
    assert!(matches!(
        s.apply(Command::ReactivateAgent {
            agent_id: agent.clone()
        }),
        Response::Rejected { .. }
    ));
    let mut killed = status("t1", TaskState::Killed, 901);
    killed.agent_id = Some(agent.clone());
    s.apply(Command::StatusUpdate { status: killed });
    assert_eq!(
        s.apply(Command::AgentDrained {
            agent_id: agent.clone()
        }),
        Response::Ok
    );
    assert_eq!(
        s.agents[&agent].drain.as_ref().map(|d| d.state),
        Some(DrainState::Drained)
    );
    assert_eq!(
        s.apply(Command::ReactivateAgent {
            agent_id: agent.clone()
        }),
        Response::Ok
    );
    assert!(!s.agents[&agent].deactivated && s.agents[&agent].drain.is_none());
    assert!(matches!(
        launch(&mut s, "t2"),
        Response::TasksLaunched { .. }
    ));
}

#[test]
fn a_machine_down_for_maintenance_takes_no_agent_and_no_launch_until_it_is_up() {
    let (mut s, agent) = with_task();
    let h1 = MachineId {
        hostname: Some("H1".into()),
        ip: None,
    };
    let window = |m: Vec<MachineId>| MaintenanceWindow {
        machines: m,
        start_ns: 0,
        duration_ns: Some(1),
    };
    // Not scheduled: it cannot go down.
    assert!(matches!(
        s.apply(Command::StartMaintenance {
            machines: vec![h1.clone()]
        }),
        Response::Rejected { .. }
    ));
    // A machine in two windows, or with no name: refused.
    for bad in [
        vec![window(vec![h1.clone()]), window(vec![h1.clone()])],
        vec![window(vec![MachineId {
            hostname: None,
            ip: None,
        }])],
    ] {
        assert!(matches!(
            s.apply(Command::UpdateMaintenanceSchedule { windows: bad }),
            Response::Rejected { .. }
        ));
    }
    assert!(s.maintenance.is_empty());
    assert_eq!(
        s.apply(Command::UpdateMaintenanceSchedule {
            windows: vec![window(vec![h1.clone()])]
        }),
        Response::Ok
    );
    assert_eq!(s.machine_mode(&agent_info()), "DRAINING");
    assert_eq!(
        s.apply(Command::StartMaintenance {
            machines: vec![h1.clone()]
        }),
        Response::Ok
    );
    assert_eq!(s.machine_mode(&agent_info()), "DOWN");
    let launch = s.apply(Command::LaunchTasks {
        framework_id: fw(),
        agent_id: agent.clone(),
        tasks: vec![spec("t9")],
        staging_uuids: vec![uuid(990)],
        now: 2.0,
    });
    assert!(matches!(launch, Response::Rejected { .. }), "{launch:?}");
    let again = s.apply(Command::RegisterAgent {
        agent_id: Some(agent.clone()),
        info: agent_info(),
        principal: None,
        now: 3.0,
    });
    assert!(matches!(again, Response::Rejected { .. }), "{again:?}");
    // It stays in the schedule while down.
    assert!(matches!(
        s.apply(Command::UpdateMaintenanceSchedule { windows: vec![] }),
        Response::Rejected { .. }
    ));
    assert_eq!(
        s.apply(Command::StopMaintenance {
            machines: vec![h1.clone()]
        }),
        Response::Ok
    );
    assert_eq!(s.machine_mode(&agent_info()), "UP");
    assert!(
        s.maintenance.is_empty(),
        "brought up, it leaves the schedule"
    );
    assert!(matches!(
        s.apply(Command::RegisterAgent {
            agent_id: Some(agent),
            info: agent_info(),
            principal: None,
            now: 4.0,
        }),
        Response::AgentRegistered { .. }
    ));
}

/// The allocator's kept usage (`State::usage`) is what a pass over every
/// task gives, after every kind of change: launches (with an executor),
/// updates, endings, retirement, a reservation, a second agent, and a state
/// read back from a snapshot.
#[test]
fn kept_usage_matches_a_full_pass_after_every_change() {
    let (mut s, a1) = with_task();
    let mut memo = crate::usage::UsageMemo::default();
    let check = |s: &State, memo: &mut crate::usage::UsageMemo, after: &str| {
        let u = s.usage(memo);
        assert_eq!(u.pools, s.pools_by_agent(), "pools after {after}");
        assert_eq!(u.by_agent, s.used_by_agent(), "agents' use after {after}");
        assert_eq!(
            u.by_framework,
            s.used_by_framework(),
            "frameworks' use after {after}"
        );
    };
    check(&s, &mut memo, "the first launch");
    let Response::AgentRegistered { agent_id: a2, .. } = s.apply(Command::RegisterAgent {
        agent_id: None,
        info: AgentInfo {
            hostname: "h2".into(),
            boot_id: "b2".into(),
            ..agent_info()
        },
        principal: None,
        now: 1.0,
    }) else {
        panic!("agent not registered")
    };
    check(&s, &mut memo, "a second agent");
    let mut n = 10_000;
    let mut launch = |s: &mut State, agent: &AgentId, tasks: Vec<TaskSpec>| {
        n += 10;
        s.apply(Command::LaunchTasks {
            framework_id: fw(),
            agent_id: agent.clone(),
            staging_uuids: (0..tasks.len() as u128).map(|i| uuid(n + i)).collect(),
            tasks,
            now: 3.0,
        })
    };
    launch(&mut s, &a2, vec![by_executor("x1", "./run"), spec("p1")]);
    check(&s, &mut memo, "launches on the second agent");
    launch(&mut s, &a1, vec![by_executor("x2", "./run")]);
    check(&s, &mut memo, "an executor's task on the first");
    let mut m = 20_000;
    let mut update = |s: &mut State, id: &str, state: TaskState| {
        m += 1;
        s.apply(Command::StatusUpdate {
            status: status(id, state, m),
        });
        m
    };
    update(&mut s, "x1", TaskState::Running);
    check(&s, &mut memo, "RUNNING");
    let u = update(&mut s, "x1", TaskState::Finished);
    check(&s, &mut memo, "the executor's only task ending");
    s.apply(Command::AcknowledgeStatus {
        task_id: TaskId::new("x1").unwrap(),
        uuid: uuid(u),
    });
    check(&s, &mut memo, "its retirement");
    assert_eq!(
        s.apply(Command::ReserveResources {
            agent_id: a2.clone(),
            role: "db".into(),
            resources: "cpus:1;mem:256".parse().unwrap(),
        }),
        Response::Ok
    );
    check(&s, &mut memo, "a reservation");
    update(&mut s, "t1", TaskState::Failed);
    update(&mut s, "x2", TaskState::Lost);
    check(&s, &mut memo, "every task of the first agent ending");
    // The same task id again, now on the second agent.
    launch(&mut s, &a2, vec![spec("t1")]);
    check(&s, &mut memo, "a task id launched again elsewhere");
    let copy: State =
        serde_json::from_value(serde_json::to_value(&s).unwrap()).expect("the state reads back");
    check(&copy, &mut memo, "reading the state back");
    check(&s, &mut memo, "going back to the first copy");
}
