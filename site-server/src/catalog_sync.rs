//! Catalog sync, the pure part: reading an apt `Packages` index into updates, comparing
//! Debian versions, and working out the delta between the catalog a site has and what its
//! sources say now (added, revised, expired, superseded).
//!
//! An apt index gives one update per package, version and architecture (id
//! `PACKAGE_VERSION_ARCH`, as the `.deb` file is named). Between two syncs, a version that is
//! gone while a newer version of the same package is there is *superseded* by the newest;
//! one that is gone with its package is *expired*.

use chrono::{DateTime, Utc};
use schema::catalog::{CatalogChange, Classification, Update, UpdateFile};
use std::cmp::Ordering;
use std::collections::BTreeMap;

/// Compares two Debian version strings as dpkg does (`epoch:upstream-revision`, `~` sorts
/// before everything, digits compare as numbers).
pub fn deb_version_cmp(a: &str, b: &str) -> Ordering {
    fn split(v: &str) -> (u64, &str, &str) {
        let (epoch, rest) = match v.split_once(':') {
            Some((e, r)) if e.bytes().all(|c| c.is_ascii_digit()) => (e.parse().unwrap_or(0), r),
            _ => (0, v),
        };
        match rest.rsplit_once('-') {
            Some((u, r)) => (epoch, u, r),
            None => (epoch, rest, ""),
        }
    }
    fn order(c: Option<u8>) -> i32 {
        match c {
            None => 0,
            Some(b'~') => -1,
            Some(c) if c.is_ascii_alphabetic() => c as i32,
            Some(c) => c as i32 + 256,
        }
    }
    fn part(a: &str, b: &str) -> Ordering {
        let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
        while !a.is_empty() || !b.is_empty() {
            // The non-digit prefix, character by character.
            loop {
                let ca = a.first().copied().filter(|c| !c.is_ascii_digit());
                let cb = b.first().copied().filter(|c| !c.is_ascii_digit());
                if ca.is_none() && cb.is_none() {
                    break;
                }
                let (oa, ob) = (order(ca), order(cb));
                if oa != ob {
                    return oa.cmp(&ob);
                }
                a = &a[ca.map_or(0, |_| 1)..];
                b = &b[cb.map_or(0, |_| 1)..];
            }
            // Then the digits, as numbers.
            let da = a.iter().take_while(|c| c.is_ascii_digit()).count();
            let db = b.iter().take_while(|c| c.is_ascii_digit()).count();
            let na = std::str::from_utf8(&a[..da])
                .ok()
                .and_then(|s| s.trim_start_matches('0').parse::<u128>().ok())
                .unwrap_or(0);
            let nb = std::str::from_utf8(&b[..db])
                .ok()
                .and_then(|s| s.trim_start_matches('0').parse::<u128>().ok())
                .unwrap_or(0);
            if na != nb {
                return na.cmp(&nb);
            }
            a = &a[da..];
            b = &b[db..];
        }
        Ordering::Equal
    }
    let (ea, ua, ra) = split(a);
    let (eb, ub, rb) = split(b);
    ea.cmp(&eb)
        .then_with(|| part(ua, ub))
        .then_with(|| part(ra, rb))
}

/// What an apt source is told (its plug-in arguments).
pub struct AptSource {
    pub classification: Classification,
    pub product: String,
    /// When the index was read (what `posted` becomes for updates first seen now).
    pub now: DateTime<Utc>,
}

/// Reads a `Packages` index (already decompressed). A record without `Package` or `Version`
/// is an error naming its first line.
pub fn parse_apt(text: &str, src: &AptSource) -> Result<Vec<Update>, String> {
    let mut out = Vec::new();
    let mut fields: BTreeMap<String, String> = BTreeMap::new();
    let mut start = 1;
    let mut last: Option<String> = None;
    let mut finish = |fields: &mut BTreeMap<String, String>, start: usize| -> Result<(), String> {
        if fields.is_empty() {
            return Ok(());
        }
        let get = |k: &str| fields.get(k).map(|s| s.trim().to_string());
        let package = get("Package")
            .ok_or_else(|| format!("the record at line {start} has no Package field"))?;
        let version = get("Version").ok_or_else(|| {
            format!("the record at line {start} ({package}) has no Version field")
        })?;
        let arch = get("Architecture").unwrap_or_else(|| "all".into());
        let size: u64 = match get("Size") {
            Some(s) => s.parse().map_err(|_| {
                format!("the record at line {start} ({package}) has Size {s:?}, not a number")
            })?,
            None => 0,
        };
        let title = get("Description")
            .and_then(|d| d.lines().next().map(str::to_string))
            .map(|d| format!("{package} {version}: {d}"))
            .unwrap_or_else(|| format!("{package} {version}"));
        let files = match get("Filename") {
            Some(f) => vec![UpdateFile {
                name: f,
                size,
                hash: get("SHA256").or_else(|| get("MD5sum")).unwrap_or_default(),
            }],
            None => Vec::new(),
        };
        out.push(Update {
            id: format!("{package}_{version}_{arch}"),
            title,
            product: src.product.clone(),
            classification: src.classification.clone(),
            severity: get("Priority"),
            bulletin: None,
            kb: None,
            posted: src.now,
            revised: src.now,
            superseded_by: None,
            expired: false,
            size,
            files,
        });
        fields.clear();
        Ok(())
    };
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            finish(&mut fields, start)?;
            last = None;
            start = n + 1;
            continue;
        }
        if line.starts_with(' ') || line.starts_with('\t') {
            match &last {
                Some(k) => {
                    let v = fields.get_mut(k).expect("field seen");
                    v.push('\n');
                    v.push_str(line.trim());
                }
                None => {
                    return Err(format!(
                        "line {n} continues a field, but no field came before it"
                    ))
                }
            }
            continue;
        }
        let Some((k, v)) = line.split_once(':') else {
            return Err(format!("line {n} is not `Field: value`: {line:?}"));
        };
        if fields.is_empty() {
            start = n;
        }
        fields.insert(k.to_string(), v.trim().to_string());
        last = Some(k.to_string());
    }
    finish(&mut fields, start)?;
    Ok(out)
}

/// The package name and version of an apt update id (`PACKAGE_VERSION_ARCH`).
fn apt_parts(id: &str) -> Option<(&str, &str, &str)> {
    let (rest, arch) = id.rsplit_once('_')?;
    let (pkg, ver) = rest.split_once('_')?;
    Some((pkg, ver, arch))
}

/// The changes that take `current` (the catalog, by id) to what the source says now.
/// Unchanged updates make no change; an empty result means no delta event.
pub fn diff(current: &BTreeMap<String, Update>, now: &[Update]) -> Vec<CatalogChange> {
    let mut out = Vec::new();
    let by_id: BTreeMap<&str, &Update> = now.iter().map(|u| (u.id.as_str(), u)).collect();
    for u in now {
        match current.get(&u.id) {
            None => out.push(CatalogChange::Added(u.clone())),
            Some(old) if old.expired || old.superseded_by.is_some() => {
                // Back in the index: revised, live again.
                out.push(CatalogChange::Revised(Update {
                    posted: old.posted,
                    ..u.clone()
                }))
            }
            Some(old) => {
                let same = Update {
                    posted: old.posted,
                    revised: old.revised,
                    ..u.clone()
                };
                if same != *old {
                    out.push(CatalogChange::Revised(Update {
                        posted: old.posted,
                        ..u.clone()
                    }));
                }
            }
        }
    }
    // Newest version per (package, arch) in the new index.
    let mut newest: BTreeMap<(&str, &str), (&str, &str)> = BTreeMap::new();
    for u in now {
        if let Some((p, v, a)) = apt_parts(&u.id) {
            let e = newest.entry((p, a)).or_insert((v, &u.id));
            if deb_version_cmp(v, e.0) == Ordering::Greater {
                *e = (v, &u.id);
            }
        }
    }
    for (id, old) in current {
        if by_id.contains_key(id.as_str()) || old.expired || old.superseded_by.is_some() {
            continue;
        }
        let by = apt_parts(id).and_then(|(p, v, a)| {
            newest
                .get(&(p, a))
                .filter(|(nv, _)| deb_version_cmp(nv, v) == Ordering::Greater)
                .map(|(_, nid)| nid.to_string())
        });
        out.push(match by {
            Some(by) => CatalogChange::Superseded { id: id.clone(), by },
            None => CatalogChange::Expired { id: id.clone() },
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_versions_compare_as_dpkg_does() {
        for (a, b) in [
            ("1.0", "1.1"),
            ("1.9", "1.10"),
            ("1.0~rc1", "1.0"),
            ("1.0", "1.0-1"),
            ("1.0-1", "1.0-2"),
            ("1:9.9", "2:0.1"),
            ("1.2.3a", "1.2.3b"),
            ("7.88.1-10+deb12u5", "7.88.1-10+deb12u6"),
            ("1.0a", "1.0+"),
        ] {
            assert_eq!(deb_version_cmp(a, b), Ordering::Less, "{a} < {b}");
            assert_eq!(deb_version_cmp(b, a), Ordering::Greater, "{b} > {a}");
        }
        assert_eq!(deb_version_cmp("1.0-1", "1.0-1"), Ordering::Equal);
        assert_eq!(deb_version_cmp("0:1.0", "1.0"), Ordering::Equal);
    }

    fn src() -> AptSource {
        AptSource {
            classification: Classification::Security,
            product: "Debian 12".into(),
            now: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
        }
    }

    const V1: &str = "Package: curl\nVersion: 7.88.1-10+deb12u5\nArchitecture: amd64\nSize: 315000\nFilename: pool/main/c/curl/curl_7.88.1-10+deb12u5_amd64.deb\nSHA256: aa\nDescription: command line tool for transferring data with URL syntax\n long description\n .\n more\n\nPackage: bash\nVersion: 5.2.15-2+b2\nArchitecture: amd64\nSize: 1500000\nPriority: required\n\nPackage: old-tool\nVersion: 1.0-1\nArchitecture: all\n";

    #[test]
    fn an_index_reads_into_updates_and_bad_records_are_named() {
        let u = parse_apt(V1, &src()).unwrap();
        assert_eq!(u.len(), 3);
        assert_eq!(u[0].id, "curl_7.88.1-10+deb12u5_amd64");
        assert!(u[0].title.contains("command line tool"));
        assert_eq!(u[0].files[0].hash, "aa");
        assert_eq!(u[1].severity.as_deref(), Some("required"));
        let e = parse_apt(
            "Package: a\nVersion: 1\n\nPackage: b\nArchitecture: all\n",
            &src(),
        )
        .unwrap_err();
        assert!(e.contains("line 4") && e.contains("no Version"), "{e}");
        let e = parse_apt("Version: 1\n", &src()).unwrap_err();
        assert!(e.contains("line 1") && e.contains("no Package"), "{e}");
        assert!(parse_apt("Package a\n", &src())
            .unwrap_err()
            .contains("line 1"));
    }

    #[test]
    fn a_second_sync_gives_exactly_the_changes() {
        let first = parse_apt(V1, &src()).unwrap();
        let mut cat: BTreeMap<String, Update> = BTreeMap::new();
        for c in diff(&cat, &first) {
            let CatalogChange::Added(u) = c else {
                panic!("{c:?}")
            };
            cat.insert(u.id.clone(), u);
        }
        assert_eq!(cat.len(), 3);
        assert!(diff(&cat, &first).is_empty(), "unchanged: no changes");
        // curl upgraded, old-tool removed, a new package.
        let v2 = V1
            .replace("7.88.1-10+deb12u5", "7.88.1-10+deb12u6")
            .replace(
                "Package: old-tool\nVersion: 1.0-1\nArchitecture: all\n",
                "Package: zstd\nVersion: 1.5.4+dfsg2-5\nArchitecture: amd64\n",
            );
        let second = parse_apt(&v2, &src()).unwrap();
        let mut d = diff(&cat, &second);
        d.sort_by_key(|c| format!("{c:?}"));
        let kinds: Vec<String> = d
            .iter()
            .map(|c| match c {
                CatalogChange::Added(u) => format!("added {}", u.id),
                CatalogChange::Revised(u) => format!("revised {}", u.id),
                CatalogChange::Expired { id } => format!("expired {id}"),
                CatalogChange::Superseded { id, by } => format!("superseded {id} by {by}"),
            })
            .collect();
        assert_eq!(
            kinds,
            vec![
                "added curl_7.88.1-10+deb12u6_amd64",
                "added zstd_1.5.4+dfsg2-5_amd64",
                "expired old-tool_1.0-1_all",
                "superseded curl_7.88.1-10+deb12u5_amd64 by curl_7.88.1-10+deb12u6_amd64",
            ]
        );
    }
}
