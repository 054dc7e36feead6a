//! The status-message catalogue: every id any component raises, in one table.
//!
//! SMS numbering is kept where the seed documents give it (3531-3533 sender, 2342/2330
//! distribution manager, 11250-11270 advertisement status from clients). Ids this system adds
//! 6701-6703 are ConfigMgr's software-update sync (WSUS synchronization started, done,
//! failed). Ids this system adds live from 40000 up, grouped by component in blocks of 100.

use serde::{Deserialize, Serialize};
use std::fmt;

/// How serious a status message is. Ordered: info < warning < error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Something happened as it should.
    Info,
    /// Something needs attention.
    Warning,
    /// Something failed.
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        })
    }
}

/// One row of the catalogue. `%1`, `%2`, ... in `text` are the insertion strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageDef {
    /// The message id.
    pub id: u32,
    /// How serious every message of this id is.
    pub severity: Severity,
    /// The component that raises it (`sender`, `link`, `content`, ...).
    pub component: &'static str,
    /// The text template.
    pub text: &'static str,
}

const fn def(
    id: u32,
    severity: Severity,
    component: &'static str,
    text: &'static str,
) -> MessageDef {
    MessageDef {
        id,
        severity,
        component,
        text,
    }
}

use Severity::{Error, Info, Warning};

/// The whole catalogue, sorted by id. The README's table is generated from this one
/// (`site-server status catalogue`); a test keeps it sorted and free of duplicates.
pub const CATALOGUE: &[MessageDef] = &[
    def(
        2330,
        Info,
        "distribution_manager",
        "Distribution of package %1 version %2 to distribution point %3 is complete and verified.",
    ),
    def(
        2342,
        Info,
        "distribution_manager",
        "Started distributing package %1 version %2 to distribution point %3.",
    ),
    def(
        3531,
        Info,
        "sender",
        "Sending package %1 version %2 to site %3: %4% complete.",
    ),
    def(
        3532,
        Error,
        "sender",
        "Error sending package %1 version %2 to site %3: %4",
    ),
    def(
        3533,
        Info,
        "sender",
        "Sent package %1 version %2 to site %3.",
    ),
    def(
        6701,
        Info,
        "catalog_sync",
        "Catalog sync started from %1 source(s): %2.",
    ),
    def(
        6702,
        Info,
        "catalog_sync",
        "Catalog sync completed: catalog version %1 (%2 added, %3 revised, %4 expired, %5 superseded; %6 update(s) in all).",
    ),
    def(6703, Error, "catalog_sync", "Catalog sync failed at source %1: %2"),
    def(
        11250,
        Warning,
        "advertisement",
        "No scheduled installation window (early start); waiting to retry.",
    ),
    def(
        11251,
        Warning,
        "advertisement",
        "No scheduled installation window (late start); waiting to retry.",
    ),
    def(
        11252,
        Info,
        "advertisement",
        "The user changed the installation schedule.",
    ),
    def(
        11253,
        Info,
        "advertisement",
        "The user postponed the installation.",
    ),
    def(
        11254,
        Info,
        "advertisement",
        "The installation was postponed automatically.",
    ),
    def(
        11256,
        Warning,
        "advertisement",
        "No scheduled installation window (expiry limit); waiting to retry.",
    ),
    def(
        11257,
        Info,
        "advertisement",
        "The user changed the restart schedule required to install updates.",
    ),
    def(
        11258,
        Info,
        "advertisement",
        "The user postponed the restart required to install updates.",
    ),
    def(
        11259,
        Info,
        "advertisement",
        "The restart required to install updates was postponed automatically.",
    ),
    def(
        11261,
        Info,
        "advertisement",
        "Installation complete; the user changed the restart schedule.",
    ),
    def(
        11262,
        Info,
        "advertisement",
        "Installation complete; the user postponed the restart.",
    ),
    def(
        11263,
        Info,
        "advertisement",
        "Installation complete; the restart was postponed automatically.",
    ),
    def(11264, Info, "advertisement", "Started a mandatory restart."),
    def(
        11265,
        Info,
        "advertisement",
        "Started a forced mandatory restart.",
    ),
    def(
        11266,
        Info,
        "advertisement",
        "Installation complete; restart skipped because of the workstation role.",
    ),
    def(
        11267,
        Info,
        "advertisement",
        "Installation complete; restart skipped because of the server role.",
    ),
    def(
        11268,
        Info,
        "advertisement",
        "Installation complete; no restart needed.",
    ),
    def(
        11270,
        Warning,
        "advertisement",
        "The computer must be restarted.",
    ),
    def(
        40001,
        Info,
        "site_server",
        "Site server %1 started (config log at %2 events, report log at %3).",
    ),
    def(40002, Info, "site_server", "Site server %1 is stopping."),
    def(
        40100,
        Info,
        "publisher",
        "Package %1 (%2) version %3 published: %4 files, %5 bytes, %6 new chunks.",
    ),
    def(40101, Info, "publisher", "Package %1 version %2 retired."),
    def(
        40102,
        Info,
        "publisher",
        "Package %1 priority changed to %2.",
    ),
    def(
        40110,
        Info,
        "offer_manager",
        "Advertisement %1 created: package %2 program %3 to collection %4.",
    ),
    def(40111, Info, "offer_manager", "Advertisement %1 changed."),
    def(40112, Info, "offer_manager", "Advertisement %1 disabled."),
    def(
        40120,
        Info,
        "distribution_manager",
        "Package %1 targeted at %2.",
    ),
    def(
        40121,
        Info,
        "distribution_manager",
        "Package %1 no longer targeted at %2.",
    ),
    def(
        40130,
        Warning,
        "sender",
        "Emergency: package %1 ignores the schedules and rate limits of every link until %2.",
    ),
    def(40131, Info, "sender", "Package %1 priority changed to %2."),
    def(
        40140,
        Info,
        "distribution_manager",
        "Distribution point group %1 created.",
    ),
    def(
        40141,
        Info,
        "distribution_manager",
        "Distribution point %2 joined group %1; the %3 package(s) targeted at the group go to it too.",
    ),
    def(
        40142,
        Info,
        "distribution_manager",
        "Distribution point %2 left group %1.",
    ),
    def(
        40150,
        Error,
        "distribution_manager",
        "Distribution of package %1 version %2 to distribution point %3 failed: %4",
    ),
    def(
        40151,
        Warning,
        "distribution_manager",
        "Validation of distribution point %3 found package %1 version %2 damaged: %4 corrupt and %5 missing chunk(s); they are fetched again.",
    ),
    def(
        40152,
        Info,
        "distribution_manager",
        "Package %1 version %2 removed from distribution point %3 (%4 chunk(s) no other version needs deleted).",
    ),
    def(
        40153,
        Info,
        "distribution_manager",
        "Validation of distribution point %1: %2 chunk(s) re-hashed, %3 damaged, %4 missing.",
    ),
    def(
        40200,
        Info,
        "link",
        "Link from child %1 is up (it had applied up to position %2).",
    ),
    def(40201, Info, "link", "Link from child %1 is down: %2"),
    def(40202, Warning, "link", "Refused a connection from %1: %2"),
    def(
        40203,
        Warning,
        "content",
        "Chunk %1 from %2 failed verification (%3); it was not stored and is asked for again.",
    ),
    def(
        40204,
        Error,
        "content",
        "Chunk %1 in this site's content store is corrupt (%2); removed, it will be fetched again.",
    ),
    def(
        40205,
        Info,
        "link",
        "Distribution point %1 attached from %2 (%3 package version(s) assigned to it).",
    ),
    def(40206, Info, "link", "Distribution point %1 detached: %2"),
    def(
        40210,
        Info,
        "content",
        "Package %1 version %2 is complete in this site's content store (%3 chunks, %4 bytes).",
    ),
    def(
        40211,
        Info,
        "content",
        "Fetching package %1 version %2 from %3: %4 of %5 chunks missing (%6 bytes).",
    ),
    def(
        40300,
        Info,
        "courier",
        "Bundle %1 exported for site %2: config positions %3, %4 chunk(s), %5 volume(s).",
    ),
    def(
        40301,
        Info,
        "courier",
        "Bundle %1 from %2 imported: %3 event(s) applied, %4 chunk(s); applied up to position %5.",
    ),
    def(40302, Warning, "courier", "Courier file %1 refused: %2"),
    def(
        40303,
        Info,
        "courier",
        "Receipt from %1 imported: %2 report(s); it has applied up to position %3 and holds %4 package version(s).",
    ),
    def(
        40400,
        Info,
        "catalog_sync",
        "Catalog version %1 applied (%2 change(s) from %3's sync).",
    ),
];

/// The catalogue row of `id`.
pub fn lookup(id: u32) -> Option<&'static MessageDef> {
    CATALOGUE
        .binary_search_by_key(&id, |d| d.id)
        .ok()
        .map(|i| &CATALOGUE[i])
}

/// The text of message `id` with `%1`..`%9` replaced by the insertion strings.
/// A placeholder without a string is shown as `<%n missing>`; an unknown id says so.
pub fn render(id: u32, insertion: &[String]) -> String {
    let Some(d) = lookup(id) else {
        return format!("(unknown message id {id}) {}", insertion.join(" | "));
    };
    let mut out = String::with_capacity(d.text.len() + 32);
    let mut chars = d.text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '%' {
            if let Some(n) = chars
                .peek()
                .and_then(|d| d.to_digit(10))
                .filter(|n| *n >= 1)
            {
                chars.next();
                match insertion.get(n as usize - 1) {
                    Some(s) => out.push_str(s),
                    None => out.push_str(&format!("<%{n} missing>")),
                }
                continue;
            }
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_is_sorted_and_unique() {
        for w in CATALOGUE.windows(2) {
            assert!(w[0].id < w[1].id, "{} then {}", w[0].id, w[1].id);
        }
    }

    #[test]
    fn the_readme_table_lists_every_message() {
        let readme = include_str!("../../README.md");
        for d in CATALOGUE {
            let row = format!(
                "| {} | {} | {} | {} |",
                d.id, d.severity, d.component, d.text
            );
            assert!(
                readme.contains(&row),
                "README.md lacks {row}: paste `site-server status catalogue --json` into its table"
            );
        }
    }

    #[test]
    fn renders_insertion_strings() {
        let s = render(
            3531,
            &["CEN00001".into(), "2".into(), "S01".into(), "40".into()],
        );
        assert_eq!(
            s,
            "Sending package CEN00001 version 2 to site S01: 40% complete."
        );
        assert!(render(3533, &[]).contains("<%1 missing>"));
        assert!(render(1, &[]).contains("unknown message id 1"));
    }
}
