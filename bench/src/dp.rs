//! `bench dp`: a distribution point beside nginx, in the same run.
//!
//! Each run starts a fresh CEN -> P01 with one distribution point at CEN, publishes one file
//! of `mib` MiB (incompressible) at CEN (untimed), then:
//! - replication: the package targeted at P01; CEN's 40120 to P01's 40210 (the site-to-site
//!   figure, for comparison);
//! - pull: the package targeted at CEN/DP1, into its empty store; CEN's 40120 for it to the
//!   DP's 2330 (both stamped on this machine's clock);
//! - download: `curl` of the file from the DP, alternated with `curl` of the same file from
//!   nginx serving a plain directory (sendfile on), several times; MB/s from curl's own
//!   `time_total`;
//! - the DP's peak RSS (VmHWM) over all of it.

use crate::replicate::{
    bins, cli, distribute, link_child, link_parent, mbps, message_time, new_site, wait_complete,
    Site,
};
use crate::{median, site_server, xorshift_fill};
use anyhow::{bail, Context, Result};
use site_server::harness::{free_port, Bins, LocalDp};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One file of `mib` MiB of noise in `dir` (kept for the next run).
pub(crate) fn big_file(dir: &Path, mib: u64) -> Result<PathBuf> {
    let f = dir.join("big.bin");
    let marker = dir.join(format!(".complete-{mib}"));
    if marker.exists() {
        return Ok(f);
    }
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir)?;
    let mut out = std::io::BufWriter::new(fs::File::create(&f)?);
    let mut buf = vec![0u8; 16 << 20];
    let mut state = 0x2545_f491_4f6c_dd1d;
    for _ in 0..mib.div_ceil(16) {
        xorshift_fill(&mut buf, &mut state);
        std::io::Write::write_all(&mut out, &buf)?;
    }
    std::io::Write::flush(&mut out)?;
    fs::write(marker, b"")?;
    Ok(f)
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        let _ = self.0.wait();
    }
}

/// nginx serving `root` on `port`, with its own prefix under `dir`.
fn nginx(dir: &Path, root: &Path, port: u16) -> Result<Killed> {
    let bin = ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .context("nginx is not installed: run bench/dp.sh, which installs Debian's package")?;
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir.join("tmp"))?;
    let conf = dir.join("nginx.conf");
    let d = dir.display();
    fs::write(
        &conf,
        format!(
            "daemon off;\nworker_processes auto;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n\
               client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp;\n\
               uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;\n\
               server {{ listen 127.0.0.1:{port}; root {}; }}\n}}\n",
            root.display()
        ),
    )?;
    let child = Command::new(bin)
        .arg("-c")
        .arg(&conf)
        .arg("-p")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let k = Killed(child);
    wait_port(port)?;
    Ok(k)
}

fn wait_port(port: u16) -> Result<()> {
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if t.elapsed() > Duration::from_secs(20) {
            bail!("nothing listens on 127.0.0.1:{port}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// `curl` of `url` to /dev/null: (bytes, seconds) as curl measured them.
fn curl(url: &str) -> Result<(u64, f64)> {
    let out = Command::new("curl")
        .args([
            "-s",
            "-f",
            "-o",
            "/dev/null",
            "-w",
            "%{size_download} %{time_total}",
            url,
        ])
        .output()
        .context("curl is not installed")?;
    if !out.status.success() {
        bail!("curl {url} failed ({})", out.status);
    }
    let s = String::from_utf8_lossy(&out.stdout);
    let mut w = s.split_whitespace();
    let bytes = w.next().and_then(|x| x.parse().ok()).context("curl size")?;
    let secs = w.next().and_then(|x| x.parse().ok()).context("curl time")?;
    Ok((bytes, secs))
}

/// The resident set of process `pid` now, in KiB.
pub(crate) fn vm_rss(pid: u32) -> Result<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status"))?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmRSS")
}

/// The peak resident set of process `pid` so far, in KiB.
fn vm_hwm(pid: u32) -> Result<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status"))?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmHWM")
}

pub(crate) fn dist_point() -> Result<PathBuf> {
    let p = std::env::current_exe()?
        .parent()
        .unwrap()
        .join("dist-point");
    if !p.is_file() {
        bail!(
            "{} is missing: cargo build --release -p dist-point",
            p.display()
        );
    }
    Ok(p)
}

pub fn run(work: &Path, mib: u64, runs: usize, downloads: usize) -> Result<()> {
    let ss = site_server()?;
    let dpb = dist_point()?;
    let file_dir = work.join("file");
    eprintln!("building a {mib} MiB file in {}", file_dir.display());
    let file = big_file(&file_dir, mib)?;
    let total = fs::metadata(&file)?.len();
    let nport = free_port()?;
    let _nginx = nginx(&work.join("nginx"), &file_dir, nport)?;
    let (mut repl, mut pull, mut dp_dl, mut ng_dl, mut ratios, mut rss) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    println!("run  repl CEN->P01 MB/s  pull into DP MB/s  curl DP MB/s  curl nginx MB/s  DP/nginx  DP peak RSS MiB");
    for run in 0..runs {
        let root = work.join("sites");
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root)?;
        let cen_listen = format!("127.0.0.1:{}", free_port()?);
        let mut cen = Site::init(&bins(&ss), &root, "CEN", &cen_listen)?;
        let mut p01 = new_site(&ss, &root, "P01")?;
        link_child(&cen, &p01)?;
        // The DP: init, attached at CEN before CEN starts.
        let dp_bins = Bins {
            site_server: ss.clone(),
            dist_point: (dpb.clone(), Vec::new()),
        };
        let mut dp = LocalDp::init(&dp_bins, &root, &cen, "DP1")?;
        let add = dp.dp_add_args(&[]);
        cen.cli_ok(&add.iter().map(String::as_str).collect::<Vec<_>>())?;
        cen.start()?;
        link_parent(&p01, &cen)?;
        p01.start()?;
        dp.start()?;
        cli(
            &ss,
            &[
                "package",
                "publish",
                "--data",
                cen.data_str(),
                "--source",
                file_dir.to_str().unwrap(),
                "--name",
                "Big",
            ],
        )?;
        let pkg = "CEN00001";
        std::thread::sleep(Duration::from_millis(300));

        distribute(&ss, &cen, pkg, "P01")?;
        let tr = wait_complete(&cen, &p01, pkg)?;
        p01.stop()?;
        // The pull: CEN's 40120 for the DP target to the DP's 2330.
        let before = cen
            .api_json("/v1/status/messages?id=40120")?
            .as_array()
            .map_or(0, |a| a.len());
        cli(
            &ss,
            &[
                "package",
                "distribute",
                pkg,
                "--dp",
                "CEN/DP1",
                "--data",
                cen.data_str(),
            ],
        )?;
        let t = Instant::now();
        let tp = loop {
            let targets = cen.api_json("/v1/status/messages?id=40120")?;
            let start = targets.as_array().and_then(|a| {
                a.iter().skip(before).find_map(|m| {
                    m["time"]
                        .as_str()?
                        .parse::<chrono::DateTime<chrono::Utc>>()
                        .ok()
                })
            });
            if let (Some(a), Some(b)) = (start, message_time(&cen, 2330, pkg)?) {
                break (b - a).num_microseconds().unwrap_or(0) as f64 / 1e6;
            }
            if t.elapsed() > Duration::from_secs(600) {
                bail!("the DP did not install the package within 600 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let dp_url = format!("http://{}/packages/{pkg}/1/files/big.bin", dp.addr);
        let ng_url = format!("http://127.0.0.1:{nport}/big.bin");
        let (mut d, mut n) = (vec![], vec![]);
        for _ in 0..downloads {
            let (b1, s1) = curl(&dp_url)?;
            let (b2, s2) = curl(&ng_url)?;
            if b1 != total || b2 != total {
                bail!("downloads of {b1} and {b2} bytes, expected {total}");
            }
            d.push(s1);
            n.push(s2);
            ratios.push(s2 / s1);
        }
        let peak = vm_hwm(dp.pid().context("the DP runs")?)? / 1024;
        let (md, mn) = (median(d.clone()), median(n.clone()));
        println!(
            "{run:>3}  {:>18.0}  {:>17.0}  {:>12.0}  {:>15.0}  {:>8.2}  {:>15}",
            mbps(total, tr),
            mbps(total, tp),
            mbps(total, md),
            mbps(total, mn),
            mn / md,
            peak
        );
        repl.push(tr);
        pull.push(tp);
        dp_dl.extend(d);
        ng_dl.extend(n);
        rss.push(peak);
        drop(dp);
        drop((cen, p01));
        let _ = fs::remove_dir_all(&root);
    }
    println!();
    println!(
        "{} MiB file, {runs} runs, {downloads} downloads of each per run, medians:",
        total >> 20
    );
    println!(
        "  site-to-site replication CEN -> P01  {:>6.0} MB/s",
        mbps(total, median(repl.clone()))
    );
    println!(
        "  pull into an empty DP               {:>6.0} MB/s  ({:.2} of replication)",
        mbps(total, median(pull.clone())),
        median(repl) / median(pull)
    );
    println!(
        "  curl from the DP                    {:>6.0} MB/s",
        mbps(total, median(dp_dl))
    );
    println!(
        "  curl from nginx (sendfile)          {:>6.0} MB/s",
        mbps(total, median(ng_dl))
    );
    println!(
        "  DP / nginx                          {:>6.2}  (median of per-download ratios; target >= 0.50)",
        median(ratios)
    );
    println!(
        "  DP peak RSS                         {:>6} MiB  (max over runs; target <= 150)",
        rss.iter().max().copied().unwrap_or(0)
    );
    Ok(())
}
