//! `site-server courier export|import|receipt`. The CLI reads and writes the files (with a
//! progress bar on a terminal); the site decides and records, through the admin API when
//! the daemon runs, or in this process (under the data directory's lock) when it does not.

use crate::cli::client::AdminClient;
use crate::cli::{CliError, DataArg, Res};
use clap::Subcommand;
use schema::report::ReportEnvelope;
use schema::SiteCode;
use site_server::config::{DataDir, SiteConfig};
use site_server::courier as ops;
use site_server::site::{ExportOutcome, ExportPlan, ImportOutcome, ReadReceipt, ReceiptState};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum CourierCmd {
    /// Write a signed bundle for a child: config events since it was last known, and the
    /// chunks its subtree needs that it is not known to have.
    Export {
        #[command(flatten)]
        data: DataArg,
        /// The child site.
        #[arg(long)]
        to: String,
        /// The bundle file (several volumes: OUT.001, OUT.002, ...).
        #[arg(long)]
        out: PathBuf,
        /// Largest volume, e.g. 4GiB (FAT32 holds no file over 4 GiB).
        #[arg(long)]
        max_volume: Option<String>,
        /// Start from the child's last receipt, not the last export (to redo a lost bundle).
        #[arg(long)]
        since_receipt: bool,
    },
    /// Import a bundle (every volume of it) at a child, or a receipt at its parent.
    Import {
        #[command(flatten)]
        data: DataArg,
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Write a signed receipt for the parent: this site's reports, applied position and the
    /// package versions it holds.
    Receipt {
        #[command(flatten)]
        data: DataArg,
        #[arg(long)]
        out: PathBuf,
    },
}

/// The site, through its daemon or opened here.
enum Access {
    Daemon(AdminClient),
    Offline(Box<(site_server::daemon::DirLock, site_server::site::Site)>),
}

impl Access {
    fn open(dir: &DataDir) -> Result<Self, CliError> {
        if dir.admin().exists() {
            return Ok(Access::Daemon(AdminClient::from_dir(dir)?));
        }
        let (lock, site) = site_server::daemon::open_site(dir, false)?;
        Ok(Access::Offline(Box::new((lock, site))))
    }
    fn site(&self) -> Option<&site_server::site::Site> {
        match self {
            Access::Offline(b) => Some(&b.1),
            Access::Daemon(_) => None,
        }
    }
}

fn op<T>(r: Result<T, site_server::site::OpError>) -> Result<T, CliError> {
    r.map_err(CliError::from)
}

fn progress(total: u64, what: &str) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() || total == 0 {
        return indicatif::ProgressBar::hidden();
    }
    let p = indicatif::ProgressBar::new(total);
    p.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{what} [{{bar:30}}] {{bytes}}/{{total_bytes}} {{bytes_per_sec}} eta {{eta}}"
        ))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    p
}

fn key_of(hex_key: &str, whose: &str) -> Result<ed25519_dalek::VerifyingKey, CliError> {
    let mut b = [0u8; 32];
    hex::decode_to_slice(hex_key, &mut b)
        .ok()
        .and_then(|()| ed25519_dalek::VerifyingKey::from_bytes(&b).ok())
        .ok_or_else(|| {
            CliError::usage(format!(
                "the public key of {whose} in site.toml is not valid: set it again"
            ))
        })
}

pub async fn run(cmd: CourierCmd) -> Res {
    match cmd {
        CourierCmd::Export {
            data,
            to,
            out,
            max_volume,
            since_receipt,
        } => export(&data.dir(), &to, &out, max_volume.as_deref(), since_receipt).await,
        CourierCmd::Import { data, paths } => import(&data.dir(), &paths).await,
        CourierCmd::Receipt { data, out } => receipt(&data.dir(), &out).await,
    }
}

async fn export(
    dir: &DataDir,
    to: &str,
    out: &std::path::Path,
    max: Option<&str>,
    since_receipt: bool,
) -> Res {
    let to = SiteCode::new(to).map_err(|e| CliError::usage(format!("--to {to:?}: {e}")))?;
    let max = max
        .map(|m| {
            sender::schedule::parse_size(m)
                .map_err(|e| CliError::usage(format!("--max-volume: {e}")))
        })
        .transpose()?;
    let cfg = SiteConfig::load(dir).map_err(|e| CliError::usage(e.to_string()))?;
    if !cfg.children.iter().any(|c| c.code == to) {
        return Err(CliError::usage(format!(
            "{to} is not a child of {}: see `site-server child list`",
            cfg.code
        )));
    }
    if out.is_dir() {
        return Err(CliError::usage(format!(
            "--out {} is a directory: give a file name",
            out.display()
        )));
    }
    let key = sender::identity::load_signing_key(&dir.root)
        .map_err(|e| CliError::failed(e.to_string()))?;
    let access = Access::open(dir)?;
    let plan: ExportPlan = match &access {
        Access::Daemon(c) => {
            c.post_json(
                "/v1/courier/plan",
                &serde_json::json!({ "to": to, "since_receipt": since_receipt }),
            )
            .await?
        }
        Access::Offline(_) => op(access
            .site()
            .expect("offline")
            .courier_plan(to, since_receipt))?,
    };
    let store = dist_point::ContentStore::open(dir.content())
        .map_err(|e| CliError::failed(e.to_string()))?;
    let total: u64 = plan.chunks.iter().map(|c| c.1).sum();
    let bar = progress(total, "export");
    let outcome: ExportOutcome = tokio::task::block_in_place(|| {
        ops::write_bundle(&plan, &store, &key, out, max, &|n| bar.inc(n))
    })
    .map_err(CliError::failed)?;
    bar.finish_and_clear();
    match &access {
        Access::Daemon(c) => {
            let _: serde_json::Value = c
                .post_json(
                    "/v1/courier/exported",
                    &serde_json::json!({ "plan": plan, "outcome": outcome }),
                )
                .await?;
        }
        Access::Offline(_) => op(access
            .site()
            .expect("offline")
            .courier_exported(&plan, &outcome))?,
    }
    println!(
        "bundle {} for {to}: config positions {}..{} ({} events), {} chunk(s) ({} bytes), {} file(s), {} bytes:",
        outcome.bundle_id,
        plan.first,
        plan.last,
        plan.events.len(),
        outcome.chunks,
        outcome.chunk_bytes,
        outcome.files.len(),
        outcome.bytes
    );
    for f in &outcome.files {
        println!("  {}", f.display());
    }
    if !plan.not_yet_here.is_empty() {
        let v: Vec<String> = plan
            .not_yet_here
            .iter()
            .map(|(p, v)| format!("{p} v{v}"))
            .collect();
        println!(
            "not carried yet (this site does not have all of it yet): {}; export again when it has",
            v.join(", ")
        );
    }
    Ok(())
}

async fn import(dir: &DataDir, paths: &[PathBuf]) -> Res {
    let cfg = SiteConfig::load(dir).map_err(|e| CliError::usage(e.to_string()))?;
    let (kind, first) = ops::peek(&paths[0]).map_err(CliError::usage)?;
    let access = Access::open(dir)?;
    let refused = |what: String, reason: String| {
        let access = &access;
        async move {
            let r = match access {
                Access::Daemon(c) => c
                    .post_json::<serde_json::Value, _>(
                        "/v1/courier/refused",
                        &serde_json::json!({ "what": what, "reason": reason }),
                    )
                    .await
                    .map(|_| ()),
                Access::Offline(_) => op(access
                    .site()
                    .expect("offline")
                    .courier_refused(&what, &reason)),
            };
            if let Err(e) = r {
                eprintln!("(could not record the refusal: {})", e.line());
            }
            CliError::usage(reason)
        }
    };
    let name = paths[0].display().to_string();
    if kind == ::courier::Kind::Receipt {
        let Some(child) = cfg.children.iter().find(|c| c.code == first.source) else {
            return Err(refused(
                name,
                format!(
                    "{} is a receipt from {}, which is not a child of {}",
                    paths[0].display(),
                    first.source,
                    cfg.code
                ),
            )
            .await);
        };
        let key = key_of(&child.public_key, child.code.as_str())?;
        let r: ReadReceipt = match ops::read_receipt(&paths[0], cfg.code, child.code, &key) {
            Ok(r) => r,
            Err(e) => return Err(refused(name, e).await),
        };
        let o: ImportOutcome = match &access {
            Access::Daemon(c) => c.post_json("/v1/courier/receipt", &r).await?,
            Access::Offline(_) => op(access.site().expect("offline").receipt_apply(&r))?,
        };
        println!(
            "receipt from {}: {} report(s) applied ({} already here); {} has applied up to position {} and holds {} package version(s)",
            r.source,
            o.applied,
            o.skipped,
            r.source,
            r.state.applied,
            r.state.inventory.len()
        );
        return Ok(());
    }
    let Some(parent) = cfg.parent.clone() else {
        return Err(refused(name, format!("{} has no parent: set it (`site-server parent set --courier ...`) before importing its bundles", cfg.code)).await);
    };
    let key = key_of(&parent.public_key, parent.code.as_str())?;
    let store = dist_point::ContentStore::open(dir.content())
        .map_err(|e| CliError::failed(e.to_string()))?;
    let total: u64 = paths
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    let bar = progress(total, "import");
    let read = tokio::task::block_in_place(|| {
        ops::read_bundle(paths, cfg.code, parent.code, &key, &store, &|n| bar.inc(n))
    });
    bar.finish_and_clear();
    let mut b = match read {
        Ok(b) => b,
        Err(e) => return Err(refused(name, e).await),
    };
    let cursor: u64 = match &access {
        Access::Daemon(c) => c.get("/v1/courier/cursor").await?,
        Access::Offline(_) => op(access.site().expect("offline").parent_applied())?,
    };
    let h = &b.header;
    // A gap first: a bundle that starts after this site's position is refused whatever it
    // carries (events or only chunks).
    if h.first > cursor + 1 {
        return Err(refused(
            name,
            format!(
                "bundle {} carries positions {}..{} but this site is at {cursor}: positions {}..{} are missing; import the bundle that carries them first, or ask {} for `courier export --to {} --since-receipt`",
                h.id_hex(),
                h.first,
                h.last,
                cursor + 1,
                h.first - 1,
                parent.code,
                cfg.code
            ),
        )
        .await);
    }
    if (h.last < h.first || h.last <= cursor) && !b.staged() {
        println!(
            "bundle {} was already applied (this site is at position {cursor}, the bundle carries {}..{}): nothing to do",
            h.id_hex(),
            h.first,
            h.last
        );
        return Ok(());
    }
    // Verified: the chunks become durable, then the events are applied with the cursor.
    let stored = b.commit().map_err(|e| CliError::failed(e.to_string()))?;
    // The renames too are durable before the events say the content is here.
    store.sync().map_err(|e| CliError::failed(e.to_string()))?;
    let o: ImportOutcome = match &access {
        Access::Daemon(c) => {
            c.post_json(
                "/v1/courier/apply",
                &serde_json::json!({ "header": b.header, "events": b.events }),
            )
            .await?
        }
        Access::Offline(_) => op(access
            .site()
            .expect("offline")
            .courier_apply(&b.header, &b.events))?,
    };
    if o.already && stored.is_empty() {
        println!(
            "bundle {} was already applied: nothing to do",
            b.header.id_hex()
        );
    } else {
        println!(
            "bundle {} from {}: {} event(s) applied, {} already here; {} of {} chunk(s) stored (the others were here); now at position {}",
            b.header.id_hex(),
            b.header.source,
            o.applied,
            o.skipped,
            stored.len(),
            b.chunks,
            o.cursor
        );
    }
    Ok(())
}

async fn receipt(dir: &DataDir, out: &std::path::Path) -> Res {
    let key = sender::identity::load_signing_key(&dir.root)
        .map_err(|e| CliError::failed(e.to_string()))?;
    let access = Access::open(dir)?;
    let (header, reports, state): (::courier::BundleHeader, Vec<ReportEnvelope>, ReceiptState) =
        match &access {
            Access::Daemon(c) => c.get("/v1/courier/receipt-plan").await?,
            Access::Offline(_) => op(access.site().expect("offline").receipt_plan())?,
        };
    let bytes =
        ops::write_receipt(&header, &reports, &state, &key, out).map_err(CliError::failed)?;
    println!(
        "receipt for {}: {} report(s), applied up to position {}, {} package version(s) here; {} ({} bytes)",
        header.destination,
        reports.len(),
        state.applied,
        state.inventory.len(),
        out.display(),
        bytes
    );
    Ok(())
}
