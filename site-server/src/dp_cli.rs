//! `site-server dp ...`: the distribution points attached to this site, and those the tree
//! reports.

use crate::cli::{print_table, CliError, DataArg, Res};
use crate::client::AdminClient;
use clap::Subcommand;
use schema::event::DistributionTarget;
use schema::SiteCode;
use site_server::config::{check_dp_id, DpLink, SiteConfig};

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
        /// Where clients reach its HTTP server, HOST:PORT (shown in status).
        #[arg(long, default_value = "")]
        address: String,
    },
    /// This site's distribution points; with the daemon running, every DP its subtree reported.
    List {
        #[command(flatten)]
        data: DataArg,
        #[arg(long)]
        json: bool,
    },
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
        DpCmd::Add {
            data,
            id,
            fingerprint,
            address,
        } => {
            let dir = data.dir();
            let mut cfg = SiteConfig::load(&dir).map_err(|e| CliError::usage(e.to_string()))?;
            check_dp_id(&id).map_err(CliError::usage)?;
            let fingerprint =
                sender::identity::check_fingerprint(&fingerprint).map_err(CliError::usage)?;
            if !address.is_empty() && address.parse::<std::net::SocketAddr>().is_err() {
                return Err(CliError::usage(format!(
                    "--address {address:?} is not HOST:PORT (e.g. 127.0.0.1:8080)"
                )));
            }
            if cfg.dps.iter().any(|d| d.id == id) {
                return Err(CliError::usage(format!(
                    "distribution point {id} is already attached to {}: see `site-server dp list`",
                    cfg.code
                )));
            }
            cfg.dps.push(DpLink {
                id: id.clone(),
                fingerprint,
                address,
            });
            cfg.save(&dir).map_err(CliError::usage)?;
            println!(
                "distribution point {}/{id} added; its certificate is pinned",
                cfg.code
            );
            if dir.admin().exists() {
                println!("the running daemon reads its distribution points when it starts: restart it to report this one");
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
