//! `bench wan`: goodput over a lossy, distant link, through the tests crate's fault-injecting
//! UDP proxy (this kernel has no netem, and so no way to delay TCP: rsync is not run).
//!
//! For each loss rate (default 0%, 1%, 5%) at one round trip (default 50 ms):
//! - **raw quinn, CUBIC** and **raw quinn, BBR**: one QUIC stream from memory to a receiver
//!   that counts bytes, with the sites' TLS and transport settings and that controller, for
//!   `--mib` MiB or `--limit` seconds, whichever comes first (goodput = bytes received / time);
//! - **replication**: a fresh CEN and P01 (P01 dialing CEN through the proxy), a `--mib` MiB
//!   incompressible package published at CEN and distributed to P01: the time from CEN's
//!   40120 to P01's 40210, every chunk verified and durable at P01. The sites use the
//!   controller compiled in (`sender::tls::CONGESTION`).
//!
//! It prints MB/s and each one's share of its own loss-free goodput (the target: at
//! 1% loss, at least 70%).

use crate::replicate::{distribute, link_child, mbps, new_site, noise_tree, wait_complete};
use anyhow::{bail, Context, Result};
use sender::tls::{self, Congestion};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tests::proxy::{Faults, UdpProxy};

/// One QUIC stream of up to `bytes` through a proxy with `faults`; returns (bytes received,
/// seconds).
fn raw(cc: Congestion, faults: Faults, bytes: u64, limit: Duration) -> Result<(u64, f64)> {
    let tmp = tempfile::tempdir()?;
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let pa = sender::identity::create(&a, schema::SiteCode::new("AAA").expect("code"))?;
    let pb = sender::identity::create(&b, schema::SiteCode::new("BBB").expect("code"))?;
    let ia = tls::TlsIdentity::load(&a)?;
    let ib = tls::TlsIdentity::load(&b)?;
    let rt = tokio::runtime::Runtime::new()?;
    let got = Arc::new(AtomicU64::new(0));
    // The endpoints need the runtime; the proxy runs its own, so it starts outside.
    let pins_b = tls::Pins::new();
    pins_b.insert(&pa.fingerprint, "AAA");
    let mut scfg = tls::server_config(&ib, pins_b)?;
    scfg.transport_config(tls::transport_for(cc));
    let server = rt.block_on(async {
        sender::socket::endpoint("127.0.0.1:0".parse()?, Some(scfg)).map_err(anyhow::Error::from)
    })?;
    let proxy = UdpProxy::start(server.local_addr()?, faults)?;
    let res = rt.block_on(async {
        let pins_a = tls::Pins::new();
        pins_a.insert(&pb.fingerprint, "BBB");
        let mut ccfg = tls::client_config(&ia, pins_a)?;
        ccfg.transport_config(tls::transport_for(cc));
        let mut client = sender::socket::endpoint("127.0.0.1:0".parse()?, None)?;
        client.set_default_client_config(ccfg);
        let counted = got.clone();
        let recv = tokio::spawn(async move {
            let conn = server.accept().await.context("accept")?.await?;
            let mut s = conn.accept_uni().await?;
            let mut last = Instant::now();
            while let Some(c) = s.read_chunk(1 << 20, true).await? {
                counted.fetch_add(c.bytes.len() as u64, Ordering::Relaxed);
                last = Instant::now();
            }
            anyhow::Ok(last)
        });
        let t0 = Instant::now();
        let conn = client
            .connect(proxy.addr(), tls::SERVER_NAME)?
            .await
            .context("connecting through the proxy")?;
        let mut s = conn.open_uni().await?;
        let mut buf = vec![0u8; 1 << 20];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        crate::xorshift_fill(&mut buf, &mut seed);
        let mut sent = 0u64;
        let deadline = t0 + limit;
        while sent < bytes && Instant::now() < deadline {
            let k = (bytes - sent).min(buf.len() as u64) as usize;
            match tokio::time::timeout_at(deadline.into(), s.write_all(&buf[..k])).await {
                Ok(r) => r?,
                Err(_) => break,
            }
            sent += k as u64;
        }
        if sent == bytes {
            s.finish()?;
            let last = tokio::time::timeout_at(deadline.into(), recv)
                .await
                .ok()
                .map(|r| r.map_err(anyhow::Error::from).and_then(|r| r));
            if let Some(Ok(last)) = last {
                let n = got.load(Ordering::Relaxed);
                conn.close(0u32.into(), b"done");
                return Ok((n, (last - t0).as_secs_f64()));
            }
        }
        // The limit came first: what arrived within it.
        let n = got.load(Ordering::Relaxed);
        conn.close(0u32.into(), b"time is up");
        anyhow::Ok((n, limit.as_secs_f64()))
    })?;
    rt.shutdown_timeout(Duration::from_secs(1));
    drop(proxy);
    Ok(res)
}

/// CEN -> P01 through a proxy with `faults`; a `tree` package from CEN to P01: seconds.
fn replication(ss: &Path, root: &Path, tree: &Path, faults: Faults) -> Result<f64> {
    let _ = std::fs::remove_dir_all(root);
    std::fs::create_dir_all(root)?;
    let mut cen = new_site(ss, root, "CEN")?;
    let mut p01 = new_site(ss, root, "P01")?;
    link_child(&cen, &p01)?;
    cen.start()?;
    let proxy = UdpProxy::start(cen.listen_addr()?.parse()?, faults)?;
    let (fp, key) = cen.keys()?;
    let addr = proxy.addr().to_string();
    p01.cli_ok(&[
        "parent",
        "set",
        "--code",
        "CEN",
        "--addr",
        &addr,
        "--fingerprint",
        &fp,
        "--pubkey",
        &key,
        "--root-key",
        &key,
    ])?;
    p01.start()?;
    let out: serde_json::Value = serde_json::from_str(&cen.cli_ok(&[
        "package",
        "publish",
        "--source",
        &tree.to_string_lossy(),
        "--name",
        "WAN",
        "--json",
    ])?)?;
    let pkg = out["package"].as_str().context("package id")?.to_string();
    distribute(ss, &cen, &pkg, "P01")?;
    let secs = wait_complete(&cen, &p01, &pkg)?;
    let _ = p01.stop();
    let _ = cen.stop();
    Ok(secs)
}

pub fn run(
    work: &Path,
    mib: u64,
    rtt_ms: u64,
    losses: &[f64],
    limit: u64,
    runs: usize,
) -> Result<()> {
    let ss = crate::site_server()?;
    std::fs::create_dir_all(work)?;
    let tree = work.join("tree");
    if !tree.is_dir() {
        noise_tree(&tree, mib, 0x3a11)?;
    }
    let bytes = mib << 20;
    let limit = Duration::from_secs(limit);
    let at = |loss: f64| Faults {
        loss: loss / 100.0,
        delay: Duration::from_millis(rtt_ms / 2),
        ..Faults::default()
    };
    println!(
        "WAN: {mib} MiB at {rtt_ms} ms RTT through the fault proxy; sites use {:?}",
        tls::CONGESTION
    );
    // Per loss rate, per run: [CUBIC, BBR, replication] in MB/s.
    let mut runs_of: Vec<(f64, Vec<[f64; 3]>)> = losses.iter().map(|l| (*l, Vec::new())).collect();
    for run in 1..=runs.max(1) {
        println!("run {run}:");
        for (loss, got) in runs_of.iter_mut() {
            let loss = *loss;
            let mut row = [0.0; 3];
            for (i, cc) in [Congestion::Cubic, Congestion::Bbr].into_iter().enumerate() {
                let (n, secs) = raw(cc, at(loss), bytes, limit)?;
                row[i] = mbps(n, secs);
                println!(
                    "  {loss:>4}% loss  raw quinn {cc:?}: {:>7.1} MB/s ({} MiB in {secs:.1} s)",
                    row[i],
                    n >> 20
                );
            }
            let secs = replication(&ss, &work.join("sites"), &tree, at(loss))?;
            row[2] = mbps(bytes, secs);
            println!(
                "  {loss:>4}% loss  replication:       {:>7.1} MB/s ({secs:.1} s, verified and durable at P01)",
                row[2]
            );
            got.push(row);
        }
    }
    let med = |v: &[[f64; 3]], i: usize| crate::median(v.iter().map(|r| r[i]).collect());
    let rows: Vec<(f64, [f64; 3])> = runs_of
        .iter()
        .map(|(l, v)| (*l, [med(v, 0), med(v, 1), med(v, 2)]))
        .collect();
    println!("medians, MB/s:");
    println!("  loss   CUBIC    BBR   replication");
    for (loss, r) in &rows {
        println!("  {loss:>4}%  {:>6.1} {:>6.1}  {:>6.1}", r[0], r[1], r[2]);
    }
    let Some(&(l0, base)) = rows.first() else {
        bail!("no loss rates given");
    };
    println!("share of the {l0}% loss goodput, of the medians (target at 1%: >= 0.70):");
    println!("  loss   CUBIC   BBR   replication");
    for (loss, r) in &rows {
        println!(
            "  {loss:>4}%  {:>5.2}  {:>5.2}  {:>5.2}",
            r[0] / base[0],
            r[1] / base[1],
            r[2] / base[2]
        );
    }
    Ok(())
}
