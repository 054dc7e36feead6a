//! `site-server sender ...`, `status senders` and `package priority`: the operator's view of
//! and hand on the sender.

use crate::cli::client::AdminClient;
use crate::cli::{human_bytes, CliError, DataArg, Res};
use clap::Subcommand;
use schema::{PackageId, SiteCode};
use sender::scheduler::LinkView;
use site_server::site::SendersView;

#[derive(Subcommand)]
pub enum SenderCmd {
    /// Emergency: let a package ignore the schedule and rate limit of every link on its way
    /// down the tree (the event replicates with it).
    Boost {
        #[command(flatten)]
        data: DataArg,
        #[arg(long)]
        package: String,
        /// For how long (30m, 4h, 2d); without it, until `--off`.
        #[arg(long = "for", conflicts_with = "off")]
        duration: Option<String>,
        /// End the boost.
        #[arg(long)]
        off: bool,
    },
    /// Send failed sendings again now (all, or those to a site or of a package).
    Retry {
        #[command(flatten)]
        data: DataArg,
        #[arg(long)]
        site: Option<String>,
        #[arg(long)]
        package: Option<String>,
    },
}

fn package_id(s: &str) -> Result<PackageId, CliError> {
    s.parse()
        .map_err(|e: schema::IdError| CliError::usage(format!("--package {s:?}: {e}")))
}

pub async fn run(cmd: SenderCmd) -> Res {
    match cmd {
        SenderCmd::Boost {
            data,
            package,
            duration,
            off,
        } => {
            let package = package_id(&package)?;
            let now = chrono::Utc::now();
            let until = match (duration, off) {
                (_, true) => Some(now),
                (Some(d), false) => {
                    let d = sender::schedule::parse_duration(&d)
                        .map_err(|e| CliError::usage(format!("--for: {e}")))?;
                    Some(now + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX))
                }
                (None, false) => None,
            };
            let client = AdminClient::from_dir(&data.dir())?;
            let _: serde_json::Value = client
                .post_json(
                    "/v1/sender/boost",
                    &serde_json::json!({ "package": package, "until": until }),
                )
                .await?;
            match (off, until) {
                (true, _) => println!("{package}: boost ended; schedules and rate limits apply again"),
                (false, Some(t)) => println!(
                    "{package} ignores the schedules and rate limits of every link on its way until {} UTC",
                    t.format("%Y-%m-%d %H:%M:%S")
                ),
                (false, None) => println!(
                    "{package} ignores the schedules and rate limits of every link on its way until `site-server sender boost --package {package} --off`"
                ),
            }
            Ok(())
        }
        SenderCmd::Retry {
            data,
            site,
            package,
        } => {
            let site = site
                .map(|s| SiteCode::new(&s).map_err(|e| CliError::usage(format!("--site: {e}"))))
                .transpose()?;
            let package = package.map(|p| package_id(&p)).transpose()?;
            let client = AdminClient::from_dir(&data.dir())?;
            let r: serde_json::Value = client
                .post_json(
                    "/v1/sender/retry",
                    &serde_json::json!({ "site": site, "package": package }),
                )
                .await?;
            println!(
                "{} failed sending(s) queued again",
                r["retried"].as_u64().unwrap_or(0)
            );
            Ok(())
        }
    }
}

/// `package priority ID --priority P`.
pub async fn set_priority(data: DataArg, id: &str, priority: &str) -> Res {
    let package = package_id(id)?;
    let priority: schema::event::Priority = priority
        .parse()
        .map_err(|e| CliError::usage(format!("--priority: {e}")))?;
    let client = AdminClient::from_dir(&data.dir())?;
    let _: serde_json::Value = client
        .post_json(
            &format!("/v1/packages/{package}/priority"),
            &serde_json::json!({ "priority": priority }),
        )
        .await?;
    println!("{package}: priority {priority} (its sendings on every link follow)");
    Ok(())
}

/// `status senders`.
pub async fn status(data: DataArg, json: bool) -> Res {
    let client = AdminClient::from_dir(&data.dir())?;
    let v: SendersView = client.get("/v1/status/senders").await?;
    if json {
        let s = serde_json::to_string_pretty(&v)
            .map_err(|e| CliError::failed(format!("cannot format JSON: {e}")))?;
        println!("{s}");
        return Ok(());
    }
    print!("{}", senders_table(&v));
    Ok(())
}

/// The `status senders` table (also printed by the demo).
pub fn senders_table(v: &SendersView) -> String {
    let mut out = String::new();
    if v.links.is_empty() {
        out.push_str("no child links: this site sends to nobody\n");
        return out;
    }
    let rows: Vec<Vec<String>> = v.links.iter().map(link_row).collect();
    out.push_str(&crate::cli::table_text(
        &[
            "TO",
            "LINK",
            "WINDOW",
            "RATE",
            "HIGH",
            "MEDIUM",
            "LOW",
            "SENDING NOW",
            "LAST MIN",
        ],
        &rows,
    ));
    for l in &v.links {
        // The jobs of the last hour, newest last (at most ten per link).
        for j in l.jobs.iter().rev().take(10).rev() {
            out.push_str(&format!(
                "  to {}: {} v{} [{}] {} {}%{}{}\n",
                l.dest,
                j.package,
                j.version,
                j.priority,
                j.state,
                j.pct,
                if j.boosted { " (boosted)" } else { "" },
                j.last_error
                    .as_ref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ));
        }
    }
    for b in &v.boosts {
        out.push_str(&format!(
            "boost: {} ignores schedules and rate limits{}\n",
            b.package,
            b.until
                .map(|t| format!(" until {} UTC", t.format("%Y-%m-%d %H:%M")))
                .unwrap_or_default()
        ));
    }
    out.push_str(&format!("(windows and rates in zone {})\n", v.zone));
    out
}

fn link_row(l: &LinkView) -> Vec<String> {
    let q = |p: &str| {
        l.queue
            .get(p)
            .map(|q| format!("{} ({})", q.jobs, human_bytes(q.bytes)))
            .unwrap_or_default()
    };
    vec![
        l.dest.to_string(),
        if l.connected { "up" } else { "down" }.to_string(),
        l.window.to_string(),
        l.rate.to_string(),
        q("high"),
        q("medium"),
        q("low"),
        l.current.clone().unwrap_or_else(|| "-".into()),
        format!("{}/s", human_bytes(l.bytes_per_sec)),
    ]
}
