//! `ui token`: the console's viewer token (and where the console is, when the site runs).

use super::common::*;
use clap::Subcommand;
use site_server::config::{ConfigError, DataDir, SiteConfig};

#[derive(Subcommand)]
pub enum UiCmd {
    /// Print the viewer token that signs in to the console (read-only); made at first use.
    Token {
        #[command(flatten)]
        data: DataArg,
        /// Make a new token: every viewer signed in with the old one is signed out.
        #[arg(long)]
        new: bool,
    },
}

pub(super) fn ui(c: UiCmd) -> Res {
    match c {
        UiCmd::Token { data, new } => token(&data.dir(), new),
    }
}

fn token(dir: &DataDir, new: bool) -> Res {
    SiteConfig::load(dir).map_err(|e| match e {
        e @ (ConfigError::Io { .. } | ConfigError::Write { .. }) => CliError::failed(e.to_string()),
        e => CliError::usage(e.to_string()),
    })?;
    let t = site_server::ui::viewer_token(dir, new).map_err(|e| {
        CliError::failed(format!(
            "cannot write the viewer token {}: {e}",
            dir.ui_token().display()
        ))
    })?;
    println!("{t}");
    let running = std::fs::read_to_string(dir.admin())
        .ok()
        .and_then(|t| serde_json::from_str::<site_server::api::AdminInfo>(&t).ok())
        .map(|a| a.ui)
        .filter(|u| !u.is_empty());
    if let Some(url) = running {
        eprintln!("console: {url}/ (sign in with the token above)");
    }
    Ok(())
}
