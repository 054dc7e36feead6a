//! `site-server dp ...`: the distribution points attached to this site, and those the tree
//! reports.

use crate::cli::client::AdminClient;
use crate::cli::{print_table, CliError, DataArg, Res};
use clap::Subcommand;
use schema::event::DistributionTarget;
use schema::SiteCode;
use site_server::config::{check_dp_id, check_dp_sources, DpLink, SiteConfig};

#[derive(Subcommand)]
pub enum DpCmd {
    /// Attach a distribution point: pin its certificate (from its `dist-point init`).
    Add {
        #[command(flatten)]
        data: DataArg,
        /// Its id at this site (DP1).
        #[arg(long)]
        id: String,
        /// Its certificate fingerprint.
        #[arg(long)]
        fingerprint: String,
        /// Where clients reach its HTTP server, HOST:PORT (its `listen`; needed if it is a source).
        #[arg(long, default_value = "")]
        address: String,
        /// Make it a pull DP: it asks these DPs of this site first (in this order), then the
        /// site server. SITE/ID or ID; repeat for several.
        #[arg(long = "source")]
        sources: Vec<String>,
    },
    /// Change a distribution point's address or sources.
    Set {
        #[command(flatten)]
        data: DataArg,
        #[arg(long)]
        id: String,
        #[arg(long)]
        address: Option<String>,
        /// Its new ranked sources (replacing the old ones).
        #[arg(long = "source")]
        sources: Vec<String>,
        /// It pulls from the site server only.
        #[arg(long, conflicts_with = "sources")]
        no_sources: bool,
    },
    /// This site's distribution points; with the daemon running, every DP its subtree reported.
    List {
        #[command(flatten)]
        data: DataArg,
        #[arg(long)]
        json: bool,
    },
    /// Distribution point groups (config events: they replicate down the tree).
    #[command(subcommand)]
    Group(GroupCmd),
}

#[derive(Subcommand)]
pub enum GroupCmd {
    /// A new, empty group.
    Create {
        #[command(flatten)]
        data: DataArg,
        name: String,
    },
    /// Add distribution points: packages already targeted at the group go to them too.
    Add {
        #[command(flatten)]
        data: DataArg,
        name: String,
        /// SITE/ID; repeat for several.
        #[arg(long = "dp", required = true)]
        dps: Vec<String>,
    },
    /// Remove distribution points from the group.
    Remove {
        #[command(flatten)]
        data: DataArg,
        name: String,
        #[arg(long = "dp", required = true)]
        dps: Vec<String>,
    },
    /// Every group and its members.
    List {
        #[command(flatten)]
        data: DataArg,
        #[arg(long)]
        json: bool,
    },
}

fn dp_ref(s: &str) -> Result<schema::event::DpRef, CliError> {
    match parse_dp_target(s)? {
        DistributionTarget::DistributionPoint { site, dp } => Ok(schema::event::DpRef { site, dp }),
        _ => unreachable!("parse_dp_target makes a DP target"),
    }
}

/// `dp group add|remove`.
async fn members(data: DataArg, name: &str, dps: &[String], adding: bool) -> Res {
    let refs = dps
        .iter()
        .map(|d| dp_ref(d))
        .collect::<Result<Vec<_>, _>>()?;
    let body = if adding {
        serde_json::json!({ "group": name, "add": refs })
    } else {
        serde_json::json!({ "group": name, "remove": refs })
    };
    let _: serde_json::Value = AdminClient::from_dir(&data.dir())?
        .post_json("/v1/dp-groups/members", &body)
        .await?;
    if adding {
        println!(
            "{} joined group {name}; packages targeted at the group go to them too",
            dps.join(", ")
        );
    } else {
        println!("{} left group {name}", dps.join(", "));
    }
    Ok(())
}

async fn group(cmd: GroupCmd) -> Res {
    match cmd {
        GroupCmd::Create { data, name } => {
            let _: serde_json::Value = AdminClient::from_dir(&data.dir())?
                .post_json("/v1/dp-groups", &serde_json::json!({ "group": name }))
                .await?;
            println!("distribution point group {name} created");
        }
        GroupCmd::Add { data, name, dps } => members(data, &name, &dps, true).await?,
        GroupCmd::Remove { data, name, dps } => members(data, &name, &dps, false).await?,
        GroupCmd::List { data, json } => {
            let g: std::collections::BTreeMap<String, Vec<schema::event::DpRef>> =
                AdminClient::from_dir(&data.dir())?
                    .get("/v1/dp-groups")
                    .await?;
            if json {
                let s = serde_json::to_string_pretty(&g)
                    .map_err(|e| CliError::failed(format!("cannot format JSON: {e}")))?;
                println!("{s}");
                return Ok(());
            }
            let rows: Vec<Vec<String>> = g
                .iter()
                .map(|(n, m)| {
                    vec![
                        n.clone(),
                        m.iter()
                            .map(|d| d.to_string())
                            .collect::<Vec<_>>()
                            .join(", "),
                    ]
                })
                .collect();
            print_table(&["GROUP", "MEMBERS"], &rows);
        }
    }
    Ok(())
}

fn check_address(address: &str) -> Result<(), CliError> {
    if !address.is_empty() && address.parse::<std::net::SocketAddr>().is_err() {
        return Err(CliError::usage(format!(
            "--address {address:?} is not HOST:PORT (e.g. 127.0.0.1:8080)"
        )));
    }
    Ok(())
}

/// `--source S01/DP2` or `--source DP2`: an id of a DP of this site.
fn source_ids(code: SiteCode, sources: &[String]) -> Result<Vec<String>, CliError> {
    sources
        .iter()
        .map(|s| {
            let id = match s.split_once('/') {
                Some((site, id)) if site.eq_ignore_ascii_case(code.as_str()) => id,
                Some((site, _)) => {
                    return Err(CliError::usage(format!(
                        "--source {s}: a pull DP takes content from DPs of its own site ({code}), not {site}: DPs of other sites are reached through the site servers' senders, which keep each link's schedule and rate"
                    )))
                }
                None => s.as_str(),
            };
            check_dp_id(id).map_err(|e| CliError::usage(format!("--source {s}: {e}")))?;
            Ok(id.to_string())
        })
        .collect()
}

/// `S01/DP1` as a target.
pub fn parse_dp_target(s: &str) -> Result<DistributionTarget, CliError> {
    let (site, dp) = s.split_once('/').ok_or_else(|| {
        CliError::usage(format!(
            "--dp {s:?}: write the site and the DP id, SITE/ID (e.g. S01/DP1)"
        ))
    })?;
    let site = SiteCode::new(site).map_err(|e| CliError::usage(format!("--dp {s:?}: {e}")))?;
    check_dp_id(dp).map_err(|e| CliError::usage(format!("--dp {s:?}: {e}")))?;
    Ok(DistributionTarget::DistributionPoint {
        site,
        dp: dp.to_string(),
    })
}

pub async fn run(cmd: DpCmd) -> Res {
    match cmd {
        DpCmd::Group(g) => group(g).await,
        DpCmd::Add {
            data,
            id,
            fingerprint,
            address,
            sources,
        } => {
            let dir = data.dir();
            let mut cfg = SiteConfig::load(&dir).map_err(|e| CliError::usage(e.to_string()))?;
            check_dp_id(&id).map_err(CliError::usage)?;
            let fingerprint =
                sender::identity::check_fingerprint(&fingerprint).map_err(CliError::usage)?;
            check_address(&address)?;
            if cfg.dps.iter().any(|d| d.id == id) {
                return Err(CliError::usage(format!(
                    "distribution point {id} is already attached to {}: see `site-server dp list`",
                    cfg.code
                )));
            }
            let sources = source_ids(cfg.code, &sources)?;
            cfg.dps.push(DpLink {
                id: id.clone(),
                fingerprint,
                address,
                sources,
            });
            check_dp_sources(&cfg.dps).map_err(CliError::usage)?;
            cfg.save(&dir).map_err(crate::cli::config_error)?;
            println!(
                "distribution point {}/{id} added; its certificate is pinned",
                cfg.code
            );
            if dir.admin().exists() {
                println!("the running daemon reads its distribution points when it starts: restart it to report this one");
            }
            Ok(())
        }
        DpCmd::Set {
            data,
            id,
            address,
            sources,
            no_sources,
        } => {
            let dir = data.dir();
            let mut cfg = SiteConfig::load(&dir).map_err(|e| CliError::usage(e.to_string()))?;
            let code = cfg.code;
            let Some(d) = cfg.dps.iter_mut().find(|d| d.id == id) else {
                return Err(CliError::usage(format!(
                    "no distribution point {id} at {code}: see `site-server dp list`"
                )));
            };
            if address.is_none() && sources.is_empty() && !no_sources {
                return Err(CliError::usage(
                    "nothing to change: give --address, --source or --no-sources",
                ));
            }
            if let Some(a) = address {
                check_address(&a)?;
                d.address = a;
            }
            if no_sources || !sources.is_empty() {
                d.sources = source_ids(code, &sources)?;
            }
            check_dp_sources(&cfg.dps).map_err(CliError::usage)?;
            cfg.save(&dir).map_err(crate::cli::config_error)?;
            println!("distribution point {code}/{id} changed");
            if dir.admin().exists() {
                println!("restart the site server for the change to take effect");
            }
            Ok(())
        }
        DpCmd::List { data, json } => {
            let dir = data.dir();
            let rows: Vec<site_server::site::DpRow> = if dir.admin().exists() {
                AdminClient::from_dir(&dir)?.get("/v1/dps").await?
            } else {
                let cfg = SiteConfig::load(&dir).map_err(|e| CliError::usage(e.to_string()))?;
                cfg.dps
                    .iter()
                    .map(|d| site_server::site::DpRow {
                        site: cfg.code,
                        id: d.id.clone(),
                        address: d.address.clone(),
                        fingerprint: d.fingerprint.clone(),
                    })
                    .collect()
            };
            if json {
                let s = serde_json::to_string_pretty(&rows)
                    .map_err(|e| CliError::failed(format!("cannot format JSON: {e}")))?;
                println!("{s}");
                return Ok(());
            }
            let table: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    vec![
                        format!("{}/{}", r.site, r.id),
                        r.address.clone(),
                        r.fingerprint.clone(),
                    ]
                })
                .collect();
            print_table(&["DP", "ADDRESS", "FINGERPRINT"], &table);
            Ok(())
        }
    }
}
