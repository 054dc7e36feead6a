//! Catalog sync, the pure part: reading an apt `Packages` index or a JSON catalog into
//! updates, comparing Debian versions, and working out the delta between the catalog a site
//! has and what its sources say now (added, revised, expired, superseded). No I/O and no
//! clock: the sources' text and the time come in as arguments (the plug-ins that read files
//! are in `catalog_sources`, the shell that runs a sync in `sync`).
//!
//! An apt index gives one update per package, version and architecture (id
//! `PACKAGE_VERSION_ARCH`, as the `.deb` file is named); an older version listed beside a
//! newer one is superseded by the newest. Between two syncs, a version that is gone while a
//! newer version of the same package is there is *superseded* by the newest; one that is gone
//! with its package is *expired*. A JSON source says itself what is superseded or expired;
//! an update it no longer lists expires.
//!
//! Each update belongs to the source that listed it (`Update::source`): a source's sync judges
//! only its own updates, and an id listed by two sources belongs to the first in `site.toml`.

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
            // As numbers of any length: without leading zeros, the longer is larger, and
            // two of one length compare digit by digit.
            let strip = |d: &[u8]| -> usize { d.iter().take_while(|c| **c == b'0').count() };
            let (na, nb) = (&a[strip(&a[..da])..da], &b[strip(&b[..db])..db]);
            let o = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb));
            if o != Ordering::Equal {
                return o;
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

/// The fields of an apt record this reader keeps.
const APT_FIELDS: [&str; 8] = [
    "Package",
    "Version",
    "Architecture",
    "Size",
    "Filename",
    "SHA256",
    "Description",
    "Priority",
];

/// Reads a `Packages` index (already decompressed). A record without `Package` or `Version`
/// is an error naming its first line. Older versions of a package listed beside a newer one
/// come out superseded by the newest.
pub fn parse_apt(text: &str, src: &AptSource) -> Result<Vec<Update>, String> {
    let mut out = Vec::new();
    let mut fields: [Option<&str>; APT_FIELDS.len()] = [None; APT_FIELDS.len()];
    let mut any = false;
    let mut start = 1;
    let mut prev_is_field = false;
    let finish = |fields: &mut [Option<&str>; APT_FIELDS.len()],
                  any: &mut bool,
                  start: usize,
                  out: &mut Vec<Update>|
     -> Result<(), String> {
        if !std::mem::take(any) {
            return Ok(());
        }
        let [package, version, arch, size, filename, sha256, description, priority] =
            std::mem::take(fields);
        let package =
            package.ok_or_else(|| format!("the record at line {start} has no Package field"))?;
        let version = version.ok_or_else(|| {
            format!("the record at line {start} ({package}) has no Version field")
        })?;
        let arch = arch.unwrap_or("all");
        for (field, v) in [
            ("Package", package),
            ("Version", version),
            ("Architecture", arch),
        ] {
            if v.is_empty() || v.contains(|c: char| c == '_' || c.is_whitespace()) {
                return Err(format!(
                    "the record at line {start} has {field} {v:?}: it must be non-empty, without '_' or spaces"
                ));
            }
        }
        let size: u64 = match size {
            Some(s) => s.parse().map_err(|_| {
                format!("the record at line {start} ({package}) has Size {s:?}, not a number")
            })?,
            None => 0,
        };
        let title = match description {
            Some(d) if !d.is_empty() => format!("{package} {version}: {d}"),
            _ => format!("{package} {version}"),
        };
        let files = match filename {
            Some(f) => vec![UpdateFile {
                name: f.to_string(),
                size,
                hash: sha256.unwrap_or_default().to_string(),
            }],
            None => Vec::new(),
        };
        out.push(Update {
            id: format!("{package}_{version}_{arch}"),
            title,
            product: src.product.clone(),
            classification: src.classification.clone(),
            severity: priority.map(str::to_string),
            bulletin: None,
            kb: None,
            posted: src.now,
            revised: src.now,
            superseded_by: None,
            expired: false,
            size,
            files,
            source: String::new(),
        });
        Ok(())
    };
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            finish(&mut fields, &mut any, start, &mut out)?;
            prev_is_field = false;
            start = n + 1;
            continue;
        }
        if line.starts_with(' ') || line.starts_with('\t') {
            // A continuation line (the long description): only the first line is kept.
            if !prev_is_field {
                return Err(format!(
                    "line {n} continues a field, but no field came before it"
                ));
            }
            continue;
        }
        let Some((k, v)) = line.split_once(':') else {
            return Err(format!("line {n} is not `Field: value`: {line:?}"));
        };
        if !any {
            start = n;
            any = true;
        }
        prev_is_field = true;
        if let Some(at) = APT_FIELDS.iter().position(|f| *f == k) {
            fields[at] = Some(v.trim());
        }
    }
    finish(&mut fields, &mut any, start, &mut out)?;
    // One update per id (an index listing a record twice keeps the first).
    let mut seen = std::collections::HashSet::with_capacity(out.len());
    out.retain(|u| seen.insert(u.id.clone()));
    // Older versions listed beside the newest are superseded by it.
    let all: Vec<&Update> = out.iter().collect();
    let by = apt_successors(&all, &out);
    for (u, by) in out.iter_mut().zip(by) {
        u.superseded_by = by;
    }
    Ok(out)
}

/// The package name, version and architecture of an apt update id (`PACKAGE_VERSION_ARCH`).
fn apt_parts(id: &str) -> Option<(&str, &str, &str)> {
    let (rest, arch) = id.rsplit_once('_')?;
    let (pkg, ver) = rest.split_once('_')?;
    Some((pkg, ver, arch))
}

/// The newest version (and its id) of each package and architecture in `listed`.
fn apt_newest(listed: &[Update]) -> BTreeMap<(&str, &str), (&str, &str)> {
    let mut newest: BTreeMap<(&str, &str), (&str, &str)> = BTreeMap::new();
    for u in listed {
        if let Some((p, v, a)) = apt_parts(&u.id) {
            let e = newest.entry((p, a)).or_insert((v, &u.id));
            if deb_version_cmp(v, e.0) == Ordering::Greater {
                *e = (v, &u.id);
            }
        }
    }
    newest
}

/// For each of `of`: the newest version of the same package and architecture in `listed`,
/// when it is newer. For an update gone from the index, that is what superseded it (without
/// one, it expired); for one listed beside a newer one, the same.
pub fn apt_successors(of: &[&Update], listed: &[Update]) -> Vec<Option<String>> {
    let newest = apt_newest(listed);
    of.iter()
        .map(|g| {
            let (p, v, a) = apt_parts(&g.id)?;
            newest
                .get(&(p, a))
                .filter(|(nv, _)| deb_version_cmp(nv, v) == Ordering::Greater)
                .map(|(_, nid)| nid.to_string())
        })
        .collect()
}

/// One update of a `json` source, as the file writes it (see the README's "Catalog sync").
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonUpdate {
    id: String,
    title: String,
    product: String,
    classification: String,
    #[serde(default)]
    severity: Option<String>,
    #[serde(default)]
    bulletin: Option<String>,
    #[serde(default)]
    kb: Option<String>,
    posted: DateTime<Utc>,
    #[serde(default)]
    revised: Option<DateTime<Utc>>,
    #[serde(default)]
    superseded_by: Option<String>,
    #[serde(default)]
    expired: bool,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    files: Vec<UpdateFile>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonCatalog {
    updates: Vec<JsonUpdate>,
}

/// Reads a catalog in this project's JSON format: `{"updates": [ ... ]}`. Unknown fields,
/// an empty id and an id listed twice are errors that name it.
pub fn parse_json(text: &str) -> Result<Vec<Update>, String> {
    let c: JsonCatalog = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(c.updates.len());
    for (i, j) in c.updates.into_iter().enumerate() {
        if j.id.trim().is_empty() {
            return Err(format!("update {} has an empty id", i + 1));
        }
        if !seen.insert(j.id.clone()) {
            return Err(format!(
                "update {:?} is listed twice (again as update {}): keep one",
                j.id,
                i + 1
            ));
        }
        let size = j
            .size
            .unwrap_or_else(|| j.files.iter().map(|f| f.size).sum());
        out.push(Update {
            id: j.id,
            title: j.title,
            product: j.product,
            classification: Classification::parse(&j.classification),
            severity: j.severity,
            bulletin: j.bulletin,
            kb: j.kb,
            posted: j.posted,
            revised: j.revised.unwrap_or(j.posted),
            superseded_by: j.superseded_by,
            expired: j.expired,
            size,
            files: j.files,
            source: String::new(),
        });
    }
    Ok(out)
}

/// How a source's updates are judged between syncs.
pub trait Judge {
    /// Whether `posted`/`revised` are when a sync first saw an update (apt), rather than
    /// dates the source gives (json): then they are kept from the catalog while the update
    /// is unchanged.
    fn first_seen_dates(&self) -> bool {
        false
    }
    /// For updates the source no longer lists: the update that replaces each, if any
    /// (superseded); `None` means it expired.
    fn successors(&self, gone: &[&Update], _listed: &[Update]) -> Vec<Option<String>> {
        vec![None; gone.len()]
    }
}

/// What one source of a sync gave.
pub struct SourceRead<'a> {
    pub name: &'a str,
    pub judge: &'a dyn Judge,
    /// A failure of this source fails the whole sync (`StopOnFailure=True`).
    pub stop_on_failure: bool,
    pub listed: Result<Vec<Update>, String>,
}

/// Counts of one sync's changes.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChangeCounts {
    pub added: u64,
    pub revised: u64,
    pub expired: u64,
    pub superseded: u64,
}

impl ChangeCounts {
    pub fn of(changes: &[CatalogChange]) -> Self {
        let mut c = ChangeCounts::default();
        for ch in changes {
            match ch {
                CatalogChange::Added(_) => c.added += 1,
                CatalogChange::Revised(_) => c.revised += 1,
                CatalogChange::Expired { .. } => c.expired += 1,
                CatalogChange::Superseded { .. } => c.superseded += 1,
            }
        }
        c
    }
}

/// What a sync decided.
#[derive(Debug, Default)]
pub struct SyncPlan {
    /// The changes, source by source in order; empty means no delta event.
    pub changes: Vec<CatalogChange>,
    /// The sources that failed, with why.
    pub failures: Vec<(String, String)>,
    /// A source with `StopOnFailure=True` failed: nothing is applied.
    pub stopped: bool,
    /// Updates a source listed that another source has: an earlier one in `site.toml` order
    /// that lists them too, or a failed one whose updates they are.
    pub left_to_earlier: u64,
}

/// Works out one sync: each source's changes against the catalog's updates of that source,
/// in order. An id belongs to the first source that lists it; a failed source's updates are
/// left as they are; an update that moves to another source is that source's (revised), not
/// an expiry of the one that dropped it.
pub fn plan(current: &BTreeMap<String, Update>, reads: Vec<SourceRead<'_>>) -> SyncPlan {
    use std::collections::{HashMap, HashSet};
    let mut out = SyncPlan::default();
    for r in &reads {
        if let Err(e) = &r.listed {
            out.failures.push((r.name.to_string(), e.clone()));
            out.stopped |= r.stop_on_failure;
        }
    }
    if out.stopped {
        return out;
    }
    // A failed source keeps its updates: no other source takes them over.
    let failed: HashSet<&str> = reads
        .iter()
        .filter(|r| r.listed.is_err())
        .map(|r| r.name)
        .collect();
    let kept: HashSet<&str> = current
        .values()
        .filter(|u| failed.contains(u.source.as_str()))
        .map(|u| u.id.as_str())
        .collect();
    // Who owns each id listed now: the first source that lists it.
    let mut owner: HashMap<String, usize> = HashMap::new();
    for (i, r) in reads.iter().enumerate() {
        for u in r.listed.iter().flatten() {
            if !kept.contains(u.id.as_str()) {
                owner.entry(u.id.clone()).or_insert(i);
            }
        }
    }
    let taken = |id: &str| owner.contains_key(id) || kept.contains(id);
    for (i, r) in reads.into_iter().enumerate() {
        let Ok(listed) = r.listed else {
            continue;
        };
        let before = listed.len();
        let listed: Vec<Update> = listed
            .into_iter()
            .filter(|u| owner.get(&u.id) == Some(&i))
            .map(|u| Update {
                source: r.name.to_string(),
                ..u
            })
            .collect();
        out.left_to_earlier += (before - listed.len()) as u64;
        out.changes
            .extend(diff_source(current, r.name, &listed, r.judge, &taken));
    }
    out
}

/// The changes that take the catalog's updates of source `name` to what it lists now.
/// `taken` says whether an id is listed by any source now (or kept by a failed one): such an
/// update is not gone.
fn diff_source(
    current: &BTreeMap<String, Update>,
    name: &str,
    listed: &[Update],
    judge: &dyn Judge,
    taken: &dyn Fn(&str) -> bool,
) -> Vec<CatalogChange> {
    let mut out = Vec::new();
    let first_seen = judge.first_seen_dates();
    for u in listed {
        let Some(old) = current.get(&u.id) else {
            out.push(CatalogChange::Added(u.clone()));
            continue;
        };
        let now = if first_seen {
            Update {
                posted: old.posted,
                revised: old.revised,
                ..u.clone()
            }
        } else {
            u.clone()
        };
        if now == *old {
            continue;
        }
        let only = |f: &dyn Fn(&mut Update)| {
            let mut o = old.clone();
            f(&mut o);
            o == now
        };
        let change = match (&old.superseded_by, &now.superseded_by) {
            (None, Some(by)) if only(&|o| o.superseded_by = Some(by.clone())) => {
                CatalogChange::Superseded {
                    id: u.id.clone(),
                    by: by.clone(),
                }
            }
            _ if !old.expired && now.expired && only(&|o| o.expired = true) => {
                CatalogChange::Expired { id: u.id.clone() }
            }
            _ => CatalogChange::Revised(Update {
                posted: if first_seen { old.posted } else { u.posted },
                ..u.clone()
            }),
        };
        out.push(change);
    }
    let gone: Vec<&Update> = current
        .values()
        .filter(|o| o.source == name && !o.expired && !taken(&o.id))
        .collect();
    for (old, by) in gone.iter().zip(judge.successors(&gone, listed)) {
        match by {
            // Gone, and replaced: it stays superseded by what first replaced it.
            Some(_) if old.superseded_by.is_some() => {}
            Some(by) => out.push(CatalogChange::Superseded {
                id: old.id.clone(),
                by,
            }),
            None => out.push(CatalogChange::Expired { id: old.id.clone() }),
        }
    }
    out
}

/// Applies changes to a catalog in memory, as the projection does in the database.
pub fn apply(catalog: &mut BTreeMap<String, Update>, changes: &[CatalogChange]) {
    for c in changes {
        match c {
            CatalogChange::Added(u) | CatalogChange::Revised(u) => {
                catalog.insert(u.id.clone(), u.clone());
            }
            CatalogChange::Expired { id } => {
                if let Some(u) = catalog.get_mut(id) {
                    u.expired = true;
                }
            }
            CatalogChange::Superseded { id, by } => {
                if let Some(u) = catalog.get_mut(id) {
                    u.superseded_by = Some(by.clone());
                }
            }
        }
    }
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
        assert_eq!(
            deb_version_cmp("1", "1234567890123456789012345678901234567890"),
            Ordering::Less
        );
        assert_eq!(deb_version_cmp("1.00012", "1.12"), Ordering::Equal);
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
        let e = parse_apt(
            "Package: a\nVersion: 1\n\nPackage: foo_bar\nVersion: 1\n",
            &src(),
        )
        .unwrap_err();
        assert!(e.contains("line 4") && e.contains("foo_bar"), "{e}");
        assert!(parse_apt("Package: a\nVersion:\n", &src())
            .unwrap_err()
            .contains("Version \"\""));
    }

    struct AptJudge;
    impl Judge for AptJudge {
        fn first_seen_dates(&self) -> bool {
            true
        }
        fn successors(&self, gone: &[&Update], listed: &[Update]) -> Vec<Option<String>> {
            apt_successors(gone, listed)
        }
    }
    struct JsonJudge;
    impl Judge for JsonJudge {}

    fn read<'a>(name: &'a str, judge: &'a dyn Judge, listed: Vec<Update>) -> SourceRead<'a> {
        SourceRead {
            name,
            judge,
            stop_on_failure: false,
            listed: Ok(listed),
        }
    }

    fn kinds(d: &[CatalogChange]) -> Vec<String> {
        let mut k: Vec<String> = d
            .iter()
            .map(|c| match c {
                CatalogChange::Added(u) => format!("added {}", u.id),
                CatalogChange::Revised(u) => format!("revised {}", u.id),
                CatalogChange::Expired { id } => format!("expired {id}"),
                CatalogChange::Superseded { id, by } => format!("superseded {id} by {by}"),
            })
            .collect();
        k.sort();
        k
    }

    #[test]
    fn a_second_sync_gives_exactly_the_changes() {
        let first = parse_apt(V1, &src()).unwrap();
        let mut cat: BTreeMap<String, Update> = BTreeMap::new();
        let p = plan(&cat, vec![read("deb", &AptJudge, first.clone())]);
        assert_eq!(ChangeCounts::of(&p.changes).added, 3);
        apply(&mut cat, &p.changes);
        assert!(cat.values().all(|u| u.source == "deb"));
        // Unchanged, read later: no change (first-seen dates are kept).
        let later = AptSource {
            now: src().now + chrono::Duration::days(1),
            ..src()
        };
        let again = parse_apt(V1, &later).unwrap();
        assert!(plan(&cat, vec![read("deb", &AptJudge, again)])
            .changes
            .is_empty());
        // curl upgraded, old-tool removed, a new package.
        let v2 = V1
            .replace("7.88.1-10+deb12u5", "7.88.1-10+deb12u6")
            .replace(
                "Package: old-tool\nVersion: 1.0-1\nArchitecture: all\n",
                "Package: zstd\nVersion: 1.5.4+dfsg2-5\nArchitecture: amd64\n",
            );
        let second = parse_apt(&v2, &later).unwrap();
        let p = plan(&cat, vec![read("deb", &AptJudge, second.clone())]);
        assert_eq!(
            kinds(&p.changes),
            vec![
                "added curl_7.88.1-10+deb12u6_amd64",
                "added zstd_1.5.4+dfsg2-5_amd64",
                "expired old-tool_1.0-1_all",
                "superseded curl_7.88.1-10+deb12u5_amd64 by curl_7.88.1-10+deb12u6_amd64",
            ]
        );
        apply(&mut cat, &p.changes);
        assert!(cat["old-tool_1.0-1_all"].expired);
        assert!(plan(&cat, vec![read("deb", &AptJudge, second)])
            .changes
            .is_empty());
        // old-tool comes back: revised, live again, first posted kept.
        let third = parse_apt(
            &format!("{v2}\nPackage: old-tool\nVersion: 1.0-1\n"),
            &later,
        )
        .unwrap();
        let p = plan(&cat, vec![read("deb", &AptJudge, third)]);
        assert_eq!(kinds(&p.changes), vec!["revised old-tool_1.0-1_all"]);
        let CatalogChange::Revised(u) = &p.changes[0] else {
            unreachable!()
        };
        assert!(!u.expired);
        assert_eq!(u.posted, src().now);
    }

    #[test]
    fn a_gone_version_stays_superseded_by_what_first_replaced_it() {
        let idx = |v: &str| format!("Package: a\nVersion: {v}\nArchitecture: amd64\n");
        let mut cat = BTreeMap::new();
        for (v, want) in [
            ("1", vec!["added a_1_amd64"]),
            (
                "2",
                vec!["added a_2_amd64", "superseded a_1_amd64 by a_2_amd64"],
            ),
            (
                "3",
                vec!["added a_3_amd64", "superseded a_2_amd64 by a_3_amd64"],
            ),
        ] {
            let p = plan(
                &cat,
                vec![read("deb", &AptJudge, parse_apt(&idx(v), &src()).unwrap())],
            );
            assert_eq!(kinds(&p.changes), want, "version {v}");
            apply(&mut cat, &p.changes);
        }
        assert_eq!(cat["a_1_amd64"].superseded_by.as_deref(), Some("a_2_amd64"));
        // The package goes: every version of it expires.
        let p = plan(&cat, vec![read("deb", &AptJudge, vec![])]);
        assert_eq!(
            kinds(&p.changes),
            vec![
                "expired a_1_amd64",
                "expired a_2_amd64",
                "expired a_3_amd64"
            ]
        );
    }

    #[test]
    fn an_update_that_moves_to_another_source_is_revised_not_expired() {
        let deb = parse_apt(V1, &src()).unwrap();
        let mut cat = BTreeMap::new();
        let p = plan(&cat, vec![read("deb", &AptJudge, deb.clone())]);
        apply(&mut cat, &p.changes);
        // bash leaves "deb" and shows up in "ms" (a later source).
        let bash = deb[1].clone();
        let p = plan(
            &cat,
            vec![
                read("deb", &AptJudge, vec![deb[0].clone(), deb[2].clone()]),
                read("ms", &JsonJudge, vec![bash]),
            ],
        );
        assert_eq!(kinds(&p.changes), vec!["revised bash_5.2.15-2+b2_amd64"]);
        apply(&mut cat, &p.changes);
        assert_eq!(cat["bash_5.2.15-2+b2_amd64"].source, "ms");
    }

    #[test]
    fn older_versions_in_one_index_are_superseded_by_the_newest() {
        let idx = "Package: a\nVersion: 1.0-1\nArchitecture: amd64\n\nPackage: a\nVersion: 1.0-2\nArchitecture: amd64\n\nPackage: a\nVersion: 1.0~rc1-1\nArchitecture: amd64\n\nPackage: a\nVersion: 0.9\nArchitecture: i386\n";
        let u = parse_apt(idx, &src()).unwrap();
        let by: Vec<Option<&str>> = u.iter().map(|u| u.superseded_by.as_deref()).collect();
        assert_eq!(
            by,
            vec![Some("a_1.0-2_amd64"), None, Some("a_1.0-2_amd64"), None]
        );
    }

    const J1: &str = r#"{"updates": [
        {"id": "KB5001", "title": "Security update", "product": "Windows 11", "classification": "Security",
         "severity": "Critical", "bulletin": "MS26-001", "kb": "5001", "posted": "2026-11-01T00:00:00Z",
         "files": [{"name": "kb5001.msu", "size": 100, "hash": "ab"}]},
        {"id": "KB5002", "title": "Rollup", "product": "Windows 11", "classification": "update rollup",
         "posted": "2026-11-02T00:00:00Z"}
    ]}"#;

    #[test]
    fn a_json_catalog_reads_strictly_and_judges_by_its_own_dates() {
        let u = parse_json(J1).unwrap();
        assert_eq!(u[0].size, 100);
        assert_eq!(u[0].classification, Classification::Security);
        assert_eq!(u[1].classification, Classification::UpdateRollup);
        assert_eq!(u[1].revised, u[1].posted);
        let e = parse_json(&J1.replace("KB5002", "KB5001")).unwrap_err();
        assert!(e.contains("\"KB5001\" is listed twice"), "{e}");
        let e = parse_json(&J1.replace("\"severity\"", "\"sevrity\"")).unwrap_err();
        assert!(e.contains("sevrity") && e.contains("line 3"), "{e}");
        assert!(parse_json("{").unwrap_err().contains("line 1"));

        let mut cat = BTreeMap::new();
        let p = plan(&cat, vec![read("ms", &JsonJudge, u)]);
        apply(&mut cat, &p.changes);
        // KB5001 superseded by a new KB5003; KB5002 gone (expired).
        let j2 = J1
            .replace(
                "\"kb\": \"5001\",",
                "\"kb\": \"5001\", \"superseded_by\": \"KB5003\",",
            )
            .replace("KB5002", "KB5003");
        let p = plan(&cat, vec![read("ms", &JsonJudge, parse_json(&j2).unwrap())]);
        assert_eq!(
            kinds(&p.changes),
            vec![
                "added KB5003",
                "expired KB5002",
                "superseded KB5001 by KB5003"
            ]
        );
    }

    #[test]
    fn sources_own_their_updates_and_a_failure_leaves_them_alone() {
        let deb = parse_apt(V1, &src()).unwrap();
        let ms = parse_json(J1).unwrap();
        let mut cat = BTreeMap::new();
        let p = plan(
            &cat,
            vec![
                read("deb", &AptJudge, deb.clone()),
                read("ms", &JsonJudge, ms.clone()),
            ],
        );
        assert_eq!(p.changes.len(), 5);
        apply(&mut cat, &p.changes);
        // The json source fails: its updates stay; the apt source still applies.
        let mut failing = read("ms", &JsonJudge, vec![]);
        failing.listed = Err("no such file".into());
        let p = plan(
            &cat,
            vec![read("deb", &AptJudge, deb[..2].to_vec()), failing],
        );
        assert_eq!(kinds(&p.changes), vec!["expired old-tool_1.0-1_all"]);
        assert_eq!(
            p.failures,
            vec![("ms".to_string(), "no such file".to_string())]
        );
        assert!(!p.stopped);
        // With StopOnFailure, nothing applies.
        let mut failing = read("ms", &JsonJudge, vec![]);
        failing.listed = Err("no such file".into());
        failing.stop_on_failure = true;
        let p = plan(
            &cat,
            vec![read("deb", &AptJudge, deb[..2].to_vec()), failing],
        );
        assert!(p.stopped && p.changes.is_empty());
        // A later source listing an id the first one gives leaves it to the first.
        let mut dup = ms.clone();
        dup[0].id = "bash_5.2.15-2+b2_amd64".into();
        let p = plan(
            &cat,
            vec![
                read("deb", &AptJudge, deb.clone()),
                read("ms", &JsonJudge, dup),
            ],
        );
        assert_eq!(p.left_to_earlier, 1);
        assert_eq!(kinds(&p.changes), vec!["expired KB5001"]);
    }
}
