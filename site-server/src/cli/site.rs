//! `init`, `identity`, `rebuild` and `store verify`: the commands that work on a site's data
//! directory without its daemon.

use super::common::*;
use clap::Subcommand;
use schema::SiteCode;
use site_server::config::{DataDir, SiteConfig};
use std::net::SocketAddr;

#[derive(Subcommand)]
pub enum StoreCmd {
    /// Re-hash every chunk and name every corrupt one (exit 1 if any).
    Verify {
        #[command(flatten)]
        data: DataArg,
        #[arg(long)]
        json: bool,
    },
}

pub(super) fn init(
    code: &str,
    dir: &DataDir,
    listen: SocketAddr,
    api: SocketAddr,
    root_key: Option<&str>,
) -> Res {
    let code = SiteCode::new(code).map_err(|e| CliError::usage(e.to_string()))?;
    let mut cfg = SiteConfig::new(code, listen, api);
    if let Some(k) = root_key {
        cfg.root_key = Some(
            sender::identity::check_public_key(k)
                .map_err(|e| CliError::usage(format!("--root-key: {e}")))?,
        );
    }
    cfg.validate().map_err(CliError::usage)?;
    if site_server::config::is_initialized(&dir.root) {
        return Err(CliError::usage(format!(
            "{} already holds a site: give a new directory to --data",
            dir.root.display()
        )));
    }
    if let Ok(mut rd) = std::fs::read_dir(&dir.root) {
        if rd.next().is_some() {
            return Err(CliError::usage(format!(
                "{} is not empty: give a new or empty directory to --data",
                dir.root.display()
            )));
        }
    }
    std::fs::create_dir_all(&dir.root)
        .map_err(|e| CliError::failed(format!("cannot create {}: {e}", dir.root.display())))?;
    let public =
        sender::identity::create(&dir.root, code).map_err(|e| CliError::failed(e.to_string()))?;
    dist_point::ContentStore::open(dir.content()).map_err(|e| CliError::failed(e.to_string()))?;
    // site.toml last: its presence is what marks the directory initialized.
    let tmp = dir.root.join("site.toml.tmp");
    std::fs::write(&tmp, cfg.to_toml())
        .and_then(|_| std::fs::rename(&tmp, dir.config()))
        .map_err(|e| CliError::failed(format!("cannot write {}: {e}", dir.config().display())))?;
    println!("initialized site {code} in {}", dir.root.display());
    println!("fingerprint  {}", public.fingerprint);
    println!("public key   {}", public.public_key);
    println!("next: site-server run --data {}", dir.root.display());
    Ok(())
}

pub(super) async fn identity(dir: &DataDir, json: bool) -> Res {
    let cfg = SiteConfig::load(dir).map_err(|e| CliError::usage(e.to_string()))?;
    let p =
        sender::identity::load_public(&dir.root).map_err(|e| CliError::failed(e.to_string()))?;
    // The keys of the tree as the running daemon holds them (none when it is stopped).
    let keys: Option<site_server::site::KeysView> = if dir.admin().exists() {
        match crate::cli::client::AdminClient::from_dir(dir) {
            Ok(c) => c.get("/v1/keys").await.ok(),
            Err(_) => None,
        }
    } else {
        None
    };
    if json {
        return print_json(&serde_json::json!({
            "code": cfg.code,
            "fingerprint": p.fingerprint,
            "public_key": p.public_key,
            "listen": cfg.listen.to_string(),
            "api": cfg.api.to_string(),
            "root_key": cfg.trust_root(&p.public_key),
            "keys": keys,
        }));
    }
    println!("code         {}", cfg.code);
    println!("fingerprint  {}", p.fingerprint);
    println!("public key   {}", p.public_key);
    println!("listen       {}", cfg.listen);
    match cfg.trust_root(&p.public_key) {
        Some(k) if k == p.public_key => println!("root key     {k} (this site: the top)"),
        Some(k) => println!("root key     {k}"),
        None => {
            println!("root key     not set: give the top site's key with `parent set --root-key`")
        }
    }
    if let Some(k) = &keys {
        println!("origin key   {}", k.origin_key);
        if let Some((key, from)) = &k.pending_key {
            println!("rotating to  {key} from number {from} (waiting for the parent's delegation)");
        }
    }
    Ok(())
}

pub(super) fn rebuild(dir: &DataDir) -> Res {
    let (_lock, site) = site_server::daemon::open_site(dir, true)?;
    let r = site
        .db()
        .rebuild()
        .map_err(|e| CliError::failed(format!("rebuild failed: {e}")))?;
    println!(
        "rebuilt projections from {} events: digest before {}, after {}{}",
        r.events,
        &r.digest_before[..16],
        &r.digest_after[..16],
        if r.digest_before == r.digest_after {
            " (identical)"
        } else {
            " (the old projections differed from the log and were replaced)"
        }
    );
    println!(
        "re-indexed {} reports{}: digest before {}, after {}{}",
        r.reports,
        if r.report_rollups {
            " and recomputed their roll-ups"
        } else {
            " (roll-ups kept: retention has removed older reports, whose words they hold)"
        },
        &r.report_digest_before[..16],
        &r.report_digest_after[..16],
        if r.report_digest_before == r.report_digest_after {
            " (identical)"
        } else {
            " (the old ones differed from the log and were replaced)"
        }
    );
    Ok(())
}

pub(super) fn verify(dir: &DataDir, json: bool) -> Res {
    SiteConfig::load(dir).map_err(|e| CliError::usage(e.to_string()))?;
    let store = dist_point::ContentStore::open(dir.content())
        .map_err(|e| CliError::failed(e.to_string()))?;
    let r = store
        .verify_all()
        .map_err(|e| CliError::failed(e.to_string()))?;
    if json {
        print_json(&serde_json::json!({
            "chunks_ok": r.chunks_ok,
            "raw_bytes": r.raw_bytes,
            "problems": r.problems.iter().map(|p| serde_json::json!({
                "path": p.path, "chunk": p.id.map(|i| i.to_hex()), "reason": p.reason
            })).collect::<Vec<_>>(),
            "unreadable": r.unreadable.iter().map(|p| serde_json::json!({
                "path": p.path, "chunk": p.id.map(|i| i.to_hex()), "reason": p.reason
            })).collect::<Vec<_>>(),
        }))?;
    } else {
        println!(
            "{} chunks verified ({}), {} problems, {} unreadable",
            r.chunks_ok,
            human_bytes(r.raw_bytes),
            r.problems.len(),
            r.unreadable.len()
        );
    }
    match (r.problems.first(), r.unreadable.first()) {
        (None, None) => Ok(()),
        (None, Some(p)) => Err(CliError::failed(format!(
            "{} chunk file(s) could not be read, first {} ({}): an I/O error, not damage; check the disk and run the scrub again",
            r.unreadable.len(),
            p.path.display(),
            p.reason
        ))),
        (Some(p), _) => Err(CliError::failed(format!(
            "{} corrupt chunk file(s) in the content store, first {} ({}): remove them and publish or fetch the content again",
            r.problems.len(),
            p.path.display(),
            p.reason
        ))),
    }
}
