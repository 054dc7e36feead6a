//! A whole tree of sites on 127.0.0.1, of any shape: `[15, 19]` is one top site, 15 primaries
//! under it and 19 secondaries under each. Links are pinned (each site's QUIC port is fixed
//! in its `site.toml` before anything starts), so the sites may start in any order.
//!
//! Used by `bench tree` and the tree convergence test. Building and starting run on a few
//! threads: a tree of 300 sites is 1,200 short commands and 300 daemons.

use super::{io_err, Bins, HarnessError, LocalSite, Result};
use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A tree of sites: `sites[0]` is the top; `parent[i]` is the index of site `i`'s parent.
pub struct SiteTree {
    pub sites: Vec<LocalSite>,
    pub parent: Vec<Option<usize>>,
    /// The depth of each site (0: the top).
    pub depth: Vec<usize>,
}

/// The code of the `i`th site (from 0) at depth `depth`: CEN at the top, then P01..P0Z..,
/// S01.., T01.. (two base-36 digits: up to 1295 sites per depth).
pub fn code_at(depth: usize, i: usize) -> String {
    if depth == 0 {
        return "CEN".into();
    }
    const DIGITS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let letter = b"PSTUVWXYZ"[(depth - 1).min(8)] as char;
    let n = i + 1;
    format!(
        "{letter}{}{}",
        DIGITS[(n / 36) % 36] as char,
        DIGITS[n % 36] as char
    )
}

/// Parses a shape: children per site at each depth, comma-separated (`15,19`).
pub fn parse_shape(s: &str) -> std::result::Result<Vec<usize>, String> {
    let shape: Vec<usize> = s
        .split(',')
        .map(|p| p.trim().parse::<usize>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| format!("shape {s:?}: give children per site at each depth, e.g. 15,19"))?;
    if shape.is_empty() || shape.contains(&0) {
        return Err(format!(
            "shape {s:?}: every depth needs at least one child per site"
        ));
    }
    let mut width = 1usize;
    for n in &shape {
        width = width.saturating_mul(*n);
        if width > 1295 {
            return Err(format!(
                "shape {s:?}: more than 1295 sites at one depth (site codes have two digits)"
            ));
        }
    }
    Ok(shape)
}

/// The number of sites of a shape, the top included.
pub fn size_of(shape: &[usize]) -> usize {
    let mut width = 1;
    let mut total = 1;
    for n in shape {
        width *= n;
        total += width;
    }
    total
}

/// A UDP port on 127.0.0.1 nobody holds now, and not in `taken`.
fn free_udp_port(taken: &mut HashSet<u16>) -> Result<u16> {
    for _ in 0..100 {
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .map(|a| a.port())
            .map_err(io_err(Path::new("127.0.0.1:0")))?;
        if taken.insert(port) {
            return Ok(port);
        }
    }
    Err(HarnessError::Unexpected {
        what: "a free UDP port".into(),
        why: "none found in 100 tries".into(),
    })
}

/// Runs `f` on every index of `0..n` on `threads` threads; the first error stops the rest.
fn on_threads<F>(n: usize, threads: usize, f: F) -> Result<()>
where
    F: Fn(usize) -> Result<()> + Sync,
{
    let next = AtomicUsize::new(0);
    let failed: Mutex<Option<HarnessError>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n || failed.lock().map(|f| f.is_some()).unwrap_or(true) {
                    return;
                }
                if let Err(e) = f(i) {
                    if let Ok(mut slot) = failed.lock() {
                        slot.get_or_insert(e);
                    }
                    return;
                }
            });
        }
    });
    match failed.into_inner() {
        Ok(Some(e)) => Err(e),
        _ => Ok(()),
    }
}

impl SiteTree {
    /// Initializes every site of `shape` under `root` and links each to its parent (`child
    /// add` at the parent, `parent set` at the child, with the top's key as the trust root).
    /// Nothing runs yet.
    pub fn build(bins: &Bins, root: &Path, shape: &[usize], threads: usize) -> Result<Self> {
        let mut parent = vec![None];
        let mut depth = vec![0];
        let mut codes = vec![code_at(0, 0)];
        let mut level: Vec<usize> = vec![0];
        for (d, n) in shape.iter().enumerate() {
            let mut next = Vec::new();
            for &p in &level {
                for _ in 0..*n {
                    let i = codes.len();
                    codes.push(code_at(d + 1, next.len()));
                    parent.push(Some(p));
                    depth.push(d + 1);
                    next.push(i);
                }
            }
            level = next;
        }
        let mut taken = HashSet::new();
        let mut listens = Vec::new();
        for _ in &codes {
            listens.push(format!("127.0.0.1:{}", free_udp_port(&mut taken)?));
        }
        let slots: Vec<Mutex<Option<LocalSite>>> = codes.iter().map(|_| Mutex::new(None)).collect();
        on_threads(codes.len(), threads, |i| {
            let s = LocalSite::init(bins, root, &codes[i], &listens[i])?;
            *slots[i].lock().expect("slot") = Some(s);
            Ok(())
        })?;
        let sites: Vec<LocalSite> = slots
            .into_iter()
            .map(|m| m.into_inner().expect("slot").expect("initialized"))
            .collect();
        // Each site's certificate fingerprint and key, read once.
        let keys: Vec<Mutex<Option<(String, String)>>> =
            sites.iter().map(|_| Mutex::new(None)).collect();
        on_threads(sites.len(), threads, |i| {
            *keys[i].lock().expect("slot") = Some(sites[i].keys()?);
            Ok(())
        })?;
        let keys: Vec<(String, String)> = keys
            .into_iter()
            .map(|m| m.into_inner().expect("slot").expect("read"))
            .collect();
        let root_key = keys[0].1.clone();
        // `child add` edits the parent's site.toml: one thread per parent at a time.
        let parents: Vec<usize> = (0..sites.len())
            .filter(|p| parent.contains(&Some(*p)))
            .collect();
        on_threads(parents.len(), threads, |j| {
            let p = parents[j];
            for c in (0..sites.len()).filter(|c| parent[*c] == Some(p)) {
                let (fp, key) = &keys[c];
                sites[p].cli_ok(&[
                    "child",
                    "add",
                    "--code",
                    &codes[c],
                    "--fingerprint",
                    fp,
                    "--pubkey",
                    key,
                ])?;
            }
            Ok(())
        })?;
        on_threads(sites.len() - 1, threads, |j| {
            let c = j + 1;
            let p = parent[c].expect("below the top");
            let (fp, key) = &keys[p];
            sites[c].cli_ok(&[
                "parent",
                "set",
                "--code",
                &codes[p],
                "--addr",
                &listens[p],
                "--fingerprint",
                fp,
                "--pubkey",
                key,
                "--root-key",
                &root_key,
            ])?;
            Ok(())
        })?;
        Ok(SiteTree {
            sites,
            parent,
            depth,
        })
    }

    /// Starts every daemon, `threads` at a time (each waits until its API answers).
    pub fn start_all(&mut self, threads: usize) -> Result<()> {
        let slots: Vec<Mutex<&mut LocalSite>> = self.sites.iter_mut().map(Mutex::new).collect();
        on_threads(slots.len(), threads, |i| {
            slots[i].lock().expect("slot").start()
        })
    }

    /// The sites with no children.
    pub fn leaves(&self) -> Vec<usize> {
        (0..self.sites.len())
            .filter(|i| !self.parent.contains(&Some(*i)))
            .collect()
    }

    /// Whether every link of site `i` is active (as its `status sites` says).
    pub fn links_active(&self, i: usize) -> bool {
        let Ok(v) = self.sites[i].api_json("/v1/status/sites") else {
            return false;
        };
        v["links"]
            .as_array()
            .is_some_and(|l| l.iter().all(|r| r["state"] == "active"))
    }

    /// Waits until every link of every site is active; returns how long that took.
    pub fn wait_all_active(&self, timeout: Duration) -> Result<Duration> {
        let t = Instant::now();
        let mut waiting: Vec<usize> = (0..self.sites.len()).collect();
        while !waiting.is_empty() {
            waiting.retain(|i| !self.links_active(*i));
            if waiting.is_empty() {
                break;
            }
            if t.elapsed() > timeout {
                let names: Vec<&str> = waiting
                    .iter()
                    .take(10)
                    .map(|i| self.sites[*i].code.as_str())
                    .collect();
                return Err(HarnessError::Timeout {
                    what: format!(
                        "every link active ({} sites still waiting: {})",
                        waiting.len(),
                        names.join(", ")
                    ),
                    secs: timeout.as_secs(),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(t.elapsed())
    }

    /// Stops every daemon (SIGTERM), `threads` at a time.
    pub fn stop_all(&mut self, threads: usize) -> Result<()> {
        let slots: Vec<Mutex<&mut LocalSite>> = self.sites.iter_mut().map(Mutex::new).collect();
        on_threads(slots.len(), threads, |i| {
            slots[i].lock().expect("slot").stop()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_and_codes() {
        assert_eq!(size_of(&parse_shape("15,19").unwrap()), 301);
        assert_eq!(size_of(&parse_shape("250").unwrap()), 251);
        assert!(parse_shape("15,0").is_err());
        assert!(parse_shape("40,40").is_err());
        assert!(parse_shape("x").is_err());
        assert_eq!(code_at(0, 0), "CEN");
        assert_eq!(code_at(1, 0), "P01");
        assert_eq!(code_at(1, 14), "P0F");
        assert_eq!(code_at(2, 284), "S7X");
        let all: HashSet<String> = (0..1295).map(|i| code_at(2, i)).collect();
        assert_eq!(all.len(), 1295);
        assert!(all.iter().all(|c| schema::SiteCode::new(c).is_ok()));
    }
}
