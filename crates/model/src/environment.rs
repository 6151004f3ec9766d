//! The two gateways every product is published on.

use serde::{Deserialize, Serialize};

/// Staging (where a deployed version is tried) or production (where it is promoted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    /// Where a deployed version is tried.
    Staging,
    /// Where a version is promoted to serve.
    Production,
}

impl Environment {
    /// `"staging"` or `"production"`, as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Staging => "staging",
            Environment::Production => "production",
        }
    }

    /// Parses `staging` or `production`; `None` for anything else.
    pub fn parse(s: &str) -> Option<Environment> {
        match s {
            "staging" => Some(Environment::Staging),
            "production" => Some(Environment::Production),
            _ => None,
        }
    }
}
