//! The software-update catalog: entries and the versioned deltas that build it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Classification of an update, as WSUS/ConfigMgr name them.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Classification {
    /// A fix for a specific critical bug that is not a security issue.
    Critical,
    /// A fix for a security vulnerability.
    Security,
    /// New definitions for a detection product (anti-malware signatures and the like).
    Definition,
    /// New product functionality, released outside a product release.
    FeaturePack,
    /// A tested set of fixes packaged together.
    UpdateRollup,
    /// Every fix since the product's release, in one cumulative package.
    ServicePack,
    /// A utility or feature that helps with a task.
    Tool,
    /// Software that runs a piece of hardware.
    Driver,
    /// A fix for a specific bug that is neither critical nor a security issue.
    Update,
    /// Any other classification, kept as the source wrote it (trimmed).
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
    /// The file's name as the source gives it (apt: its `Filename`, a path in the archive).
    pub name: String,
    /// Its size in bytes.
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
    /// The update's id, as its source names it (apt: `PACKAGE_VERSION_ARCH`); unique in the
    /// catalog.
    pub id: String,
    /// One line for people.
    pub title: String,
    /// The product it applies to.
    pub product: String,
    /// What kind of update it is.
    pub classification: Classification,
    /// The source's rating of it, as the source writes it (a JSON source's `severity`, apt's
    /// `Priority`), if it gives one.
    pub severity: Option<String>,
    /// The security bulletin that announced it (`MS26-001`), if any.
    pub bulletin: Option<String>,
    /// Its knowledge-base article number, if any.
    pub kb: Option<String>,
    /// When it was published: the source's date, or for a source without dates (apt) when a
    /// sync first saw it.
    pub posted: DateTime<Utc>,
    /// When it last changed, dated as `posted` is.
    pub revised: DateTime<Utc>,
    /// The id of the update that replaces it, once one does.
    pub superseded_by: Option<String>,
    /// True once its source has withdrawn it.
    pub expired: bool,
    /// Its download size in bytes (when the source gives none, the sum of its files' sizes).
    pub size: u64,
    /// The files of its content.
    pub files: Vec<UpdateFile>,
    /// The name of the sync source that reported it (see above).
    pub source: String,
}

/// One change to the catalog.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CatalogChange {
    /// An update new to the catalog.
    Added(Update),
    /// A new revision of an update the catalog holds; it replaces the old one whole.
    Revised(Update),
    /// The update's source no longer offers it.
    Expired {
        /// The update's id.
        id: String,
    },
    /// Another update replaces this one.
    Superseded {
        /// The id of the update replaced.
        id: String,
        /// The id of the update that replaces it.
        by: String,
    },
}

/// The changes of one sync: applying it to catalog version N-1 yields version N. `source`
/// lists the sources that were read (comma-separated names).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogDelta {
    /// The version this delta makes (N); the first delta makes version 1.
    pub catalog_version: u64,
    /// The sources that were read, as comma-separated names.
    pub source: String,
    /// The changes, applied in order.
    pub changes: Vec<CatalogChange>,
}
