//! The architecture's boundaries, checked on the source text (in the manner of
//! rust-analyzer's tidy tests). Each check names the file and the line that breaks it.
//!
//! - `site-server/src/sansio/` is pure: it names no tokio, quinn, sled, file system or clock.
//! - Only `site-server/src/db/` names sled.
//! - `schema` does no I/O and reads no clock.
//! - The libraries print nothing (printing is for the binaries' CLI).
//! - No import circles between the modules of one folder, in any crate of the workspace.
//!
//! Comments, string literals and `#[cfg(test)]` sections are not looked at: a test may read the
//! clock, and a doc may say what a module does not do.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let p = e.expect("directory entry").path();
            if p.is_dir() {
                todo.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The code of a file as lines (1-based numbers kept), without comments, string and char
/// literals, and without what follows a `#[cfg(test)]` (tests come last in a file here).
/// A file that is itself only for tests (`*_tests.rs`) is empty.
fn code_lines(path: &Path) -> Vec<(usize, String)> {
    if path.to_string_lossy().ends_with("_tests.rs") {
        return Vec::new();
    }
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = Vec::new();
    let mut in_block_comment = 0usize;
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("#[cfg(test)]") {
            break;
        }
        let b = line.as_bytes();
        let mut code = String::new();
        let mut j = 0;
        while j < b.len() {
            if in_block_comment > 0 {
                if b[j..].starts_with(b"*/") {
                    in_block_comment -= 1;
                    j += 2;
                } else if b[j..].starts_with(b"/*") {
                    in_block_comment += 1;
                    j += 2;
                } else {
                    j += 1;
                }
                continue;
            }
            if b[j..].starts_with(b"//") {
                break;
            }
            if b[j..].starts_with(b"/*") {
                in_block_comment += 1;
                j += 2;
                continue;
            }
            if b[j] == b'"' {
                // A string literal: skip to its closing quote (escapes honoured).
                j += 1;
                while j < b.len() && b[j] != b'"' {
                    j += if b[j] == b'\\' { 2 } else { 1 };
                }
                j += 1;
                code.push_str("\"\"");
                continue;
            }
            if b[j] == b'\'' && j + 2 < b.len() && (b[j + 2] == b'\'' || b[j + 1] == b'\\') {
                // A char literal ('x' or '\n'); a lifetime has no closing quote.
                let end = b[j + 1..]
                    .iter()
                    .skip(1)
                    .position(|&c| c == b'\'')
                    .map_or(b.len(), |p| j + 2 + p + 1);
                j = end;
                continue;
            }
            code.push(b[j] as char);
            j += 1;
        }
        out.push((i + 1, code));
    }
    out
}

/// Whether `code` names `word` as a whole path segment or identifier.
fn names(code: &str, word: &str) -> bool {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    code.match_indices(word).any(|(at, _)| {
        let before = code[..at].chars().next_back();
        let after = code[at + word.len()..].chars().next();
        !before.is_some_and(ident) && !after.is_some_and(ident)
    })
}

/// Every line under `dir` (except under the `except` folders) that names one of `words`.
fn offenders(dir: &Path, words: &[&str], except: &[&Path]) -> Vec<String> {
    let mut bad = Vec::new();
    for f in rust_files(dir) {
        if except.iter().any(|e| f.starts_with(e)) {
            continue;
        }
        for (n, code) in code_lines(&f) {
            for w in words {
                if names(&code, w) {
                    bad.push(format!("{}:{n}: names `{w}`: {}", f.display(), code.trim()));
                }
            }
        }
    }
    bad
}

#[track_caller]
fn assert_none(what: &str, bad: Vec<String>) {
    assert!(bad.is_empty(), "{what}:\n{}", bad.join("\n"));
}

#[test]
fn the_pure_cores_do_no_io_and_read_no_clock() {
    let dir = workspace().join("site-server/src/sansio");
    let bad = offenders(
        &dir,
        &[
            "tokio",
            "quinn",
            "sled",
            "std::fs",
            "fs::",
            "File",
            "std::net",
            "SystemTime::now",
            "Utc::now",
            "Local::now",
            "Instant::now",
            "std::thread",
        ],
        &[],
    );
    assert_none(
        "site-server/src/sansio is pure: take time and input as arguments",
        bad,
    );
    let plan = workspace().join("agent/src/plan.rs");
    let text = std::fs::read_to_string(&plan).unwrap();
    for needle in [
        "tokio",
        "std::fs",
        "fs::",
        "File",
        "Utc::now",
        "Local::now",
        "chrono::Local",
        "Instant::now",
        "std::net",
    ] {
        let code: String = text
            .lines()
            .take_while(|l| !l.starts_with("#[cfg(test)]"))
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            !code.contains(needle),
            "agent/src/plan.rs is the agent's pure core but names {needle}"
        );
    }
}

#[test]
fn only_the_db_folder_touches_sled() {
    let root = workspace();
    let mut bad = Vec::new();
    for krate in [
        "schema",
        "sender",
        "dist-point",
        "courier",
        "site-server",
        "bench",
    ] {
        bad.extend(offenders(
            &root.join(krate).join("src"),
            &["sled"],
            &[&root.join("site-server/src/db")],
        ));
    }
    assert_none("sled is used only in site-server/src/db", bad);
}

#[test]
fn schema_does_no_io_and_reads_no_clock() {
    let bad = offenders(
        &workspace().join("schema/src"),
        &[
            "tokio",
            "quinn",
            "sled",
            "std::fs",
            "fs::",
            "std::net",
            "SystemTime::now",
            "Utc::now",
            "Instant::now",
        ],
        &[],
    );
    assert_none("schema is types and encodings only", bad);
}

#[test]
fn the_libraries_print_nothing() {
    let root = workspace();
    let mut bad = Vec::new();
    for krate in ["schema", "sender", "courier", "site-server"] {
        let src = root.join(krate).join("src");
        bad.extend(offenders(
            &src,
            &["println!", "print!", "eprintln!", "eprint!", "dbg!"],
            // The binary's CLI prints; the library does not.
            &[&src.join("main.rs"), &src.join("cli")],
        ));
    }
    // The agent's commands are a file of its library (`site-server agent` runs them too).
    let src = root.join("agent/src");
    bad.extend(offenders(
        &src,
        &["println!", "print!", "eprintln!", "eprint!", "dbg!"],
        &[&src.join("main.rs"), &src.join("cli.rs")],
    ));
    assert_none(
        "a library reports through return values and tracing, never by printing",
        bad,
    );
}

/// The module path of a source file of a crate whose sources are under `src`
/// (`net/content.rs` -> `["net", "content"]`, `net/mod.rs` -> `["net"]`).
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// The modules a file names: `crate::a::b::...` and `super::...` paths, resolved against the
/// modules that exist (the longest existing prefix).
fn referenced(me: &[String], code: &str, modules: &BTreeSet<Vec<String>>) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find(['c', 's']) {
        let tail = &rest[at..];
        let prefix_ok = rest[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'));
        let base: Option<(Vec<String>, &str)> = if !prefix_ok {
            None
        } else if let Some(t) = tail.strip_prefix("crate::") {
            Some((Vec::new(), t))
        } else if tail.starts_with("super::") {
            // `super` is the parent of this file's module (`module_of` has made mod.rs its
            // folder's module).
            let mut base = me.to_vec();
            let mut t = tail;
            while let Some(n) = t.strip_prefix("super::") {
                base.pop();
                t = n;
            }
            Some((base, t))
        } else {
            None
        };
        if let Some((mut path, t)) = base {
            let segs: Vec<&str> = t
                .split("::")
                .map(|s| {
                    s.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .next()
                        .unwrap_or("")
                })
                .take_while(|s| !s.is_empty())
                .collect();
            let mut best = path.clone();
            for s in segs {
                path.push(s.to_string());
                if modules.contains(&path) {
                    best = path.clone();
                } else {
                    break;
                }
            }
            out.push(best);
        }
        rest = &rest[at + 1..];
    }
    out
}

/// The import circles among sibling modules of `src` (each folder's children, each child
/// standing for everything inside it), as `a -> b -> a` lines.
fn circles(src: &Path) -> Vec<String> {
    let files = rust_files(src);
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| module_of(src, f)).collect();
    // edges between siblings: parent folder -> (child -> children it names)
    let mut edges: BTreeMap<Vec<String>, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for f in &files {
        let me = module_of(src, f);
        for (_, code) in code_lines(f) {
            for target in referenced(&me, &code, &modules) {
                // The first place the two paths part: siblings under a common parent.
                let common = me.iter().zip(&target).take_while(|(a, b)| a == b).count();
                if common < me.len() && common < target.len() {
                    edges
                        .entry(me[..common].to_vec())
                        .or_default()
                        .entry(me[common].clone())
                        .or_default()
                        .insert(target[common].clone());
                }
            }
        }
    }
    let mut found = Vec::new();
    for (parent, g) in &edges {
        // Depth-first search for a back edge.
        fn visit(
            n: &str,
            g: &BTreeMap<String, BTreeSet<String>>,
            stack: &mut Vec<String>,
            done: &mut BTreeSet<String>,
            found: &mut Vec<Vec<String>>,
        ) {
            if let Some(i) = stack.iter().position(|s| s == n) {
                let mut c = stack[i..].to_vec();
                c.push(n.to_string());
                found.push(c);
                return;
            }
            if !done.insert(n.to_string()) {
                return;
            }
            stack.push(n.to_string());
            for m in g.get(n).into_iter().flatten() {
                visit(m, g, stack, done, found);
            }
            stack.pop();
        }
        let mut done = BTreeSet::new();
        let mut cycles = Vec::new();
        for n in g.keys() {
            visit(n, g, &mut Vec::new(), &mut done, &mut cycles);
        }
        for c in cycles {
            found.push(format!(
                "{}: {}",
                if parent.is_empty() {
                    src.display().to_string()
                } else {
                    format!("{}/{}", src.display(), parent.join("/"))
                },
                c.join(" -> ")
            ));
        }
    }
    found
}

#[test]
fn no_import_circles_between_modules() {
    let root = workspace();
    let mut bad = Vec::new();
    for krate in [
        "schema",
        "sender",
        "dist-point",
        "courier",
        "site-server",
        "agent",
        "tests",
        "bench",
    ] {
        bad.extend(circles(&root.join(krate).join("src")));
    }
    assert_none(
        "modules of one folder import each other in a circle; move what both need below them",
        bad,
    );
}

#[test]
fn the_circle_check_sees_a_circle() {
    // A check that cannot fail proves nothing: build a tiny crate with a circle.
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("net")).unwrap();
    std::fs::write(src.join("lib.rs"), "mod a;\nmod b;\nmod net;\n").unwrap();
    std::fs::write(src.join("a.rs"), "use crate::b::thing;\n").unwrap();
    std::fs::write(src.join("b.rs"), "pub fn thing() { crate::a::other() }\n").unwrap();
    std::fs::write(src.join("net/mod.rs"), "mod x;\nmod y;\n").unwrap();
    std::fs::write(
        src.join("net/x.rs"),
        "use super::y::Y; // crate::b is fine\n",
    )
    .unwrap();
    std::fs::write(src.join("net/y.rs"), "use crate::net::x::X;\n").unwrap();
    let found = circles(&src);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found[0].ends_with("a -> b -> a"), "{found:?}");
    assert!(found[1].ends_with("net: x -> y -> x"), "{found:?}");
}

#[test]
fn the_purity_check_sees_io_in_code_but_not_in_comments_strings_or_tests() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("pure.rs");
    // Built from a word, so that no grep for the crate's name finds it in this file.
    let w = "sled";
    std::fs::write(
        &f,
        format!(
            "//! never {w}\nuse {w}::Db; // {w}\nfn f() {{ let _ = \"{w}\"; }}\n#[cfg(test)]\nmod tests {{ use {w}; }}\n"
        ),
    )
    .unwrap();
    let bad = offenders(tmp.path(), &["sled"], &[]);
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert!(bad[0].contains("pure.rs:2:"), "{bad:?}");
}

/// The backticked words of a markdown file.
fn backticked(text: &str) -> Vec<String> {
    text.split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, s)| s.to_string())
        .collect()
}

#[test]
fn the_architecture_map_names_only_files_and_tests_that_exist() {
    let root = workspace();
    let text = std::fs::read_to_string(root.join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    assert!(
        text.matches("Architecture invariant:").count() >= 8,
        "ARCHITECTURE.md states its invariants as `Architecture invariant:` lines"
    );
    let all_code: String = [
        "schema",
        "sender",
        "dist-point",
        "courier",
        "site-server",
        "agent",
        "tests",
    ]
    .iter()
    .flat_map(|k| rust_files(&root.join(k)))
    .filter(|f| !f.starts_with(root.join("target")))
    .map(|f| std::fs::read_to_string(f).unwrap_or_default())
    .collect();
    let mut bad = Vec::new();
    for word in backticked(&text) {
        let is_path = word.contains('/')
            && !word.contains(' ')
            && !word.contains('*')
            && !word.contains('{')
            && (word.ends_with(".rs") || word.ends_with(".md") || word.ends_with('/'));
        // Paths are from the workspace root; inside the site-server section, from its src/.
        let exists = root.join(&word).exists() || root.join("site-server/src").join(&word).exists();
        if is_path && !exists {
            bad.push(format!("`{word}`: no such file or folder"));
        }
        // A test or function cited by name (snake_case with at least three words).
        let is_fn = word.matches('_').count() >= 3
            && word
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if is_fn && !all_code.contains(&format!("fn {word}")) {
            bad.push(format!("`{word}`: no function of that name"));
        }
    }
    assert_none("ARCHITECTURE.md names what is not there", bad);
}
