//! Reports: what a site observes. They flow up the tree so the top site sees everything.

use crate::ids::{AdvertisementId, PackageId, SiteCode};
use crate::status::{self, Severity};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One entry of a report log. `(origin, origin_seq)` is the dedupe key, as for config events.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportEnvelope {
    /// The site whose report log it was first appended to.
    pub origin: SiteCode,
    /// The origin's number for it: 1, 2, 3, ... with no gaps.
    pub origin_seq: u64,
    /// When the origin appended it.
    pub time: DateTime<Utc>,
    /// What is reported.
    pub body: Report,
}

/// Every kind of report. Variants only ever grow at the end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Report {
    /// A status message.
    Status(StatusMessage),
    /// Facts about the origin site (its distribution points, its children).
    SiteData(SiteData),
}

/// A status message, SMS style: a numbered message with attributes and insertion strings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusMessage {
    /// The message's id in the catalogue ([`crate::status`]).
    pub id: u32,
    /// The catalogue's severity for `id`.
    pub severity: Severity,
    /// The catalogue's component for `id` (`sender`, `distribution_manager`, ...).
    pub component: String,
    /// The site that raised it.
    pub site: SiteCode,
    /// The machine (host or DP id) that raised it.
    pub machine: String,
    /// When it was raised.
    pub time: DateTime<Utc>,
    /// What it is about, typed, so messages can be queried by package, site, ...
    pub attributes: Vec<Attribute>,
    /// `%1`, `%2`, ... of the catalogue's text template.
    pub insertion: Vec<String>,
}

/// A typed attribute of a status message (SMS attribute ids: 400 package, 401 advertisement,
/// 404 destination site, ...). Variants only grow at the end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Attribute {
    /// The package it is about.
    Package(PackageId),
    /// The package's source version it is about.
    SourceVersion(u32),
    /// The advertisement it is about.
    Advertisement(AdvertisementId),
    /// The site content is going to.
    DestinationSite(SiteCode),
    /// The distribution point it is about, by its id at the message's site (`DP1`).
    DistributionPoint(String),
    /// The collection it is about, by name.
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

    /// The catalog version it is about, if an attribute says.
    pub fn catalog_version(&self) -> Option<u64> {
        self.attributes.iter().find_map(|a| match a {
            Attribute::CatalogVersion(v) => Some(*v),
            _ => None,
        })
    }

    /// The package it is about, if an attribute says.
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
    /// The site's distribution points, the whole list (sent again when it changes).
    DistributionPoints(Vec<DistributionPointInfo>),
    /// The site's child sites (sorted), so that every site above knows its whole subtree
    /// (to validate targets, and to fetch content on the way to a deeper site).
    Children(Vec<SiteCode>),
}

/// A distribution point as its site reports it up the tree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DistributionPointInfo {
    /// Its id at the site (`DP1`).
    pub id: String,
    /// Where clients reach its HTTP server, HOST:PORT; empty when none is configured.
    pub address: String,
    /// SHA-256 of its certificate, hex: what its site pins.
    pub fingerprint: String,
}
