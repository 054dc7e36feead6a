//! The hierarchy view: every site of this site's subtree, in tree order, with its link state,
//! backlog, last error, catalog version, freeze state and DPs. Read-only.
//!
//! A site this site links to directly is shown as its live link says; a deeper site as the
//! messages about it said (its parent's 40200/40201, its own alarms: `SiteWord`). When a
//! site between here and it is not reachable, that word may be old: the row says so.

use super::{OpError, Site};
use crate::sansio::links::{LinkState, Role};
use crate::sansio::rollups::SiteWord;
use chrono::{DateTime, Utc};
use schema::SiteCode;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `GET /v1/status/hierarchy` and the console's hierarchy page.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HierarchyView {
    /// This site first, then its subtree depth-first, children in code order.
    pub rows: Vec<SiteRow>,
}

/// How the state of a row is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Known {
    /// This site itself.
    Here,
    /// This site's own link to it.
    Link,
    /// What its parent last reported, every site between here and there being reachable.
    Reported,
    /// What its parent last reported, but a site on the way is not reachable now: it may
    /// be old.
    Stale,
}

/// One site of the hierarchy page.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SiteRow {
    pub code: SiteCode,
    pub parent: Option<SiteCode>,
    /// 0 for this site, 1 for its children, ...
    pub depth: usize,
    /// `active` (this site: it answers), `degraded`, `failed`, `waiting`, `down` or
    /// `unknown`.
    pub state: String,
    pub since: Option<DateTime<Utc>>,
    pub known: Known,
    /// Events of this site's log the child has not acknowledged, and their bytes (own
    /// children only).
    pub backlog_events: Option<u64>,
    pub backlog_bytes: Option<u64>,
    pub last_error: Option<String>,
    pub catalog_version: Option<u64>,
    /// The freeze alarm: its view from the top is stale.
    pub frozen: Option<bool>,
    /// Its DPs: id and `attached`, `detached` or `reported` (listed, never attached since
    /// this site kept its messages).
    pub dps: Vec<(String, String)>,
}

fn link_word(s: LinkState) -> &'static str {
    match s {
        LinkState::Active => "active",
        LinkState::Degraded => "degraded",
        LinkState::Failed => "failed",
        LinkState::Waiting => "waiting",
    }
}

impl Site {
    /// The hierarchy below this site (see the module doc).
    pub fn hierarchy(&self) -> Result<HierarchyView, OpError> {
        let words = self.db.site_words()?;
        let catalogs = self.db.catalog_words()?;
        let links = self.sites()?;
        let own_catalog = self.db.meta()?.catalog_version;
        let mut rows = Vec::new();
        // (site, parent, depth, whether every site between here and it is reachable)
        let mut todo: Vec<(SiteCode, Option<SiteCode>, usize, bool)> =
            vec![(self.cfg.code, None, 0, true)];
        let mut seen = std::collections::BTreeSet::new();
        while let Some((code, parent, depth, reachable)) = todo.pop() {
            if !seen.insert(code) {
                continue;
            }
            let word = words.get(&code).cloned().unwrap_or_default();
            let mut row = SiteRow {
                code,
                parent,
                depth,
                state: "unknown".into(),
                since: None,
                known: Known::Reported,
                backlog_events: None,
                backlog_bytes: None,
                last_error: word
                    .last_error
                    .as_ref()
                    .map(|e| format!("{}: {}", e.0, e.2)),
                catalog_version: catalogs
                    .get(&code)
                    .map(|c| c.catalog_version)
                    .filter(|v| *v > 0),
                frozen: word.frozen,
                dps: dps_of(self, code, &word)?,
            };
            let link = links
                .iter()
                .find(|l| l.link.peer == code && l.link.role == Role::Child);
            if depth == 0 {
                row.state = "active".into();
                row.known = Known::Here;
                row.catalog_version = row.catalog_version.or(Some(own_catalog)).filter(|v| *v > 0);
            } else if let Some(l) = link {
                row.state = link_word(l.link.state).into();
                row.since = Some(l.link.since);
                row.known = Known::Link;
                row.backlog_events = Some(l.backlog_events);
                row.backlog_bytes = Some(l.backlog_bytes);
                if let Some(e) = &l.link.last_error {
                    if l.link.state != LinkState::Active {
                        row.last_error = Some(e.clone());
                    }
                }
            } else {
                row.state = match word.link_up {
                    Some(true) => "active",
                    Some(false) => "down",
                    None => "unknown",
                }
                .into();
                row.since = word.link_since;
                row.known = if reachable {
                    Known::Reported
                } else {
                    Known::Stale
                };
                if word.link_up == Some(false) {
                    if let Some(e) = &word.link_error {
                        row.last_error = Some(e.clone());
                    }
                }
            }
            let through = reachable && (depth == 0 || row.state == "active");
            let mut children = if depth == 0 {
                self.child_codes()
            } else {
                self.db.reported_children(code)?.unwrap_or_default()
            };
            children.sort();
            for c in children.into_iter().rev() {
                todo.push((c, Some(code), depth + 1, through));
            }
            rows.push(row);
        }
        Ok(HierarchyView { rows })
    }
}

/// A site's DPs: those it reported, with their last attach or detach.
fn dps_of(site: &Site, code: SiteCode, word: &SiteWord) -> Result<Vec<(String, String)>, OpError> {
    let mut out: BTreeMap<String, String> = site
        .db
        .reported_dps(code)?
        .unwrap_or_default()
        .into_iter()
        .map(|d| (d.id, "reported".to_string()))
        .collect();
    for (id, attached) in &word.dps {
        if let Some(s) = out.get_mut(id) {
            *s = if *attached { "attached" } else { "detached" }.into();
        }
    }
    Ok(out.into_iter().collect())
}
