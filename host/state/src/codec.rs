//! How commands travel and rest: the masters' raft log and raft RPCs are
//! MessagePack with named fields (self-describing, so optional fields and
//! tagged enums work as in JSON, at a fraction of JSON's cost for the
//! 256-byte strings commands carry). Masters of older versions wrote JSON:
//! what they left in a data directory, or send over the wire, is still
//! read.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The media type of MessagePack raft traffic.
pub const MSGPACK: &str = "application/msgpack";
/// The media type of JSON raft traffic (masters of older versions).
pub const JSON: &str = "application/json";

/// The encoding of one raft message or stored record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    MessagePack,
    Json,
}

impl Codec {
    /// The codec of a request's `Content-Type` (JSON when there is none,
    /// as older masters sent).
    pub fn from_content_type(ct: Option<&str>) -> Codec {
        match ct {
            Some(ct) if ct.trim().eq_ignore_ascii_case(MSGPACK) => Codec::MessagePack,
            _ => Codec::Json,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Codec::MessagePack => MSGPACK,
            Codec::Json => JSON,
        }
    }

    pub fn encode<T: Serialize + ?Sized>(self, value: &T) -> Result<Vec<u8>, String> {
        match self {
            Codec::MessagePack => {
                let mut out = Vec::with_capacity(256);
                let mut ser = rmp_serde::Serializer::new(&mut out)
                    .with_struct_map()
                    .with_human_readable();
                value.serialize(&mut ser).map_err(|e| e.to_string())?;
                Ok(out)
            }
            Codec::Json => serde_json::to_vec(value).map_err(|e| e.to_string()),
        }
    }

    pub fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T, String> {
        match self {
            Codec::MessagePack => {
                let mut de = rmp_serde::Deserializer::from_read_ref(bytes).with_human_readable();
                T::deserialize(&mut de).map_err(|e| e.to_string())
            }
            Codec::Json => serde_json::from_slice(bytes).map_err(|e| e.to_string()),
        }
    }
}

/// Encodes a record for the log store.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, String> {
    Codec::MessagePack.encode(value)
}

/// Decodes a stored record, whichever codec wrote it. Every record is a
/// map, an array or nil: as MessagePack its first byte is 0x80 or above;
/// JSON text (`{`, `[`, `null`) starts below 0x80.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    match bytes.first() {
        Some(b) if *b < 0x80 => Codec::Json.decode(bytes),
        _ => Codec::MessagePack.decode(bytes),
    }
}
