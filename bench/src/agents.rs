//! `bench agents`: the client agent in one run.
//!
//! A fresh CEN -> P01 -> S01 with a distribution point at S01 that holds one package of
//! `mib` MiB (one incompressible file), an advertisement of it to every machine of S01, then:
//! - download: `site-agent run-once` of a fresh agent (register, policy, download with every
//!   chunk verified, run `/bin/true`, report), alternated with `curl` of the same file from
//!   the same DP to disk; whole-process wall times; the agent's peak RSS (wait4);
//! - idle: `site-agent run` polling every second, its RSS after a few cycles;
//! - latency: `adv create` at CEN to the agent's "started" (10005, the agent's clock, the
//!   same machine) with the daemon polling every second;
//! - many agents: `agents` simulated agents (one process, one task each, each its own key,
//!   approved automatically) polling the DP once a second with If-None-Match; the latency
//!   of every policy answer (p50, p99) and the DP's CPU over the window.

use crate::dp::{dist_point, vm_rss};
use crate::replicate::three_tiers;
use crate::{median, run_timed, site_server};
use anyhow::{bail, Context, Result};
use site_server::harness::{self, Bins, LocalDp};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn site_agent() -> Result<PathBuf> {
    let p = std::env::current_exe()?
        .parent()
        .unwrap()
        .join("site-agent");
    if !p.is_file() {
        bail!("{} is missing: cargo build --release -p agent", p.display());
    }
    Ok(p)
}

fn json(s: &str) -> Result<serde_json::Value> {
    serde_json::from_str(s).context("JSON")
}

fn pct(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// CPU seconds (user + system) process `pid` has used.
fn cpu_secs(pid: u32) -> Result<f64> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = &s[s.rfind(')').context("stat")? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
    Ok(ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64)
}

pub fn run(
    work: &Path,
    mib: u64,
    runs: usize,
    agents: usize,
    samples: usize,
    keep: bool,
) -> Result<()> {
    let ss = site_server()?;
    let dpb = dist_point()?;
    let sa = site_agent()?;
    let src = work.join("package");
    crate::dp::big_file(&src, mib)?;
    let total = fs::metadata(src.join("big.bin"))?.len();
    let root = work.join("sites");
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(&root)?;
    eprintln!("starting CEN -> P01 -> S01 with a DP at S01");
    let (cen, p01, mut s01) = three_tiers(&ss, &root)?;
    s01.pin_listen_port()?;
    let dp_bins = Bins {
        site_server: ss.clone(),
        dist_point: (dpb.clone(), Vec::new()),
    };
    let mut dp = LocalDp::init(&dp_bins, &root, &s01, "DP1")?;
    harness::attach_dps(&mut s01, &[(&dp, &[])])?;
    dp.start()?;
    let dp_pid = dp.pid().context("the DP runs")?;
    let src_s = src.display().to_string();
    cen.cli_ok(&["package", "publish", "--source", &src_s, "--name", "Big"])?;
    harness::cli_when_known(
        &cen,
        &["package", "distribute", "CEN00001", "--dp", "S01/DP1"],
        60,
    )?;
    eprintln!("waiting for the DP to hold the package");
    if !harness::poll(Duration::from_secs(600), || {
        dp.get("/packages/CEN00001/1/manifest", &[])
            .is_ok_and(|(c, _)| c == 200)
    }) {
        bail!("the DP did not install the package within 600 s");
    }
    s01.cli_ok(&["machine", "approve", "--auto"])?;
    cen.cli_ok(&["collection", "create", "s01", "--rule", "site=S01"])?;
    let root_key = json(&cen.cli_ok(&["identity", "--json"])?)?["public_key"]
        .as_str()
        .context("key")?
        .to_string();
    let dp_url = format!("http://{}", dp.addr);
    let adata = work.join("agent");
    let _ = fs::remove_dir_all(&adata);
    let a = adata.display().to_string();
    let init = Command::new(&sa)
        .args([
            "init",
            "--data",
            &a,
            "--dp",
            &dp_url,
            "--root-key",
            &root_key,
        ])
        .args(["--name", "bench-1", "--poll", "1s"])
        .output()?;
    if !init.status.success() {
        bail!("site-agent init: {}", String::from_utf8_lossy(&init.stderr));
    }
    // Approved on its first registration (automatic at S01), before anything is timed.
    harness::poll(Duration::from_secs(30), || {
        Command::new(&sa)
            .args(["run-once", "--data", &a])
            .stderr(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    cen.cli_ok(&[
        "adv",
        "create",
        "--package",
        "CEN00001",
        "--program",
        "Get",
        "--command",
        "/bin/true",
        "--collection",
        "s01",
        "--utc",
    ])?;
    std::thread::sleep(Duration::from_secs(2));

    // Download: a fresh cache each time, alternated with curl.
    let curl_dir = work.join("curl");
    let file_url = format!("{dp_url}/packages/CEN00001/1/files/big.bin");
    let (mut ag, mut cu, mut rss, mut ratios) = (vec![], vec![], vec![], vec![]);
    println!("run  agent s  curl s  curl/agent  agent peak RSS MiB");
    for run in 0..runs {
        for f in ["cache", "state.json", "policy.bin"] {
            let p = adata.join(f);
            let _ = fs::remove_dir_all(&p);
            let _ = fs::remove_file(&p);
        }
        let (ta, peak) = run_timed(
            Command::new(&sa)
                .args(["run-once", "--data", &a])
                .stderr(Stdio::null()),
        )?;
        let got = fs::metadata(adata.join("cache/CEN00001-v1/big.bin"))
            .map(|m| m.len())
            .unwrap_or(0);
        if got != total {
            bail!("the agent's cache holds {got} bytes of {total}");
        }
        let _ = fs::remove_dir_all(&curl_dir);
        fs::create_dir_all(&curl_dir)?;
        let (tc, _) = run_timed(
            Command::new("curl")
                .args(["-s", "-f", "-o"])
                .arg(curl_dir.join("big.bin"))
                .arg(&file_url),
        )?;
        println!(
            "{run:>3}  {ta:>7.2}  {tc:>6.2}  {:>10.2}  {:>18}",
            tc / ta,
            peak / 1024
        );
        ag.push(ta);
        cu.push(tc);
        rss.push(peak);
        ratios.push(tc / ta);
    }

    // Idle: the daemon after a few one-second cycles.
    let mut daemon = Command::new(&sa)
        .args(["run", "--data", &a])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    std::thread::sleep(Duration::from_secs(5));
    let idle = vm_rss(daemon.id())?;

    // Latency: adv create at CEN to the agent's "started".
    let mut lat = Vec::new();
    for i in 0..samples {
        let t0 = chrono::Utc::now();
        let out = cen.cli_ok(&[
            "adv",
            "create",
            "--package",
            "CEN00001",
            "--program",
            &format!("L{i}"),
            "--command",
            "/bin/true",
            "--collection",
            "s01",
            "--utc",
            "--json",
        ])?;
        let id = json(&out)?["id"].as_str().context("id")?.to_string();
        let deadline = Instant::now() + Duration::from_secs(30);
        let started = loop {
            let m = s01.api_json("/v1/status/messages?id=10005")?;
            let t = m.as_array().into_iter().flatten().find_map(|m| {
                (m["insertion"][0] == id.as_str())
                    .then(|| {
                        m["time"]
                            .as_str()?
                            .parse::<chrono::DateTime<chrono::Utc>>()
                            .ok()
                    })
                    .flatten()
            });
            if let Some(t) = t {
                break t;
            }
            if Instant::now() > deadline {
                bail!("advertisement {id} did not start within 30 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let s = (started - t0).num_microseconds().unwrap_or(0) as f64 / 1e6;
        println!("advertisement {id}: started {s:.2} s after adv create");
        lat.push(s);
    }
    let _ = daemon.kill();
    let _ = daemon.wait();

    // Many agents polling one DP.
    eprintln!("{agents} simulated agents register and poll");
    let (answers, cpu, window) = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?
        .block_on(many(&dp.addr, agents, dp_pid))?;

    println!();
    println!(
        "{} MiB package, {runs} runs, medians (whole processes):",
        total >> 20
    );
    println!(
        "  site-agent run-once (download + verify + run)  {:>6.2} s  {:>6.0} MB/s",
        median(ag.clone()),
        total as f64 / median(ag.clone()) / 1e6
    );
    println!(
        "  curl of the same file from the same DP          {:>6.2} s  {:>6.0} MB/s",
        median(cu.clone()),
        total as f64 / median(cu) / 1e6
    );
    println!("  agent / curl throughput                         {:>6.2}  (median of per-run ratios; target >= 0.80)", median(ratios));
    println!(
        "  agent peak RSS during the download              {:>6} MiB",
        rss.iter().max().copied().unwrap_or(0) / 1024
    );
    println!(
        "  agent RSS idle (run, polling every 1 s)         {:>6} MiB  (target <= 30)",
        idle / 1024
    );
    println!("  adv create at CEN -> started at S01 (poll 1 s)  p50 {:.2} s, max {:.2} s over {samples}  (target p50 < 2 s)", median(lat.clone()), lat.iter().cloned().fold(0.0, f64::max));
    println!(
        "  {agents} agents polling one DP every 1 s: {} answers in {window:.0} s, p50 {:.1} ms, p99 {:.1} ms (target p99 < 100 ms); DP CPU {:.0}% of a core",
        answers.len(),
        pct(&answers, 0.5) * 1e3,
        pct(&answers, 0.99) * 1e3,
        cpu / window * 100.0
    );
    if keep {
        // For whole-process timings from outside (farm-bench): the tree keeps running.
        let cache = adata.join("cache");
        println!("\nkept running; the download, agent against curl:");
        println!(
            "farm-bench -n 5 --timeout 600 --vs \"sh -c 'rm -f {w}/curl/big.bin && exec curl -s -f -o {w}/curl/big.bin {file_url}'\" -- sh -c 'rm -rf {c} {a}/state.json {a}/policy.bin && exec {sa} run-once --data {a}'",
            w = work.display(),
            c = cache.display(),
            sa = sa.display(),
        );
        let mut pids = Vec::new();
        for s in [cen, p01, s01] {
            pids.extend(s.detach());
        }
        pids.extend(dp.detach());
        let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
        println!("stop it with: kill {}", pids.join(" "));
        return Ok(());
    }
    drop(dp);
    drop((cen, p01, s01));
    // The sites, the DP, the package and the agent's cache: gigabytes nothing reads again.
    for d in ["sites", "package", "agent", "curl"] {
        let _ = fs::remove_dir_all(work.join(d));
    }
    Ok(())
}

/// `n` agents: each registers (approved automatically), then polls once a second for the
/// window; answers the latencies of the polls, the DP's CPU seconds and the window.
async fn many(addr: &str, n: usize, dp_pid: u32) -> Result<(Vec<f64>, f64, f64)> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(n)
        .build()?;
    let keys: Vec<ed25519_dalek::SigningKey> = (0..n)
        .map(|i| {
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
            seed[8] = 0xa9;
            ed25519_dalek::SigningKey::from_bytes(&seed)
        })
        .collect();
    let base = format!("http://{addr}");
    let signed = |k: &ed25519_dalek::SigningKey,
                  name: &str,
                  method: reqwest::Method,
                  path: &str,
                  body: Vec<u8>| {
        let t = chrono::Utc::now().timestamp();
        let auth = schema::machine::authorization(method.as_str(), path, name, t, &body, k);
        http.request(method, format!("{base}{path}"))
            .header(reqwest::header::AUTHORIZATION, auth)
            .body(body)
    };
    // Register until every one is approved (the site approves, the DP hears of it).
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut pending: Vec<usize> = (0..n).collect();
    while !pending.is_empty() {
        let mut next = Vec::new();
        for chunk in pending.chunks(100) {
            let mut tasks = Vec::new();
            for &i in chunk {
                let name = format!("sim-{i}");
                let body = schema::encoding::encode(&schema::machine::RegisterRequest {
                    key: schema::trust::PublicKey::of(&keys[i]),
                    inventory: schema::machine::Inventory {
                        name: name.clone(),
                        os: "linux".into(),
                        arch: "x86_64".into(),
                        ..Default::default()
                    },
                })?;
                tasks.push((
                    i,
                    signed(
                        &keys[i],
                        &name,
                        reqwest::Method::POST,
                        "/agent/register",
                        body,
                    )
                    .send(),
                ));
            }
            for (i, t) in tasks {
                match t.await {
                    Ok(r) if r.status() == reqwest::StatusCode::OK => {}
                    _ => next.push(i),
                }
            }
        }
        pending = next;
        if Instant::now() > deadline {
            bail!(
                "{} simulated agents not approved within 300 s",
                pending.len()
            );
        }
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    // Everyone has the policy once (the first answer is a full one), then polls.
    let window = Duration::from_secs(20);
    let cpu0 = cpu_secs(dp_pid)?;
    let t0 = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for (i, k) in keys.into_iter().enumerate() {
        let http = http.clone();
        let base = base.clone();
        set.spawn(async move {
            let name = format!("sim-{i}");
            let mut lat = Vec::new();
            let mut etag: Option<String> = None;
            // Spread over the first second.
            tokio::time::sleep(Duration::from_micros((i as u64 * 1_000_000) / n as u64)).await;
            while t0.elapsed() < window {
                let t = chrono::Utc::now().timestamp();
                let auth =
                    schema::machine::authorization("GET", "/agent/policy", &name, t, b"", &k);
                let mut req = http
                    .get(format!("{base}/agent/policy"))
                    .header(reqwest::header::AUTHORIZATION, auth);
                if let Some(e) = &etag {
                    req = req.header(reqwest::header::IF_NONE_MATCH, e);
                }
                let s = Instant::now();
                if let Ok(r) = req.send().await {
                    if let Some(e) = r.headers().get(reqwest::header::ETAG) {
                        etag = e.to_str().ok().map(str::to_string);
                    }
                    let _ = r.bytes().await;
                    lat.push(s.elapsed().as_secs_f64());
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            lat
        });
    }
    let mut all = Vec::new();
    while let Some(r) = set.join_next().await {
        all.extend(r?);
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_secs(dp_pid)? - cpu0;
    if all.is_empty() {
        bail!("no policy answers");
    }
    Ok((all, cpu, secs))
}
