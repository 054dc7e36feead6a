//! `adv create|list|enable|disable|change|rerun`: advertisements of a package's program to a
//! collection, and their lifecycle.

use super::common::*;
use crate::cli::client::AdminClient;
use clap::{Args, Subcommand};
use schema::advert::{Advertisement, ExitRules, Program};
use site_server::sansio::agents::{AdvertChange, Lifecycle};
use site_server::sansio::decide::AdvertRequest;
use site_server::site::LifecycleRequest;

#[derive(Args)]
pub struct AdvCreate {
    #[command(flatten)]
    data: DataArg,
    #[arg(long)]
    package: String,
    /// Program name.
    #[arg(long)]
    program: String,
    /// Target collection.
    #[arg(long)]
    collection: String,
    /// Command line the program runs (default: the program name).
    #[arg(long)]
    command: Option<String>,
    /// Advertisement name (default: "PACKAGE - PROGRAM").
    #[arg(long)]
    name: Option<String>,
    /// Available from (YYYY-MM-DDTHH:MM[:SS]; default now).
    #[arg(long)]
    start: Option<String>,
    /// Mandatory assignment times (repeatable).
    #[arg(long)]
    mandatory: Vec<String>,
    /// Times are UTC (default: each client's local time).
    #[arg(long)]
    utc: bool,
    /// Exit codes meaning success (comma-separated; default 0).
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    success: Option<Vec<i32>>,
    /// Exit codes meaning success, reboot required (default 3010,1641).
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    success_reboot: Option<Vec<i32>>,
    /// Exit codes meaning failure, reboot required (default none).
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    fail_reboot: Option<Vec<i32>>,
    /// Exit codes meaning already installed (default 2359302).
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    already_installed: Option<Vec<i32>>,
    /// Exit codes meaning not applicable (default -2145124329).
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    not_applicable: Option<Vec<i32>>,
    /// Read every success code as success-reboot-required (CAU's alwaysReboot).
    #[arg(long)]
    always_reboot: bool,
    /// A recurring mandatory schedule from the start (7d, 12h, ...): a machine whose last
    /// run failed runs it again at each recurrence.
    #[arg(long)]
    recurring: Option<String>,
    /// How long the program may run before the agent kills it (default 30m).
    #[arg(long)]
    timeout: Option<String>,
    #[arg(long)]
    json: bool,
}

fn secs(what: &str, s: &str) -> Result<u64, CliError> {
    let d =
        sender::schedule::parse_duration(s).map_err(|e| CliError::usage(format!("{what}: {e}")))?;
    if d.as_secs() == 0 {
        return Err(CliError::usage(format!("{what}: give at least 1s")));
    }
    Ok(d.as_secs())
}

#[derive(Subcommand)]
pub enum AdvCmd {
    /// Advertise a package's program to a collection.
    Create(Box<AdvCreate>),
    /// Enable a disabled advertisement again.
    Enable {
        id: String,
        #[command(flatten)]
        data: DataArg,
    },
    /// Disable an advertisement: agents stop it before its next run (a run under way ends).
    Disable {
        id: String,
        #[command(flatten)]
        data: DataArg,
    },
    /// Change an advertisement: add a mandatory time, a recurring schedule, a command line
    /// or a time limit.
    Change {
        id: String,
        #[command(flatten)]
        data: DataArg,
        /// A mandatory time to add (repeatable).
        #[arg(long)]
        add_mandatory: Vec<String>,
        /// A recurring schedule (7d); 0 removes it.
        #[arg(long)]
        recurring: Option<String>,
        /// A new command line.
        #[arg(long)]
        command: Option<String>,
        /// A new time limit (45m).
        #[arg(long)]
        timeout: Option<String>,
    },
    /// Run an advertisement again on every machine (or with --failed-only, on the machines
    /// whose last run failed).
    Rerun {
        id: String,
        #[command(flatten)]
        data: DataArg,
        #[arg(long)]
        failed_only: bool,
    },
    /// List advertisements.
    List {
        #[command(flatten)]
        data: DataArg,
        #[arg(long)]
        json: bool,
    },
}

pub(super) async fn adv(cmd: AdvCmd) -> Res {
    match cmd {
        AdvCmd::Create(args) => {
            let AdvCreate {
                data,
                package,
                program,
                collection,
                command,
                name,
                start,
                mandatory,
                utc,
                success,
                success_reboot,
                fail_reboot,
                already_installed,
                not_applicable,
                always_reboot,
                recurring,
                timeout,
                json,
            } = *args;
            let run = schema::advert::RunOptions {
                recurring_secs: recurring
                    .as_deref()
                    .map(|r| secs("--recurring", r))
                    .transpose()?,
                timeout_secs: match timeout.as_deref() {
                    Some(t) => u32::try_from(secs("--timeout", t)?)
                        .map_err(|_| CliError::usage("--timeout: at most 136 years"))?,
                    None => schema::advert::DEFAULT_TIMEOUT_SECS,
                },
                ..Default::default()
            };
            let d = ExitRules::default();
            let exit = ExitRules {
                success: success.unwrap_or(d.success),
                success_reboot_required: success_reboot.unwrap_or(d.success_reboot_required),
                fail_reboot_required: fail_reboot.unwrap_or(d.fail_reboot_required),
                already_installed: already_installed.unwrap_or(d.already_installed),
                not_applicable: not_applicable.unwrap_or(d.not_applicable),
                always_reboot,
            };
            let req = AdvertRequest {
                name,
                package: parse_package(&package)?,
                program: Program {
                    command_line: command.unwrap_or_else(|| program.clone()),
                    name: program,
                    exit,
                },
                collection,
                start: start.as_deref().map(parse_time).transpose()?,
                mandatory: mandatory
                    .iter()
                    .map(|m| parse_time(m))
                    .collect::<Result<_, _>>()?,
                utc,
                run,
            };
            let client = AdminClient::from_dir(&data.dir())?;
            let a: Advertisement = client.post_json("/v1/adverts", &req).await?;
            if json {
                return print_json(&a);
            }
            println!(
                "created advertisement {} ({}): package {} program {:?} to collection {:?}, start {}{}",
                a.id,
                a.name,
                a.package,
                a.program.name,
                a.collection,
                a.start.format("%Y-%m-%d %H:%M:%S"),
                if utc { " UTC" } else { " client-local" }
            );
            Ok(())
        }
        AdvCmd::Enable { id, data } => lifecycle(&data, &id, Lifecycle::Enable).await,
        AdvCmd::Disable { id, data } => lifecycle(&data, &id, Lifecycle::Disable).await,
        AdvCmd::Rerun {
            id,
            data,
            failed_only,
        } => lifecycle(&data, &id, Lifecycle::Rerun { failed_only }).await,
        AdvCmd::Change {
            id,
            data,
            add_mandatory,
            recurring,
            command,
            timeout,
        } => {
            let c = AdvertChange {
                add_mandatory: add_mandatory
                    .iter()
                    .map(|m| parse_time(m))
                    .collect::<Result<_, _>>()?,
                recurring_secs: recurring
                    .as_deref()
                    .map(|r| {
                        if r.trim() == "0" {
                            Ok(0)
                        } else {
                            secs("--recurring", r)
                        }
                    })
                    .transpose()?,
                command,
                timeout_secs: timeout
                    .as_deref()
                    .map(|t| {
                        u32::try_from(secs("--timeout", t)?)
                            .map_err(|_| CliError::usage("--timeout: at most 136 years"))
                    })
                    .transpose()?,
            };
            lifecycle(&data, &id, Lifecycle::Change(c)).await
        }
        AdvCmd::List { data, json } => {
            let client = AdminClient::from_dir(&data.dir())?;
            let list: Vec<Advertisement> = client.get("/v1/adverts").await?;
            if json {
                return print_json(&list);
            }
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|a| {
                    vec![
                        a.id.to_string(),
                        a.name.clone(),
                        a.package.to_string(),
                        a.program.name.clone(),
                        a.collection.clone(),
                        format!(
                            "{}{}",
                            a.start.format("%Y-%m-%d %H:%M"),
                            if matches!(a.time_basis, schema::advert::TimeBasis::Utc) {
                                " UTC"
                            } else {
                                ""
                            }
                        ),
                        a.mandatory.len().to_string(),
                        if a.enabled { "enabled" } else { "disabled" }.into(),
                    ]
                })
                .collect();
            print_table(
                &[
                    "ID",
                    "NAME",
                    "PACKAGE",
                    "PROGRAM",
                    "COLLECTION",
                    "START",
                    "MANDATORY",
                    "STATE",
                ],
                &rows,
            );
            Ok(())
        }
    }
}

async fn lifecycle(data: &DataArg, id: &str, what: Lifecycle) -> Res {
    let id: schema::AdvertisementId = id
        .parse()
        .map_err(|e| CliError::usage(format!("advertisement id {id:?}: {e}")))?;
    let client = AdminClient::from_dir(&data.dir())?;
    let verb = match &what {
        Lifecycle::Enable => "enabled".to_string(),
        Lifecycle::Disable => "disabled".to_string(),
        Lifecycle::Change(_) => "changed".to_string(),
        Lifecycle::Rerun { failed_only } => format!(
            "set to run again on {} machines",
            if *failed_only { "the failed" } else { "all" }
        ),
    };
    let a: Advertisement = client
        .post_json("/v1/adverts/lifecycle", &LifecycleRequest { id, what })
        .await?;
    println!(
        "advertisement {} {verb}: {}, re-run {}, {} mandatory time(s){}, time limit {}s",
        a.id,
        if a.enabled { "enabled" } else { "disabled" },
        a.run.rerun,
        a.mandatory.len(),
        a.run
            .recurring_secs
            .map(|r| format!(", every {r}s"))
            .unwrap_or_default(),
        a.run.timeout_secs
    );
    Ok(())
}
