//! What every command shares: the error and exit code, the data directory argument, and
//! printing (JSON, tables, sizes) and parsing (times, package ids).

use chrono::{DateTime, NaiveDateTime, Utc};
use clap::Args;
use schema::PackageId;
use site_server::config::DataDir;
use std::path::PathBuf;

/// A failed command: its exit code (1 failed, 2 usage or config; 0 is `Ok`) and one line.
#[derive(Debug)]
pub struct CliError {
    pub code: u8,
    pub message: String,
}

impl CliError {
    pub fn usage(m: impl Into<String>) -> Self {
        CliError {
            code: 2,
            message: m.into(),
        }
    }
    pub fn failed(m: impl Into<String>) -> Self {
        CliError {
            code: 1,
            message: m.into(),
        }
    }
    /// The message on one line, as stderr shows it.
    pub fn line(&self) -> String {
        self.message
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl From<site_server::daemon::StartError> for CliError {
    fn from(e: site_server::daemon::StartError) -> Self {
        match e {
            site_server::daemon::StartError::Config(m) => CliError::usage(m),
            site_server::daemon::StartError::Failed(m) => CliError::failed(m),
        }
    }
}

/// A refused request is the operator's to fix (exit 2); anything else failed (exit 1).
impl From<site_server::site::OpError> for CliError {
    fn from(e: site_server::site::OpError) -> Self {
        match e {
            site_server::site::OpError::Refused(r) => CliError::usage(r.to_string()),
            other => CliError::failed(other.to_string()),
        }
    }
}

/// `site.toml` refused a change (exit 2), or could not be read or written (exit 1).
pub fn config_error(e: site_server::config::ConfigError) -> CliError {
    match e {
        site_server::config::ConfigError::Invalid(m) => CliError::usage(m),
        other => CliError::failed(other.to_string()),
    }
}

pub type Res = Result<(), CliError>;

#[derive(Args, Clone)]
pub struct DataArg {
    /// The site's data directory.
    #[arg(long, env = "SITEREP_DATA", value_name = "DIR")]
    pub data: PathBuf,
}

impl DataArg {
    pub fn dir(&self) -> DataDir {
        DataDir::new(&self.data)
    }
}

pub fn print_json<T: serde::Serialize>(v: &T) -> Res {
    let s = serde_json::to_string_pretty(v)
        .map_err(|e| CliError::failed(format!("cannot format JSON: {e}")))?;
    println!("{s}");
    Ok(())
}

/// Prints rows under headers, columns padded to their widest cell.
pub fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    print!("{}", table_text(headers, rows));
}

/// A table with columns as wide as their widest cell.
pub fn table_text(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<String>| {
        let s: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w[i]))
            .collect();
        out.push_str(s.join("  ").trim_end());
        out.push('\n');
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r.clone());
    }
    out
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

pub fn parse_time(s: &str) -> Result<NaiveDateTime, CliError> {
    for f in [
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
            return Ok(t);
        }
    }
    Err(CliError::usage(format!(
        "invalid time {s:?}: use YYYY-MM-DDTHH:MM[:SS], e.g. 2026-12-01T22:00"
    )))
}

pub fn parse_since(s: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, CliError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    let (num, unit) = s.split_at(s.len().saturating_sub(1));
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => 0,
    };
    match num.parse::<i64>() {
        Ok(n) if secs > 0 && n >= 0 => Ok(now - chrono::Duration::seconds(n * secs)),
        _ => Err(CliError::usage(format!(
            "invalid --since {s:?}: give an RFC 3339 time or a duration like 30m, 2h, 7d"
        ))),
    }
}

pub fn parse_package(s: &str) -> Result<PackageId, CliError> {
    s.parse()
        .map_err(|e: schema::IdError| CliError::usage(e.to_string()))
}
