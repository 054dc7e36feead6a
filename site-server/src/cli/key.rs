//! `site-server key rotate|revoke|checkpoint|show`: this site's place in the chain of keys.

use crate::cli::client::AdminClient;
use crate::cli::{print_json, print_table, CliError, DataArg, Res};
use clap::Subcommand;
use site_server::api::{CheckpointOutcome, CheckpointRequest, RevokeRequest};
use site_server::site::KeysView;

#[derive(Subcommand)]
pub enum KeyCmd {
    /// A new origin key for this site. At the top it takes over at once; below, the parent
    /// is asked to delegate it and it signs from the moment that delegation arrives (until
    /// then this site originates no events; the old key stays valid for what it signed).
    Rotate {
        #[command(flatten)]
        data: DataArg,
        #[arg(long)]
        json: bool,
    },
    /// Revoke the key of a site below this one, from this point of the log on: its later
    /// events are refused everywhere below this site.
    Revoke {
        #[command(flatten)]
        data: DataArg,
        /// The site revoked.
        #[arg(long)]
        site: String,
        #[arg(long)]
        json: bool,
    },
    /// Sign a checkpoint now (top site only; the daemon signs one every `[trust]
    /// checkpoint_every` by itself).
    Checkpoint {
        #[command(flatten)]
        data: DataArg,
        /// How long it vouches for the view from the top (`[trust] checkpoint_expiry`
        /// unless given), e.g. 24h.
        #[arg(long)]
        expiry: Option<String>,
    },
    /// Every site's keys as this site's log holds them, and the view from the top.
    Show {
        #[command(flatten)]
        data: DataArg,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(cmd: KeyCmd) -> Res {
    match cmd {
        KeyCmd::Rotate { data, json } => {
            let v: KeysView = AdminClient::from_dir(&data.dir())?
                .post_json("/v1/keys/rotate", &serde_json::json!({}))
                .await?;
            if json {
                return print_json(&v);
            }
            match &v.pending_key {
                Some((k, from)) => println!(
                    "new key {k} asked of the parent from event number {from}: it signs once the parent's delegation arrives (`site-server key show`)"
                ),
                None => println!("this site now signs with {}", v.origin_key),
            }
            Ok(())
        }
        KeyCmd::Revoke { data, site, json } => {
            let site = schema::SiteCode::new(&site).map_err(|e| CliError::usage(e.to_string()))?;
            let v: KeysView = AdminClient::from_dir(&data.dir())?
                .post_json("/v1/keys/revoke", &RevokeRequest { site })
                .await?;
            if json {
                return print_json(&v);
            }
            println!("{site}'s key is revoked from here on: its later events are refused below this site");
            Ok(())
        }
        KeyCmd::Checkpoint { data, expiry } => {
            let o: CheckpointOutcome = AdminClient::from_dir(&data.dir())?
                .post_json("/v1/keys/checkpoint", &CheckpointRequest { expiry })
                .await?;
            println!("checkpoint signed: issued up to number {}", o.issued);
            Ok(())
        }
        KeyCmd::Show { data, json } => {
            let v: KeysView = AdminClient::from_dir(&data.dir())?.get("/v1/keys").await?;
            if json {
                return print_json(&v);
            }
            print_keys(&v);
            Ok(())
        }
    }
}

/// The key table and the view from the top, for `key show` and `status sites`.
pub fn print_keys(v: &KeysView) {
    let rows: Vec<Vec<String>> = v
        .sites
        .iter()
        .map(|s| {
            let (from, key) = s
                .keys
                .last()
                .map_or((0, String::new()), |(f, k)| (*f, k.to_string()));
            vec![
                s.site.to_string(),
                s.delegated_by.map_or("(root)".into(), |b| b.to_string()),
                key[..16.min(key.len())].to_string(),
                from.to_string(),
                s.keys.len().to_string(),
                s.revoked_by
                    .map_or(String::new(), |b| format!("revoked by {b}")),
            ]
        })
        .collect();
    print_table(
        &["SITE", "DELEGATED BY", "KEY", "FROM", "KEYS", "REVOKED"],
        &rows,
    );
    if let Some((k, from)) = &v.pending_key {
        println!("rotation pending: {k} from number {from}, waiting for the parent's delegation");
    }
    match &v.view_from_top {
        Some(view) => println!("{}", view.line()),
        None => println!("no checkpoint of the top yet"),
    }
}
