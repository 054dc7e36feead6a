//! `machine approve|list`, `collection create|change|list`, and `status adverts|machine`:
//! the machines of a site, the collections advertisements go to, and how far each
//! advertisement has got.

use super::common::*;
use crate::cli::client::AdminClient;
use clap::Subcommand;
use schema::machine::{Collection, Rule};
use schema::trust::PublicKey;
use site_server::api::{AdvertsQuery, CollectionRequest, MachineQuery, MachineStatus};
use site_server::site::{AdvertsView, ApproveRequest, MachinesView};

#[derive(Subcommand)]
pub enum MachineCmd {
    /// Approve a machine (its agent's key, as `site-agent init` printed it), or turn
    /// automatic approval of every new machine on (`--auto`) or off (`--auto --off`).
    Approve {
        #[command(flatten)]
        data: DataArg,
        #[arg(long, required_unless_present = "auto")]
        name: Option<String>,
        #[arg(long, requires = "name")]
        pubkey: Option<String>,
        #[arg(long)]
        auto: bool,
        /// With --auto: approve only by the operator again.
        #[arg(long, requires = "auto")]
        off: bool,
        #[arg(long)]
        json: bool,
    },
    /// Machines approved here, those waiting for approval, and every machine of the subtree
    /// that reported.
    List {
        #[command(flatten)]
        data: DataArg,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum CollectionCmd {
    /// Create a collection: machines matching any --rule, and those named by --member.
    Create {
        name: String,
        #[command(flatten)]
        data: DataArg,
        /// Conditions that must all hold: name=GLOB,os=OS,arch=ARCH,site=CODE,tag:KEY=VALUE
        /// (repeatable: a machine matching any rule is a member).
        #[arg(long)]
        rule: Vec<String>,
        /// A machine that is a member by name (repeatable).
        #[arg(long)]
        member: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Replace a collection's rules and members.
    Change {
        name: String,
        #[command(flatten)]
        data: DataArg,
        #[arg(long)]
        rule: Vec<String>,
        #[arg(long)]
        member: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// List collections.
    List {
        #[command(flatten)]
        data: DataArg,
        #[arg(long)]
        json: bool,
    },
}

pub(super) async fn machine(cmd: MachineCmd) -> Res {
    match cmd {
        MachineCmd::Approve {
            data,
            name,
            pubkey,
            auto,
            off,
            json,
        } => {
            let key = pubkey
                .as_deref()
                .map(|k| {
                    k.parse::<PublicKey>()
                        .map_err(|e| CliError::usage(format!("--pubkey: {e}")))
                })
                .transpose()?;
            if name.is_some() && key.is_none() {
                return Err(CliError::usage(
                    "--name needs --pubkey: the key `site-agent init` printed for the machine",
                ));
            }
            let req = ApproveRequest {
                name,
                key,
                auto: auto.then_some(!off),
            };
            let client = AdminClient::from_dir(&data.dir())?;
            let v: MachinesView = client.post_json("/v1/machines/approve", &req).await?;
            if json {
                return print_json(&v);
            }
            if let Some(n) = &req.name {
                println!("machine {n} is approved at {}", v.site);
            }
            if let Some(on) = req.auto {
                println!(
                    "{} approves new machines {}",
                    v.site,
                    if on {
                        "automatically"
                    } else {
                        "only by the operator"
                    }
                );
            }
            Ok(())
        }
        MachineCmd::List { data, json } => {
            let client = AdminClient::from_dir(&data.dir())?;
            let v: MachinesView = client.get("/v1/machines").await?;
            if json {
                return print_json(&v);
            }
            println!(
                "{}: {} approved, {} waiting; approval is {}",
                v.site,
                v.approved.len(),
                v.pending.len(),
                if v.auto_approval {
                    "automatic"
                } else {
                    "by the operator"
                }
            );
            for (name, key) in &v.pending {
                println!("waiting: site-server machine approve --name {name} --pubkey {key}");
            }
            let rows: Vec<Vec<String>> = v
                .known
                .iter()
                .map(|m| {
                    let inv = m.inventory.clone().unwrap_or_default();
                    let approved = m.site != v.site
                        || v.approved
                            .iter()
                            .any(|a| a.name.eq_ignore_ascii_case(&m.name));
                    vec![
                        m.site.to_string(),
                        m.name.clone(),
                        inv.os,
                        inv.arch,
                        inv.tags
                            .iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect::<Vec<_>>()
                            .join(","),
                        inv.agent_version,
                        m.last_seen.format("%Y-%m-%d %H:%M:%S").to_string(),
                        if approved { "yes" } else { "no" }.into(),
                    ]
                })
                .collect();
            print_table(
                &[
                    "SITE",
                    "MACHINE",
                    "OS",
                    "ARCH",
                    "TAGS",
                    "AGENT",
                    "LAST SEEN",
                    "APPROVED",
                ],
                &rows,
            );
            Ok(())
        }
    }
}

fn collection_of(
    name: String,
    rule: &[String],
    member: Vec<String>,
) -> Result<Collection, CliError> {
    let rules = rule
        .iter()
        .map(|r| Rule::parse(r).map_err(|e| CliError::usage(format!("--rule: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Collection {
        name,
        rules,
        members: member,
    })
}

pub(super) async fn collection(cmd: CollectionCmd) -> Res {
    let (data, c, replace, json) = match cmd {
        CollectionCmd::Create {
            name,
            data,
            rule,
            member,
            json,
        } => (data, collection_of(name, &rule, member)?, false, json),
        CollectionCmd::Change {
            name,
            data,
            rule,
            member,
            json,
        } => (data, collection_of(name, &rule, member)?, true, json),
        CollectionCmd::List { data, json } => {
            let client = AdminClient::from_dir(&data.dir())?;
            let list: Vec<Collection> = client.get("/v1/collections").await?;
            if json {
                return print_json(&list);
            }
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|c| {
                    vec![
                        c.name.clone(),
                        c.rules
                            .iter()
                            .map(|r| r.to_string())
                            .collect::<Vec<_>>()
                            .join(" | "),
                        c.members.join(","),
                    ]
                })
                .collect();
            print_table(&["COLLECTION", "RULES (any)", "MEMBERS"], &rows);
            return Ok(());
        }
    };
    let client = AdminClient::from_dir(&data.dir())?;
    let out: Collection = client
        .post_json(
            "/v1/collections",
            &CollectionRequest {
                collection: c,
                replace,
            },
        )
        .await?;
    if json {
        return print_json(&out);
    }
    println!(
        "collection {} {}: {} rule(s), {} member(s)",
        out.name,
        if replace { "changed" } else { "created" },
        out.rules.len(),
        out.members.len()
    );
    Ok(())
}

fn pct(n: u64, of: u64) -> String {
    if of == 0 {
        "-".into()
    } else {
        format!("{:.0}%", n as f64 * 100.0 / of as f64)
    }
}

/// `status adverts [--id A] [--failed]`.
pub(super) async fn adverts(
    dir: &site_server::config::DataDir,
    id: Option<String>,
    failed: bool,
    json: bool,
) -> Res {
    let id = id
        .map(|i| {
            i.parse::<schema::AdvertisementId>()
                .map_err(|e| CliError::usage(format!("--id: {e}")))
        })
        .transpose()?;
    if failed && id.is_none() {
        return Err(CliError::usage(
            "--failed needs --id: the machines that returned errors for one advertisement",
        ));
    }
    let client = AdminClient::from_dir(dir)?;
    let v: AdvertsView = client
        .get_query("/v1/status/adverts", &AdvertsQuery { id, failed })
        .await?;
    if json {
        return print_json(&v);
    }
    if failed {
        let rows: Vec<Vec<String>> = v
            .failed
            .iter()
            .map(|m| {
                vec![
                    m.site.to_string(),
                    m.machine.clone(),
                    m.exit.map(|e| e.to_string()).unwrap_or("-".into()),
                    m.time.format("%Y-%m-%d %H:%M:%S").to_string(),
                    m.detail
                        .lines()
                        .last()
                        .unwrap_or("")
                        .chars()
                        .take(80)
                        .collect(),
                ]
            })
            .collect();
        print_table(
            &["SITE", "MACHINE", "EXIT", "WHEN", "OUTPUT (last line)"],
            &rows,
        );
        return Ok(());
    }
    let rows: Vec<Vec<String>> = v
        .rows
        .iter()
        .map(|r| {
            let of = r.in_collection.max(r.reported());
            vec![
                r.advert.map(|a| a.to_string()).unwrap_or_default(),
                r.site.map(|s| s.to_string()).unwrap_or_default(),
                r.in_collection.to_string(),
                r.received.to_string(),
                r.running.to_string(),
                format!("{} ({})", r.succeeded, pct(r.succeeded, of)),
                format!("{} ({})", r.failed, pct(r.failed, of)),
                r.reboot_pending.to_string(),
                r.not_applicable.to_string(),
            ]
        })
        .collect();
    print_table(
        &[
            "ADVERT",
            "SITE",
            "IN COLLECTION",
            "RECEIVED",
            "RUNNING",
            "SUCCEEDED",
            "FAILED",
            "REBOOT",
            "N/A",
        ],
        &rows,
    );
    Ok(())
}

/// `status machine NAME`.
pub(super) async fn machine_status(
    dir: &site_server::config::DataDir,
    name: String,
    json: bool,
) -> Res {
    let client = AdminClient::from_dir(dir)?;
    let (recs, states): MachineStatus = client
        .get_query("/v1/status/machine", &MachineQuery { name: name.clone() })
        .await?;
    if json {
        return print_json(&(recs, states));
    }
    if recs.is_empty() && states.is_empty() {
        return Err(CliError::failed(format!(
            "no machine {name} has reported to this site or below: check the name with `site-server machine list`"
        )));
    }
    for r in &recs {
        let inv = r.inventory.clone().unwrap_or_default();
        println!(
            "{}/{}: {} {} agent {}, last seen {}",
            r.site,
            r.name,
            inv.os,
            inv.arch,
            inv.agent_version,
            r.last_seen.format("%Y-%m-%d %H:%M:%S")
        );
        for h in &r.history {
            println!(
                "  {} {:>5} {}",
                h.time.format("%Y-%m-%d %H:%M:%S"),
                h.id,
                h.text
            );
        }
    }
    let rows: Vec<Vec<String>> = states
        .iter()
        .map(|s| {
            vec![
                s.advert.to_string(),
                s.state.as_str().to_string(),
                s.exit.map(|e| e.to_string()).unwrap_or("-".into()),
                s.rerun.to_string(),
                s.time.format("%Y-%m-%d %H:%M:%S").to_string(),
            ]
        })
        .collect();
    print_table(&["ADVERT", "STATE", "EXIT", "RERUN", "WHEN"], &rows);
    Ok(())
}
