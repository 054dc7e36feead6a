//! `site-agent`'s commands: `init`, `run`, `run-once`, `status` (also reached as
//! `site-server agent ...`).

use crate::config::{self, AgentConfig};
use crate::state::State;
use crate::AgentError;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "site-agent",
    version,
    about = "The client agent: runs advertised programs and reports each step"
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
    /// Make the agent: its key, agent.toml; prints the command that approves it at the site.
    Init {
        #[arg(long, env = "SITE_AGENT_DATA", value_name = "DIR")]
        data: PathBuf,
        /// The distribution point, http://HOST:PORT.
        #[arg(long)]
        dp: String,
        /// The top site's key (its `site-server identity` prints it).
        #[arg(long)]
        root_key: String,
        /// The machine's name (default: its host name).
        #[arg(long)]
        name: Option<String>,
        /// A tag collection rules can match, KEY=VALUE (repeatable).
        #[arg(long)]
        tag: Vec<String>,
        /// How often to ask the DP for policy (default 5m).
        #[arg(long)]
        poll: Option<String>,
    },
    /// Run the agent in the foreground.
    Run {
        #[arg(long, env = "SITE_AGENT_DATA", value_name = "DIR")]
        data: PathBuf,
    },
    /// One policy cycle, then exit (for tests and cron).
    RunOnce {
        #[arg(long, env = "SITE_AGENT_DATA", value_name = "DIR")]
        data: PathBuf,
    },
    /// What the agent has received, run and not yet reported.
    Status {
        #[arg(long, env = "SITE_AGENT_DATA", value_name = "DIR")]
        data: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

fn init(
    data: PathBuf,
    dp: String,
    root_key: String,
    name: Option<String>,
    tag: Vec<String>,
    poll: Option<String>,
) -> Result<(), AgentError> {
    let root_key = root_key
        .parse()
        .map_err(|e| AgentError::Usage(format!("--root-key: {e}")))?;
    let mut tags = std::collections::BTreeMap::new();
    for t in tag {
        let (k, v) = t
            .split_once('=')
            .filter(|(k, v)| !k.is_empty() && !v.is_empty())
            .ok_or_else(|| AgentError::Usage(format!("--tag {t:?}: write KEY=VALUE")))?;
        tags.insert(k.to_string(), v.to_string());
    }
    let cfg = AgentConfig {
        name: name.unwrap_or_else(config::host_name),
        dp,
        root_key,
        tags,
        poll: poll.unwrap_or_else(|| "5m".into()),
        allow_reboot: false,
        reboot_command: String::new(),
    };
    cfg.check().map_err(AgentError::Usage)?;
    if AgentConfig::path(&data).exists() {
        return Err(AgentError::Usage(format!(
            "{} already exists: this directory holds an agent; use another --data",
            AgentConfig::path(&data).display()
        )));
    }
    std::fs::create_dir_all(&data)
        .map_err(|e| AgentError::Failed(format!("cannot create {}: {e}", data.display())))?;
    let key = config::new_key(&data)?;
    cfg.save(&data)?;
    let pk = schema::trust::PublicKey::of(&key);
    println!("agent {} made in {}", cfg.name, data.display());
    println!(
        "approve it at its site: site-server machine approve --name {} --pubkey {pk}",
        cfg.name
    );
    Ok(())
}

fn status(data: PathBuf, json: bool) -> Result<(), AgentError> {
    let cfg = AgentConfig::load(&data)?;
    let st = State::load(&data)?;
    if json {
        let v = serde_json::json!({
            "name": cfg.name,
            "dp": cfg.dp,
            "site": st.site,
            "approved": st.approved,
            "last_poll": st.last_poll,
            "adverts": st.adverts,
            "running": st.running,
            "unsent_reports": st.outbox.len(),
            "next_report": st.next_seq,
        });
        println!("{}", serde_json::to_string_pretty(&v).expect("JSON"));
        return Ok(());
    }
    println!(
        "machine {} at {} (site {}), {}",
        cfg.name,
        cfg.dp,
        st.site.map(|s| s.to_string()).unwrap_or("unknown".into()),
        if st.approved {
            "approved"
        } else {
            "not approved yet"
        }
    );
    if let Some((t, what)) = &st.last_poll {
        println!("last poll {}: {what}", t.format("%Y-%m-%d %H:%M:%S UTC"));
    }
    for (id, r) in &st.adverts {
        let last = r
            .last
            .map(|l| {
                format!(
                    "{:?} (assignment {}, re-run {})",
                    l.end,
                    l.due.format("%Y-%m-%d %H:%M"),
                    l.rerun
                )
            })
            .unwrap_or_else(|| "not run".into());
        println!(
            "  {id}: received {}, last run: {last}",
            if r.received.is_some() { "yes" } else { "no" }
        );
    }
    if let Some(r) = &st.running {
        println!(
            "running: {} since {}",
            r.advert,
            r.started.format("%H:%M:%S")
        );
    }
    println!("{} report(s) not yet taken by the DP", st.outbox.len());
    Ok(())
}

pub async fn run(cli: Cli) -> Result<(), AgentError> {
    match cli.cmd {
        Cmd::Init {
            data,
            dp,
            root_key,
            name,
            tag,
            poll,
        } => init(data, dp, root_key, name, tag, poll),
        Cmd::Run { data } => crate::run(&data).await,
        Cmd::RunOnce { data } => {
            let mut a = crate::cycle::Agent::open(&data)?;
            let r = a.cycle().await?;
            println!(
                "{} advertisement(s) for this machine; ran {}; {} report(s) unsent",
                r.adverts,
                if r.ran.is_empty() {
                    "nothing".to_string()
                } else {
                    r.ran
                        .iter()
                        .map(|(id, w)| format!("{id}: {w}"))
                        .collect::<Vec<_>>()
                        .join("; ")
                },
                r.unsent
            );
            Ok(())
        }
        Cmd::Status { data, json } => status(data, json),
    }
}
