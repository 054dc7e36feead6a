//! Benchmarks that put site-server beside the tool an operator would otherwise reach for, in
//! the same run, and print ratios (absolute times drift on shared machines; ratios hold).
//!
//! `bench publish` builds a mixed tree (half incompressible, half shared libraries and source
//! code), then times, each several times: `site-server package publish` of it into a fresh
//! content store (MB/s and peak RSS), a re-publish of the unchanged tree, `tar -cf - DIR |
//! zstd -3 -T0 > /dev/null`, and single-thread BLAKE3 over the same bytes.

mod agents;
mod catalog;
mod courier;
mod dp;
mod replicate;
mod sender;
mod soak;
mod status;
mod tree;
mod trust;
mod wan;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(about = "siterep benchmarks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build a source tree for `publish`: half incompressible, half shared libraries and source.
    SourceTree {
        #[arg(long)]
        out: PathBuf,
        /// Total size in MiB.
        #[arg(long, default_value_t = 1024)]
        mib: u64,
    },
    /// A tree of real sites (default 301: 1 top, 15 primaries, 19 secondaries each): links
    /// active, idle RSS, open files and CPU, an advertisement everywhere, a package to every
    /// leaf beside one leaf.
    Tree {
        #[arg(long, default_value = "/tmp/siterep-bench-sites")]
        work: PathBuf,
        /// Children per site at each depth.
        #[arg(long, default_value = "15,19")]
        shape: String,
        /// Size of the package sent to the leaves, in MiB.
        #[arg(long, default_value_t = 16)]
        mib: u64,
        /// Seconds the idle CPU is measured over.
        #[arg(long, default_value_t = 20)]
        idle: u64,
        /// Threads that build and start the tree.
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
    /// Status at scale: a top site whose report log holds `messages` status messages from
    /// `sites` sites, replayed in through a real child link; the status queries' times, the
    /// log's size on disk, a rebuild, and retention over a simulated week.
    Status {
        #[arg(long, default_value = "/tmp/siterep-bench-status")]
        work: PathBuf,
        #[arg(long, default_value_t = 1_000_000)]
        messages: u64,
        #[arg(long, default_value_t = 300)]
        sites: usize,
        /// Keep the generated sites for another run of the queries.
        #[arg(long)]
        keep: bool,
    },
    /// Content replication CEN -> P01 (and -> S01) vs raw quinn vs rsync; small-event latency.
    Replicate {
        /// Where the trees and sites live (trees are kept for the next run).
        #[arg(long, default_value = "/tmp/siterep-bench-repl")]
        work: PathBuf,
        #[arg(long, default_value_t = 1024)]
        mib: u64,
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Small events timed per run.
        #[arg(long, default_value_t = 10)]
        events: usize,
    },
    /// The sender: rate-limit accuracy, preemption latency, unthrottled throughput vs raw quinn.
    Sender {
        #[arg(long, default_value = "/tmp/siterep-bench-sender")]
        work: PathBuf,
        /// Size of the package the rates and the throughput are measured on.
        #[arg(long, default_value_t = 1024)]
        mib: u64,
        /// High packages sent behind the low transfer.
        #[arg(long, default_value_t = 40)]
        samples: usize,
        /// Throughput runs (scheduler vs raw link).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// A site-server built from before the sender existed: the same unthrottled
        /// transfer without the scheduler, alternated with ours.
        #[arg(long)]
        baseline: Option<PathBuf>,
    },
    /// The client agent: download beside curl, RSS idle and downloading, adv create to
    /// started, many agents polling one DP.
    Agents {
        #[arg(long, default_value = "/tmp/siterep-bench-agents")]
        work: PathBuf,
        #[arg(long, default_value_t = 1024)]
        mib: u64,
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Simulated agents polling one DP.
        #[arg(long, default_value_t = 1000)]
        agents: usize,
        /// Advertisements timed from create to started.
        #[arg(long, default_value_t = 10)]
        samples: usize,
        /// Leave the tree running and print a farm-bench command line for the download.
        #[arg(long)]
        keep: bool,
    },
    /// Courier: export and import of one package beside cp of the same bytes.
    Courier {
        #[arg(long, default_value = "/tmp/siterep-bench-courier")]
        work: PathBuf,
        #[arg(long, default_value_t = 1024)]
        mib: u64,
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Catalog sync of a real Debian Packages index at the top of three tiers.
    Catalog {
        #[arg(long, default_value = "/tmp/siterep-bench-catalog")]
        work: PathBuf,
        #[arg(
            long,
            default_value = "/var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages.lz4"
        )]
        index: PathBuf,
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// A distribution point: pull into an empty DP, and curl from it beside nginx.
    Dp {
        #[arg(long, default_value = "/tmp/siterep-bench-dp")]
        work: PathBuf,
        #[arg(long, default_value_t = 1024)]
        mib: u64,
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Downloads from each server per run.
        #[arg(long, default_value_t = 5)]
        downloads: usize,
    },
    /// Chaos soak: a 3-tier tree with a DP per site under a stream of work and `kill -9`
    /// of random processes; then every invariant is checked and the counts printed.
    Soak {
        #[arg(long, default_value = "/tmp/siterep-soak")]
        work: PathBuf,
        /// Processes killed (SIGKILL, then started again), one between operations.
        #[arg(long, default_value_t = 100)]
        kills: usize,
        #[arg(long, default_value_t = 0x5eed)]
        seed: u64,
        /// How long the tree may take to settle after the last kill, in seconds.
        #[arg(long, default_value_t = 600)]
        settle: u64,
    },
    /// Goodput through the fault proxy at a round trip and loss rates: raw quinn with CUBIC
    /// and with BBR, and replication CEN -> P01.
    Wan {
        #[arg(long, default_value = "/tmp/siterep-bench-wan")]
        work: PathBuf,
        #[arg(long, default_value_t = 256)]
        mib: u64,
        #[arg(long, default_value_t = 50)]
        rtt_ms: u64,
        /// Loss rates in percent, the first is the baseline.
        #[arg(long, value_delimiter = ',', default_value = "0,1,5")]
        loss: Vec<f64>,
        /// The most a raw quinn transfer may take, in seconds (goodput is then what arrived).
        #[arg(long, default_value_t = 120)]
        limit: u64,
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Origin signatures: events applied per second at a child with and without the trust
    /// check, small-event latency over three tiers, the Debian catalog delta signed and
    /// verified.
    Trust {
        #[arg(long, default_value = "/tmp/siterep-bench-trust")]
        work: PathBuf,
        /// Events applied per run.
        #[arg(long, default_value_t = 20_000)]
        events: usize,
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Small events timed for the latency.
        #[arg(long, default_value_t = 30)]
        latency: usize,
        #[arg(
            long,
            default_value = "/var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages.lz4"
        )]
        index: PathBuf,
    },
    /// Publish vs tar|zstd vs raw BLAKE3 on one tree.
    Publish {
        /// The tree (built with `bench source-tree` if it does not exist).
        #[arg(long)]
        tree: PathBuf,
        #[arg(long, default_value_t = 1024)]
        mib: u64,
        /// Timed runs of each command (the median is reported).
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::SourceTree { out, mib } => build_tree(&out, mib << 20),
        Cmd::Tree {
            work,
            shape,
            mib,
            idle,
            threads,
        } => tree::run(&work, &shape, mib, idle, threads),
        Cmd::Status {
            work,
            messages,
            sites,
            keep,
        } => status::run(&work, messages, sites, keep),
        Cmd::Publish { tree, mib, runs } => publish(&tree, mib << 20, runs),
        Cmd::Replicate {
            work,
            mib,
            runs,
            events,
        } => replicate::run(&work, mib, runs, events),
        Cmd::Courier { work, mib, runs } => courier::run(&work, mib, runs),
        Cmd::Agents {
            work,
            mib,
            runs,
            agents,
            samples,
            keep,
        } => agents::run(&work, mib, runs, agents, samples, keep),
        Cmd::Soak {
            work,
            kills,
            seed,
            settle,
        } => soak::run(&work, kills, seed, settle),
        Cmd::Wan {
            work,
            mib,
            rtt_ms,
            loss,
            limit,
            runs,
        } => wan::run(&work, mib, rtt_ms, &loss, limit, runs),
        Cmd::Catalog { work, index, runs } => catalog::run(&work, &index, runs),
        Cmd::Trust {
            work,
            events,
            runs,
            latency,
            index,
        } => trust::run(&work, events, runs, latency, &index),
        Cmd::Dp {
            work,
            mib,
            runs,
            downloads,
        } => dp::run(&work, mib, runs, downloads),
        Cmd::Sender {
            work,
            mib,
            samples,
            runs,
            baseline,
        } => sender::run(&work, mib, samples, runs, baseline.as_deref()),
    }
}

fn xorshift_fill(buf: &mut [u8], state: &mut u64) {
    for c in buf.chunks_mut(8) {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        let b = state.to_le_bytes();
        c.copy_from_slice(&b[..c.len()]);
    }
}

fn copy_candidates(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    let mut v: Vec<_> = rd.flatten().map(|e| e.path()).collect();
    v.sort();
    for p in v {
        let Ok(m) = fs::symlink_metadata(&p) else {
            continue;
        };
        if m.is_dir() {
            copy_candidates(&p, out);
        } else if m.is_file() && m.len() > 0 {
            out.push(p);
        }
    }
}

/// Half incompressible files of mixed sizes, half real compressible files copied from the
/// machine (shared libraries, then source code), topped up with generated text if needed.
fn build_tree(out: &Path, total: u64) -> Result<()> {
    let half = total / 2;
    fs::create_dir_all(out.join("random"))?;
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let sizes: [u64; 6] = [64 << 20, 16 << 20, 4 << 20, 1 << 20, 256 << 10, 16 << 10];
    let mut written = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    let mut i = 0usize;
    while written < half {
        // Each size class gets an equal share of bytes.
        let size = sizes[i % sizes.len()].min(half - written);
        let path = out.join(format!("random/{:02}/f{i:05}.bin", i % 37));
        fs::create_dir_all(path.parent().unwrap())?;
        let mut f = fs::File::create(&path)?;
        let mut left = size;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            xorshift_fill(&mut buf[..n], &mut state);
            f.write_all(&buf[..n])?;
            left -= n as u64;
        }
        written += size;
        i += 1;
    }
    let mut copied = 0u64;
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let sources = [
        (PathBuf::from("/usr/lib/x86_64-linux-gnu"), half / 2),
        (PathBuf::from(home).join(".cargo/registry/src"), half),
        (PathBuf::from("/usr/include"), half),
        (PathBuf::from("/usr/share/doc"), half),
    ];
    for (dir, cap) in sources {
        let mut files = Vec::new();
        copy_candidates(&dir, &mut files);
        let mut from_this = 0u64;
        for src in files {
            let len = fs::metadata(&src).map(|m| m.len()).unwrap_or(0);
            if copied + len > half || from_this + len > cap {
                continue;
            }
            let rel = src.strip_prefix("/").unwrap_or(&src);
            let dst = out.join("text").join(rel);
            fs::create_dir_all(dst.parent().unwrap())?;
            if fs::copy(&src, &dst).is_ok() {
                copied += len;
                from_this += len;
            }
        }
    }
    let mut n = 0;
    while copied < half {
        let path = out.join(format!("text/generated/g{n:04}.txt"));
        fs::create_dir_all(path.parent().unwrap())?;
        let mut s = String::new();
        let mut k = n as u64 * 7919 + 1;
        while s.len() < (1 << 20) {
            k = k
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            s.push_str(&format!(
                "fn item_{}(x: u32) -> u32 {{ x.wrapping_mul({}) }}\n",
                k % 10_000,
                k % 97
            ));
        }
        let len = (s.len() as u64).min(half - copied);
        fs::write(&path, &s.as_bytes()[..len as usize])?;
        copied += len;
        n += 1;
    }
    println!(
        "tree {}: {} MiB incompressible, {} MiB copied/generated text-like",
        out.display(),
        written >> 20,
        copied >> 20
    );
    Ok(())
}

/// Wall time and peak RSS (KiB) of a child, from wait4.
fn wait_rusage(child: Child) -> Result<(i32, u64)> {
    let mut status = 0i32;
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as i32;
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    if r != pid {
        bail!("wait4 failed");
    }
    std::mem::forget(child);
    Ok((status, ru.ru_maxrss as u64))
}

pub(crate) fn run_timed(cmd: &mut Command) -> Result<(f64, u64)> {
    let t = Instant::now();
    let child = cmd.stdout(Stdio::null()).spawn().context("spawn")?;
    let (status, rss) = wait_rusage(child)?;
    let secs = t.elapsed().as_secs_f64();
    if status != 0 {
        bail!("{cmd:?} exited with status {status}");
    }
    Ok((secs, rss))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn tree_bytes(dir: &Path) -> Result<(u64, Vec<PathBuf>)> {
    let mut files = Vec::new();
    copy_candidates(dir, &mut files);
    let mut total = 0;
    for f in &files {
        total += fs::metadata(f)?.len();
    }
    Ok((total, files))
}

fn blake3_single_thread(files: &[PathBuf], buf: &mut [u8]) -> Result<f64> {
    let t = Instant::now();
    for f in files {
        let mut h = blake3::Hasher::new();
        let mut file = fs::File::open(f)?;
        loop {
            let n = file.read(buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        std::hint::black_box(h.finalize());
    }
    Ok(t.elapsed().as_secs_f64())
}

pub(crate) fn site_server() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let p = exe.parent().unwrap().join("site-server");
    if !p.is_file() {
        bail!(
            "{} is missing: cargo build --release -p site-server",
            p.display()
        );
    }
    Ok(p)
}

fn publish(tree: &Path, size: u64, runs: usize) -> Result<()> {
    if !tree.exists() {
        build_tree(tree, size)?;
    }
    let (bytes, files) = tree_bytes(tree)?;
    let mb = bytes as f64 / 1e6;
    println!("tree: {} files, {:.0} MB", files.len(), mb);
    let ss = site_server()?;
    // Every run publishes into a new site; nothing is deleted until the end, so no run pays
    // for the file system's cleanup of the one before.
    let tmp = tempfile::tempdir()?;
    // Warm the page cache so every contender reads from memory.
    let mut buf = vec![0u8; 1 << 20];
    blake3_single_thread(&files, &mut buf)?;

    let (mut publish_t, mut publish_rss, mut republish_t, mut tar_t, mut b3_t) =
        (vec![], vec![], vec![], vec![], vec![]);
    for run in 0..runs {
        let mut site = site_server::harness::LocalSite::init(
            &replicate::bins(&ss),
            &tmp.path().join(format!("run{run}")),
            "BEN",
            "127.0.0.1:0",
        )?;
        site.start()?;
        let data = site.data().to_path_buf();
        let (t, rss) = run_timed(
            Command::new(&ss)
                .args(["package", "publish", "--data"])
                .arg(&data)
                .arg("--source")
                .arg(tree)
                .args(["--name", &format!("bench {run}")]),
        )?;
        publish_t.push(t);
        publish_rss.push(rss as f64);
        // The stat cache trusts files whose timestamps are older than the cache by 1 s.
        std::thread::sleep(Duration::from_millis(1100));
        let (t, _) = run_timed(
            Command::new(&ss)
                .args(["package", "publish", "--data"])
                .arg(&data)
                .arg("--source")
                .arg(tree)
                .args(["--package", "BEN00001"]),
        )?;
        republish_t.push(t);
        site.stop()?;
        let (t, _) = run_timed(Command::new("sh").arg("-c").arg(format!(
            "tar -cf - -C '{}' . | zstd -3 -T0 -q > /dev/null",
            tree.display()
        )))?;
        tar_t.push(t);
        b3_t.push(blake3_single_thread(&files, &mut buf)?);
        println!(
            "run {}: publish {:.2}s ({} MiB RSS), re-publish {:.2}s, tar|zstd {:.2}s, blake3 {:.2}s",
            run + 1,
            publish_t[run],
            publish_rss[run] as u64 / 1024,
            republish_t[run],
            tar_t[run],
            b3_t[run]
        );
    }
    // Ratios pair by pair (same moment, same machine state), then their median.
    let ratio = median(tar_t.iter().zip(&publish_t).map(|(t, p)| t / p).collect());
    let (p, r, tz, b3) = (
        median(publish_t),
        median(republish_t),
        median(tar_t),
        median(b3_t),
    );
    let rss = publish_rss.iter().cloned().fold(0.0, f64::max) / 1024.0;
    println!();
    println!("median of {runs} runs over {mb:.0} MB");
    println!(
        "  site-server package publish   {:>7.0} MB/s   peak RSS {rss:.0} MiB",
        mb / p
    );
    println!(
        "  re-publish, unchanged tree    {:>7.0} MB/s   {:.1}x faster than the first",
        mb / r,
        p / r
    );
    println!("  tar -cf - | zstd -3 -T0       {:>7.0} MB/s", mb / tz);
    println!("  BLAKE3, one thread            {:>7.0} MB/s", mb / b3);
    println!(
        "  publish speed / tar|zstd      {ratio:>7.2}   (median of per-run ratios; target >= 0.80)"
    );
    Ok(())
}
