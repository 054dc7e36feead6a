//! The status-message catalogue: every id any component raises, in one table.
//!
//! SMS numbering is kept where the seed documents give it (3531-3533 sender, 2342/2330
//! distribution manager, 11250-11270 advertisement status from clients); 6701-6703 are
//! ConfigMgr's software-update sync (WSUS synchronization started, done, failed). Ids this
//! system adds live from 40000 up, grouped by component in blocks of 100.
//!
//! Every id has a named constant (`status::SENDER_PROGRESS`, `status::CHUNK_CORRUPT_REMOVED`,
//! ...), declared below in the order of [`CATALOGUE`] under a comment naming the component
//! that raises it; the catalogue is built from those constants, so each number is written
//! once. [`ALL_IDS`] lists them all.

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

// `distribution_manager`

/// A distribution point holds a package version complete and verified (it is installed and served).
pub const DP_DISTRIBUTION_COMPLETE: u32 = 2330;
/// A distribution point started pulling a package version it is missing chunks of.
pub const DP_DISTRIBUTION_STARTED: u32 = 2342;

// `sender`

/// A package version is being sent to a child site: raised at 0% and at least every 10% after.
pub const SENDER_PROGRESS: u32 = 3531;
/// Sending a package version to a child site failed after its retries (with the error).
pub const SENDER_ERROR: u32 = 3532;
/// A package version was sent to a child site in full.
pub const SENDER_COMPLETE: u32 = 3533;

// `catalog_sync`

/// A software-update catalog sync started (how many sources, and which).
pub const CATALOG_SYNC_STARTED: u32 = 6701;
/// A catalog sync completed, with the resulting catalog version and its change counts.
pub const CATALOG_SYNC_COMPLETED: u32 = 6702;
/// A catalog sync failed at one source (one per failing source).
pub const CATALOG_SYNC_FAILED: u32 = 6703;

// `advertised_programs_client` (SMS's Advertised Programs Client ids)

/// Agent: it received an advertisement for its machine (the machine is in the collection).
pub const PROGRAM_RECEIVED: u32 = 10002;
/// Agent: the advertised program started.
pub const PROGRAM_STARTED: u32 = 10005;
/// Agent: the advertised program failed (exit code and the last lines of its output).
pub const PROGRAM_FAILED: u32 = 10006;
/// Agent: the advertised program completed successfully (exit code).
pub const PROGRAM_SUCCEEDED: u32 = 10008;

// `advertisement`

/// Client: no installation window is scheduled (early start); the install waits to retry.
pub const INSTALL_NO_WINDOW_EARLY_START: u32 = 11250;
/// Client: no installation window is scheduled (late start); the install waits to retry.
pub const INSTALL_NO_WINDOW_LATE_START: u32 = 11251;
/// Client: the user changed the installation schedule.
pub const INSTALL_RESCHEDULED_BY_USER: u32 = 11252;
/// Client: the user postponed the installation.
pub const INSTALL_POSTPONED_BY_USER: u32 = 11253;
/// Client: the installation was postponed automatically.
pub const INSTALL_POSTPONED_AUTOMATICALLY: u32 = 11254;
/// Client: no installation window is scheduled (expiry limit); the install waits to retry.
pub const INSTALL_NO_WINDOW_EXPIRY_LIMIT: u32 = 11256;
/// Client: the user changed the schedule of the restart needed before updates can install.
pub const PRE_INSTALL_RESTART_RESCHEDULED_BY_USER: u32 = 11257;
/// Client: the user postponed the restart needed before updates can install.
pub const PRE_INSTALL_RESTART_POSTPONED_BY_USER: u32 = 11258;
/// Client: the restart needed before updates can install was postponed automatically.
pub const PRE_INSTALL_RESTART_POSTPONED_AUTOMATICALLY: u32 = 11259;
/// Client: installation complete, and the user changed the restart schedule.
pub const POST_INSTALL_RESTART_RESCHEDULED_BY_USER: u32 = 11261;
/// Client: installation complete, and the user postponed the restart.
pub const POST_INSTALL_RESTART_POSTPONED_BY_USER: u32 = 11262;
/// Client: installation complete, and the restart was postponed automatically.
pub const POST_INSTALL_RESTART_POSTPONED_AUTOMATICALLY: u32 = 11263;
/// Client: a mandatory restart started.
pub const MANDATORY_RESTART_STARTED: u32 = 11264;
/// Client: a forced mandatory restart started.
pub const FORCED_MANDATORY_RESTART_STARTED: u32 = 11265;
/// Client: installation complete; the restart was skipped because of the workstation role.
pub const POST_INSTALL_RESTART_SKIPPED_WORKSTATION: u32 = 11266;
/// Client: installation complete; the restart was skipped because of the server role.
pub const POST_INSTALL_RESTART_SKIPPED_SERVER: u32 = 11267;
/// Client: installation complete, and no restart is needed.
pub const POST_INSTALL_NO_RESTART_NEEDED: u32 = 11268;
/// Client: the computer must be restarted.
pub const RESTART_REQUIRED: u32 = 11270;

// `site_server`

/// The site server daemon started (with the lengths of its config and report logs).
pub const SITE_SERVER_STARTED: u32 = 40001;
/// The site server daemon is stopping.
pub const SITE_SERVER_STOPPING: u32 = 40002;

// `publisher`

/// A package version was published (its files, bytes and new chunks).
pub const PACKAGE_PUBLISHED: u32 = 40100;
/// A package version was retired (withdrawn everywhere).
pub const PACKAGE_VERSION_RETIRED: u32 = 40101;
/// A package's priority changed, said by the publisher. Not raised today: `package priority`
/// raises [`SENDER_PRIORITY_CHANGED`].
pub const PUBLISHER_PRIORITY_CHANGED: u32 = 40102;

// `offer_manager`

/// An advertisement was created (package, program, collection).
pub const ADVERTISEMENT_CREATED: u32 = 40110;
/// An advertisement was changed.
pub const ADVERTISEMENT_CHANGED: u32 = 40111;
/// An advertisement was disabled.
pub const ADVERTISEMENT_DISABLED: u32 = 40112;
/// An advertisement was enabled again.
pub const ADVERTISEMENT_ENABLED: u32 = 40113;
/// An advertisement is to run again (on every machine, or on those whose run failed).
pub const ADVERTISEMENT_RERUN: u32 = 40114;
/// A collection was created or its rules changed.
pub const COLLECTION_SET: u32 = 40115;

// `distribution_manager`

/// A package was targeted at a site, distribution point or group (one per target added).
pub const PACKAGE_TARGETED: u32 = 40120;
/// A package is no longer targeted at a site, distribution point or group (one per target removed).
pub const PACKAGE_UNTARGETED: u32 = 40121;

// `sender`

/// Emergency: a package ignores every link's schedule and rate limit until the given time.
pub const SENDER_EMERGENCY_BOOST: u32 = 40130;
/// A package's sending priority changed on every link (`package priority`).
pub const SENDER_PRIORITY_CHANGED: u32 = 40131;

// `distribution_manager`

/// A distribution point group was created.
pub const DP_GROUP_CREATED: u32 = 40140;
/// A distribution point joined a group and takes the packages targeted at the group.
pub const DP_JOINED_GROUP: u32 = 40141;
/// A distribution point left a group.
pub const DP_LEFT_GROUP: u32 = 40142;
/// Distributing a package version to a distribution point failed (disk full, content missing, ...).
pub const DP_DISTRIBUTION_FAILED: u32 = 40150;
/// Validation found a package version on a distribution point damaged; it is fetched again.
pub const DP_PACKAGE_DAMAGED: u32 = 40151;
/// A package version was removed from a distribution point (with how many chunks were deleted).
pub const DP_PACKAGE_REMOVED: u32 = 40152;
/// A distribution point's validation finished: chunks re-hashed, damaged and missing.
pub const DP_VALIDATION_SUMMARY: u32 = 40153;

// `link`

/// The link from a child site came up (with the position it had applied up to).
pub const CHILD_LINK_UP: u32 = 40200;
/// The link from a child site went down (with why).
pub const CHILD_LINK_DOWN: u32 = 40201;
/// An incoming connection was refused (bad handshake, wrong site code or pin, ...).
pub const CONNECTION_REFUSED: u32 = 40202;

// `content`

/// A chunk received from a peer failed verification; it was not stored and is asked for again.
pub const CHUNK_VERIFICATION_FAILED: u32 = 40203;
/// A chunk in this site's content store was found corrupt and removed; it is fetched again.
pub const CHUNK_CORRUPT_REMOVED: u32 = 40204;

// `link`

/// A distribution point attached to this site (with how many package versions are assigned to it).
pub const DP_ATTACHED: u32 = 40205;
/// A distribution point's link to this site ended (with why).
pub const DP_DETACHED: u32 = 40206;

// `content`

/// A chunk in this site's content store could not be read (an I/O error): kept, read again later.
pub const CHUNK_UNREADABLE: u32 = 40207;

// `link`

/// Reports from a child were refused: their origin is not the child or a site below it.
pub const REPORTS_REFUSED: u32 = 40208;

// `content`

/// A package version is complete in this site's content store.
pub const PACKAGE_CONTENT_COMPLETE: u32 = 40210;
/// This site started fetching the missing chunks of a package version.
pub const PACKAGE_CONTENT_FETCHING: u32 = 40211;
/// This site's content store is full: fetching from the parent is paused and retried.
pub const SITE_DISK_FULL: u32 = 40212;
/// Space is back in this site's content store: fetching resumed.
pub const SITE_DISK_SPACE_BACK: u32 = 40213;

// `trust`

/// An event from the parent (or a bundle) was refused: bad or missing signature, undelegated
/// or revoked key, outside its origin's authority, or a withheld predecessor. Nothing applied.
pub const EVENT_REFUSED_UNTRUSTED: u32 = 40220;
/// The newest checkpoint of the top site has expired: the view from the top is stale.
pub const VIEW_FROM_TOP_STALE: u32 = 40221;
/// A current checkpoint arrived: the view from the top is fresh again.
pub const VIEW_FROM_TOP_FRESH: u32 = 40222;
/// A site's key was delegated, rotated or revoked (by this site).
pub const SITE_KEY_CHANGED: u32 = 40223;

// `courier`

/// A courier bundle was exported for a site.
pub const COURIER_BUNDLE_EXPORTED: u32 = 40300;
/// A courier bundle was imported (events applied, chunks stored).
pub const COURIER_BUNDLE_IMPORTED: u32 = 40301;
/// A courier bundle or receipt file was refused (with why).
pub const COURIER_FILE_REFUSED: u32 = 40302;
/// A courier receipt from a child was imported (its reports, position and holdings).
pub const COURIER_RECEIPT_IMPORTED: u32 = 40303;

// `catalog_sync`

/// A site below the top applied a new software-update catalog version from its parent.
pub const CATALOG_VERSION_APPLIED: u32 = 40400;

// `advertised_programs_client` (this system's block)

/// Agent: the program found its software already installed.
pub const PROGRAM_ALREADY_INSTALLED: u32 = 40500;
/// Agent: the program does not apply to the machine.
pub const PROGRAM_NOT_APPLICABLE: u32 = 40501;
/// Agent: the package could not be downloaded or verified; nothing ran.
pub const PROGRAM_DOWNLOAD_FAILED: u32 = 40502;
/// Agent: the program could not start, ran past its time limit, or the agent stopped
/// during the run.
pub const PROGRAM_ERROR: u32 = 40503;

// `machine_manager`

/// A machine asked to be approved at this site (once per name and key).
pub const MACHINE_AWAITS_APPROVAL: u32 = 40510;
/// A machine was approved at this site, by the operator or automatically.
pub const MACHINE_APPROVED: u32 = 40511;
/// A distribution point refused agent requests (unapproved machine, wrong key, bad
/// signature), counted over a minute.
pub const AGENT_REQUESTS_REFUSED: u32 = 40512;

/// Every id of [`CATALOGUE`], by its constant, in the same order.
pub const ALL_IDS: &[u32] = &[
    DP_DISTRIBUTION_COMPLETE,
    DP_DISTRIBUTION_STARTED,
    SENDER_PROGRESS,
    SENDER_ERROR,
    SENDER_COMPLETE,
    CATALOG_SYNC_STARTED,
    CATALOG_SYNC_COMPLETED,
    CATALOG_SYNC_FAILED,
    PROGRAM_RECEIVED,
    PROGRAM_STARTED,
    PROGRAM_FAILED,
    PROGRAM_SUCCEEDED,
    INSTALL_NO_WINDOW_EARLY_START,
    INSTALL_NO_WINDOW_LATE_START,
    INSTALL_RESCHEDULED_BY_USER,
    INSTALL_POSTPONED_BY_USER,
    INSTALL_POSTPONED_AUTOMATICALLY,
    INSTALL_NO_WINDOW_EXPIRY_LIMIT,
    PRE_INSTALL_RESTART_RESCHEDULED_BY_USER,
    PRE_INSTALL_RESTART_POSTPONED_BY_USER,
    PRE_INSTALL_RESTART_POSTPONED_AUTOMATICALLY,
    POST_INSTALL_RESTART_RESCHEDULED_BY_USER,
    POST_INSTALL_RESTART_POSTPONED_BY_USER,
    POST_INSTALL_RESTART_POSTPONED_AUTOMATICALLY,
    MANDATORY_RESTART_STARTED,
    FORCED_MANDATORY_RESTART_STARTED,
    POST_INSTALL_RESTART_SKIPPED_WORKSTATION,
    POST_INSTALL_RESTART_SKIPPED_SERVER,
    POST_INSTALL_NO_RESTART_NEEDED,
    RESTART_REQUIRED,
    SITE_SERVER_STARTED,
    SITE_SERVER_STOPPING,
    PACKAGE_PUBLISHED,
    PACKAGE_VERSION_RETIRED,
    PUBLISHER_PRIORITY_CHANGED,
    ADVERTISEMENT_CREATED,
    ADVERTISEMENT_CHANGED,
    ADVERTISEMENT_DISABLED,
    ADVERTISEMENT_ENABLED,
    ADVERTISEMENT_RERUN,
    COLLECTION_SET,
    PACKAGE_TARGETED,
    PACKAGE_UNTARGETED,
    SENDER_EMERGENCY_BOOST,
    SENDER_PRIORITY_CHANGED,
    DP_GROUP_CREATED,
    DP_JOINED_GROUP,
    DP_LEFT_GROUP,
    DP_DISTRIBUTION_FAILED,
    DP_PACKAGE_DAMAGED,
    DP_PACKAGE_REMOVED,
    DP_VALIDATION_SUMMARY,
    CHILD_LINK_UP,
    CHILD_LINK_DOWN,
    CONNECTION_REFUSED,
    CHUNK_VERIFICATION_FAILED,
    CHUNK_CORRUPT_REMOVED,
    DP_ATTACHED,
    DP_DETACHED,
    CHUNK_UNREADABLE,
    REPORTS_REFUSED,
    PACKAGE_CONTENT_COMPLETE,
    PACKAGE_CONTENT_FETCHING,
    SITE_DISK_FULL,
    SITE_DISK_SPACE_BACK,
    EVENT_REFUSED_UNTRUSTED,
    VIEW_FROM_TOP_STALE,
    VIEW_FROM_TOP_FRESH,
    SITE_KEY_CHANGED,
    COURIER_BUNDLE_EXPORTED,
    COURIER_BUNDLE_IMPORTED,
    COURIER_FILE_REFUSED,
    COURIER_RECEIPT_IMPORTED,
    CATALOG_VERSION_APPLIED,
    PROGRAM_ALREADY_INSTALLED,
    PROGRAM_NOT_APPLICABLE,
    PROGRAM_DOWNLOAD_FAILED,
    PROGRAM_ERROR,
    MACHINE_AWAITS_APPROVAL,
    MACHINE_APPROVED,
    AGENT_REQUESTS_REFUSED,
];

/// The whole catalogue, sorted by id. The README's table is generated from this one
/// (`site-server status catalogue`); a test keeps it sorted and free of duplicates.
pub const CATALOGUE: &[MessageDef] = &[
    def(
        DP_DISTRIBUTION_COMPLETE,
        Info,
        "distribution_manager",
        "Distribution of package %1 version %2 to distribution point %3 is complete and verified.",
    ),
    def(
        DP_DISTRIBUTION_STARTED,
        Info,
        "distribution_manager",
        "Started distributing package %1 version %2 to distribution point %3.",
    ),
    def(
        SENDER_PROGRESS,
        Info,
        "sender",
        "Sending package %1 version %2 to site %3: %4% complete.",
    ),
    def(
        SENDER_ERROR,
        Error,
        "sender",
        "Error sending package %1 version %2 to site %3: %4",
    ),
    def(
        SENDER_COMPLETE,
        Info,
        "sender",
        "Sent package %1 version %2 to site %3.",
    ),
    def(
        CATALOG_SYNC_STARTED,
        Info,
        "catalog_sync",
        "Catalog sync started from %1 source(s): %2.",
    ),
    def(
        CATALOG_SYNC_COMPLETED,
        Info,
        "catalog_sync",
        "Catalog sync completed: catalog version %1 (%2 added, %3 revised, %4 expired, %5 superseded; %6 update(s) in all).",
    ),
    def(CATALOG_SYNC_FAILED, Error, "catalog_sync", "Catalog sync failed at source %1: %2"),
    def(
        PROGRAM_RECEIVED,
        Info,
        "advertised_programs_client",
        "The program of advertisement %1 was received.",
    ),
    def(
        PROGRAM_STARTED,
        Info,
        "advertised_programs_client",
        "The program of advertisement %1 started.",
    ),
    def(
        PROGRAM_FAILED,
        Error,
        "advertised_programs_client",
        "The program of advertisement %1 failed with exit code %2. Output: %3",
    ),
    def(
        PROGRAM_SUCCEEDED,
        Info,
        "advertised_programs_client",
        "The program of advertisement %1 completed successfully with exit code %2.",
    ),
    def(
        INSTALL_NO_WINDOW_EARLY_START,
        Warning,
        "advertisement",
        "No scheduled installation window (early start); waiting to retry.",
    ),
    def(
        INSTALL_NO_WINDOW_LATE_START,
        Warning,
        "advertisement",
        "No scheduled installation window (late start); waiting to retry.",
    ),
    def(
        INSTALL_RESCHEDULED_BY_USER,
        Info,
        "advertisement",
        "The user changed the installation schedule.",
    ),
    def(
        INSTALL_POSTPONED_BY_USER,
        Info,
        "advertisement",
        "The user postponed the installation.",
    ),
    def(
        INSTALL_POSTPONED_AUTOMATICALLY,
        Info,
        "advertisement",
        "The installation was postponed automatically.",
    ),
    def(
        INSTALL_NO_WINDOW_EXPIRY_LIMIT,
        Warning,
        "advertisement",
        "No scheduled installation window (expiry limit); waiting to retry.",
    ),
    def(
        PRE_INSTALL_RESTART_RESCHEDULED_BY_USER,
        Info,
        "advertisement",
        "The user changed the restart schedule required to install updates.",
    ),
    def(
        PRE_INSTALL_RESTART_POSTPONED_BY_USER,
        Info,
        "advertisement",
        "The user postponed the restart required to install updates.",
    ),
    def(
        PRE_INSTALL_RESTART_POSTPONED_AUTOMATICALLY,
        Info,
        "advertisement",
        "The restart required to install updates was postponed automatically.",
    ),
    def(
        POST_INSTALL_RESTART_RESCHEDULED_BY_USER,
        Info,
        "advertisement",
        "Installation complete; the user changed the restart schedule.",
    ),
    def(
        POST_INSTALL_RESTART_POSTPONED_BY_USER,
        Info,
        "advertisement",
        "Installation complete; the user postponed the restart.",
    ),
    def(
        POST_INSTALL_RESTART_POSTPONED_AUTOMATICALLY,
        Info,
        "advertisement",
        "Installation complete; the restart was postponed automatically.",
    ),
    def(MANDATORY_RESTART_STARTED, Info, "advertisement", "Started a mandatory restart."),
    def(
        FORCED_MANDATORY_RESTART_STARTED,
        Info,
        "advertisement",
        "Started a forced mandatory restart.",
    ),
    def(
        POST_INSTALL_RESTART_SKIPPED_WORKSTATION,
        Info,
        "advertisement",
        "Installation complete; restart skipped because of the workstation role.",
    ),
    def(
        POST_INSTALL_RESTART_SKIPPED_SERVER,
        Info,
        "advertisement",
        "Installation complete; restart skipped because of the server role.",
    ),
    def(
        POST_INSTALL_NO_RESTART_NEEDED,
        Info,
        "advertisement",
        "Installation complete; no restart needed.",
    ),
    def(
        RESTART_REQUIRED,
        Warning,
        "advertisement",
        "The computer must be restarted.",
    ),
    def(
        SITE_SERVER_STARTED,
        Info,
        "site_server",
        "Site server %1 started (config log at %2 events, report log at %3).",
    ),
    def(SITE_SERVER_STOPPING, Info, "site_server", "Site server %1 is stopping."),
    def(
        PACKAGE_PUBLISHED,
        Info,
        "publisher",
        "Package %1 (%2) version %3 published: %4 files, %5 bytes, %6 new chunks.",
    ),
    def(PACKAGE_VERSION_RETIRED, Info, "publisher", "Package %1 version %2 retired."),
    def(
        PUBLISHER_PRIORITY_CHANGED,
        Info,
        "publisher",
        "Package %1 priority changed to %2.",
    ),
    def(
        ADVERTISEMENT_CREATED,
        Info,
        "offer_manager",
        "Advertisement %1 created: package %2 program %3 to collection %4.",
    ),
    def(ADVERTISEMENT_CHANGED, Info, "offer_manager", "Advertisement %1 changed."),
    def(ADVERTISEMENT_DISABLED, Info, "offer_manager", "Advertisement %1 disabled."),
    def(ADVERTISEMENT_ENABLED, Info, "offer_manager", "Advertisement %1 enabled."),
    def(
        ADVERTISEMENT_RERUN,
        Info,
        "offer_manager",
        "Advertisement %1 runs again (re-run %2) on %3 machines.",
    ),
    def(COLLECTION_SET, Info, "offer_manager", "Collection %1 set: %2"),
    def(
        PACKAGE_TARGETED,
        Info,
        "distribution_manager",
        "Package %1 targeted at %2.",
    ),
    def(
        PACKAGE_UNTARGETED,
        Info,
        "distribution_manager",
        "Package %1 no longer targeted at %2.",
    ),
    def(
        SENDER_EMERGENCY_BOOST,
        Warning,
        "sender",
        "Emergency: package %1 ignores the schedules and rate limits of every link until %2.",
    ),
    def(SENDER_PRIORITY_CHANGED, Info, "sender", "Package %1 priority changed to %2."),
    def(
        DP_GROUP_CREATED,
        Info,
        "distribution_manager",
        "Distribution point group %1 created.",
    ),
    def(
        DP_JOINED_GROUP,
        Info,
        "distribution_manager",
        "Distribution point %2 joined group %1; the %3 package(s) targeted at the group go to it too.",
    ),
    def(
        DP_LEFT_GROUP,
        Info,
        "distribution_manager",
        "Distribution point %2 left group %1.",
    ),
    def(
        DP_DISTRIBUTION_FAILED,
        Error,
        "distribution_manager",
        "Distribution of package %1 version %2 to distribution point %3 failed: %4",
    ),
    def(
        DP_PACKAGE_DAMAGED,
        Warning,
        "distribution_manager",
        "Validation of distribution point %3 found package %1 version %2 damaged: %4 corrupt and %5 missing chunk(s); they are fetched again.",
    ),
    def(
        DP_PACKAGE_REMOVED,
        Info,
        "distribution_manager",
        "Package %1 version %2 removed from distribution point %3 (%4 chunk(s) no other version needs deleted).",
    ),
    def(
        DP_VALIDATION_SUMMARY,
        Info,
        "distribution_manager",
        "Validation of distribution point %1: %2 chunk(s) re-hashed, %3 damaged, %4 missing.",
    ),
    def(
        CHILD_LINK_UP,
        Info,
        "link",
        "Link from child %1 is up (it had applied up to position %2).",
    ),
    def(CHILD_LINK_DOWN, Info, "link", "Link from child %1 is down: %2"),
    def(CONNECTION_REFUSED, Warning, "link", "Refused a connection from %1: %2"),
    def(
        CHUNK_VERIFICATION_FAILED,
        Warning,
        "content",
        "Chunk %1 from %2 failed verification (%3); it was not stored and is asked for again.",
    ),
    def(
        CHUNK_CORRUPT_REMOVED,
        Error,
        "content",
        "Chunk %1 in this site's content store is corrupt (%2); removed, it will be fetched again.",
    ),
    def(
        DP_ATTACHED,
        Info,
        "link",
        "Distribution point %1 attached from %2 (%3 package version(s) assigned to it).",
    ),
    def(DP_DETACHED, Info, "link", "Distribution point %1 detached: %2"),
    def(
        CHUNK_UNREADABLE,
        Warning,
        "content",
        "Chunk %1 in this site's content store cannot be read (%2); it is kept (an I/O error is not damage) and read again when asked for.",
    ),
    def(
        REPORTS_REFUSED,
        Error,
        "link",
        "%2 report(s) from child site %1 refused and not stored: %3",
    ),
    def(
        PACKAGE_CONTENT_COMPLETE,
        Info,
        "content",
        "Package %1 version %2 is complete in this site's content store (%3 chunks, %4 bytes).",
    ),
    def(
        PACKAGE_CONTENT_FETCHING,
        Info,
        "content",
        "Fetching package %1 version %2 from %3: %4 of %5 chunks missing (%6 bytes).",
    ),
    def(
        SITE_DISK_FULL,
        Error,
        "content",
        "The content store of this site is full (%1): fetching from %2 is paused and tried again every %3 s; nothing half-written is kept. Free space and it resumes by itself.",
    ),
    def(
        SITE_DISK_SPACE_BACK,
        Info,
        "content",
        "Space is back in the content store of this site: fetching from %1 resumed.",
    ),
    def(
        EVENT_REFUSED_UNTRUSTED,
        Error,
        "trust",
        "Event %1 from %2 refused, nothing applied: %3. This site stays at its last good event until it is sent as its origin signed it.",
    ),
    def(
        VIEW_FROM_TOP_STALE,
        Warning,
        "trust",
        "The view from the top is %1 hours old: the newest checkpoint of %2 (it had issued up to %3) expired at %4. This site keeps working on what it has: check the links up to %2.",
    ),
    def(
        VIEW_FROM_TOP_FRESH,
        Info,
        "trust",
        "A current checkpoint of %1 arrived (it has issued up to %2, expires %3): the view from the top is fresh again.",
    ),
    def(
        SITE_KEY_CHANGED,
        Info,
        "trust",
        "Key of site %1: %2.",
    ),
    def(
        COURIER_BUNDLE_EXPORTED,
        Info,
        "courier",
        "Bundle %1 exported for site %2: config positions %3, %4 chunk(s), %5 volume(s).",
    ),
    def(
        COURIER_BUNDLE_IMPORTED,
        Info,
        "courier",
        "Bundle %1 from %2 imported: %3 event(s) applied, %4 chunk(s); applied up to position %5.",
    ),
    def(COURIER_FILE_REFUSED, Warning, "courier", "Courier file %1 refused: %2"),
    def(
        COURIER_RECEIPT_IMPORTED,
        Info,
        "courier",
        "Receipt from %1 imported: %2 report(s); it has applied up to position %3 and holds %4 package version(s).",
    ),
    def(
        CATALOG_VERSION_APPLIED,
        Info,
        "catalog_sync",
        "Catalog version %1 applied (%2 change(s) from %3's sync).",
    ),
    def(
        PROGRAM_ALREADY_INSTALLED,
        Info,
        "advertised_programs_client",
        "The program of advertisement %1 found the software already installed (exit code %2).",
    ),
    def(
        PROGRAM_NOT_APPLICABLE,
        Info,
        "advertised_programs_client",
        "The program of advertisement %1 does not apply to this machine (exit code %2).",
    ),
    def(
        PROGRAM_DOWNLOAD_FAILED,
        Error,
        "advertised_programs_client",
        "The content of advertisement %1 could not be downloaded or verified, so nothing ran: %2",
    ),
    def(
        PROGRAM_ERROR,
        Error,
        "advertised_programs_client",
        "The program of advertisement %1 did not complete: %2. Output: %3",
    ),
    def(
        MACHINE_AWAITS_APPROVAL,
        Warning,
        "machine_manager",
        "Machine %1 asks to be approved with key %2: run `site-server machine approve --name %1 --pubkey %2` if it is yours.",
    ),
    def(
        MACHINE_APPROVED,
        Info,
        "machine_manager",
        "Machine %1 approved with key %2 (%3).",
    ),
    def(
        AGENT_REQUESTS_REFUSED,
        Warning,
        "machine_manager",
        "Distribution point %1 refused %2 agent request(s) in the last minute; the last: %3",
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

    /// `(name, value)` of every `pub const NAME: u32 = VALUE;` declared in this file.
    fn declared_constants() -> Vec<(&'static str, u32)> {
        include_str!("status.rs")
            .lines()
            .filter_map(|l| l.strip_prefix("pub const ")?.split_once(": u32 = "))
            .map(|(name, v)| {
                let v = v
                    .trim_end_matches(';')
                    .parse()
                    .unwrap_or_else(|e| panic!("constant {name} is not a plain number ({v}): {e}"));
                (name, v)
            })
            .collect()
    }

    #[test]
    fn every_id_has_one_constant_and_every_constant_is_catalogued() {
        let declared = declared_constants();
        assert_eq!(declared.len(), CATALOGUE.len(), "{declared:?}");
        let mut seen = std::collections::HashMap::new();
        for (name, id) in &declared {
            if let Some(other) = seen.insert(*id, *name) {
                panic!("{other} and {name} are both {id}");
            }
            assert!(lookup(*id).is_some(), "{name} = {id} is not in CATALOGUE");
            assert!(ALL_IDS.contains(id), "{name} = {id} is not in ALL_IDS");
        }
        let catalogued: Vec<u32> = CATALOGUE.iter().map(|d| d.id).collect();
        assert_eq!(
            ALL_IDS,
            catalogued.as_slice(),
            "ALL_IDS is not CATALOGUE's ids in order"
        );
    }

    #[test]
    fn the_catalogue_names_its_ids_by_constant() {
        let src = include_str!("status.rs");
        let start = src.find("pub const CATALOGUE").unwrap();
        let end = start + src[start..].find("\n];").unwrap();
        let rows: Vec<&str> = src[start..end].split("def(").skip(1).collect();
        assert_eq!(rows.len(), CATALOGUE.len());
        let names: Vec<&str> = declared_constants().iter().map(|(n, _)| *n).collect();
        for (row, d) in rows.iter().zip(CATALOGUE) {
            let name = row.trim_start().split(',').next().unwrap();
            assert!(
                names.contains(&name),
                "CATALOGUE writes id {} as `{name}`, not by its constant",
                d.id
            );
        }
    }

    #[test]
    fn renders_insertion_strings() {
        let s = render(
            SENDER_PROGRESS,
            &["CEN00001".into(), "2".into(), "S01".into(), "40".into()],
        );
        assert_eq!(
            s,
            "Sending package CEN00001 version 2 to site S01: 40% complete."
        );
        assert!(render(SENDER_COMPLETE, &[]).contains("<%1 missing>"));
        assert!(render(1, &[]).contains("unknown message id 1"));
    }
}
