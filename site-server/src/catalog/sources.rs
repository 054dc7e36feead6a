//! Catalog sync sources: the plug-ins a top site reads its update catalog from, chosen by
//! name with arguments in CAU's syntax (see [`crate::sansio::plugin_args`]).
//!
//! - `apt`: an apt `Packages` index, plain or compressed with gzip, xz or lz4 (told apart by
//!   their magic bytes, as apt keeps them under `/var/lib/apt/lists/`).
//!   `Path=FILE` (required), `Classification=Security` (default `Update`),
//!   `Product="Debian 12"` (default: the source's name).
//! - `json`: a catalog in this project's JSON format (see [`crate::sansio::catalog_plan::parse_json`]
//!   and the README). `Path=FILE` (required).
//!
//! Every plug-in also takes `StopOnFailure=True|False` (default `False`): when `True`, a
//! failure of this source fails the whole sync and nothing is applied, as CAU's
//! `-StopOnPluginFailure`.
//!
//! Reading and parsing run on a blocking thread; what the updates mean between syncs is the
//! [`Judge`] part of each plug-in, used by the pure [`crate::sansio::catalog_plan::plan`].

use crate::config::SyncSource;
use crate::sansio::catalog_plan::{self, AptSource, Judge};
use crate::sansio::plugin_args::{self, SourceKind};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use schema::catalog::{Classification, Update};
use std::io::Read;
use std::path::{Path, PathBuf};

/// A source plug-in: reads what its upstream lists now.
#[async_trait]
pub trait SourcePlugin: Judge + Send + Sync {
    /// The plug-in's name (`apt`, `json`).
    fn plugin(&self) -> &'static str;
    /// Reads the source; `now` is when the sync started. The error says what failed and how
    /// to fix it.
    async fn read(&self, now: DateTime<Utc>) -> Result<Vec<Update>, String>;
    /// A digest of everything `read` depends on (the file's bytes and the settings), so that
    /// a sync whose every source is as before can skip reading them; `None`: unknown (always
    /// read).
    async fn fingerprint(&self) -> Option<String> {
        None
    }
}

/// The BLAKE3 of a plug-in's settings and of the file at `path` (on a blocking thread).
async fn file_fingerprint(settings: String, path: PathBuf) -> Option<String> {
    blocking(move || {
        let bytes = std::fs::read(&path).map_err(|e| e.to_string())?;
        let mut h = blake3::Hasher::new();
        h.update(&(settings.len() as u64).to_le_bytes());
        h.update(settings.as_bytes());
        h.update(&bytes);
        Ok(h.finalize().to_hex().to_string())
    })
    .await
    .ok()
}

/// A source of `site.toml`, ready to read.
pub struct Configured {
    pub name: String,
    pub plugin: Box<dyn SourcePlugin>,
    pub stop_on_failure: bool,
}

/// Builds a source from its `site.toml` entry: a known plug-in, arguments it takes, the
/// required ones given (checked by the pure [`plugin_args::source_settings`]).
pub fn build(src: &SyncSource) -> Result<Configured, String> {
    let settings = plugin_args::source_settings(&src.name, &src.plugin, &src.args)?;
    let plugin: Box<dyn SourcePlugin> = match settings.kind {
        SourceKind::Apt {
            path,
            classification,
            product,
        } => Box::new(Apt {
            path: PathBuf::from(path),
            classification,
            product,
        }),
        SourceKind::Json { path } => Box::new(Json {
            path: PathBuf::from(path),
        }),
    };
    Ok(Configured {
        name: src.name.clone(),
        plugin,
        stop_on_failure: settings.stop_on_failure,
    })
}

/// The most a source's text may decompress to (Debian's whole main index is about 100 MB).
const MAX_TEXT: u64 = 2 << 30;

/// Reads a file whole, decompressing gzip, xz or lz4 (by magic bytes); anything else is
/// taken as plain text. Bytes that are not UTF-8 are replaced, not refused.
pub fn read_text(path: &Path) -> Result<String, String> {
    let raw = std::fs::read(path).map_err(|e| {
        format!(
            "cannot read {}: {e}: check the Path argument",
            path.display()
        )
    })?;
    let (kind, reader): (&str, Box<dyn Read + '_>) = if raw.starts_with(&[0x1f, 0x8b]) {
        (
            "gzip",
            Box::new(flate2::read::MultiGzDecoder::new(&raw[..])),
        )
    } else if raw.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        (
            "xz",
            Box::new(liblzma::read::XzDecoder::new_multi_decoder(&raw[..])),
        )
    } else if raw.starts_with(&[0x04, 0x22, 0x4d, 0x18]) {
        (
            "lz4",
            Box::new(lz4_flex::frame::FrameDecoder::new(&raw[..])),
        )
    } else {
        return Ok(String::from_utf8(raw)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()));
    };
    let mut out = Vec::with_capacity(raw.len() * 4);
    reader
        .take(MAX_TEXT + 1)
        .read_to_end(&mut out)
        .map_err(|e| {
            format!(
                "{} does not decompress ({kind}): {e}: is the file whole?",
                path.display()
            )
        })?;
    if out.len() as u64 > MAX_TEXT {
        return Err(format!(
            "{} decompresses to more than {} GiB: that is no catalog index",
            path.display(),
            MAX_TEXT >> 30
        ));
    }
    Ok(String::from_utf8(out)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

/// Runs `f` on a blocking thread (reading and parsing an index is CPU work).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("the reader thread failed: {e}"))?
}

struct Apt {
    path: PathBuf,
    classification: Classification,
    product: String,
}

impl Judge for Apt {
    fn first_seen_dates(&self) -> bool {
        true
    }
    fn successors(&self, gone: &[&Update], listed: &[Update]) -> Vec<Option<String>> {
        catalog_plan::apt_successors(gone, listed)
    }
}

#[async_trait]
impl SourcePlugin for Apt {
    fn plugin(&self) -> &'static str {
        "apt"
    }
    async fn read(&self, now: DateTime<Utc>) -> Result<Vec<Update>, String> {
        let src = AptSource {
            classification: self.classification.clone(),
            product: self.product.clone(),
            now,
        };
        let path = self.path.clone();
        blocking(move || {
            let text = read_text(&path)?;
            catalog_plan::parse_apt(&text, &src).map_err(|e| format!("{}: {e}", path.display()))
        })
        .await
    }
    async fn fingerprint(&self) -> Option<String> {
        let settings = format!("apt\n{}\n{}", self.classification, self.product);
        file_fingerprint(settings, self.path.clone()).await
    }
}

struct Json {
    path: PathBuf,
}

impl Judge for Json {}

#[async_trait]
impl SourcePlugin for Json {
    fn plugin(&self) -> &'static str {
        "json"
    }
    async fn read(&self, _now: DateTime<Utc>) -> Result<Vec<Update>, String> {
        let path = self.path.clone();
        blocking(move || {
            let text = read_text(&path)?;
            catalog_plan::parse_json(&text).map_err(|e| format!("{}: {e}", path.display()))
        })
        .await
    }
    async fn fingerprint(&self) -> Option<String> {
        file_fingerprint("json".into(), self.path.clone()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn src(plugin: &str, args: &str) -> SyncSource {
        SyncSource {
            name: "s".into(),
            plugin: plugin.into(),
            args: args.into(),
        }
    }

    #[test]
    fn sources_build_from_their_arguments_or_say_what_is_wrong() {
        let c = build(&src(
            "apt",
            r#"Path=/x/Packages;Classification=Security;Product="Debian 12";StopOnFailure=True"#,
        ))
        .unwrap();
        assert!(c.stop_on_failure);
        assert_eq!(c.plugin.plugin(), "apt");
        for (plugin, args, want) in [
            ("apt", "Classification=Security", "needs Path"),
            ("apt", "Path=", "Path is empty"),
            ("apt", "Path=/x;Colour=red", "takes no argument Colour"),
            ("json", "Path=/x;Product=p", "takes no argument Product"),
            ("apt", "Path=/x;StopOnFailure=maybe", "write True or False"),
            ("apt", "Path=\"/x", "quote"),
            ("wsus", "Path=/x", "no plug-in named \"wsus\""),
        ] {
            let e = build(&src(plugin, args)).err().expect(args);
            assert!(e.starts_with("sync source s:") && e.contains(want), "{e}");
        }
    }

    #[test]
    fn compressed_indexes_read_the_same_as_plain_ones() {
        let text = "Package: a\nVersion: 1\n\n".repeat(1000);
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("Packages");
        std::fs::write(&plain, &text).unwrap();
        let gz = dir.path().join("Packages.gz");
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(text.as_bytes()).unwrap();
        std::fs::write(&gz, e.finish().unwrap()).unwrap();
        let xz = dir.path().join("Packages.xz");
        let mut e = liblzma::write::XzEncoder::new(Vec::new(), 6);
        e.write_all(text.as_bytes()).unwrap();
        std::fs::write(&xz, e.finish().unwrap()).unwrap();
        let lz4 = dir.path().join("Packages.lz4");
        let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
        e.write_all(text.as_bytes()).unwrap();
        std::fs::write(&lz4, e.finish().unwrap()).unwrap();
        for p in [&plain, &gz, &xz, &lz4] {
            assert_eq!(read_text(p).unwrap(), text, "{}", p.display());
        }
        // A truncated xz file is an error naming the file, never half an index.
        let raw = std::fs::read(&xz).unwrap();
        std::fs::write(&xz, &raw[..raw.len() / 2]).unwrap();
        let e = read_text(&xz).unwrap_err();
        assert!(e.contains("Packages.xz") && e.contains("xz"), "{e}");
        let e = read_text(&dir.path().join("nope")).unwrap_err();
        assert!(e.contains("check the Path argument"), "{e}");
    }
}
