//! `site-server demo`: the main job in one command. Starts a real three-tier hierarchy
//! (CEN -> P01 -> S01: three daemons of this same binary, separate processes) on loopback
//! ports in a temporary directory, links them with pinned certificates, publishes a sample
//! package at CEN, targets S01, waits until S01 holds every chunk, publishes a changed
//! version (only the changed chunks travel), has a distribution point of each site serve it,
//! syncs an update catalog at CEN from an apt index (its delta reaches every site, S02 by the
//! bundle), carries the package to a courier-only site S02 by bundle (and a receipt back),
//! runs an advertised install script on three agents (two succeed, one fails, a re-run of
//! the failed turns it green: [`agents`]), and prints what an operator would look at.
//!
//! The processes are started and linked by `site_server::harness`, as in the end-to-end
//! tests; this file is the scenario and what it prints.

mod agents;

use super::common::CliError;
use site_server::harness::{self, Bins, HarnessError, LocalDp, LocalSite};
use std::path::Path;
use std::time::{Duration, Instant};

impl From<HarnessError> for CliError {
    fn from(e: HarnessError) -> Self {
        CliError::failed(format!("demo step failed: {e}"))
    }
}

/// The demo's hierarchy: CEN, P01, S01 (network links) and S02 (courier only), one DP at
/// each of the first three.
struct Demo {
    sites: Vec<LocalSite>,
    dps: Vec<LocalDp>,
}

impl Demo {
    fn site(&self, code: &str) -> &LocalSite {
        self.sites
            .iter()
            .find(|s| s.code == code)
            .expect("a site of the demo")
    }
    fn site_mut(&mut self, code: &str) -> &mut LocalSite {
        self.sites
            .iter_mut()
            .find(|s| s.code == code)
            .expect("a site of the demo")
    }
    fn stop_all(&mut self) {
        for d in self.dps.iter_mut() {
            if let Err(e) = d.stop() {
                tracing::warn!(error = %e, "stopping a DP of the demo");
            }
        }
        for s in self.sites.iter_mut().rev() {
            if let Err(e) = s.stop() {
                tracing::warn!(error = %e, "stopping a site of the demo");
            }
        }
    }
}

/// A command line as the operator would type it.
fn shown(program: &str, args: &[String]) -> String {
    let args: Vec<String> = args
        .iter()
        .map(|a| {
            if a.contains(' ') {
                format!("'{a}'")
            } else {
                a.clone()
            }
        })
        .collect();
    format!("{program} {}", args.join(" "))
}

/// Runs `site-server ARGS --data DIR` at `site`, printing the title, the command and what
/// it printed.
fn step(site: &LocalSite, title: &str, args: &[&str]) -> Result<(), CliError> {
    let owned: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    step_owned(site, title, &owned)
}

fn step_owned(site: &LocalSite, title: &str, args: &[String]) -> Result<(), CliError> {
    let mut full = args.to_vec();
    full.extend(["--data".to_string(), site.data_str().to_string()]);
    println!("\n== {title}\n$ {}", shown("site-server", &full));
    let v: Vec<&str> = args.iter().map(String::as_str).collect();
    print!("{}", site.cli_ok(&v)?);
    Ok(())
}

/// Prints the title and a command that `harness::cli_when_known` ran, with its output.
fn shown_step(site: &LocalSite, title: &str, args: &[&str], out: &str) {
    let mut full: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    full.extend(["--data".to_string(), site.data_str().to_string()]);
    println!(
        "\n== {title}\n$ {}\n{}",
        shown("site-server", &full),
        out.trim_end()
    );
}

/// A small package: some text, some binary, a nested directory.
fn write_sample(root: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(root.join("bin"))?;
    std::fs::create_dir_all(root.join("docs"))?;
    std::fs::write(
        root.join("README.txt"),
        "Sample package published by `site-server demo`.\n".repeat(200),
    )?;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let bin: Vec<u8> = (0..3 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(root.join("bin/tool.bin"), bin)?;
    let guide: String = (0..20_000)
        .map(|i| format!("step {i}: apply the update, check the exit code, report status\n"))
        .collect();
    std::fs::write(root.join("docs/guide.txt"), guide)
}

pub async fn run(keep: bool) -> Result<(), CliError> {
    tokio::task::block_in_place(|| run_blocking(keep))
}

fn run_blocking(keep: bool) -> Result<(), CliError> {
    let exe = std::env::current_exe()
        .map_err(|e| CliError::failed(format!("cannot find my own binary: {e}")))?;
    let bins = Bins::this_site_server(exe);
    let tmp = tempfile::Builder::new()
        .prefix("siterep-demo-")
        .tempdir()
        .map_err(|e| CliError::failed(format!("cannot make a temporary directory: {e}")))?;
    let root = tmp.path().to_path_buf();
    println!("demo directory: {}", root.display());
    println!("\n== a three-tier hierarchy: CEN -> P01 -> S01, each its own process on 127.0.0.1");
    let mut demo = Demo {
        sites: Vec::new(),
        dps: Vec::new(),
    };
    for code in ["CEN", "P01", "S01", "S02"] {
        // A fixed port, so that its distribution point knows where to dial before it runs.
        let port = harness::free_port()
            .map_err(|e| CliError::failed(format!("no free port on 127.0.0.1: {e}")))?;
        let site = LocalSite::init(&bins, &root, code, &format!("127.0.0.1:{port}"))?;
        println!("created site {code} in {}", site.data_str());
        demo.sites.push(site);
    }
    if let Err(e) = scenario(&bins, &root, &mut demo) {
        demo.stop_all();
        // Keep the directory for a look at the logs.
        let root = tmp.keep();
        return Err(CliError::failed(format!(
            "{} (demo left in {} for a look: the daemons' logs are DIR.log)",
            e.message,
            root.display()
        )));
    }
    if keep {
        let root = tmp.keep();
        print_keep(&root, demo);
        return Ok(());
    }
    demo.stop_all();
    println!(
        "\n== demo complete: sites stopped, {} removed",
        root.display()
    );
    Ok(())
}

/// `--keep`: leaves every process running and says how to talk to each.
fn print_keep(root: &Path, demo: Demo) {
    println!(
        "\n== the hierarchy keeps running (in {}). Talk to each site:",
        root.display()
    );
    let mut pids = Vec::new();
    for s in &demo.sites {
        println!(
            "{}: export SITEREP_DATA={}   (pid {}, log {})",
            s.code,
            s.data_str(),
            s.pid().unwrap_or(0),
            s.log_path().display()
        );
    }
    println!("then: site-server status sites | status packages | status messages | package list");
    if let Some(top) = demo.sites.first() {
        match (top.ui_url(), top.ui_token()) {
            (Ok(url), Ok(token)) => println!(
                "{}'s console: {url}/   sign in with the viewer token {token}\n  (site-server ui token --data {} prints it; metrics: curl -H 'Authorization: Bearer {token}' {url}/metrics)",
                top.code,
                top.data_str()
            ),
            (Err(e), _) | (_, Err(e)) => println!("{}'s console: cannot tell ({e})", top.code),
        }
    }
    for d in &demo.dps {
        println!(
            "{}/{}: site-server dist-point status --data {}   (http://{}/, log {})",
            d.site,
            d.id,
            d.data().display(),
            d.addr,
            d.log_path().display()
        );
    }
    for s in demo.sites {
        pids.extend(s.detach());
    }
    for d in demo.dps {
        pids.extend(d.detach());
    }
    let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
    println!("stop them with: kill {}", pids.join(" "));
}

/// `child add` at `parent` for `child` (before `parent` starts: links are read at start).
fn accept_child(parent: &LocalSite, child: &LocalSite) -> Result<(), CliError> {
    step_owned(
        parent,
        &format!(
            "{}: accept {} as a child, pinned by its certificate",
            parent.code, child.code
        ),
        &harness::child_add_args(child, &child.code, false)?,
    )
}

/// `parent set` at `child` for the running `parent`.
fn set_parent(child: &LocalSite, parent: &LocalSite) -> Result<(), CliError> {
    let addr = parent.listen_addr()?;
    step_owned(
        child,
        &format!(
            "{}: dial {} at {addr}, pinned by its certificate",
            child.code, parent.code
        ),
        &harness::parent_set_args(parent, false)?,
    )
}

/// A courier-only link, first half: `child add --courier` at `parent` (before it starts).
fn courier_child(parent: &LocalSite, child: &LocalSite) -> Result<(), CliError> {
    step_owned(
        parent,
        &format!(
            "{}: accept {} as a child reached by courier bundles only (no network link)",
            parent.code, child.code
        ),
        &harness::child_add_args(child, &child.code, true)?,
    )
}

/// A courier-only link, second half: `parent set --courier` at `child`, once `parent` knows
/// the top (`child` takes its trust root from it).
fn courier_parent(child: &LocalSite, parent: &LocalSite) -> Result<(), CliError> {
    step_owned(
        child,
        &format!(
            "{}: its parent is {}, by courier: bundles must be signed with this key",
            child.code, parent.code
        ),
        &harness::parent_set_args(parent, true)?,
    )
}

/// `dist-point init` for DP1 of `site`, then `dp add` at the site (before it starts).
fn add_dp(bins: &Bins, root: &Path, site: &LocalSite) -> Result<LocalDp, CliError> {
    let dp = LocalDp::init(bins, root, site, "DP1")?;
    step_owned(
        site,
        &format!(
            "{}: attach distribution point DP1 (HTTP on {}), pinned by its certificate",
            site.code, dp.addr
        ),
        &dp.dp_add_args(&[]),
    )?;
    Ok(dp)
}

fn start_site(site: &mut LocalSite) -> Result<(), CliError> {
    site.start()?;
    println!(
        "site {} running (pid {})",
        site.code,
        site.pid().unwrap_or(0)
    );
    Ok(())
}

fn scenario(bins: &Bins, root: &Path, demo: &mut Demo) -> Result<(), CliError> {
    let exe = bins.site_server.clone();
    accept_child(demo.site("CEN"), demo.site("P01"))?;
    accept_child(demo.site("P01"), demo.site("S01"))?;
    courier_child(demo.site("P01"), demo.site("S02"))?;
    for code in ["CEN", "P01", "S01"] {
        let dp = add_dp(bins, root, demo.site(code))?;
        demo.dps.push(dp);
    }
    step(
        demo.site("P01"),
        "P01: a schedule and a rate limit on the link to S01 (business hours: medium and high only, 50 MiB/s)",
        &[
            "child",
            "set",
            "--code",
            "S01",
            "--schedule",
            "mon-fri 08-18 medium+; * all",
            "--rate",
            "mon-fri 08-18 50MiB/s; * unlimited",
        ],
    )?;
    start_site(demo.site_mut("CEN"))?;
    set_parent(demo.site("P01"), demo.site("CEN"))?;
    courier_parent(demo.site("S02"), demo.site("P01"))?;
    start_site(demo.site_mut("P01"))?;
    set_parent(demo.site("S01"), demo.site("P01"))?;
    start_site(demo.site_mut("S01"))?;
    for d in demo.dps.iter_mut() {
        d.start()?;
        println!(
            "distribution point {}/{} running (pid {}), serving http://{}/",
            d.site,
            d.id,
            d.pid().unwrap_or(0),
            d.addr
        );
    }
    let sample = root.join("sample");
    publish_and_update(demo, &sample)?;
    distribute_to_dps(demo, &sample)?;
    catalog_sync(root, demo.site("CEN"))?;
    by_courier(root, demo)?;
    wait_catalog(demo.site("CEN"), &["CEN", "P01", "S01", "S02"])?;
    let cen = demo.site("CEN");
    step(
        cen,
        "CEN: catalog sync status of every site (S02's came back in its receipt)",
        &["status", "sync"],
    )?;
    agents::story(&exe, root, demo)?;
    show_status(demo)
}

/// CEN publishes the sample, targets S01 and waits until it is there; then publishes a
/// changed version and waits again (only the changed chunk travels).
fn publish_and_update(demo: &Demo, sample: &Path) -> Result<(), CliError> {
    let (cen, s01) = (demo.site("CEN"), demo.site("S01"));
    write_sample(sample)
        .map_err(|e| CliError::failed(format!("cannot write the sample package: {e}")))?;
    let sample_s = sample.display().to_string();
    step(
        cen,
        "CEN: publish a sample package",
        &[
            "package",
            "publish",
            "--source",
            &sample_s,
            "--name",
            "Sample package",
        ],
    )?;
    // CEN learns that S01 is below P01 from P01's report: until that arrives, CEN refuses
    // the target as unknown. Retry quietly, then show the command and its answer.
    let args = ["package", "distribute", "CEN00001", "--site", "S01"];
    let out = harness::cli_when_known(cen, &args, 30)?;
    shown_step(
        cen,
        "CEN: target S01 (every site on the way fetches the chunks it misses, by hash)",
        &args,
        &out,
    );
    println!();
    let took = wait_complete(s01, "CEN00001", 1)?;
    println!(
        "   S01 holds every chunk, verified, {:.2} s after the target",
        took.as_secs_f64()
    );
    let guide = sample.join("docs/guide.txt");
    std::fs::read_to_string(&guide)
        .and_then(|text| {
            std::fs::write(&guide, text.replace("step 10000:", "step 10000 (revised):"))
        })
        .map_err(|e| CliError::failed(format!("cannot edit the sample: {e}")))?;
    step(
        cen,
        "CEN: edit one file and publish version 2 (only the changed chunk is new)",
        &[
            "package",
            "publish",
            "--source",
            &sample_s,
            "--package",
            "CEN00001",
        ],
    )?;
    println!();
    let took = wait_complete(s01, "CEN00001", 2)?;
    println!(
        "   version 2 complete at S01 {:.2} s after publish: only the changed chunk travelled",
        took.as_secs_f64()
    );
    Ok(())
}

/// What an operator looks at: links, senders, packages, a DP, S01's content and log, and
/// the status messages of the whole tree at CEN.
fn show_status(demo: &Demo) -> Result<(), CliError> {
    let (cen, p01, s01) = (demo.site("CEN"), demo.site("P01"), demo.site("S01"));
    step(
        cen,
        "CEN: links (state, cursors, backlog)",
        &["status", "sites"],
    )?;
    step(p01, "P01: links", &["status", "sites"])?;
    step(s01, "S01: links", &["status", "sites"])?;
    step(
        cen,
        "CEN: senders (window and rate in force, queues per priority, last minute)",
        &["status", "senders"],
    )?;
    step(p01, "P01: senders", &["status", "senders"])?;
    step(
        cen,
        "CEN: packages, and how far each site has been sent them (3531/3533 from the tree)",
        &["status", "packages"],
    )?;
    let dp = &demo.dps[2];
    let dp_data = dp.data().display().to_string();
    println!(
        "\n== S01's distribution point: what it holds, where it pulled from\n$ site-server dist-point status --data {dp_data}"
    );
    print!(
        "{}",
        dp.cli(&["status"])?
            .success("site-server dist-point status")?
    );
    step(s01, "S01: content here", &["status", "packages"])?;
    step(
        s01,
        "S01: config log (CEN's events, applied once, in order)",
        &["log"],
    )?;
    step(
        cen,
        "CEN: status messages from the whole tree",
        &["status", "messages"],
    )
}

/// The package reaches the courier-only site S02 by bundle, and a receipt goes back.
fn by_courier(root: &Path, demo: &mut Demo) -> Result<(), CliError> {
    start_site(demo.site_mut("S02"))?;
    let (cen, p01, s02) = (demo.site("CEN"), demo.site("P01"), demo.site("S02"));
    let args = ["package", "distribute", "CEN00001", "--site", "S02"];
    let out = harness::cli_when_known(cen, &args, 30)?;
    shown_step(
        cen,
        "CEN: target S02, which has no network link",
        &args,
        &out,
    );
    let usb = root.join("usb");
    std::fs::create_dir_all(&usb)
        .map_err(|e| CliError::failed(format!("cannot make {}: {e}", usb.display())))?;
    let bundle = usb.join("to-S02.bundle").display().to_string();
    let receipt = usb.join("from-S02.receipt").display().to_string();
    // The target has to reach P01 before P01 exports it.
    let arrived = harness::poll(Duration::from_secs(30), || {
        p01.cli_ok(&["log", "--json"])
            .is_ok_and(|log| log.contains("S02"))
    });
    if !arrived {
        return Err(CliError::failed("the target did not reach P01 within 30 s"));
    }
    step(
        p01,
        "P01: export a signed bundle for S02 onto the removable medium",
        &["courier", "export", "--to", "S02", "--out", &bundle],
    )?;
    step(
        s02,
        "S02: import it (verified: signature, every section, every chunk; then applied at once)",
        &["courier", "import", &bundle],
    )?;
    step(
        s02,
        "S02: importing the same bundle again changes nothing",
        &["courier", "import", &bundle],
    )?;
    step(s02, "S02: content here", &["status", "packages"])?;
    step(
        s02,
        "S02: write a signed receipt (its reports, how far it has applied, what it holds)",
        &["courier", "receipt", "--out", &receipt],
    )?;
    step(
        p01,
        "P01: import the receipt: S02's status messages join the tree's",
        &["courier", "import", &receipt],
    )?;
    step(
        p01,
        "P01: links, and for S02 its last export and receipt and what the next export carries",
        &["status", "sites"],
    )
}

/// Waits until `site` holds every chunk of `version` of `pkg`, printing progress.
fn wait_complete(site: &LocalSite, pkg: &str, version: u64) -> Result<Duration, CliError> {
    let t0 = Instant::now();
    let mut last = String::new();
    while t0.elapsed() < Duration::from_secs(120) {
        let rows = site.cli_json(&["status", "packages", "--json"])?;
        let row = rows.as_array().and_then(|a| {
            a.iter()
                .find(|r| r["package"] == pkg && r["source_version"] == version)
        });
        if let Some(r) = row {
            let (have, all) = (
                r["chunks_present"].as_u64().unwrap_or(0),
                r["chunks"].as_u64().unwrap_or(0),
            );
            let line = format!(
                "{}: {have}/{all} chunks of {pkg} version {version}",
                site.code
            );
            if line != last {
                println!("   {line} ({:.2} s)", t0.elapsed().as_secs_f64());
                last = line;
            }
            if all > 0 && have == all {
                return Ok(t0.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(CliError::failed(format!(
        "{} did not get {pkg} version {version} within 120 s",
        site.code
    )))
}

/// A small apt index, as apt keeps them (gzip).
const DEMO_INDEX: &str = "\
Package: curl
Version: 7.88.1-10+deb12u8
Architecture: amd64
Priority: optional
Size: 315000
Filename: pool/main/c/curl/curl_7.88.1-10+deb12u8_amd64.deb
Description: command line tool for transferring data with URL syntax

Package: openssl
Version: 3.0.15-1~deb12u1
Architecture: amd64
Priority: optional
Size: 1420000
Filename: pool/main/o/openssl/openssl_3.0.15-1~deb12u1_amd64.deb
Description: Secure Sockets Layer toolkit - cryptographic utility

Package: openssl
Version: 3.0.13-1~deb12u1
Architecture: amd64
Priority: optional
Size: 1419000
Filename: pool/main/o/openssl/openssl_3.0.13-1~deb12u1_amd64.deb
Description: Secure Sockets Layer toolkit - cryptographic utility
";

/// CEN syncs an update catalog from an apt index; the delta goes down like any event.
fn catalog_sync(root: &Path, cen: &LocalSite) -> Result<(), CliError> {
    use std::io::Write;
    let index = root.join("Packages.gz");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(DEMO_INDEX.as_bytes())
        .and_then(|_| gz.finish())
        .and_then(|b| std::fs::write(&index, b))
        .map_err(|e| CliError::failed(format!("cannot write {}: {e}", index.display())))?;
    step(
        cen,
        "CEN: a catalog source (an apt Packages index, gzip as apt keeps it)",
        &[
            "sync",
            "source",
            "add",
            "--name",
            "debian-security",
            "--plugin",
            "apt",
            "--args",
            &format!(
                "Path={};Classification=Security;Product=\"Debian 12\"",
                index.display()
            ),
        ],
    )?;
    step(
        cen,
        "CEN: sync the catalog now (only the top site syncs; one delta event goes down the tree)",
        &["sync", "now"],
    )?;
    step(
        cen,
        "CEN: the new updates of the last 7 days",
        &["catalog", "list", "--since", "7d"],
    )?;
    step(
        cen,
        "CEN: the older openssl, superseded by the newer one in the same index",
        &["catalog", "show", "openssl_3.0.13-1~deb12u1_amd64"],
    )
}

/// Waits until `sites` all show catalog version 1 in `cen`'s `status sync`.
fn wait_catalog(cen: &LocalSite, sites: &[&str]) -> Result<(), CliError> {
    let t0 = Instant::now();
    loop {
        let rows = cen.cli_json(&["status", "sync", "--json"])?;
        let at = |code: &str| {
            rows.as_array()
                .into_iter()
                .flatten()
                .any(|r| r["site"] == code && r["catalog_version"].as_u64().unwrap_or(0) >= 1)
        };
        if sites.iter().all(|s| at(s)) {
            return Ok(());
        }
        if t0.elapsed() > Duration::from_secs(30) {
            return Err(CliError::failed(
                "the catalog did not reach every site within 30 s",
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Puts one DP of every site in a group, targets the package at the group, waits until every
/// DP serves version 2, downloads a file from S01's DP and checks it against the source.
fn distribute_to_dps(demo: &Demo, sample: &Path) -> Result<(), CliError> {
    let cen = demo.site("CEN");
    step(
        cen,
        "CEN: a distribution point group",
        &["dp", "group", "create", "Everywhere"],
    )?;
    // CEN knows a DP once its site has reported it up: retry quietly until it has.
    let args = [
        "dp",
        "group",
        "add",
        "Everywhere",
        "--dp",
        "CEN/DP1",
        "--dp",
        "P01/DP1",
        "--dp",
        "S01/DP1",
    ];
    let out = harness::cli_when_known(cen, &args, 30)?;
    shown_step(cen, "CEN: one DP of every site joins it", &args, &out);
    step(
        cen,
        "CEN: target the package at the group (each DP pulls the chunks it misses from its site, by hash)",
        &["package", "distribute", "CEN00001", "--dp-group", "Everywhere"],
    )?;
    println!();
    let t0 = Instant::now();
    for d in &demo.dps {
        let serves = harness::poll(Duration::from_secs(60), || {
            d.get("/packages/CEN00001/2/manifest", &[])
                .is_ok_and(|(code, _)| code == 200)
        });
        if !serves {
            return Err(CliError::failed(format!(
                "{}/{} did not install the package within 60 s: see {}",
                d.site,
                d.id,
                d.log_path().display()
            )));
        }
        println!(
            "   {}/{} serves CEN00001 version 2 ({:.2} s after the target)",
            d.site,
            d.id,
            t0.elapsed().as_secs_f64()
        );
    }
    let s01_dp = &demo.dps[2];
    let path = "/packages/CEN00001/latest/files/bin/tool.bin";
    let (code, body) = s01_dp.get(path, &[])?;
    let want = std::fs::read(sample.join("bin/tool.bin"))
        .map_err(|e| CliError::failed(format!("cannot read the sample: {e}")))?;
    if code != 200 || blake3::hash(&body) != blake3::hash(&want) {
        return Err(CliError::failed(format!(
            "S01/DP1 answered {code} with {} bytes that do not match the source",
            body.len()
        )));
    }
    println!(
        "\n== a client downloads a file from S01's distribution point ({} bytes, BLAKE3 matches the source):\n$ curl -O http://{}{path}",
        body.len(),
        s01_dp.addr
    );
    Ok(())
}
