//! `site-server demo`: the main job in one command. Starts a real site daemon (this same
//! binary, a separate process) on loopback in a temporary directory, publishes a sample
//! package, publishes a changed version of it, and prints what the operator would look at.
//!
//! The replication issue grows this into a three-tier hierarchy (CEN -> P01 -> S01).

use crate::cli::CliError;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Daemon {
    child: Child,
    data: PathBuf,
}

impl Daemon {
    fn stop(&mut self) {
        // SIGTERM: the daemon shuts down cleanly and removes admin.json.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn exe() -> Result<PathBuf, CliError> {
    std::env::current_exe().map_err(|e| CliError::failed(format!("cannot find my own binary: {e}")))
}

fn step(title: &str, args: &[&str]) -> Result<(), CliError> {
    let shown: Vec<String> = args
        .iter()
        .map(|a| {
            if a.contains(' ') {
                format!("'{a}'")
            } else {
                a.to_string()
            }
        })
        .collect();
    println!("\n== {title}\n$ site-server {}", shown.join(" "));
    let status = Command::new(exe()?)
        .args(args)
        .status()
        .map_err(|e| CliError::failed(format!("cannot run site-server {}: {e}", args[0])))?;
    if !status.success() {
        return Err(CliError::failed(format!(
            "demo step `site-server {}` failed ({status})",
            args.join(" ")
        )));
    }
    Ok(())
}

fn start_daemon(data: &Path) -> Result<Daemon, CliError> {
    let log = std::fs::File::create(data.with_extension("log"))
        .map_err(|e| CliError::failed(format!("cannot create the daemon log: {e}")))?;
    let child = Command::new(exe()?)
        .args(["run", "--data"])
        .arg(data)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| CliError::failed(format!("cannot start the daemon: {e}")))?;
    let mut d = Daemon {
        child,
        data: data.to_path_buf(),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if d.data.join(site_server::config::ADMIN_FILE).exists() {
            return Ok(d);
        }
        if let Ok(Some(status)) = d.child.try_wait() {
            return Err(CliError::failed(format!(
                "the daemon exited ({status}): see {}",
                data.with_extension("log").display()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    d.stop();
    Err(CliError::failed("the daemon did not start within 20 s"))
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
    let tmp = tempfile::Builder::new()
        .prefix("siterep-demo-")
        .tempdir()
        .map_err(|e| CliError::failed(format!("cannot make a temporary directory: {e}")))?;
    let root = tmp.path().to_path_buf();
    let data = root.join("CEN");
    let data_s = data.display().to_string();
    let sample = root.join("sample");
    println!("demo directory: {}", root.display());
    step(
        "create site CEN",
        &[
            "init",
            "--code",
            "CEN",
            "--data",
            &data_s,
            "--listen",
            "127.0.0.1:0",
        ],
    )?;
    let mut daemon = start_daemon(&data)?;
    println!("\n== site CEN running (pid {})", daemon.child.id());

    let result = (|| -> Result<(), CliError> {
        write_sample(&sample)
            .map_err(|e| CliError::failed(format!("cannot write the sample package: {e}")))?;
        let sample_s = sample.display().to_string();
        step(
            "publish a sample package",
            &[
                "package",
                "publish",
                "--data",
                &data_s,
                "--source",
                &sample_s,
                "--name",
                "Sample package",
            ],
        )?;
        step(
            "publish the same content again: no new version",
            &[
                "package",
                "publish",
                "--data",
                &data_s,
                "--source",
                &sample_s,
                "--package",
                "CEN00001",
            ],
        )?;
        std::fs::write(
            sample.join("docs/guide.txt"),
            std::fs::read_to_string(sample.join("docs/guide.txt"))
                .unwrap_or_default()
                .replace("step 10000:", "step 10000 (revised):"),
        )
        .map_err(|e| CliError::failed(format!("cannot edit the sample: {e}")))?;
        step(
            "edit one file and publish: only the changed chunks are new",
            &[
                "package",
                "publish",
                "--data",
                &data_s,
                "--source",
                &sample_s,
                "--package",
                "CEN00001",
            ],
        )?;
        step(
            "advertise it",
            &[
                "adv",
                "create",
                "--data",
                &data_s,
                "--package",
                "CEN00001",
                "--program",
                "Install",
                "--command",
                "install.sh --quiet",
                "--collection",
                "All Servers",
            ],
        )?;
        step("packages", &["package", "list", "--data", &data_s])?;
        step(
            "package detail",
            &["package", "show", "CEN00001", "--data", &data_s],
        )?;
        step("config log", &["log", "--data", &data_s])?;
        step(
            "status messages",
            &["status", "messages", "--data", &data_s],
        )?;
        Ok(())
    })();

    if let Err(e) = result {
        daemon.stop();
        let _ = tmp.keep();
        return Err(CliError::failed(format!(
            "{} (demo left in {} for a look)",
            e.message,
            root.display()
        )));
    }
    if keep {
        let _ = tmp.keep();
        println!(
            "\n== the site keeps running (pid {}). Talk to it:",
            daemon.child.id()
        );
        println!("export SITEREP_DATA={data_s}");
        println!("site-server package list");
        println!("site-server status messages");
        println!("site-server package publish --source DIR --name NAME");
        println!(
            "stop it with: kill {}   (its log: {}.log)",
            daemon.child.id(),
            data_s
        );
        std::mem::forget(daemon);
        return Ok(());
    }
    daemon.stop();
    println!(
        "\n== demo complete: site stopped, {} removed",
        root.display()
    );
    Ok(())
}
