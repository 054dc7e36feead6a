//! Runs an advertised program: its command line split as a shell would split words (but
//! run without a shell unless the command names one), in the package's directory, in a
//! process group of its own, with a time limit, keeping the last lines of its output.

use schema::manifest::Manifest;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ended {
    /// The program exited with this code.
    Exited(i32),
    /// It could not start, was killed by a signal, or ran past its limit.
    Error(String),
}

/// What a run produced.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub ended: Ended,
    /// Its last lines of output (stdout and stderr, interleaved as they came).
    pub tail: String,
}

/// The program and its arguments: the first word must be a file of the package (a relative
/// path, run from the package directory) or an absolute path.
pub fn command(
    line: &str,
    dir: &Path,
    manifest: &Manifest,
) -> Result<(PathBuf, Vec<String>), String> {
    let words = shlex::split(line)
        .filter(|w| !w.is_empty())
        .ok_or_else(|| format!("the command line {line:?} does not parse (unbalanced quotes?)"))?;
    let (first, rest) = words.split_first().expect("not empty");
    let p = Path::new(first);
    if p.is_absolute() {
        return Ok((p.to_path_buf(), rest.to_vec()));
    }
    let rel = first.strip_prefix("./").unwrap_or(first);
    if manifest.file(rel).is_none() {
        return Err(format!(
            "the command {first:?} is not a file of the package and not an absolute path: fix the advertisement's command line (`site-server adv change ID --command ...`)"
        ));
    }
    Ok((dir.join(rel), rest.to_vec()))
}

fn keep(tail: &Mutex<VecDeque<String>>, line: String) {
    let mut t = tail.lock().expect("tail lock");
    t.push_back(line);
    while t.len() > schema::machine::TAIL_LINES {
        t.pop_front();
    }
}

fn tail_text(tail: &Mutex<VecDeque<String>>) -> String {
    let t = tail.lock().expect("tail lock");
    let s: Vec<&str> = t.iter().map(|l| l.as_str()).collect();
    schema::machine::tail_of(&s.join("\n"), schema::machine::TAIL_BYTES)
}

/// Runs `program args` in `dir` for at most `limit`; `started` is told the process id once
/// it runs (so the agent can record it before waiting).
pub async fn run(
    program: &Path,
    args: &[String],
    dir: &Path,
    limit: Duration,
    started: impl FnOnce(Option<u32>),
) -> Outcome {
    let tail = Arc::new(Mutex::new(VecDeque::new()));
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    #[cfg(unix)]
    cmd.process_group(0);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            started(None);
            return Outcome {
                ended: Ended::Error(format!("{} could not start: {e}", program.display())),
                tail: String::new(),
            };
        }
    };
    let pid = child.id();
    started(pid);
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        let t = tail.clone();
        readers.push(tokio::spawn(async move {
            let mut l = BufReader::new(out).lines();
            while let Ok(Some(line)) = l.next_line().await {
                keep(&t, line);
            }
        }));
    }
    if let Some(err) = child.stderr.take() {
        let t = tail.clone();
        readers.push(tokio::spawn(async move {
            let mut l = BufReader::new(err).lines();
            while let Ok(Some(line)) = l.next_line().await {
                keep(&t, line);
            }
        }));
    }
    let ended = match tokio::time::timeout(limit, child.wait()).await {
        Ok(Ok(status)) => match status.code() {
            Some(c) => Ended::Exited(c),
            None => {
                #[cfg(unix)]
                let sig = std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0);
                #[cfg(not(unix))]
                let sig = 0;
                Ended::Error(format!("the program was killed by signal {sig}"))
            }
        },
        Ok(Err(e)) => Ended::Error(format!("waiting for the program failed: {e}")),
        Err(_) => {
            kill_group(pid);
            let _ = child.kill().await;
            Ended::Error(format!(
                "the program ran past its time limit of {}s and was stopped",
                limit.as_secs()
            ))
        }
    };
    // The output pipes close when the group ends; a grandchild that keeps them open is not
    // waited for long.
    for r in readers {
        let _ = tokio::time::timeout(Duration::from_secs(2), r).await;
    }
    Outcome {
        ended,
        tail: tail_text(&tail),
    }
}

/// Whether process `pid` is running `program` and leads its own process group (what the
/// agent started), so that a reused pid is never signalled.
pub fn is_running(pid: u32, program: &str) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let leads = stat
        .rfind(')')
        .and_then(|i| stat[i + 2..].split_whitespace().nth(2).map(str::to_string))
        .is_some_and(|pgrp| pgrp == pid.to_string());
    let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let first = cmd.split(|b| *b == 0).next().unwrap_or_default();
    leads && !program.is_empty() && first == program.as_bytes()
}

/// Kills the process group the program leads (its children too).
pub fn kill_group(pid: Option<u32>) {
    #[cfg(unix)]
    if let Some(p) = pid {
        // SAFETY: kill(2) with a negative pid signals the process group; it touches no memory.
        unsafe {
            libc::kill(-(p as i32), libc::SIGKILL);
        }
    }
    #[cfg(not(unix))]
    let _ = pid;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest_with(path: &str) -> Manifest {
        Manifest {
            files: vec![schema::manifest::FileEntry {
                path: path.into(),
                mode: 0o755,
                size: 0,
                kind: schema::manifest::EntryKind::File { chunks: vec![] },
            }],
        }
    }

    #[test]
    fn a_command_is_a_package_file_or_an_absolute_path() {
        let m = manifest_with("install.sh");
        let d = Path::new("/cache/p");
        let (p, a) = command("install.sh --quiet 'a b'", d, &m).unwrap();
        assert_eq!(p, d.join("install.sh"));
        assert_eq!(a, vec!["--quiet".to_string(), "a b".to_string()]);
        assert_eq!(
            command("./install.sh", d, &m).unwrap().0,
            d.join("install.sh")
        );
        assert_eq!(
            command("/bin/sh -c 'exit 3'", d, &m).unwrap().0,
            PathBuf::from("/bin/sh")
        );
        assert!(command("setup.exe", d, &m)
            .unwrap_err()
            .contains("not a file of the package"));
        assert!(command("../etc/passwd", d, &m).is_err());
        assert!(command("'unbalanced", d, &m).is_err());
        assert!(command("  ", d, &m).is_err());
    }

    #[tokio::test]
    async fn exit_codes_output_and_time_limits() {
        let d = std::env::temp_dir();
        let o = run(
            Path::new("/bin/sh"),
            &["-c".into(), "echo one; echo two >&2; exit 7".into()],
            &d,
            Duration::from_secs(10),
            |_| {},
        )
        .await;
        assert_eq!(o.ended, Ended::Exited(7));
        assert!(
            o.tail.contains("one") && o.tail.contains("two"),
            "{}",
            o.tail
        );
        let o = run(
            Path::new("/bin/sh"),
            &["-c".into(), "echo before; sleep 30".into()],
            &d,
            Duration::from_millis(500),
            |_| {},
        )
        .await;
        assert!(
            matches!(&o.ended, Ended::Error(e) if e.contains("time limit")),
            "{:?}",
            o.ended
        );
        assert!(o.tail.contains("before"));
        let o = run(
            Path::new("/nonexistent/x"),
            &[],
            &d,
            Duration::from_secs(1),
            |_| {},
        )
        .await;
        assert!(matches!(&o.ended, Ended::Error(e) if e.contains("could not start")));
    }
}
