//! `log` and `status messages|packages|sites|catalogue`: what an operator looks at.

use super::common::*;
use crate::cli::client::AdminClient;
use chrono::Utc;
use clap::Subcommand;
use site_server::config::DataDir;
use site_server::site::{LogEntry, MessageQuery, MessageRow};

#[derive(Subcommand)]
pub enum StatusCmd {
    /// Status messages raised at this site and its subtree: the newest page, or one page from
    /// a position on (`--from`) or before one (`--before`); filters go through indexes.
    Messages {
        #[command(flatten)]
        data: DataArg,
        #[command(flatten)]
        filter: MessageArgs,
        #[arg(long)]
        json: bool,
    },
    /// Package versions this site holds or passes on: chunks and bytes present.
    Packages {
        #[command(flatten)]
        data: DataArg,
        #[arg(long)]
        json: bool,
    },
    /// What this site sends to each child: window and rate in force, queues per priority,
    /// the job sending now, bytes per second over the last minute.
    Senders {
        #[command(flatten)]
        data: DataArg,
        #[arg(long)]
        json: bool,
    },
    /// Every link of this site (parent and children): state, last error, cursors, backlog.
    Sites {
        #[command(flatten)]
        data: DataArg,
        #[arg(long)]
        json: bool,
    },
    /// Catalog sync status of this site and every site below: version, when applied,
    /// behind by, last error.
    Sync {
        #[command(flatten)]
        data: DataArg,
        #[arg(long)]
        json: bool,
    },
    /// Per advertisement, per site of the subtree: machines in the collection, received,
    /// running, succeeded, failed, reboot pending, not applicable.
    Adverts {
        #[command(flatten)]
        data: DataArg,
        /// One advertisement.
        #[arg(long)]
        id: Option<String>,
        /// With --id: the machines that returned errors, with exit code and output.
        #[arg(long)]
        failed: bool,
        #[arg(long)]
        json: bool,
    },
    /// A machine's history and where it stands with each advertisement.
    Machine {
        name: String,
        #[command(flatten)]
        data: DataArg,
        #[arg(long)]
        json: bool,
    },
    /// The catalogue of every status-message id.
    Catalogue {
        #[arg(long)]
        json: bool,
    },
}

pub(super) async fn log(dir: &DataDir, from: u64, limit: usize, json: bool) -> Res {
    let client = AdminClient::from_dir(dir)?;
    let entries: Vec<LogEntry> = client
        .get_query("/v1/log", &[("from", from as usize), ("limit", limit)])
        .await?;
    if json {
        return print_json(&entries);
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                e.position.to_string(),
                format!("{}:{}", e.origin, e.origin_seq),
                e.time.format("%Y-%m-%d %H:%M:%S").to_string(),
                e.kind.clone(),
                e.summary.clone(),
            ]
        })
        .collect();
    print_table(
        &["POS", "ORIGIN:SEQ", "TIME (UTC)", "EVENT", "SUMMARY"],
        &rows,
    );
    Ok(())
}

/// The filters and page of `status messages`.
#[derive(clap::Args)]
pub struct MessageArgs {
    /// Only messages since a time (RFC 3339) or for a duration back (30m, 2h, 7d).
    #[arg(long)]
    since: Option<String>,
    /// Only messages before a time (RFC 3339) or a duration ago.
    #[arg(long)]
    until: Option<String>,
    /// Only messages with this id.
    #[arg(long)]
    id: Option<u32>,
    /// Only messages raised at this site.
    #[arg(long)]
    site: Option<String>,
    /// Only messages of this severity (info, warning, error).
    #[arg(long)]
    severity: Option<String>,
    /// Only messages of this component (sender, distribution_manager, ...).
    #[arg(long)]
    component: Option<String>,
    /// Only messages about this package.
    #[arg(long)]
    package: Option<String>,
    /// Only messages about this advertisement.
    #[arg(long)]
    advert: Option<String>,
    /// The page from this log position on (the positions are in `--json`).
    #[arg(long, conflicts_with = "before")]
    from: Option<u64>,
    /// The page before this log position.
    #[arg(long)]
    before: Option<u64>,
    /// Messages on the page (default 1000, at most 100000).
    #[arg(long)]
    limit: Option<usize>,
}

fn parsed<T: std::str::FromStr>(
    what: &str,
    v: Option<String>,
    fix: &str,
) -> Result<Option<T>, CliError>
where
    T::Err: std::fmt::Display,
{
    v.map(|s| {
        s.parse::<T>()
            .map_err(|e| CliError::usage(format!("--{what} {s}: {e}; {fix}")))
    })
    .transpose()
}

impl MessageArgs {
    fn query(self) -> Result<MessageQuery, CliError> {
        let now = Utc::now();
        let time = |v: Option<String>| v.as_deref().map(|s| parse_since(s, now)).transpose();
        let severity = match self.severity.as_deref().map(str::to_ascii_lowercase) {
            None => None,
            Some(s) => Some(match s.as_str() {
                "info" => schema::status::Severity::Info,
                "warning" => schema::status::Severity::Warning,
                "error" => schema::status::Severity::Error,
                _ => {
                    return Err(CliError::usage(format!(
                        "--severity {s}: not a severity; give info, warning or error"
                    )))
                }
            }),
        };
        Ok(MessageQuery {
            since: time(self.since)?,
            until: time(self.until)?,
            id: self.id,
            site: parsed("site", self.site, "give a site code such as P01")?,
            severity,
            component: self.component,
            package: parsed(
                "package",
                self.package,
                "give a package id such as CEN00001",
            )?,
            advert: parsed(
                "advert",
                self.advert,
                "give an advertisement id such as CEN20001",
            )?,
            from: self.from,
            before: self.before,
            limit: self.limit,
        })
    }
}

pub(super) async fn messages(dir: &DataDir, filter: MessageArgs, json: bool) -> Res {
    let q = filter.query()?;
    let client = AdminClient::from_dir(dir)?;
    let rows: Vec<MessageRow> = client.get_query("/v1/status/messages", &q).await?;
    if json {
        return print_json(&rows);
    }
    if let (Some(first), true) = (rows.first(), rows.len() >= q.page() && q.from.is_none()) {
        eprintln!(
            "showing the newest {} that match; older ones: --before {}",
            rows.len(),
            first.position
        );
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|m| {
            vec![
                m.time.format("%Y-%m-%d %H:%M:%S").to_string(),
                m.site.to_string(),
                m.id.to_string(),
                m.severity.to_string(),
                m.component.clone(),
                m.text.replace('\n', " | "),
            ]
        })
        .collect();
    print_table(
        &[
            "TIME (UTC)",
            "SITE",
            "ID",
            "SEVERITY",
            "COMPONENT",
            "MESSAGE",
        ],
        &table,
    );
    Ok(())
}

pub(super) async fn content(dir: &DataDir, json: bool) -> Res {
    let client = AdminClient::from_dir(dir)?;
    let rows: Vec<site_server::site::ContentRow> = client.get("/v1/status/packages").await?;
    if json {
        return print_json(&rows);
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let pct = if r.bytes == 0 {
                100.0
            } else {
                r.bytes_present as f64 * 100.0 / r.bytes as f64
            };
            let t: Vec<String> = r.targets.iter().map(|t| t.to_string()).collect();
            vec![
                r.package.to_string(),
                r.name.clone(),
                r.source_version.to_string(),
                t.join(", "),
                format!("{}/{}", r.chunks_present, r.chunks),
                format!(
                    "{} of {}",
                    human_bytes(r.bytes_present),
                    human_bytes(r.bytes)
                ),
                format!("{pct:.0}%"),
            ]
        })
        .collect();
    print_table(
        &[
            "PACKAGE",
            "NAME",
            "VERSION",
            "TARGETS",
            "CHUNKS",
            "BYTES HERE",
            "HERE",
        ],
        &table,
    );
    let sent: Vec<Vec<String>> = rows
        .iter()
        .flat_map(|r| {
            r.sending.iter().map(move |s| {
                vec![
                    r.package.to_string(),
                    r.source_version.to_string(),
                    s.site.to_string(),
                    s.from.to_string(),
                    format!("{}%", s.pct),
                    match &s.error {
                        Some(e) => format!("{}: {e}", s.state),
                        None => s.state.clone(),
                    },
                    s.time.format("%Y-%m-%d %H:%M:%S").to_string(),
                ]
            })
        })
        .collect();
    if !sent.is_empty() {
        println!();
        print_table(
            &[
                "PACKAGE", "VERSION", "TO SITE", "SENDER", "SENT", "STATE", "AT (UTC)",
            ],
            &sent,
        );
    }
    let dps: Vec<Vec<String>> = rows
        .iter()
        .flat_map(|r| {
            r.dps.iter().map(move |d| {
                let states: Vec<String> = d
                    .dps
                    .iter()
                    .map(|x| format!("{} {}", x.dp, x.state))
                    .collect();
                vec![
                    r.package.to_string(),
                    r.source_version.to_string(),
                    d.site.to_string(),
                    d.targeted.to_string(),
                    d.installed.to_string(),
                    format!("{}%", d.pct_installed),
                    states.join(", "),
                ]
            })
        })
        .collect();
    if !dps.is_empty() {
        println!();
        print_table(
            &[
                "PACKAGE",
                "VERSION",
                "SITE",
                "DPS TARGETED",
                "DPS INSTALLED",
                "INSTALLED",
                "DISTRIBUTION POINTS",
            ],
            &dps,
        );
    }
    Ok(())
}

pub(super) async fn sites(dir: &DataDir, json: bool) -> Res {
    let client = AdminClient::from_dir(dir)?;
    let view: site_server::site::SitesView = client.get("/v1/status/sites").await?;
    if json {
        return print_json(&view);
    }
    let p = &view.site;
    println!(
        "{} (pid {}): {} resident (peak {}), {} threads, {} of {} files open, {:.1} s CPU, database {}, {} events, {} reports",
        p.code,
        p.pid,
        human_bytes(p.rss_bytes),
        human_bytes(p.peak_rss_bytes),
        p.threads,
        p.open_files,
        p.open_files_limit,
        p.cpu_secs,
        human_bytes(p.db_bytes),
        p.logs.config_events,
        p.logs.reports
    );
    println!();
    let rows = view.links;
    let keys: site_server::site::KeysView = client.get("/v1/keys").await?;
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.link.peer.to_string(),
                format!("{:?}", r.link.role).to_lowercase(),
                format!("{:?}", r.link.state).to_lowercase(),
                r.link.since.format("%Y-%m-%d %H:%M:%S").to_string(),
                r.config_cursor.to_string(),
                r.reports_cursor.to_string(),
                format!("{} ({})", r.backlog_events, human_bytes(r.backlog_bytes)),
                r.link.last_error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    print_table(
        &[
            "SITE",
            "ROLE",
            "STATE",
            "SINCE (UTC)",
            "CONFIG",
            "REPORTS",
            "BACKLOG",
            "LAST ERROR",
        ],
        &table,
    );
    let courier: Vec<Vec<String>> = rows
        .iter()
        .filter_map(|r| {
            let c = r.courier.as_ref()?;
            let when = |t: Option<chrono::DateTime<chrono::Utc>>| {
                t.map_or("never".to_string(), |t| {
                    t.format("%Y-%m-%d %H:%M:%S").to_string()
                })
            };
            Some(vec![
                r.link.peer.to_string(),
                when(c.last_export),
                when(c.last_receipt),
                c.receipt_applied.to_string(),
                format!(
                    "{} event(s), {} chunk(s) ({})",
                    c.next_events,
                    c.next_chunks,
                    human_bytes(c.next_chunk_bytes)
                ),
            ])
        })
        .collect();
    if !courier.is_empty() {
        println!();
        print_table(
            &[
                "COURIER SITE",
                "LAST EXPORT (UTC)",
                "LAST RECEIPT (UTC)",
                "APPLIED (RECEIPT)",
                "NEXT EXPORT CARRIES",
            ],
            &courier,
        );
    }
    println!();
    crate::cli::key::print_keys(&keys);
    Ok(())
}

pub(super) fn catalogue(json: bool) -> Res {
    let rows: Vec<serde_json::Value> = schema::status::CATALOGUE
        .iter()
        .map(|d| {
            serde_json::json!({"id": d.id, "severity": d.severity, "component": d.component, "text": d.text})
        })
        .collect();
    if json {
        return print_json(&rows);
    }
    let table: Vec<Vec<String>> = schema::status::CATALOGUE
        .iter()
        .map(|d| {
            vec![
                d.id.to_string(),
                d.severity.to_string(),
                d.component.to_string(),
                d.text.to_string(),
            ]
        })
        .collect();
    print_table(&["ID", "SEVERITY", "COMPONENT", "TEXT"], &table);
    Ok(())
}
