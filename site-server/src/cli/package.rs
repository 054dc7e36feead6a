//! `package publish|list|show|distribute|undistribute|retire|priority`.

use super::common::*;
use crate::cli::client::AdminClient;
use clap::Subcommand;
use schema::event::Priority;
use schema::manifest::EntryKind;
use schema::{encoding, SiteCode};
use site_server::config::DataDir;
use site_server::publish::{self, PublishError};
use site_server::sansio::decide::{PublishOutcome, PublishRequest, PublishTarget};
use site_server::site::{IdentityView, PackageDetail, PackageSummary};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum PackageCmd {
    /// Publish a new package, or a new source version of an existing one.
    Publish {
        #[command(flatten)]
        data: DataArg,
        /// Directory (or single file) to publish.
        #[arg(long)]
        source: PathBuf,
        /// Name of a new package.
        #[arg(long, conflicts_with = "package", required_unless_present = "package")]
        name: Option<String>,
        /// Existing package to publish a new source version of.
        #[arg(long)]
        package: Option<String>,
        /// high, medium or low (new packages default to medium).
        #[arg(long)]
        priority: Option<String>,
        /// Re-read every file instead of trusting the stat cache.
        #[arg(long)]
        rehash: bool,
        #[arg(long)]
        json: bool,
    },
    /// List packages.
    List {
        #[command(flatten)]
        data: DataArg,
        #[arg(long)]
        json: bool,
    },
    /// Change a package's priority (high, medium, low): its sendings follow on every link.
    Priority {
        id: String,
        #[command(flatten)]
        data: DataArg,
        #[arg(long)]
        priority: String,
    },
    /// Target a package at sites: every site on the way fetches its content.
    Distribute {
        id: String,
        #[command(flatten)]
        data: DataArg,
        /// Site code (this site or one below it); repeat for several.
        #[arg(long = "site", required_unless_present_any = ["dps", "groups"])]
        sites: Vec<String>,
        /// A distribution point, SITE/ID (e.g. S01/DP1); repeat for several. Its site fetches
        /// the content on the way.
        #[arg(long = "dp")]
        dps: Vec<String>,
        /// A distribution point group; repeat for several.
        #[arg(long = "dp-group")]
        groups: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Stop targeting a package at sites, DPs or groups: DPs delete it (chunks another
    /// package or version uses stay).
    Undistribute {
        id: String,
        #[command(flatten)]
        data: DataArg,
        #[arg(long = "site", required_unless_present_any = ["dps", "groups"])]
        sites: Vec<String>,
        #[arg(long = "dp")]
        dps: Vec<String>,
        #[arg(long = "dp-group")]
        groups: Vec<String>,
    },
    /// Withdraw a source version everywhere: DPs delete it; the newest version not retired
    /// is the current one again.
    Retire {
        id: String,
        #[command(flatten)]
        data: DataArg,
        #[arg(long)]
        version: u32,
    },
    /// Show a package, its versions and its current files.
    Show {
        id: String,
        #[command(flatten)]
        data: DataArg,
        #[arg(long)]
        json: bool,
    },
}

pub(super) fn publish_error(e: PublishError) -> CliError {
    match e {
        PublishError::Unreadable { .. } | PublishError::Store(_) => CliError::failed(e.to_string()),
        _ => CliError::usage(e.to_string()),
    }
}

pub(super) async fn package(cmd: PackageCmd) -> Res {
    match cmd {
        PackageCmd::Publish {
            data,
            source,
            name,
            package,
            priority,
            rehash,
            json,
        } => {
            let target = match (name, package) {
                (Some(name), None) => PublishTarget::New { name },
                (None, Some(p)) => PublishTarget::Existing(parse_package(&p)?),
                _ => return Err(CliError::usage("give exactly one of --name or --package")),
            };
            let priority = priority
                .map(|p| p.parse::<Priority>().map_err(CliError::usage))
                .transpose()?;
            publish_cmd(&data.dir(), &source, target, priority, rehash, json).await
        }
        PackageCmd::List { data, json } => list(&data.dir(), json).await,
        PackageCmd::Priority { id, data, priority } => {
            crate::cli::sender::set_priority(data, &id, &priority).await
        }
        PackageCmd::Undistribute {
            id,
            data,
            sites,
            dps,
            groups,
        } => undistribute(&data.dir(), &id, targets_of(&sites, &dps, groups)?).await,
        PackageCmd::Retire { id, data, version } => retire(&data.dir(), &id, version).await,
        PackageCmd::Distribute {
            id,
            data,
            sites,
            dps,
            groups,
            json,
        } => distribute(&data.dir(), &id, targets_of(&sites, &dps, groups)?, json).await,
        PackageCmd::Show { id, data, json } => show(&data.dir(), &id, json).await,
    }
}

/// `package publish`: checks with the daemon, stores the content, records the version.
async fn publish_cmd(
    dir: &DataDir,
    source: &std::path::Path,
    target: PublishTarget,
    priority: Option<Priority>,
    rehash: bool,
    json: bool,
) -> Res {
    let client = AdminClient::from_dir(dir)?;
    // Fail before touching the store if the daemon is down or the package unknown.
    let _: IdentityView = client.get("/v1/identity").await?;
    if let PublishTarget::Existing(id) = &target {
        let _: PackageDetail = client.get(&format!("/v1/packages/{id}")).await?;
    }
    let started = std::time::Instant::now();
    let (built, cache_path) = store_content(dir, source, rehash)?;
    let req = PublishRequest {
        target,
        priority,
        manifest: built.manifest,
        new_chunks: built.new_chunks,
    };
    let body = encoding::encode(&req).map_err(|e| CliError::failed(e.to_string()))?;
    let t_record = std::time::Instant::now();
    let out: PublishOutcome = client.post_bytes("/v1/packages/publish", body).await?;
    tracing::debug!(
        ms = t_record.elapsed().as_millis() as u64,
        "version recorded"
    );
    if let Err(e) = publish::save_cache(&cache_path, &built.cache) {
        tracing::warn!("cannot save the publish stat cache: {e}");
    }
    if json {
        return print_json(&out);
    }
    print_published(&out, started.elapsed().as_secs_f64());
    Ok(())
}

/// Scans `source` (nothing is stored unless every entry is fine), then chunks it into the
/// content store with a progress bar on stderr; the result and where its stat cache goes.
fn store_content(
    dir: &DataDir,
    source: &std::path::Path,
    rehash: bool,
) -> Result<(publish::Built, PathBuf), CliError> {
    let t_scan = std::time::Instant::now();
    let scanned = publish::scan(source).map_err(publish_error)?;
    tracing::debug!(
        files = scanned.files(),
        bytes = scanned.bytes,
        ms = t_scan.elapsed().as_millis() as u64,
        "source scanned"
    );
    let store = dist_point::ContentStore::open(dir.content())
        .map_err(|e| CliError::failed(e.to_string()))?;
    let cache_path = publish::cache_path(&dir.publish_cache(), &scanned.root);
    let cache = (!rehash).then(|| publish::load_cache(&cache_path));
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(scanned.bytes),
        indicatif::ProgressDrawTarget::stderr(),
    );
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("template")
        .progress_chars("=> "),
    );
    bar.set_message("publishing");
    let started = std::time::Instant::now();
    let built = tokio::task::block_in_place(|| {
        publish::build(&store, &scanned, cache.as_ref(), &|n| bar.inc(n))
    })
    .map_err(publish_error)?;
    bar.finish_and_clear();
    tracing::debug!(
        new_chunks = built.new_chunks,
        files_cached = built.files_cached,
        ms = started.elapsed().as_millis() as u64,
        "content stored"
    );
    Ok((built, cache_path))
}

fn print_published(out: &PublishOutcome, secs: f64) {
    if out.unchanged {
        println!(
            "package {} ({}) unchanged: source version {} already has this content (manifest {}); no new version",
            out.package, out.name, out.source_version, out.manifest_id.short()
        );
    } else {
        println!(
            "published {} ({}) source version {}: {} files, {}, {} chunks ({} new) in {:.1}s",
            out.package,
            out.name,
            out.source_version,
            out.files,
            human_bytes(out.size),
            out.chunks,
            out.new_chunks,
            secs
        );
    }
}

/// `package list`.
async fn list(dir: &DataDir, json: bool) -> Res {
    let client = AdminClient::from_dir(dir)?;
    let list: Vec<PackageSummary> = client.get("/v1/packages").await?;
    if json {
        return print_json(&list);
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|p| {
            vec![
                p.id.to_string(),
                p.name.clone(),
                p.source_version.to_string(),
                p.priority.to_string(),
                p.files.to_string(),
                human_bytes(p.size),
                p.published
                    .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                    .unwrap_or_default(),
            ]
        })
        .collect();
    print_table(
        &[
            "ID",
            "NAME",
            "VERSION",
            "PRIORITY",
            "FILES",
            "SIZE",
            "PUBLISHED (UTC)",
        ],
        &rows,
    );
    Ok(())
}

/// `package undistribute`.
async fn undistribute(
    dir: &DataDir,
    id: &str,
    targets: Vec<schema::event::DistributionTarget>,
) -> Res {
    let id = parse_package(id)?;
    let out: Vec<schema::event::DistributionTarget> = AdminClient::from_dir(dir)?
        .post_json(
            &format!("/v1/packages/{id}/undistribute"),
            &serde_json::json!({ "targets": targets }),
        )
        .await?;
    for t in &out {
        println!("{id} no longer targeted at {t}");
    }
    Ok(())
}

/// `package retire`.
async fn retire(dir: &DataDir, id: &str, version: u32) -> Res {
    let id = parse_package(id)?;
    let _: serde_json::Value = AdminClient::from_dir(dir)?
        .post_json(
            &format!("/v1/packages/{id}/retire"),
            &serde_json::json!({ "version": version }),
        )
        .await?;
    println!("{id} version {version} retired; distribution points delete it");
    Ok(())
}

/// `package distribute`.
async fn distribute(
    dir: &DataDir,
    id: &str,
    targets: Vec<schema::event::DistributionTarget>,
    json: bool,
) -> Res {
    let id = parse_package(id)?;
    let client = AdminClient::from_dir(dir)?;
    let out: site_server::sansio::decide::DistributeOutcome = client
        .post_json(
            &format!("/v1/packages/{id}/distribute"),
            &serde_json::json!({ "targets": targets }),
        )
        .await?;
    if json {
        return print_json(&out);
    }
    for t in &out.added {
        println!("{id} targeted at {t}");
    }
    for t in &out.already {
        println!("{id} was already targeted at {t} (nothing changed)");
    }
    Ok(())
}

/// `package show`: the package, its versions, and the current version's files.
async fn show(dir: &DataDir, id: &str, json: bool) -> Res {
    let id = parse_package(id)?;
    let client = AdminClient::from_dir(dir)?;
    let d: PackageDetail = client.get(&format!("/v1/packages/{id}")).await?;
    if json {
        return print_json(&d);
    }
    let p = &d.package;
    println!("package   {} ({})", p.id, p.name);
    println!("priority  {}", p.priority);
    let t: Vec<String> = d.targets.iter().map(|t| t.to_string()).collect();
    println!(
        "targets   {}",
        if t.is_empty() {
            "-".into()
        } else {
            t.join(", ")
        }
    );
    println!();
    let current = p.current().map(|v| v.source_version);
    let rows: Vec<Vec<String>> = p
        .versions
        .iter()
        .map(|v| {
            vec![
                v.source_version.to_string(),
                v.manifest_id.short(),
                v.files.to_string(),
                human_bytes(v.size),
                v.chunks.to_string(),
                v.published.format("%Y-%m-%d %H:%M:%S").to_string(),
                if v.retired {
                    "retired"
                } else if Some(v.source_version) == current {
                    "current"
                } else {
                    "superseded"
                }
                .into(),
            ]
        })
        .collect();
    print_table(
        &[
            "VERSION",
            "MANIFEST",
            "FILES",
            "SIZE",
            "CHUNKS",
            "PUBLISHED (UTC)",
            "STATE",
        ],
        &rows,
    );
    if let Some(m) = &d.manifest {
        println!();
        let rows: Vec<Vec<String>> = m
            .files
            .iter()
            .map(|f| {
                let (what, chunks) = match &f.kind {
                    EntryKind::File { chunks } => (String::new(), chunks.len().to_string()),
                    EntryKind::Symlink { target } => (format!(" -> {target}"), "-".into()),
                };
                vec![
                    format!("{:o}", f.mode),
                    human_bytes(f.size),
                    chunks,
                    format!("{}{what}", f.path),
                ]
            })
            .collect();
        print_table(&["MODE", "SIZE", "CHUNKS", "PATH"], &rows);
    }
    Ok(())
}

/// `--site`, `--dp` and `--dp-group` values as targets.
pub(super) fn targets_of(
    sites: &[String],
    dps: &[String],
    groups: Vec<String>,
) -> Result<Vec<schema::event::DistributionTarget>, CliError> {
    let mut targets = Vec::new();
    for s in sites {
        let code = SiteCode::new(s).map_err(|e| CliError::usage(format!("--site {s:?}: {e}")))?;
        targets.push(schema::event::DistributionTarget::Site(code));
    }
    for d in dps {
        targets.push(crate::cli::dp::parse_dp_target(d)?);
    }
    for g in groups {
        targets.push(schema::event::DistributionTarget::DpGroup(g));
    }
    Ok(targets)
}
