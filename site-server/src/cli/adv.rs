//! `adv create|list`: advertisements of a package's program to a collection.

use super::common::*;
use crate::cli::client::AdminClient;
use clap::{Args, Subcommand};
use schema::advert::{Advertisement, ExitRules, Program};
use site_server::sansio::decide::AdvertRequest;

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
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
pub enum AdvCmd {
    /// Advertise a package's program to a collection.
    Create(Box<AdvCreate>),
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
                json,
            } = *args;
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
