//! Typed identifiers and the core's notion of time. Every id is validated when it is built, so the rest of
//! the core never re-checks peer data; the shell converts wire strings with the `new`/`parse` functions and
//! turns an [`IdError`] into a clear error for the peer.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a string was refused as an id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The value is empty.
    #[error("{kind} must not be empty")]
    Empty {
        /// Which id was being built.
        kind: &'static str,
    },
    /// The value breaks the id's character or length rule.
    #[error("invalid {kind} {value:?}: {rule}")]
    Invalid {
        /// Which id was being built.
        kind: &'static str,
        /// The offending value.
        value: String,
        /// The rule it breaks.
        rule: &'static str,
    },
}

/// Milliseconds since an arbitrary epoch chosen by the shell (e.g. process start). The core only compares
/// and adds them; it never reads a clock.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Millis(pub u64);

impl Millis {
    /// `self + ms`, saturating.
    #[must_use]
    pub fn plus(self, ms: u64) -> Millis {
        Millis(self.0.saturating_add(ms))
    }

    /// Milliseconds from `earlier` to `self`, 0 when `earlier` is later.
    #[must_use]
    pub fn since(self, earlier: Millis) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

/// The stable id of one Elasticsearch node (a slot). Unbounded; ids start at the configured first id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(pub u64);

impl NodeId {
    /// Bits of the id below the group index: a node of the default group (index 0) is its plain ordinal,
    /// so the ids, volume names and task ids of a cluster without groups never change.
    pub const GROUP_SHIFT: u32 = 48;
    /// The largest ordinal a node of any group can have.
    pub const MAX_ORDINAL: u64 = (1 << Self::GROUP_SHIFT) - 1;

    /// Node `ordinal` of the group with index `group` (0: the default group).
    #[must_use]
    pub fn in_group(group: u16, ordinal: u64) -> NodeId {
        NodeId((u64::from(group) << Self::GROUP_SHIFT) | (ordinal & Self::MAX_ORDINAL))
    }

    /// The index of the node's group (0: the default group).
    #[must_use]
    pub fn group(self) -> u16 {
        u16::try_from(self.0 >> Self::GROUP_SHIFT).unwrap_or(u16::MAX)
    }

    /// The node's id within its group: what its names and volumes carry.
    #[must_use]
    pub fn ordinal(self) -> u64 {
        self.0 & Self::MAX_ORDINAL
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.group() {
            0 => write!(f, "{}", self.0),
            g => write!(f, "{}#{g}", self.ordinal()),
        }
    }
}

/// Mesos ids (task, agent, offer, framework) share the master's rule (`validation::task` check 1): not empty,
/// not `.` or `..`, no control characters, no `/` or `\`, at most NAME_MAX (255) bytes.
fn check_mesos_id(kind: &'static str, value: &str) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty { kind });
    }
    let rule = if value == "." || value == ".." {
        Some("must not be '.' or '..'")
    } else if value.len() > 255 {
        Some("must be at most 255 bytes")
    } else if value
        .chars()
        .any(|c| c.is_control() || c == '/' || c == '\\')
    {
        Some("must not contain control characters, '/' or '\\'")
    } else {
        None
    };
    match rule {
        Some(rule) => Err(IdError::Invalid {
            kind,
            value: value.to_owned(),
            rule,
        }),
        None => Ok(()),
    }
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $check:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps `value`.
            pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                let check: fn(&'static str, &str) -> Result<(), IdError> = $check;
                check($kind, &value)?;
                Ok(Self(value))
            }

            /// The id as text, exactly as received or built.
            #[must_use]
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// Moves the id out of a value about to be dropped (an offer whose id goes into a DECLINE),
            /// leaving an empty id behind, which nothing may read.
            #[allow(dead_code, reason = "not every id is taken out of its value")]
            pub(crate) fn take(&mut self) -> Self {
                Self(std::mem::take(&mut self.0))
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(value: String) -> Result<Self, IdError> {
                Self::new(value)
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
    };
}

string_id!(
    /// A Mesos task id. Tether's own are `<framework-name>-<node-id>.<generation>`.
    TaskId,
    "task id",
    check_mesos_id
);
string_id!(
    /// A Mesos agent id (`Offer.agent_id`, `TaskStatus.agent_id`).
    AgentId,
    "agent id",
    check_mesos_id
);
string_id!(
    /// A Mesos offer id.
    OfferId,
    "offer id",
    check_mesos_id
);
string_id!(
    /// The framework id the master assigned at the first SUBSCRIBED.
    FrameworkId,
    "framework id",
    check_mesos_id
);
string_id!(
    /// A Docker volume name: `[a-zA-Z0-9][a-zA-Z0-9_.-]+` (Docker's `RestrictedNameChars`).
    VolumeName,
    "volume name",
    check_volume_name
);
string_id!(
    /// The name of a node group (`--group NAME:COUNT...`): it becomes part of the group's task ids, node
    /// names and volume names, so it is kept to `[a-z][a-z0-9-]*`, at most 32 bytes, not ending in a digit
    /// or `-` (the node's id follows it in a volume name: `masters1data` must not be read as `masters1`'s).
    GroupName,
    "group name",
    check_group_name
);
string_id!(
    /// An agent's host name as Mesos reports it in offers; the key that joins offers and sidecars.
    Hostname,
    "hostname",
    check_hostname
);

fn check_volume_name(kind: &'static str, value: &str) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty { kind });
    }
    let mut chars = value.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !first_ok || !rest_ok || value.len() < 2 {
        return Err(IdError::Invalid {
            kind,
            value: value.to_owned(),
            rule: "must match [a-zA-Z0-9][a-zA-Z0-9_.-]+",
        });
    }
    Ok(())
}

/// The default group's name: the nodes of a cluster without `--group`, named as before groups existed.
pub const DEFAULT_GROUP: &str = "default";

impl GroupName {
    /// The default group.
    #[must_use]
    pub fn default_group() -> GroupName {
        GroupName(DEFAULT_GROUP.to_owned())
    }

    /// Whether this is the default group.
    #[must_use]
    pub fn is_default(&self) -> bool {
        self.0 == DEFAULT_GROUP
    }
}

fn check_group_name(kind: &'static str, value: &str) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty { kind });
    }
    let first_ok = value.starts_with(|c: char| c.is_ascii_lowercase());
    let chars_ok = value
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    let last_ok = value.ends_with(|c: char| c.is_ascii_lowercase());
    if !first_ok || !chars_ok || !last_ok || value.len() > 32 {
        return Err(IdError::Invalid {
            kind,
            value: value.to_owned(),
            rule: "must match [a-z][a-z0-9-]*[a-z], at most 32 bytes (it becomes part of task ids and volume names)",
        });
    }
    Ok(())
}

fn check_hostname(kind: &'static str, value: &str) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if value.len() > 255 || value.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(IdError::Invalid {
            kind,
            value: value.to_owned(),
            rule: "must be at most 255 bytes without whitespace or control characters",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_names_follow_dockers_rule() {
        assert!(VolumeName::new("elasticsearch1data").is_ok());
        assert!(VolumeName::new("a.b_c-d").is_ok());
        assert!(VolumeName::new("a").is_err());
        assert!(VolumeName::new("_ab").is_err());
        assert!(VolumeName::new("ab/c").is_err());
        assert!(VolumeName::new("").is_err());
    }

    #[test]
    fn group_names_keep_names_and_volumes_unambiguous() {
        for good in ["masters", "data", "hot-warm", "d2x", "c"] {
            assert!(GroupName::new(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Masters",
            "data1",
            "-data",
            "data-",
            "9x",
            "a_b",
            "a.b",
            &"a".repeat(33),
        ] {
            assert!(GroupName::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_node_id_packs_its_group_above_its_ordinal() {
        assert_eq!(NodeId(3).group(), 0);
        assert_eq!(NodeId(3).ordinal(), 3);
        assert_eq!(NodeId::in_group(0, 3), NodeId(3));
        let id = NodeId::in_group(2, 7);
        assert_eq!((id.group(), id.ordinal()), (2, 7));
        assert_eq!(id.to_string(), "7#2");
        assert_eq!(NodeId(3).to_string(), "3");
        // Ordered by group first, so a group's nodes are contiguous in every ordered map.
        assert!(NodeId::in_group(1, 1) > NodeId(1_000_000));
    }

    #[test]
    fn mesos_ids_reject_what_the_master_rejects() {
        assert!(TaskId::new("es-1.0").is_ok());
        assert!(TaskId::new("..").is_err());
        assert!(TaskId::new("a/b").is_err());
        assert!(AgentId::new("").is_err());
        assert!(OfferId::new("x".repeat(256)).is_err());
    }

    #[test]
    fn ids_deserialize_through_validation() {
        let bad: Result<VolumeName, _> = serde_json::from_str("\"-bad\"");
        assert!(bad.is_err());
        let good: VolumeName =
            serde_json::from_str("\"es1data\"").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(good.as_str(), "es1data");
    }
}
