//! Decisions: turning an operator's request into the config event (and status messages) to
//! append, or a refusal that says what is wrong and how to fix it.
//!
//! Sans-IO like the projections: each function reads the current projections through a
//! [`ProjectionStore`] and takes the time and site as arguments. The daemon runs them inside
//! the sled transaction that appends their event, so an id allocated here is never handed out
//! twice.

use crate::sansio::projection::{self, ProjError, ProjectionStore};
use chrono::{DateTime, NaiveDateTime, Utc};
use schema::advert::{Advertisement, Program, TimeBasis};
use schema::event::{ConfigEvent, DistributionTarget, DpRef, PackageVersion, Priority};
use schema::manifest::Manifest;
use schema::report::{Attribute, Report, StatusMessage};
use schema::status;
use schema::{AdvertisementId, ManifestId, PackageId, SiteCode};
use serde::{Deserialize, Serialize};

/// Who decides and when.
#[derive(Clone, Debug)]
pub struct Ctx {
    pub site: SiteCode,
    pub machine: String,
    pub now: DateTime<Utc>,
}

impl Ctx {
    pub fn status(&self, id: u32, attributes: Vec<Attribute>, insertion: Vec<String>) -> Report {
        Report::Status(StatusMessage::new(
            id,
            self.site,
            self.machine.clone(),
            self.now,
            attributes,
            insertion,
        ))
    }
}

/// Why a request was refused. The text names the thing and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("package {0} does not exist: list packages with `site-server package list`")]
    UnknownPackage(PackageId),
    #[error("package {package} belongs to site {owner}: publish its new versions at {owner}")]
    NotOwner { package: PackageId, owner: SiteCode },
    #[error("site {0} has used all 99999 {1} ids")]
    IdsExhausted(SiteCode, &'static str),
    #[error("{0}")]
    Invalid(String),
    #[error("{missing} of the manifest's chunks are not in this site's content store (first: {first}): publish again")]
    MissingChunks { missing: usize, first: String },
}

/// What a decision produced: the event to append (if any), the reports to append with it, and
/// the answer for the caller.
pub struct Decided<T> {
    pub event: Option<ConfigEvent>,
    pub reports: Vec<Report>,
    pub out: T,
}

#[derive(Debug, thiserror::Error)]
pub enum DecideError<E> {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Proj(#[from] ProjError<E>),
}

/// Which package a publish is for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PublishTarget {
    New { name: String },
    Existing(PackageId),
}

/// What `package publish` sends to the daemon once the content is in the store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishRequest {
    pub target: PublishTarget,
    pub priority: Option<Priority>,
    pub manifest: Manifest,
    /// Chunks this publish added to the store (for the status message).
    pub new_chunks: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishOutcome {
    pub package: PackageId,
    pub name: String,
    pub source_version: u32,
    pub manifest_id: ManifestId,
    /// True when the content equals the current version: nothing was appended.
    pub unchanged: bool,
    pub files: u64,
    pub size: u64,
    pub chunks: u64,
    pub new_chunks: u64,
}

pub fn publish<S: ProjectionStore>(
    s: &S,
    ctx: &Ctx,
    req: &PublishRequest,
) -> Result<Decided<PublishOutcome>, DecideError<S::Error>> {
    req.manifest
        .validate()
        .map_err(|e| Refusal::Invalid(e.to_string()))?;
    let manifest_id = req.manifest.id();
    let (package, name, source_version, priority) = match &req.target {
        PublishTarget::New { name } => {
            let name = check_name("package name", name)?;
            let meta = projection::meta(s)?;
            let id = PackageId::new(ctx.site, meta.next_package.max(1))
                .ok_or(Refusal::IdsExhausted(ctx.site, "package"))?;
            (id, name, 1, req.priority.unwrap_or_default())
        }
        PublishTarget::Existing(id) => {
            let rec = projection::package(s, id)?.ok_or(Refusal::UnknownPackage(*id))?;
            if id.site != ctx.site {
                return Err(Refusal::NotOwner {
                    package: *id,
                    owner: id.site,
                }
                .into());
            }
            if let Some(cur) = rec.current().filter(|c| c.manifest_id == manifest_id) {
                return Ok(Decided {
                    event: None,
                    reports: vec![],
                    out: outcome(*id, &rec.name, cur.source_version, req, true),
                });
            }
            (
                *id,
                rec.name.clone(),
                rec.latest_number() + 1,
                req.priority.unwrap_or(rec.priority),
            )
        }
    };
    let out = outcome(package, &name, source_version, req, false);
    let report = ctx.status(
        status::PACKAGE_PUBLISHED,
        vec![
            Attribute::Package(package),
            Attribute::SourceVersion(source_version),
        ],
        vec![
            package.to_string(),
            name.clone(),
            source_version.to_string(),
            out.files.to_string(),
            out.size.to_string(),
            req.new_chunks.to_string(),
        ],
    );
    Ok(Decided {
        event: Some(ConfigEvent::PackageVersionPublished(PackageVersion {
            package,
            name,
            source_version,
            priority,
            manifest_id,
            manifest: req.manifest.clone(),
        })),
        reports: vec![report],
        out,
    })
}

fn outcome(
    package: PackageId,
    name: &str,
    source_version: u32,
    req: &PublishRequest,
    unchanged: bool,
) -> PublishOutcome {
    PublishOutcome {
        package,
        name: name.to_string(),
        source_version,
        manifest_id: req.manifest.id(),
        unchanged,
        files: req.manifest.files.len() as u64,
        size: req.manifest.total_size(),
        chunks: req.manifest.chunk_count() as u64,
        new_chunks: if unchanged { 0 } else { req.new_chunks },
    }
}

fn check_name(what: &str, name: &str) -> Result<String, Refusal> {
    let t = name.trim();
    if t.is_empty() || t.len() > 200 || t.chars().any(|c| c.is_control()) {
        return Err(Refusal::Invalid(format!(
            "{what} {name:?} is not usable: give 1-200 printable characters"
        )));
    }
    Ok(t.to_string())
}

/// What `adv create` asks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdvertRequest {
    pub name: Option<String>,
    pub package: PackageId,
    pub program: Program,
    pub collection: String,
    pub start: Option<NaiveDateTime>,
    pub mandatory: Vec<NaiveDateTime>,
    pub utc: bool,
    /// The recurring schedule and time limit (re-runs start at 0).
    #[serde(default)]
    pub run: schema::advert::RunOptions,
}

pub fn create_advert<S: ProjectionStore>(
    s: &S,
    ctx: &Ctx,
    req: &AdvertRequest,
) -> Result<Decided<Advertisement>, DecideError<S::Error>> {
    if projection::package(s, &req.package)?.is_none() {
        return Err(Refusal::UnknownPackage(req.package).into());
    }
    let program = check_name("program name", &req.program.name)?;
    let collection = check_name("collection name", &req.collection)?;
    if req.program.command_line.trim().is_empty() {
        return Err(
            Refusal::Invalid("the program's command line is empty: give --command".into()).into(),
        );
    }
    req.program.exit.validate().map_err(Refusal::Invalid)?;
    let meta = projection::meta(s)?;
    let number = meta.next_advert.max(AdvertisementId::FIRST_NUMBER);
    if number > PackageId::MAX_NUMBER {
        return Err(Refusal::IdsExhausted(ctx.site, "advertisement").into());
    }
    let id = AdvertisementId {
        site: ctx.site,
        number,
    };
    let start = req.start.unwrap_or_else(|| {
        use chrono::Timelike;
        let t = ctx.now.naive_utc();
        t.with_nanosecond(0).unwrap_or(t)
    });
    if let Some(m) = req.mandatory.iter().find(|m| **m < start) {
        return Err(Refusal::Invalid(format!(
            "mandatory time {m} is before the start time {start}: give a later --mandatory"
        ))
        .into());
    }
    let adv = Advertisement {
        id,
        name: req
            .name
            .clone()
            .unwrap_or_else(|| format!("{} - {}", req.package, program)),
        package: req.package,
        program: Program {
            name: program.clone(),
            ..req.program.clone()
        },
        collection: collection.clone(),
        start,
        mandatory: req.mandatory.clone(),
        time_basis: if req.utc {
            TimeBasis::Utc
        } else {
            TimeBasis::ClientLocal
        },
        enabled: true,
        run: req.run.clone(),
    };
    let report = ctx.status(
        status::ADVERTISEMENT_CREATED,
        vec![
            Attribute::Advertisement(id),
            Attribute::Package(req.package),
            Attribute::Collection(collection.clone()),
        ],
        vec![id.to_string(), req.package.to_string(), program, collection],
    );
    Ok(Decided {
        event: Some(ConfigEvent::AdvertisementCreated(adv.clone())),
        reports: vec![report],
        out: adv,
    })
}

/// What `package distribute` asks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DistributeRequest {
    pub package: PackageId,
    pub targets: Vec<DistributionTarget>,
}

/// What `package distribute` did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DistributeOutcome {
    pub package: PackageId,
    /// Targets added by this request.
    pub added: Vec<DistributionTarget>,
    /// Targets that were already there (nothing appended for them).
    pub already: Vec<DistributionTarget>,
}

/// Targets a package at sites. `known` is this site and every site of its subtree that it
/// knows of (configured children, and what their reports say is below them): a target
/// outside it is a typo or a site that has never connected, and is refused.
pub fn distribute<S: ProjectionStore>(
    s: &S,
    ctx: &Ctx,
    req: &DistributeRequest,
    known: &std::collections::BTreeSet<SiteCode>,
    dps: &std::collections::BTreeSet<(SiteCode, String)>,
) -> Result<Decided<DistributeOutcome>, DecideError<S::Error>> {
    if projection::package(s, &req.package)?.is_none() {
        return Err(Refusal::UnknownPackage(req.package).into());
    }
    if req.targets.is_empty() {
        return Err(Refusal::Invalid("no target given: say where with --site CODE".into()).into());
    }
    for t in &req.targets {
        let site = match t {
            DistributionTarget::Site(site) | DistributionTarget::DistributionPoint { site, .. } => {
                site
            }
            DistributionTarget::DpGroup(g) => {
                if !projection::dp_groups(s)?.contains_key(g) {
                    return Err(Refusal::Invalid(format!(
                        "distribution point group {g:?} does not exist: create it with `site-server dp group create {g}` or see `site-server dp group list`"
                    ))
                    .into());
                }
                continue;
            }
        };
        if let DistributionTarget::DistributionPoint { site, dp } = t {
            if known.contains(site) && !dps.contains(&(*site, dp.clone())) {
                let list: Vec<String> = dps
                    .iter()
                    .filter(|(s, _)| s == site)
                    .map(|(s, d)| format!("{s}/{d}"))
                    .collect();
                return Err(Refusal::Invalid(format!(
                    "distribution point {site}/{dp} is not known here (known at {site}: {}): check the id; a DP is known once its site has it (`site-server dp add` there) and has reported it up, see `site-server dp list`",
                    if list.is_empty() { "none".to_string() } else { list.join(", ") }
                ))
                .into());
            }
        }
        if !known.contains(site) {
            let list: Vec<String> = known.iter().map(|s| s.to_string()).collect();
            return Err(Refusal::Invalid(format!(
                "site {site} is not {} or below it (known: {}): check the code; a site is known here once it (or its parent) has connected, see `site-server status sites`",
                ctx.site,
                list.join(", ")
            ))
            .into());
        }
    }
    let have = projection::targets(s, &req.package)?;
    let mut added = Vec::new();
    let mut already = Vec::new();
    for t in &req.targets {
        if have.contains(t) || added.contains(t) {
            if !already.contains(t) {
                already.push(t.clone());
            }
        } else {
            added.push(t.clone());
        }
    }
    let reports = added
        .iter()
        .map(|t| {
            let mut attrs = vec![Attribute::Package(req.package)];
            if let DistributionTarget::Site(site) = t {
                attrs.push(Attribute::DestinationSite(*site));
            }
            ctx.status(
                status::PACKAGE_TARGETED,
                attrs,
                vec![req.package.to_string(), t.to_string()],
            )
        })
        .collect();
    Ok(Decided {
        event: (!added.is_empty()).then(|| ConfigEvent::DistributionTargetsAdded {
            package: req.package,
            targets: added.clone(),
        }),
        reports,
        out: DistributeOutcome {
            package: req.package,
            added,
            already,
        },
    })
}

/// `package undistribute`: the package is no longer wanted at these targets (a DP drops
/// it, a site no longer fetches it). Each target must be one the package has.
pub fn undistribute<S: ProjectionStore>(
    s: &S,
    ctx: &Ctx,
    req: &DistributeRequest,
) -> Result<Decided<Vec<DistributionTarget>>, DecideError<S::Error>> {
    if projection::package(s, &req.package)?.is_none() {
        return Err(Refusal::UnknownPackage(req.package).into());
    }
    if req.targets.is_empty() {
        return Err(Refusal::Invalid(
            "no target given: say which with --site, --dp or --dp-group".into(),
        )
        .into());
    }
    let have = projection::targets(s, &req.package)?;
    let mut removed: Vec<DistributionTarget> = Vec::new();
    for t in &req.targets {
        if !have.contains(t) {
            let list: Vec<String> = have.iter().map(|t| t.to_string()).collect();
            return Err(Refusal::Invalid(format!(
                "package {} is not targeted at {t} (its targets: {}): see `site-server package show {}`",
                req.package,
                if list.is_empty() { "none".to_string() } else { list.join(", ") },
                req.package
            ))
            .into());
        }
        if !removed.contains(t) {
            removed.push(t.clone());
        }
    }
    let reports = removed
        .iter()
        .map(|t| {
            ctx.status(
                status::PACKAGE_UNTARGETED,
                vec![Attribute::Package(req.package)],
                vec![req.package.to_string(), t.to_string()],
            )
        })
        .collect();
    Ok(Decided {
        event: Some(ConfigEvent::DistributionTargetsRemoved {
            package: req.package,
            targets: removed.clone(),
        }),
        reports,
        out: removed,
    })
}

/// `package retire`: a source version is withdrawn everywhere (DPs delete it; the newest
/// version not retired becomes the current one).
pub fn retire<S: ProjectionStore>(
    s: &S,
    ctx: &Ctx,
    package: PackageId,
    version: u32,
) -> Result<Decided<()>, DecideError<S::Error>> {
    let Some(rec) = projection::package(s, &package)? else {
        return Err(Refusal::UnknownPackage(package).into());
    };
    match rec.versions.iter().find(|v| v.source_version == version) {
        None => {
            return Err(Refusal::Invalid(format!(
                "package {package} has no version {version} (it has 1 to {}): see `site-server package show {package}`",
                rec.latest_number()
            ))
            .into())
        }
        Some(v) if v.retired => {
            return Err(Refusal::Invalid(format!(
                "package {package} version {version} is already retired"
            ))
            .into())
        }
        Some(_) => {}
    }
    Ok(Decided {
        event: Some(ConfigEvent::PackageVersionRetired {
            package,
            source_version: version,
        }),
        reports: vec![ctx.status(
            status::PACKAGE_VERSION_RETIRED,
            vec![
                Attribute::Package(package),
                Attribute::SourceVersion(version),
            ],
            vec![package.to_string(), version.to_string()],
        )],
        out: (),
    })
}

/// `sender boost`: an emergency lets `package` ignore schedules and rate limits on its way.
pub fn boost<S: ProjectionStore>(
    s: &S,
    ctx: &Ctx,
    package: PackageId,
    until: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<Decided<()>, DecideError<S::Error>> {
    if projection::package(s, &package)?.is_none() {
        return Err(Refusal::UnknownPackage(package).into());
    }
    let when = until.map_or("it is lifted".to_string(), |t| t.to_rfc3339());
    Ok(Decided {
        event: Some(ConfigEvent::SenderBoost { package, until }),
        reports: vec![ctx.status(
            status::SENDER_EMERGENCY_BOOST,
            vec![Attribute::Package(package)],
            vec![package.to_string(), when],
        )],
        out: (),
    })
}

/// `package priority`: a package's jobs go at `priority` from now on, on every link.
pub fn set_priority<S: ProjectionStore>(
    s: &S,
    ctx: &Ctx,
    package: PackageId,
    priority: Priority,
) -> Result<Decided<()>, DecideError<S::Error>> {
    let Some(rec) = projection::package(s, &package)? else {
        return Err(Refusal::UnknownPackage(package).into());
    };
    if rec.priority == priority {
        return Ok(Decided {
            event: None,
            reports: vec![],
            out: (),
        });
    }
    Ok(Decided {
        event: Some(ConfigEvent::PackagePriorityChanged { package, priority }),
        reports: vec![ctx.status(
            status::SENDER_PRIORITY_CHANGED,
            vec![Attribute::Package(package)],
            vec![package.to_string(), priority.to_string()],
        )],
        out: (),
    })
}

/// Checks a group name: 1 to 32 letters, digits, `-`, `_` or `.`.
pub fn check_group_name(name: &str) -> Result<(), Refusal> {
    let ok = (1..=32).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Refusal::Invalid(format!(
            "group name {name:?} is not valid: use 1 to 32 letters, digits, '-', '_' or '.'"
        )))
    }
}

/// `dp group create NAME`.
pub fn dp_group_create<S: ProjectionStore>(
    s: &S,
    ctx: &Ctx,
    group: &str,
) -> Result<Decided<()>, DecideError<S::Error>> {
    check_group_name(group)?;
    if projection::dp_groups(s)?.contains_key(group) {
        return Err(Refusal::Invalid(format!(
            "distribution point group {group:?} exists already: see `site-server dp group list`"
        ))
        .into());
    }
    Ok(Decided {
        event: Some(ConfigEvent::DpGroupCreated {
            group: group.to_string(),
        }),
        reports: vec![ctx.status(status::DP_GROUP_CREATED, vec![], vec![group.to_string()])],
        out: (),
    })
}

/// `dp group add|remove NAME --dp S01/DP1`: `known` are the DPs reported in the subtree.
pub fn dp_group_change<S: ProjectionStore>(
    s: &S,
    ctx: &Ctx,
    group: &str,
    add: &[DpRef],
    remove: &[DpRef],
    known: &std::collections::BTreeSet<(SiteCode, String)>,
    packages_at_group: usize,
) -> Result<Decided<()>, DecideError<S::Error>> {
    let groups = projection::dp_groups(s)?;
    let Some(members) = groups.get(group) else {
        return Err(Refusal::Invalid(format!(
            "distribution point group {group:?} does not exist: create it with `site-server dp group create {group}`"
        ))
        .into());
    };
    for d in add {
        if !known.contains(&(d.site, d.dp.clone())) {
            return Err(Refusal::Invalid(format!(
                "distribution point {d} is not known here: see `site-server dp list` (a DP is known once its site reported it)"
            ))
            .into());
        }
    }
    for d in remove {
        if !members.contains(d) {
            return Err(Refusal::Invalid(format!(
                "distribution point {d} is not in group {group:?}: see `site-server dp group list`"
            ))
            .into());
        }
    }
    let added: Vec<DpRef> = add
        .iter()
        .filter(|d| !members.contains(d))
        .cloned()
        .collect();
    let removed: Vec<DpRef> = remove.to_vec();
    let mut reports = Vec::new();
    for d in &added {
        reports.push(ctx.status(
            status::DP_JOINED_GROUP,
            vec![],
            vec![
                group.to_string(),
                d.to_string(),
                packages_at_group.to_string(),
            ],
        ));
    }
    for d in &removed {
        reports.push(ctx.status(
            status::DP_LEFT_GROUP,
            vec![],
            vec![group.to_string(), d.to_string()],
        ));
    }
    Ok(Decided {
        event: (!added.is_empty() || !removed.is_empty()).then(|| {
            ConfigEvent::DpGroupMembersChanged {
                group: group.to_string(),
                added,
                removed,
            }
        }),
        reports,
        out: (),
    })
}
