//! Protobuf bodies of the v1 scheduler API (`application/x-protobuf`).
//!
//! The messages are described by `proto/*.proto`, compiled at build time
//! into a descriptor set; a protobuf call is decoded against it and turned
//! into the same JSON a JSON client sends (proto field names, enum names,
//! base64 bytes: the mapping Mesos uses), and an event is made from its JSON
//! and encoded. So both encodings take one path through the handlers.

use std::sync::LazyLock;

use prost::Message as _;
use prost_reflect::{DescriptorPool, DeserializeOptions, DynamicMessage, SerializeOptions};
use serde_json::Value;

static POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
    DescriptorPool::decode(include_bytes!(concat!(env!("OUT_DIR"), "/mesos_v1.bin")).as_ref())
        .expect("the descriptor set built from proto/ decodes")
});

fn descriptor(name: &str) -> Result<prost_reflect::MessageDescriptor, String> {
    POOL.get_message_by_name(name)
        .ok_or_else(|| format!("{name} is not in the compiled protocol"))
}

/// A `mesos.v1.scheduler.Call` in protobuf, as its JSON form.
pub fn call_to_json(body: &[u8]) -> Result<Value, String> {
    let desc = descriptor("mesos.v1.scheduler.Call")?;
    let msg = DynamicMessage::decode(desc, body)
        .map_err(|e| format!("Failed to parse body into Call protobuf: {e}"))?;
    let opts = SerializeOptions::new()
        .use_proto_field_name(true)
        .stringify_64_bit_integers(false)
        .skip_default_fields(true);
    msg.serialize_with_options(serde_json::value::Serializer, &opts)
        .map_err(|e| format!("Failed to convert Call protobuf into JSON: {e}"))
}

/// A `mesos.v1.scheduler.Event` given as JSON, in protobuf.
pub fn event_to_protobuf(event: &Value) -> Result<Vec<u8>, String> {
    let desc = descriptor("mesos.v1.scheduler.Event")?;
    let opts = DeserializeOptions::new().deny_unknown_fields(false);
    let msg = DynamicMessage::deserialize_with_options(desc, event.clone(), &opts)
        .map_err(|e| format!("cannot encode the event as protobuf: {e}"))?;
    Ok(msg.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_protobuf_call_reads_as_its_json_and_events_round_trip() {
        let call = json!({
            "framework_id": {"value": "c-0000"},
            "type": "ACKNOWLEDGE",
            "acknowledge": {"agent_id": {"value": "a"}, "task_id": {"value": "t"},
                            "uuid": "AAECAwQFBgcICQoLDA0ODw=="}
        });
        let desc = descriptor("mesos.v1.scheduler.Call").unwrap();
        let msg = DynamicMessage::deserialize(desc, call.clone()).unwrap();
        let back = call_to_json(&msg.encode_to_vec()).unwrap();
        assert_eq!(back, call);
        assert!(call_to_json(b"\xff\xff\xff").is_err());

        let event = json!({"type": "UPDATE", "update": {"status": {
            "task_id": {"value": "t"}, "state": "TASK_RUNNING", "source": "SOURCE_AGENT",
            "reason": "REASON_RECONCILIATION", "timestamp": 1.5, "uuid": "AAECAwQFBgcICQoLDA0ODw==",
            "agent_id": {"value": "a"}}}});
        let bytes = event_to_protobuf(&event).unwrap();
        let desc = descriptor("mesos.v1.scheduler.Event").unwrap();
        let decoded = DynamicMessage::decode(desc, bytes.as_slice()).unwrap();
        let opts = SerializeOptions::new().use_proto_field_name(true);
        let again = decoded
            .serialize_with_options(serde_json::value::Serializer, &opts)
            .unwrap();
        assert_eq!(again, event);
    }

    #[test]
    fn executors_and_task_groups_survive_protobuf_and_their_events_encode() {
        let executor = json!({"type": "CUSTOM", "executor_id": {"value": "e1"},
            "name": "mine", "command": {"value": "./run"}, "data": "aGk=",
            "shutdown_grace_period": {"nanoseconds": 3000000000_i64},
            "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}}]});
        let call = json!({
            "framework_id": {"value": "c-0000"},
            "type": "ACCEPT",
            "accept": {"offer_ids": [{"value": "o1"}], "operations": [
                {"type": "LAUNCH", "launch": {"task_infos": [{"name": "t", "task_id": {"value": "t"},
                    "agent_id": {"value": "a"}, "executor": executor, "data": "aGk="}]}},
                {"type": "LAUNCH_GROUP", "launch_group": {"executor": executor,
                    "task_group": {"tasks": [{"name": "g", "task_id": {"value": "g"},
                        "agent_id": {"value": "a"}, "command": {"value": "true"}}]}}}]}
        });
        let desc = descriptor("mesos.v1.scheduler.Call").unwrap();
        let msg = DynamicMessage::deserialize(desc, call.clone()).unwrap();
        assert_eq!(call_to_json(&msg.encode_to_vec()).unwrap(), call);
        for event in [
            json!({"type": "MESSAGE", "message": {"agent_id": {"value": "a"},
                "executor_id": {"value": "e1"}, "data": "aGk="}}),
            json!({"type": "FAILURE", "failure": {"agent_id": {"value": "a"},
                "executor_id": {"value": "e1"}, "status": 256}}),
            json!({"type": "UPDATE", "update": {"status": {"task_id": {"value": "t"},
                "state": "TASK_FINISHED", "source": "SOURCE_EXECUTOR", "data": "aGk=",
                "reason": "REASON_TASK_GROUP_INVALID"}}}),
        ] {
            assert!(
                event_to_protobuf(&event).is_ok_and(|b| !b.is_empty()),
                "{event}"
            );
        }
    }
}
