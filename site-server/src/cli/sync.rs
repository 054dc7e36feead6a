//! `site-server sync ...`, `site-server catalog ...` and `site-server status sync`: catalog
//! sync at the top site, its sources and schedule in `site.toml`, and what operators ask of
//! the catalog.

use crate::cli::client::AdminClient;
use crate::cli::{human_bytes, parse_since, print_json, print_table, CliError, DataArg, Res};
use chrono::Utc;
use clap::Subcommand;
use schema::catalog::Update;
use site_server::catalog::sync::SyncOutcome;
use site_server::config::{DataDir, SiteConfig, SyncSource};
use site_server::site::{CatalogEntry, CatalogQuery, CatalogState, SyncRow};
use std::sync::Arc;

#[derive(Subcommand)]
pub enum SyncCmd {
    /// Sync the catalog from its sources now (top site only). Works with or without the
    /// daemon running.
    Now {
        #[command(flatten)]
        data: DataArg,
        #[arg(long)]
        json: bool,
    },
    /// Every site of this site's subtree: catalog version, when applied, behind by, last
    /// error (the same as `status sync`).
    Status {
        #[command(flatten)]
        data: DataArg,
        #[arg(long)]
        json: bool,
    },
    /// The catalog sources in site.toml ([[sync.source]]), read in order at each sync.
    #[command(subcommand)]
    Source(SourceCmd),
    /// When the top site syncs by itself, in its zone: "daily 02:00", "weekly sun 02:00".
    Schedule {
        #[command(flatten)]
        data: DataArg,
        /// The schedule; omit it (with --off) to sync by hand only.
        #[arg(required_unless_present = "off")]
        when: Option<String>,
        #[arg(long, conflicts_with = "when")]
        off: bool,
    },
}

#[derive(Subcommand)]
pub enum SourceCmd {
    /// Add a source: a plug-in (apt, json) and its arguments, e.g.
    /// --args 'Path=/var/lib/apt/lists/..._Packages.lz4;Classification=Security;Product="Debian 12"'.
    Add {
        #[command(flatten)]
        data: DataArg,
        #[arg(long)]
        name: String,
        #[arg(long)]
        plugin: String,
        #[arg(long, default_value = "", allow_hyphen_values = true)]
        args: String,
    },
    /// Remove a source (its updates stay in the catalog).
    Remove {
        #[command(flatten)]
        data: DataArg,
        #[arg(long)]
        name: String,
    },
    List {
        #[command(flatten)]
        data: DataArg,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum CatalogCmd {
    /// Updates of the catalog, newest first: by default those neither expired nor
    /// superseded. `--since 7d` lists the new updates of the last 7 days.
    List {
        #[command(flatten)]
        data: DataArg,
        #[arg(long)]
        product: Option<String>,
        #[arg(long)]
        classification: Option<String>,
        /// Posted within this (30m, 12h, 7d) or since this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Superseded updates only.
        #[arg(long, conflicts_with_all = ["expired", "all"])]
        superseded: bool,
        /// Expired updates only.
        #[arg(long, conflicts_with = "all")]
        expired: bool,
        /// Every update, whatever its state.
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// One update, with what supersedes it and what it supersedes.
    Show {
        id: String,
        #[command(flatten)]
        data: DataArg,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(cmd: SyncCmd) -> Res {
    match cmd {
        SyncCmd::Now { data, json } => now(&data.dir(), json).await,
        SyncCmd::Status { data, json } => status(&data.dir(), json).await,
        SyncCmd::Source(SourceCmd::Add {
            data,
            name,
            plugin,
            args,
        }) => edit(&data.dir(), |sync| {
            if sync.sources.iter().any(|s| s.name == name) {
                return Err(format!(
                    "sync source {name} exists: remove it first or pick another name"
                ));
            }
            sync.sources.push(SyncSource { name, plugin, args });
            Ok(())
        }),
        SyncCmd::Source(SourceCmd::Remove { data, name }) => edit(&data.dir(), |sync| {
            let before = sync.sources.len();
            sync.sources.retain(|s| s.name != name);
            if sync.sources.len() == before {
                return Err(format!(
                    "no sync source named {name}: see `site-server sync source list`"
                ));
            }
            Ok(())
        }),
        SyncCmd::Source(SourceCmd::List { data, json }) => {
            let cfg = load(&data.dir())?;
            if json {
                return print_json(&cfg.sync.sources);
            }
            let rows: Vec<Vec<String>> = cfg
                .sync
                .sources
                .iter()
                .map(|s| vec![s.name.clone(), s.plugin.clone(), s.args.clone()])
                .collect();
            print_table(&["NAME", "PLUG-IN", "ARGUMENTS"], &rows);
            println!(
                "schedule: {}",
                cfg.sync.schedule.as_deref().unwrap_or("none (by hand)")
            );
            Ok(())
        }
        SyncCmd::Schedule { data, when, off: _ } => edit(&data.dir(), |sync| {
            sync.schedule = when;
            Ok(())
        }),
    }
}

pub async fn catalog(cmd: CatalogCmd) -> Res {
    match cmd {
        CatalogCmd::List {
            data,
            product,
            classification,
            since,
            superseded,
            expired,
            all,
            json,
        } => {
            let now = Utc::now();
            let since_secs = since
                .as_deref()
                .map(|s| parse_since(s, now))
                .transpose()?
                .map(|t| (now - t).num_seconds().max(0) as u64);
            let q = CatalogQuery {
                product,
                classification,
                since_secs,
                state: match (superseded, expired, all) {
                    (true, _, _) => CatalogState::Superseded,
                    (_, true, _) => CatalogState::Expired,
                    (_, _, true) => CatalogState::All,
                    _ => CatalogState::Active,
                },
            };
            let client = AdminClient::from_dir(&data.dir())?;
            let rows: Vec<Update> = client.get_query("/v1/catalog", &q).await?;
            if json {
                return print_json(&rows);
            }
            let table: Vec<Vec<String>> = rows
                .iter()
                .map(|u| {
                    vec![
                        u.id.clone(),
                        u.classification.to_string(),
                        u.product.clone(),
                        u.posted.format("%Y-%m-%d %H:%M").to_string(),
                        state(u),
                        u.title.chars().take(60).collect(),
                    ]
                })
                .collect();
            print_table(
                &[
                    "ID",
                    "CLASSIFICATION",
                    "PRODUCT",
                    "POSTED (UTC)",
                    "STATE",
                    "TITLE",
                ],
                &table,
            );
            println!("{} update(s)", rows.len());
            Ok(())
        }
        CatalogCmd::Show { id, data, json } => {
            let client = AdminClient::from_dir(&data.dir())?;
            let e: CatalogEntry = client
                .get_query("/v1/catalog/entry", &[("id", id.as_str())])
                .await?;
            if json {
                return print_json(&e);
            }
            let u = &e.update;
            let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
            println!("{}\n  {}", u.id, u.title);
            println!("  product:        {}", u.product);
            println!("  classification: {}", u.classification);
            println!("  severity:       {}", opt(&u.severity));
            println!("  bulletin:       {}", opt(&u.bulletin));
            println!("  KB:             {}", opt(&u.kb));
            println!("  posted:         {}", u.posted.to_rfc3339());
            println!("  revised:        {}", u.revised.to_rfc3339());
            println!("  state:          {}", state(u));
            println!("  size:           {}", human_bytes(u.size));
            println!("  source:         {}", u.source);
            for f in &u.files {
                println!(
                    "  file:           {} ({}) {}",
                    f.name,
                    human_bytes(f.size),
                    f.hash
                );
            }
            if !e.supersedes.is_empty() {
                println!("  supersedes:     {}", e.supersedes.join(", "));
            }
            Ok(())
        }
    }
}

fn state(u: &Update) -> String {
    match (&u.superseded_by, u.expired) {
        (_, true) => "expired".into(),
        (Some(by), false) => format!("superseded by {by}"),
        (None, false) => "active".into(),
    }
}

fn load(dir: &DataDir) -> Result<SiteConfig, CliError> {
    SiteConfig::load(dir).map_err(|e| CliError::usage(e.to_string()))
}

/// Changes `[sync]` of `site.toml` (a sync reads it afresh, so no restart is needed).
fn edit(
    dir: &DataDir,
    f: impl FnOnce(&mut site_server::config::SyncConfig) -> Result<(), String>,
) -> Res {
    let mut cfg = load(dir)?;
    if let Some(p) = &cfg.parent {
        return Err(CliError::usage(format!(
            "{} is not the top site (its parent is {}): catalog sources and schedule belong to the top site",
            cfg.code, p.code
        )));
    }
    f(&mut cfg.sync).map_err(CliError::usage)?;
    cfg.sync.check().map_err(CliError::usage)?;
    cfg.save(dir).map_err(crate::cli::config_error)?;
    println!(
        "{}: {} source(s), schedule {}; the next sync reads it",
        dir.config().display(),
        cfg.sync.sources.len(),
        cfg.sync.schedule.as_deref().unwrap_or("none (by hand)")
    );
    Ok(())
}

async fn now(dir: &DataDir, json: bool) -> Res {
    let out: SyncOutcome = if dir.admin().exists() {
        AdminClient::from_dir(dir)?
            .post_json("/v1/sync/now", &())
            .await?
    } else {
        let (lock, site) = site_server::daemon::open_site(dir, false)?;
        let site = Arc::new(site);
        let r = site_server::catalog::sync::sync_now(site.clone()).await;
        drop(site);
        drop(lock);
        r.map_err(CliError::from)?
    };
    if json {
        print_json(&out)?;
    } else {
        let c = &out.counts;
        if out.stopped {
            println!(
                "catalog sync stopped: nothing applied (catalog version {})",
                out.catalog_version
            );
        } else if out.delta {
            println!(
                "catalog version {}: {} added, {} revised, {} expired, {} superseded ({} update(s) in all); delta event {}; read {:.1} s, applied {:.1} s",
                out.catalog_version,
                c.added,
                c.revised,
                c.expired,
                c.superseded,
                out.total,
                human_bytes(out.delta_bytes),
                out.read_ms as f64 / 1000.0,
                out.apply_ms as f64 / 1000.0
            );
        } else if out.unchanged_sources {
            println!(
                "catalog unchanged at version {} ({} update(s)): every source is as at the last sync; no event appended",
                out.catalog_version, out.total
            );
        } else if out.failures.len() < out.sources.len() {
            println!(
                "catalog unchanged at version {} ({} update(s)): no event appended",
                out.catalog_version, out.total
            );
        }
        if out.left_to_earlier > 0 {
            println!(
                "{} update(s) listed by more than one source were left to the first",
                out.left_to_earlier
            );
        }
    }
    if let Some((name, why)) = out.failures.first() {
        let rest = if out.stopped {
            "it has StopOnFailure=True, so nothing was applied".to_string()
        } else if out.failures.len() == out.sources.len() {
            "no source could be read, so nothing was applied".to_string()
        } else {
            "the other sources were applied".to_string()
        };
        let more = match out.failures.len() {
            1 => String::new(),
            n => format!(" (and {} more failed source(s))", n - 1),
        };
        return Err(CliError::failed(format!(
            "catalog source {name} failed: {why}{more}; {rest}"
        )));
    }
    Ok(())
}

pub async fn status(dir: &DataDir, json: bool) -> Res {
    let client = AdminClient::from_dir(dir)?;
    let rows: Vec<SyncRow> = client.get("/v1/status/sync").await?;
    if json {
        return print_json(&rows);
    }
    let when = |t: Option<chrono::DateTime<Utc>>| {
        t.map_or("-".to_string(), |t| {
            t.format("%Y-%m-%d %H:%M:%S").to_string()
        })
    };
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.site.to_string(),
                r.catalog_version.to_string(),
                when(r.applied),
                r.behind_by.to_string(),
                when(r.last_sync),
                r.last_error.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    print_table(
        &[
            "SITE",
            "CATALOG VERSION",
            "APPLIED (UTC)",
            "BEHIND BY",
            "LAST SYNC (UTC)",
            "LAST ERROR",
        ],
        &table,
    );
    let keys: site_server::site::KeysView = client.get("/v1/keys").await?;
    match &keys.view_from_top {
        Some(v) => println!("{}", v.line()),
        None => println!("no checkpoint of the top yet"),
    }
    Ok(())
}
