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

/// One file of an update's content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateFile {
    pub name: String,
    pub size: u64,
    /// Hex digest as the source gives it (e.g. SHA-256 from an apt index).
    pub hash: String,
}

/// One update of the catalog.
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

/// The changes of one sync: applying it to catalog version N-1 yields version N.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogDelta {
    pub catalog_version: u64,
    pub source: String,
    pub changes: Vec<CatalogChange>,
}
