//! Reports: what a site observes. They flow up the tree so the top site sees everything.

use crate::ids::{AdvertisementId, PackageId, SiteCode};
use crate::status::{self, Severity};
use crate::trust::{self, Delegation, PublicKey, Signature, TrustError};
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
    /// The origin's signature over [`ReportEnvelope::signed_bytes`], under its delegated key;
    /// passed on verbatim by every site on the way up.
    pub sig: Signature,
}

impl ReportEnvelope {
    /// The envelope of `body`, signed by `key` as `origin`'s report number `seq`.
    pub fn signed(
        origin: SiteCode,
        origin_seq: u64,
        time: DateTime<Utc>,
        body: Report,
        key: &ed25519_dalek::SigningKey,
    ) -> Result<Self, TrustError> {
        let bytes = trust::report_bytes(origin, origin_seq, &time, &body)?;
        Ok(ReportEnvelope {
            origin,
            origin_seq,
            time,
            body,
            sig: trust::sign(key, &bytes),
        })
    }

    /// What the origin signed ([`trust::report_bytes`]).
    pub fn signed_bytes(&self) -> Result<Vec<u8>, TrustError> {
        trust::report_bytes(self.origin, self.origin_seq, &self.time, &self.body)
    }
}

/// Every kind of report. Variants only ever grow at the end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Report {
    /// A status message.
    Status(StatusMessage),
    /// Facts about the origin site (its distribution points, its children).
    SiteData(SiteData),
    /// A change to the keys of the origin's subtree, so that every site above can verify the
    /// reports of the sites below it.
    Key(KeyReport),
}

/// The key changes a site reports up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyReport {
    /// The origin delegated a key to a site below it.
    Delegated(Delegation),
    /// The origin revoked a site below it.
    Revoked {
        /// The site revoked.
        site: SiteCode,
    },
    /// The origin asks its parent to delegate `key` to it from its event number `valid_from`
    /// (`key rotate`); signed with its current key.
    RotationRequested {
        /// The new key.
        key: PublicKey,
        /// The first of the origin's event numbers it will sign.
        valid_from: u64,
    },
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
    /// A program's exit code (advertised programs).
    ExitCode(i32),
    /// An advertisement's re-run generation a run belongs to.
    Rerun(u32),
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
    /// What one of the site's machines says it is (its agent's inventory).
    Machine(crate::machine::Inventory),
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
