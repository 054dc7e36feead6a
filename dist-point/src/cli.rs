//! The `dist-point` command line (`init`, `run`, `status`, `validate`), shared by the
//! `dist-point` binary and `site-server dist-point` (which the demo uses, so that one
//! `cargo run` is enough).

use crate::daemon::{self, DpError, InitArgs};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "dist-point",
    version,
    about = "A distribution point: pulls the chunks of its assigned packages from its site server by hash, verifies them, and serves the files over HTTP"
)]
pub struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// Log lines as `text` (the default) or `json`: one object per line, for journald and
    /// log shippers.
    #[arg(long, global = true, value_parser = ["text", "json"], default_value = "text", env = "SITEREP_LOG_FORMAT")]
    pub log_format: String,
}

#[derive(Subcommand)]
enum Cmd {
    /// Make a new distribution point: certificate, dp.toml, content store.
    Init {
        #[arg(long, env = "DP_DATA")]
        data: PathBuf,
        /// Its id at its site (DP1).
        #[arg(long)]
        id: String,
        /// Where clients reach its HTTP server.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// The site server's QUIC address (its `listen`), HOST:PORT.
        #[arg(long)]
        site: String,
        /// The site server's certificate fingerprint (`site-server identity` prints it).
        #[arg(long)]
        site_fingerprint: String,
    },
    /// Run: attach to the site, pull what is assigned, serve it.
    Run {
        #[arg(long, env = "DP_DATA")]
        data: PathBuf,
    },
    /// What this DP holds and pulls, and its link to the site.
    Status {
        #[arg(long, env = "DP_DATA")]
        data: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Re-hash every stored chunk now; damaged ones are removed and fetched again.
    Validate {
        #[arg(long, env = "DP_DATA")]
        data: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

fn print_json<T: serde::Serialize>(v: &T) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

pub async fn run(cli: Cli) -> Result<(), DpError> {
    match cli.cmd {
        Cmd::Init {
            data,
            id,
            listen,
            site,
            site_fingerprint,
        } => {
            let fp = daemon::init(&InitArgs {
                dir: data.clone(),
                id: id.clone(),
                listen,
                site,
                site_fingerprint,
            })?;
            println!("distribution point {id} initialised in {}", data.display());
            println!("fingerprint: {fp}");
            println!("attach it at its site with:");
            println!("  site-server dp add --data SITE_DIR --id {id} --fingerprint {fp} --address {listen}");
        }
        Cmd::Run { data } => daemon::run(data).await?,
        Cmd::Status { data, json } => {
            let v = daemon::status(&data).await?;
            if json {
                print_json(&v);
                return Ok(());
            }
            println!(
                "distribution point {}{} on {}; site link: {}",
                v.site
                    .as_deref()
                    .map(|s| format!("{s}/"))
                    .unwrap_or_default(),
                v.id,
                v.listen,
                v.site_link
            );
            if !v.sources.is_empty() {
                let s: Vec<String> = v
                    .sources
                    .iter()
                    .map(|s| format!("{} ({})", s.dp, s.address))
                    .collect();
                println!("pulls from: {}, then the site", s.join(", "));
            }
            println!(
                "{:<10} {:>4}  {:<20} {:>8} {:>8} {:>14}  STATE",
                "PACKAGE", "VER", "NAME", "CHUNKS", "MISSING", "BYTES"
            );
            for r in &v.versions {
                println!(
                    "{:<10} {:>4}  {:<20} {:>8} {:>8} {:>14}  {}{}",
                    r.package,
                    r.version,
                    r.name,
                    r.chunks,
                    r.missing,
                    r.bytes,
                    r.state,
                    if r.assigned {
                        ""
                    } else {
                        " (previous version, kept until the new one is in)"
                    }
                );
            }
            println!(
                "requests in flight: {}, queued: {}, messages not yet at the site: {}",
                v.in_flight, v.queued, v.unsent_messages
            );
        }
        Cmd::Validate { data, json } => {
            let r = daemon::validate(&data).await?;
            if json {
                print_json(&r);
                return Ok(());
            }
            println!(
                "{} chunk(s) re-hashed: {} damaged, {} missing",
                r.checked, r.corrupt, r.missing
            );
            for (p, v, c, m) in &r.versions {
                println!(
                    "  package {p} version {v}: {c} damaged, {m} missing; fetching them again"
                );
            }
        }
    }
    Ok(())
}
