//! `site-agent`: the client agent of a machine.
//!
//! It polls its distribution point ([`client`]), verifies every advertisement, collection and
//! package version of the policy against the trust root, never the DP's word
//! ([`plan::verify`]), evaluates which advertisements are for this machine from its own
//! inventory, decides what is due ([`plan::decide`], pure), downloads the package version
//! with every chunk verified against the signed manifest ([`fetch`]), runs the program
//! without a shell in the package's directory with a time limit ([`exec`]), reads the exit
//! code with the advertisement's exit rules, and reports each step, signed, to its DP, which
//! passes it up the tree ([`cycle`]). What it has received, run and not yet reported survives
//! its restarts ([`state`]).
//!
//! Entry points: [`cycle::Agent::open`] and [`cycle::Agent::cycle`] (one policy cycle),
//! [`config::AgentConfig`] (`agent.toml`), [`run`] (the daemon), [`cli::run`] (its commands).

pub mod cli;
pub mod client;
pub mod config;
pub mod cycle;
pub mod exec;
pub mod fetch;
pub mod plan;
pub mod state;

use std::path::Path;
use std::time::Duration;

/// Why a command or a cycle failed. [`AgentError::exit_code`]: 2 for what the operator must
/// fix in the configuration, 1 otherwise.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Failed(String),
    /// The DP refused the machine (not approved, wrong key, clock).
    #[error("refused: {0}")]
    Refused(String),
    /// The DP does not answer or cannot reach its site now.
    #[error("{0}")]
    Unreachable(String),
    /// The policy does not chain to the trust root: nothing of it is believed.
    #[error("the policy is not trusted, nothing of it is used: {0}")]
    Untrusted(String),
    /// A package could not be downloaded or verified.
    #[error("{0}")]
    Download(String),
}

impl AgentError {
    pub fn exit_code(&self) -> u8 {
        match self {
            AgentError::Usage(_) => 2,
            _ => 1,
        }
    }
}

/// The daemon: a cycle, then a sleep until the next poll (the interval plus up to a tenth
/// at random, so a thousand agents do not ask at once) or the next due time, whichever is
/// first; until SIGINT or SIGTERM.
pub async fn run(dir: &Path) -> Result<(), AgentError> {
    let mut agent = cycle::Agent::open(dir)?;
    let every = agent.cfg.poll_interval().map_err(AgentError::Usage)?;
    tracing::info!(machine = %agent.cfg.name, dp = %agent.cfg.dp, poll = ?every, "agent started");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| AgentError::Failed(format!("cannot watch for SIGTERM: {e}")))?;
    loop {
        let mut wait = every + jitter(every);
        match agent.cycle().await {
            Ok(r) => {
                tracing::info!(
                    adverts = r.adverts,
                    ran = r.ran.len(),
                    unsent = r.unsent,
                    "cycle done"
                );
                if let Some(n) = r.next_due {
                    let until = (n - chrono::Utc::now()).to_std().unwrap_or_default();
                    wait = wait.min(until + Duration::from_millis(50));
                }
            }
            Err(e) => tracing::warn!(error = %e, "cycle failed; trying again at the next poll"),
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        }
    }
    tracing::info!("agent stopped");
    Ok(())
}

/// Up to a tenth of `every`, from the clock's nanoseconds and the process id.
fn jitter(every: Duration) -> Duration {
    let seed =
        chrono::Utc::now().timestamp_subsec_nanos() as u64 ^ ((std::process::id() as u64) << 20);
    let x = blake3::hash(&seed.to_le_bytes());
    let r = u64::from_le_bytes(x.as_bytes()[..8].try_into().expect("8 bytes"));
    let max = (every.as_millis() as u64 / 10).max(1);
    Duration::from_millis(r % max)
}
