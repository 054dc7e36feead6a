//! Reports: what a site observes. They flow up the tree so the top site sees everything.

use crate::ids::{AdvertisementId, PackageId, SiteCode};
use crate::status::{self, Severity};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One entry of a report log. `(origin, origin_seq)` is the dedupe key, as for config events.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportEnvelope {
    pub origin: SiteCode,
    pub origin_seq: u64,
    pub time: DateTime<Utc>,
    pub body: Report,
}

/// Every kind of report. Variants only ever grow at the end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Report {
    Status(StatusMessage),
    SiteData(SiteData),
}

/// A status message, SMS style: a numbered message with attributes and insertion strings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusMessage {
    pub id: u32,
    pub severity: Severity,
    pub component: String,
    /// The site that raised it.
    pub site: SiteCode,
    /// The machine (host or DP id) that raised it.
    pub machine: String,
    pub time: DateTime<Utc>,
    pub attributes: Vec<Attribute>,
    /// `%1`, `%2`, ... of the catalogue's text template.
    pub insertion: Vec<String>,
}

/// A typed attribute of a status message (SMS attribute ids: 400 package, 401 advertisement,
/// 404 destination site, ...). Variants only grow at the end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Attribute {
    Package(PackageId),
    SourceVersion(u32),
    Advertisement(AdvertisementId),
    DestinationSite(SiteCode),
    DistributionPoint(String),
    Collection(String),
    /// The catalog version a message is about (catalog sync).
    CatalogVersion(u64),
}

impl StatusMessage {
    /// A message of catalogue id `id`, with the catalogue's severity and component.
    ///
    /// Panics if `id` is not in the catalogue: every id raised must be listed there.
    pub fn new(
        id: u32,
        site: SiteCode,
        machine: impl Into<String>,
        time: DateTime<Utc>,
        attributes: Vec<Attribute>,
        insertion: Vec<String>,
    ) -> Self {
        let def = status::lookup(id)
            .unwrap_or_else(|| panic!("status message {id} is not in the catalogue"));
        StatusMessage {
            id,
            severity: def.severity,
            component: def.component.to_string(),
            site,
            machine: machine.into(),
            time,
            attributes,
            insertion,
        }
    }

    /// The catalogue text with the insertion strings filled in.
    pub fn text(&self) -> String {
        status::render(self.id, &self.insertion)
    }

    pub fn catalog_version(&self) -> Option<u64> {
        self.attributes.iter().find_map(|a| match a {
            Attribute::CatalogVersion(v) => Some(*v),
            _ => None,
        })
    }

    pub fn package(&self) -> Option<PackageId> {
        self.attributes.iter().find_map(|a| match a {
            Attribute::Package(p) => Some(*p),
            _ => None,
        })
    }
}

/// Facts about a site that its parent should know (its distribution points, ...).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SiteData {
    DistributionPoints(Vec<DistributionPointInfo>),
    /// The site's child sites (sorted), so that every site above knows its whole subtree
    /// (to validate targets, and to fetch content on the way to a deeper site).
    Children(Vec<SiteCode>),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DistributionPointInfo {
    pub id: String,
    pub address: String,
    pub fingerprint: String,
}
