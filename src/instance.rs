//! Identity of the Chroma instances behind the proxy: typed ids, names and roles.
//!
//! Plain data only: this module never talks to an instance and never holds health state.

use std::fmt;

use serde::Serialize;

/// Position of an instance in the configured list; `InstanceId(0)` is always the primary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct InstanceId(pub usize);

/// Operator-facing name of an instance: `primary`, `replica`, `replica-2`, ... (stored in the
/// WAL as text; the mapping is in `wal::models`).
#[derive(
    Clone,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    diesel::AsExpression,
    diesel::FromSqlRow,
)]
#[diesel(sql_type = diesel::sql_types::Text)]
#[serde(transparent)]
pub struct InstanceName(String);

impl InstanceName {
    /// Wraps a name chosen by the configuration.
    pub fn new(name: String) -> Self {
        Self(name)
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for InstanceName {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_string()))
    }
}

impl fmt::Display for InstanceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether an instance is the preferred write target or a read replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Receives writes while it is usable.
    Primary,
    /// Serves most reads; receives writes only while the primary is unusable.
    Replica,
}

/// Static description of one instance, as configured.
#[derive(Clone, Debug)]
pub struct InstanceSpec {
    /// Index in the instance list.
    pub id: InstanceId,
    /// Name used in logs, status and admin paths.
    pub name: InstanceName,
    /// Primary or replica.
    pub role: Role,
    /// Base URL, without a trailing slash.
    pub url: String,
}
