//! `child add|set|list` and `parent set`: the links of this site, pinned by certificate.

use super::common::*;
use crate::cli::client::AdminClient;
use clap::Subcommand;
use schema::SiteCode;
use site_server::config::{DataDir, SiteConfig};

#[derive(Subcommand)]
pub enum ChildCmd {
    /// Link a child site: pin its certificate and key (from its `site-server identity`).
    Add {
        #[command(flatten)]
        data: DataArg,
        /// The child's site code.
        #[arg(long)]
        code: String,
        /// The child's certificate fingerprint.
        #[arg(long)]
        fingerprint: String,
        /// The child's public key.
        #[arg(long)]
        pubkey: String,
        /// The child is reached only by courier bundles.
        #[arg(long)]
        courier: bool,
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// Change a child link's address schedule and rate limit (live: the running daemon
    /// uses them at once).
    Set {
        #[command(flatten)]
        data: DataArg,
        /// The child's site code.
        #[arg(long)]
        code: String,
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// List the children of this site.
    List {
        #[command(flatten)]
        data: DataArg,
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args, Clone, Default)]
pub struct PolicyArgs {
    /// Which priorities may go when, per hour of the week, first match wins, e.g.
    /// 'mon-fri 08-18 high; sat,sun all; * medium+' (all, medium+, high, closed; `''`: all, 24x7).
    #[arg(long)]
    pub schedule: Option<String>,
    /// Rate limit per hour of the week, e.g. 'mon-fri 08-18 2MiB/s; * 20MiB/s' or
    /// '* pulse 64KiB 2s' (`''` or unlimited: no limit).
    #[arg(long)]
    pub rate: Option<String>,
}

#[derive(Subcommand)]
pub enum ParentCmd {
    /// Set this site's parent: where to dial it, its certificate and key.
    Set {
        #[command(flatten)]
        data: DataArg,
        /// The parent's site code.
        #[arg(long)]
        code: String,
        /// HOST:PORT of the parent's listener.
        #[arg(long, required_unless_present = "courier")]
        addr: Option<String>,
        /// The parent is reached by courier bundles only (no network link).
        #[arg(long, conflicts_with = "addr")]
        courier: bool,
        #[arg(long)]
        fingerprint: String,
        #[arg(long)]
        pubkey: String,
        /// The top site's public key (as its `identity` prints it): the trust root, when this
        /// site was initialized without one. The parent's own key if the parent is the top.
        #[arg(long)]
        root_key: Option<String>,
    },
}

/// The peer's code, fingerprint and key as the operator gave them, checked.
pub(super) fn peer_keys(
    code: &str,
    fingerprint: &str,
    pubkey: &str,
) -> Result<(SiteCode, String, String), CliError> {
    Ok((
        SiteCode::new(code).map_err(|e| CliError::usage(e.to_string()))?,
        sender::identity::check_fingerprint(fingerprint).map_err(CliError::usage)?,
        sender::identity::check_public_key(pubkey).map_err(CliError::usage)?,
    ))
}

pub(super) fn links_changed(dir: &DataDir) {
    if dir.admin().exists() {
        println!("the running daemon reads its links when it starts: restart it to use this one");
    }
}

pub(super) fn child_add(
    dir: &DataDir,
    code: &str,
    fingerprint: &str,
    pubkey: &str,
    courier: bool,
    policy: PolicyArgs,
) -> Res {
    let mut cfg = SiteConfig::load(dir).map_err(|e| CliError::usage(e.to_string()))?;
    let (code, fingerprint, public_key) = peer_keys(code, fingerprint, pubkey)?;
    if cfg.children.iter().any(|c| c.code == code) {
        return Err(CliError::usage(format!(
            "child {code} is already linked to {}: see `site-server child list`",
            cfg.code
        )));
    }
    let child = site_server::config::ChildLink {
        code,
        fingerprint,
        public_key,
        courier,
        schedule: policy.schedule.unwrap_or_default(),
        rate: policy.rate.unwrap_or_default(),
    };
    child.policy().map_err(CliError::usage)?;
    cfg.children.push(child);
    cfg.save(dir).map_err(config_error)?;
    println!(
        "child {code} added to {} ({}); its certificate is pinned",
        cfg.code,
        if courier {
            "courier only"
        } else {
            "network link"
        }
    );
    links_changed(dir);
    Ok(())
}

pub(super) async fn child_set(dir: &DataDir, code: &str, policy: PolicyArgs) -> Res {
    if policy.schedule.is_none() && policy.rate.is_none() {
        return Err(CliError::usage(
            "nothing to change: give --schedule RULES and/or --rate RULES",
        ));
    }
    let code = schema::SiteCode::new(code).map_err(|e| CliError::usage(e.to_string()))?;
    let req = site_server::site::LinkPolicyRequest {
        schedule: policy.schedule,
        rate: policy.rate,
    };
    // A running daemon changes the file and its sender together; otherwise the file alone.
    let child: site_server::config::ChildLink = if dir.admin().exists() {
        AdminClient::from_dir(dir)?
            .post_json(&format!("/v1/children/{code}"), &req)
            .await?
    } else {
        site_server::site::set_child_policy(dir, code, &req).map_err(|e| match e {
            site_server::site::OpError::Refused(r) => CliError::usage(r.to_string()),
            e => CliError::failed(e.to_string()),
        })?
    };
    println!(
        "child {code}: schedule {}; rate {}",
        if child.schedule.is_empty() {
            "all, 24x7"
        } else {
            &child.schedule
        },
        if child.rate.is_empty() {
            "unlimited"
        } else {
            &child.rate
        },
    );
    Ok(())
}

pub(super) fn child_list(dir: &DataDir, json: bool) -> Res {
    let cfg = SiteConfig::load(dir).map_err(|e| CliError::usage(e.to_string()))?;
    if json {
        return print_json(&cfg.children);
    }
    let rows: Vec<Vec<String>> = cfg
        .children
        .iter()
        .map(|c| {
            vec![
                c.code.to_string(),
                if c.courier { "courier" } else { "network" }.into(),
                c.fingerprint[..16].to_string(),
                c.public_key[..16].to_string(),
            ]
        })
        .collect();
    print_table(&["CHILD", "LINK", "FINGERPRINT", "PUBLIC KEY"], &rows);
    Ok(())
}

pub(super) fn parent_set(
    dir: &DataDir,
    code: &str,
    addr: &str,
    fingerprint: &str,
    pubkey: &str,
    root_key: Option<&str>,
) -> Res {
    let mut cfg = SiteConfig::load(dir).map_err(|e| CliError::usage(e.to_string()))?;
    let (code, fingerprint, public_key) = peer_keys(code, fingerprint, pubkey)?;
    if let Some(k) = root_key {
        let k = sender::identity::check_public_key(k)
            .map_err(|e| CliError::usage(format!("--root-key: {e}")))?;
        match &cfg.root_key {
            Some(old) if *old != k => {
                return Err(CliError::usage(format!(
                    "this site already trusts the root key {old}: a different root is another tree; initialize a new site for it"
                )))
            }
            _ => cfg.root_key = Some(k),
        }
    }
    if !addr.is_empty() {
        site_server::config::check_addr(addr).map_err(CliError::usage)?;
    }
    cfg.parent = Some(site_server::config::ParentLink {
        code,
        addr: addr.to_string(),
        fingerprint,
        public_key,
    });
    cfg.save(dir).map_err(config_error)?;
    if addr.is_empty() {
        println!(
            "parent of {} set to {code}, reached by courier bundles only; its key checks them",
            cfg.code
        );
    } else {
        println!(
            "parent of {} set to {code} at {addr}; its certificate is pinned",
            cfg.code
        );
    }
    links_changed(dir);
    Ok(())
}
