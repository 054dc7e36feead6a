//! The operator CLI: one file per command family, the dispatch here, what they share in
//! [`common`]. Offline commands (`init`, `identity`, `rebuild`, `store verify`) work on the
//! data directory; the others talk to the running daemon through [`client`].

mod adv;
pub mod client;
mod common;
mod courier;
mod demo;
mod dp;
mod key;
mod links;
mod machine;
mod package;
mod sender;
mod site;
mod status;
mod sync;
mod ui;

use adv::*;
use clap::{Parser, Subcommand};
pub use common::*;
use links::*;
use package::*;
use site::*;
use status::*;
use std::net::SocketAddr;

#[derive(Parser)]
#[command(
    name = "site-server",
    version,
    about = "A site of the replication hierarchy: config log, reports, packages, admin API"
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
    /// Log lines as `text` (the default) or `json`: one object per line, for journald and
    /// log shippers.
    #[arg(long, global = true, value_parser = ["text", "json"], default_value = "text", env = "SITEREP_LOG_FORMAT")]
    pub log_format: String,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Create a site: keys, certificate and site.toml in a new data directory.
    Init {
        /// Site code: 3 characters, A-Z or 0-9.
        #[arg(long)]
        code: String,
        #[command(flatten)]
        data: DataArg,
        /// QUIC address children connect to.
        #[arg(long, default_value = "127.0.0.1:4710")]
        listen: SocketAddr,
        /// Admin API address (loopback; port 0 picks a free port at each start).
        #[arg(long, default_value = "127.0.0.1:0")]
        api: SocketAddr,
        /// The top site's public key (as its `identity` prints it): the trust root. Leave it
        /// out at the top site, whose own key is the root.
        #[arg(long)]
        root_key: Option<String>,
    },
    /// Show the site's code, certificate fingerprint and public key.
    Identity {
        #[command(flatten)]
        data: DataArg,
        #[arg(long)]
        json: bool,
    },
    /// Run the site daemon in the foreground.
    Run {
        #[command(flatten)]
        data: DataArg,
    },
    /// Children of this site: add, list.
    #[command(subcommand)]
    Child(ChildCmd),
    /// The parent of this site.
    #[command(subcommand)]
    Parent(ParentCmd),
    /// Packages: publish, list, show.
    #[command(subcommand)]
    Package(PackageCmd),
    /// Advertisements: create, list, enable, disable, change, rerun.
    #[command(subcommand)]
    Adv(AdvCmd),
    /// Machines of this site: approve (or approve automatically), list.
    #[command(subcommand)]
    Machine(crate::cli::machine::MachineCmd),
    /// Collections: create, change, list.
    #[command(subcommand)]
    Collection(crate::cli::machine::CollectionCmd),
    /// Show the config log.
    Log {
        #[command(flatten)]
        data: DataArg,
        /// First log position to show.
        #[arg(long, default_value_t = 1)]
        from: u64,
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Status: messages, and the catalogue of message ids.
    #[command(subcommand)]
    Status(StatusCmd),
    /// Distribution points of this site: add, list (with the daemon: every DP in the tree).
    #[command(subcommand)]
    Dp(crate::cli::dp::DpCmd),
    /// The sender: emergency boost, retry of failed sendings.
    #[command(subcommand)]
    Sender(crate::cli::sender::SenderCmd),
    /// Replay the config log into fresh projections (daemon stopped).
    Rebuild {
        #[command(flatten)]
        data: DataArg,
    },
    /// The content store: verify every chunk.
    #[command(subcommand)]
    Store(StoreCmd),
    /// Start a site on loopback in a temporary directory, publish a sample package, show it.
    Demo {
        /// Leave the daemon running and print how to talk to it.
        #[arg(long)]
        keep: bool,
    },
    /// The operator's console: its viewer token.
    #[command(subcommand)]
    Ui(crate::cli::ui::UiCmd),
    /// Keys: rotate this site's, revoke one below, sign a checkpoint (top), show them all.
    #[command(subcommand)]
    Key(crate::cli::key::KeyCmd),
    /// Catalog sync (top site): sync now, sources and schedule, status of every site.
    #[command(subcommand)]
    Sync(crate::cli::sync::SyncCmd),
    /// The update catalog: list (filters: product, classification, --since 7d), show.
    #[command(subcommand)]
    Catalog(crate::cli::sync::CatalogCmd),
    /// Courier bundles for sites without a usable link: export, import, receipt.
    #[command(subcommand)]
    Courier(crate::cli::courier::CourierCmd),
    /// The client agent's commands (the same as the `site-agent` binary):
    /// `site-server agent init|run|run-once|status ...`.
    #[command(name = "agent", disable_help_flag = true)]
    Agent {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The distribution point's own commands (the same as the `dist-point` binary):
    /// `site-server dist-point init|run|status|validate ...`.
    #[command(name = "dist-point", disable_help_flag = true)]
    DistPoint {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

pub async fn run(cli: Cli) -> Res {
    match cli.cmd {
        Cmd::Init {
            code,
            data,
            listen,
            api,
            root_key,
        } => init(&code, &data.dir(), listen, api, root_key.as_deref()),
        Cmd::Identity { data, json } => identity(&data.dir(), json).await,
        Cmd::Run { data } => Ok(site_server::daemon::run(data.dir()).await?),
        Cmd::Child(ChildCmd::Add {
            data,
            code,
            fingerprint,
            pubkey,
            courier,
            policy,
        }) => child_add(&data.dir(), &code, &fingerprint, &pubkey, courier, policy),
        Cmd::Child(ChildCmd::Set { data, code, policy }) => {
            child_set(&data.dir(), &code, policy).await
        }
        Cmd::Child(ChildCmd::List { data, json }) => child_list(&data.dir(), json),
        Cmd::Parent(ParentCmd::Set {
            data,
            code,
            addr,
            courier: _,
            fingerprint,
            pubkey,
            root_key,
        }) => parent_set(
            &data.dir(),
            &code,
            addr.as_deref().unwrap_or(""),
            &fingerprint,
            &pubkey,
            root_key.as_deref(),
        ),
        Cmd::Package(p) => package(p).await,
        Cmd::Adv(a) => adv(a).await,
        Cmd::Ui(c) => crate::cli::ui::ui(c),
        Cmd::Machine(m) => crate::cli::machine::machine(m).await,
        Cmd::Collection(c) => crate::cli::machine::collection(c).await,
        Cmd::Status(StatusCmd::Adverts {
            data,
            id,
            failed,
            json,
        }) => crate::cli::machine::adverts(&data.dir(), id, failed, json).await,
        Cmd::Status(StatusCmd::Machine { name, data, json }) => {
            crate::cli::machine::machine_status(&data.dir(), name, json).await
        }
        Cmd::Log {
            data,
            from,
            limit,
            json,
        } => log(&data.dir(), from, limit, json).await,
        Cmd::Status(StatusCmd::Messages { data, filter, json }) => {
            messages(&data.dir(), filter, json).await
        }
        Cmd::Status(StatusCmd::Catalogue { json }) => catalogue(json),
        Cmd::Status(StatusCmd::Sites { data, json }) => sites(&data.dir(), json).await,
        Cmd::Status(StatusCmd::Senders { data, json }) => {
            crate::cli::sender::status(data, json).await
        }
        Cmd::Sender(cmd) => crate::cli::sender::run(cmd).await,
        Cmd::Dp(cmd) => crate::cli::dp::run(cmd).await,
        Cmd::Status(StatusCmd::Packages { data, json }) => content(&data.dir(), json).await,
        Cmd::Rebuild { data } => rebuild(&data.dir()),
        Cmd::Store(StoreCmd::Verify { data, json }) => verify(&data.dir(), json),
        Cmd::Demo { keep } => crate::cli::demo::run(keep).await,
        Cmd::Courier(c) => crate::cli::courier::run(c).await,
        Cmd::Sync(c) => crate::cli::sync::run(c).await,
        Cmd::Key(c) => crate::cli::key::run(c).await,
        Cmd::Catalog(c) => crate::cli::sync::catalog(c).await,
        Cmd::Status(StatusCmd::Sync { data, json }) => {
            crate::cli::sync::status(&data.dir(), json).await
        }
        Cmd::Agent { args } => {
            let cli: agent::cli::Cli = embedded("site-agent", args)?;
            agent::cli::run(cli).await.map_err(|e| CliError {
                code: e.exit_code(),
                message: e.to_string(),
            })
        }
        Cmd::DistPoint { args } => {
            let cli: dist_point::cli::Cli = embedded("dist-point", args)?;
            dist_point::cli::run(cli).await.map_err(|e| CliError {
                code: e.exit_code() as u8,
                message: e.to_string(),
            })
        }
    }
}

/// The command line of another role's binary run as `site-server ROLE ARGS...` (`agent`,
/// `dist-point`): parsed as that binary parses it; help and usage errors printed as it prints
/// them (exit 0 for help, 2 for a usage error).
fn embedded<C: clap::Parser>(bin: &str, args: Vec<String>) -> Result<C, CliError> {
    C::try_parse_from(std::iter::once(bin.to_string()).chain(args)).map_err(|e| {
        let _ = e.print();
        CliError {
            code: if e.use_stderr() { 2 } else { 0 },
            message: String::new(),
        }
    })
}
