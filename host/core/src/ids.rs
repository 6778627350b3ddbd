//! Identifiers. Every id that reaches a path on disk or a URL passes
//! [`validate_id`], so a task id can never escape a sandbox directory.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The longest id accepted, in bytes (Linux' NAME_MAX, as Mesos).
pub const MAX_ID_LEN: usize = 255;

/// Why a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("id is empty")]
    Empty,
    #[error("id is longer than {MAX_ID_LEN} bytes")]
    TooLong,
    #[error("id must not be `.` or `..`")]
    Dots,
    #[error(
        "id contains `{0}`, which is not allowed (no `/`, `\\`, whitespace or control characters)"
    )]
    BadChar(char),
}

/// Checks an id the way Mesos' `validateID` does, a little stricter: no
/// whitespace either, since ids appear unquoted in CLI output and paths.
pub fn validate_id(s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    if s.len() > MAX_ID_LEN {
        return Err(IdError::TooLong);
    }
    if s == "." || s == ".." {
        return Err(IdError::Dots);
    }
    if let Some(c) = s
        .chars()
        .find(|c| *c == '/' || *c == '\\' || c.is_control() || c.is_whitespace())
    {
        return Err(IdError::BadChar(c));
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates `s` as an id.
            pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                validate_id(&s)?;
                Ok(Self(s))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}

id_type!(
    /// A task, unique in the cluster.
    TaskId
);
id_type!(
    /// An agent (a worker machine), assigned by the master at first registration.
    AgentId
);
id_type!(
    /// A framework (a scheduler). Framework plugins are named after their plugin.
    FrameworkId
);
id_type!(
    /// An offer, unique within a leader's term.
    OfferId
);
id_type!(
    /// An executor, unique within its framework (Mesos' ExecutorID).
    ExecutorId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_could_escape_a_directory_are_refused() {
        for bad in ["", ".", "..", "a/b", "..\\x", "a\0b", "a b", "tab\t", "x\n"] {
            assert!(TaskId::new(bad).is_err(), "{bad:?} should be refused");
        }
        assert_eq!(TaskId::new("x".repeat(256)), Err(IdError::TooLong));
        assert!(TaskId::new("x".repeat(255)).is_ok());
    }

    #[test]
    fn ordinary_ids_are_accepted() {
        for good in ["web.1", "sleep-3", "a..b", "é", "5b1c-S0", "...."] {
            assert!(TaskId::new(good).is_ok(), "{good:?} should be accepted");
        }
    }

    #[test]
    fn deserializing_validates() {
        let err = serde_json::from_str::<TaskId>(r#""../etc""#).unwrap_err();
        assert!(err.to_string().contains("not allowed"), "{err}");
        let ok: TaskId = serde_json::from_str(r#""t-1""#).unwrap();
        assert_eq!(ok.as_str(), "t-1");
    }
}
