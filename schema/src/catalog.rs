//! The software-update catalog: entries and the versioned deltas that build it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Classification of an update, as WSUS/ConfigMgr name them.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Classification {
    Critical,
    Security,
    Definition,
    FeaturePack,
    UpdateRollup,
    ServicePack,
    Tool,
    Driver,
    Update,
    Other(String),
}

impl Classification {
    /// Reads a classification as an operator or a source writes it: case and the separator
    /// between words (space, `-`, `_`) do not matter (`Security`, `feature pack`,
    /// `update-rollup`). Anything else is kept as [`Classification::Other`].
    pub fn parse(s: &str) -> Classification {
        let k: String = s
            .trim()
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '_'))
            .flat_map(char::to_lowercase)
            .collect();
        match k.as_str() {
            "critical" | "criticalupdates" => Classification::Critical,
            "security" | "securityupdates" => Classification::Security,
            "definition" | "definitionupdates" => Classification::Definition,
            "featurepack" | "featurepacks" => Classification::FeaturePack,
            "updaterollup" | "updaterollups" => Classification::UpdateRollup,
            "servicepack" | "servicepacks" => Classification::ServicePack,
            "tool" | "tools" => Classification::Tool,
            "driver" | "drivers" => Classification::Driver,
            "update" | "updates" => Classification::Update,
            _ => Classification::Other(s.trim().to_string()),
        }
    }
}

impl std::fmt::Display for Classification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Classification::Critical => "critical",
            Classification::Security => "security",
            Classification::Definition => "definition",
            Classification::FeaturePack => "feature pack",
            Classification::UpdateRollup => "update rollup",
            Classification::ServicePack => "service pack",
            Classification::Tool => "tool",
            Classification::Driver => "driver",
            Classification::Update => "update",
            Classification::Other(s) => s,
        })
    }
}

/// One file of an update's content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateFile {
    pub name: String,
    pub size: u64,
    /// Hex digest as the source gives it (e.g. SHA-256 from an apt index).
    pub hash: String,
}

/// One update of the catalog.
///
/// `source` names the sync source (its name in `site.toml`) that reported it: a source's
/// next sync judges only its own updates (what it no longer lists expires or is superseded).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Update {
    pub id: String,
    pub title: String,
    pub product: String,
    pub classification: Classification,
    pub severity: Option<String>,
    pub bulletin: Option<String>,
    pub kb: Option<String>,
    pub posted: DateTime<Utc>,
    pub revised: DateTime<Utc>,
    pub superseded_by: Option<String>,
    pub expired: bool,
    pub size: u64,
    pub files: Vec<UpdateFile>,
    pub source: String,
}

/// One change to the catalog.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CatalogChange {
    Added(Update),
    Revised(Update),
    Expired { id: String },
    Superseded { id: String, by: String },
}

/// The changes of one sync: applying it to catalog version N-1 yields version N. `source`
/// lists the sources that were read (comma-separated names).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogDelta {
    pub catalog_version: u64,
    pub source: String,
    pub changes: Vec<CatalogChange>,
}
