//! Plug-in arguments in the syntax of CAU's plug-ins (the seed's "CAU 플러그 인 인수 지정"):
//! `Name1=Value1;Name2="Value with spaces";'Flag'='True'`, parsed strictly.
//!
//! - pairs are separated by `;` (one trailing `;` and spaces around pairs are allowed);
//! - a name is letters, digits, `_`, `-` or `.`, starting with a letter, optionally quoted;
//! - a value is bare (no spaces, quotes or `;`) or quoted with `"` or `'`; inside quotes
//!   anything goes, and the quote itself is written twice (`"say ""hi"""`), so
//!   `QueryString="UpdateID=''f6ce...'' and IsInstalled=0"` keeps its two single quotes;
//! - a name given twice, a pair without `=`, an empty name or an unterminated quote is an
//!   error that says where and how to fix it.

use schema::catalog::Classification;
use std::collections::BTreeMap;

/// Parsed arguments, by name (as written).
pub type PluginArgs = BTreeMap<String, String>;

/// Parses an argument string.
pub fn parse(s: &str) -> Result<PluginArgs, String> {
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut out = PluginArgs::new();
    let skip_ws = |i: &mut usize| {
        while *i < chars.len() && chars[*i].is_whitespace() {
            *i += 1;
        }
    };
    let mut n = 0;
    loop {
        skip_ws(&mut i);
        if i >= chars.len() {
            break;
        }
        n += 1;
        let at = i;
        let name = token(&chars, &mut i, true).map_err(|e| format!("argument {n}: {e}"))?;
        skip_ws(&mut i);
        if i >= chars.len() || chars[i] != '=' {
            return Err(format!(
                "argument {n} ({name:?}) has no `=` at column {}: write Name=Value",
                i + 1
            ));
        }
        i += 1;
        skip_ws(&mut i);
        let value =
            token(&chars, &mut i, false).map_err(|e| format!("argument {n} ({name}): {e}"))?;
        let ok_name = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !ok_name {
            return Err(format!(
                "argument {n} at column {}: {name:?} is not a valid name (letters, digits, '_', '-', '.', starting with a letter)",
                at + 1
            ));
        }
        if let Some(prev) = out.keys().find(|k| k.eq_ignore_ascii_case(&name)) {
            return Err(format!(
                "argument {name} is given twice (also as {prev}): keep one"
            ));
        }
        out.insert(name.clone(), value);
        skip_ws(&mut i);
        if i >= chars.len() {
            break;
        }
        if chars[i] != ';' {
            return Err(format!(
                "unexpected {:?} at column {} after argument {name}: separate pairs with `;`, and quote a value with spaces (Name=\"Value with spaces\")",
                chars[i],
                i + 1
            ));
        }
        i += 1;
    }
    Ok(out)
}

/// A name or a value: quoted (`"..."` or `'...'`, the quote doubled inside) or bare.
fn token(chars: &[char], i: &mut usize, is_name: bool) -> Result<String, String> {
    let what = if is_name { "name" } else { "value" };
    let start = *i;
    if let Some(&q) = chars.get(*i).filter(|c| **c == '"' || **c == '\'') {
        *i += 1;
        let mut out = String::new();
        loop {
            match chars.get(*i) {
                None => {
                    return Err(format!(
                        "the quote at column {} is never closed: add the closing {q}",
                        start + 1
                    ))
                }
                Some(&c) if c == q => {
                    if chars.get(*i + 1) == Some(&q) {
                        out.push(q);
                        *i += 2;
                    } else {
                        *i += 1;
                        return Ok(out);
                    }
                }
                Some(&c) => {
                    out.push(c);
                    *i += 1;
                }
            }
        }
    }
    let mut out = String::new();
    while let Some(&c) = chars.get(*i) {
        if c == ';' || (is_name && c == '=') || (c.is_whitespace() && is_name) {
            break;
        }
        if c.is_whitespace() {
            // A bare value ends at a space only if nothing but `;` or the end follows.
            let rest: String = chars[*i..].iter().collect();
            let after = rest.trim_start();
            if after.is_empty() || after.starts_with(';') {
                break;
            }
            return Err(format!(
                "the value at column {} has a space in it: quote it (Name=\"Value with spaces\")",
                start + 1
            ));
        }
        if c == '"' || c == '\'' {
            return Err(format!(
                "a quote at column {} inside a bare {what}: quote the whole {what}",
                *i + 1
            ));
        }
        out.push(c);
        *i += 1;
    }
    if out.is_empty() && is_name {
        return Err(format!("an empty name at column {}", start + 1));
    }
    Ok(out)
}

/// Checks `args` against what a plug-in takes: every name known, every required one given.
pub fn check(
    plugin: &str,
    args: &PluginArgs,
    known: &[&str],
    required: &[&str],
) -> Result<(), String> {
    for name in args.keys() {
        if !known.iter().any(|k| k.eq_ignore_ascii_case(name)) {
            return Err(format!(
                "plug-in {plugin} takes no argument {name}: it takes {}",
                known.join(", ")
            ));
        }
    }
    for r in required {
        match get(args, r) {
            None => {
                return Err(format!(
                    "plug-in {plugin} needs {r}=...: add it to its arguments"
                ))
            }
            Some(v) if v.trim().is_empty() => {
                return Err(format!("plug-in {plugin}: {r} is empty: give it a value"))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// The value of `name` (names are matched without regard to case).
pub fn get<'a>(args: &'a PluginArgs, name: &str) -> Option<&'a str> {
    args.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The catalog source plug-ins this build knows.
pub const PLUGINS: &[&str] = &["apt", "json"];

/// A catalog source's settings, checked: which plug-in reads it, with what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceSettings {
    /// `StopOnFailure=True`: a failure of this source fails the whole sync.
    pub stop_on_failure: bool,
    /// The plug-in and its own settings.
    pub kind: SourceKind,
}

/// A plug-in with its own settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceKind {
    /// An apt `Packages` index at `path`; its updates get `classification` and `product`.
    Apt {
        path: String,
        classification: Classification,
        product: String,
    },
    /// A catalog in this project's JSON format at `path`.
    Json { path: String },
}

/// Checks a source of `site.toml` (its name, plug-in and argument string) and returns its
/// settings, or what is wrong with it and how to fix it.
pub fn source_settings(name: &str, plugin: &str, args: &str) -> Result<SourceSettings, String> {
    let fail = |e: String| format!("sync source {name}: {e}");
    let args = parse(args).map_err(|e| fail(format!("arguments: {e}")))?;
    let stop_on_failure = match get(&args, "StopOnFailure") {
        None => false,
        Some(v) if v.eq_ignore_ascii_case("true") => true,
        Some(v) if v.eq_ignore_ascii_case("false") => false,
        Some(v) => return Err(fail(format!("StopOnFailure={v}: write True or False"))),
    };
    let path = |args: &PluginArgs| get(args, "Path").unwrap_or_default().to_string();
    let kind = match plugin {
        "apt" => {
            check(
                "apt",
                &args,
                &["Path", "Classification", "Product", "StopOnFailure"],
                &["Path"],
            )
            .map_err(fail)?;
            SourceKind::Apt {
                path: path(&args),
                classification: get(&args, "Classification")
                    .map(Classification::parse)
                    .unwrap_or(Classification::Update),
                product: get(&args, "Product").unwrap_or(name).to_string(),
            }
        }
        "json" => {
            check("json", &args, &["Path", "StopOnFailure"], &["Path"]).map_err(fail)?;
            SourceKind::Json { path: path(&args) }
        }
        other => {
            return Err(fail(format!(
                "no plug-in named {other:?}: use one of {}",
                PLUGINS.join(", ")
            )))
        }
    };
    Ok(SourceSettings {
        stop_on_failure,
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Vec<(String, String)> {
        parse(s).unwrap().into_iter().collect()
    }
    fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_seeds_own_examples() {
        assert_eq!(
            p("Name1=Value1;Name2=Value2;Name3=Value3"),
            kv(&[
                ("Name1", "Value1"),
                ("Name2", "Value2"),
                ("Name3", "Value3")
            ])
        );
        assert_eq!(
            p("Name1=\"Value with Spaces\""),
            kv(&[("Name1", "Value with Spaces")])
        );
        assert_eq!(
            p("'IncludeRecommendedUpdates'='True'"),
            kv(&[("IncludeRecommendedUpdates", "True")])
        );
        assert_eq!(
            p("QueryString=\"IsInstalled=0 and Type='Software' and IsHidden=0 and IsAssigned=1\""),
            kv(&[(
                "QueryString",
                "IsInstalled=0 and Type='Software' and IsHidden=0 and IsAssigned=1"
            )])
        );
        assert_eq!(
            p("QueryString=\"UpdateID=''f6ce46c1-971c-43f9-a2aa-783df125f003'' and IsInstalled=0\""),
            kv(&[("QueryString", "UpdateID=''f6ce46c1-971c-43f9-a2aa-783df125f003'' and IsInstalled=0")])
        );
        assert_eq!(
            p("DisableAclChecks='True'"),
            kv(&[("DisableAclChecks", "True")])
        );
        // Spaces around pairs, a trailing `;`, a `;` inside quotes, a doubled quote.
        assert_eq!(
            p(" Path=/var/lib/apt/lists/x_Packages ; Product=\"Debian 12; main\" ; Say=\"a \"\"b\"\"\";"),
            kv(&[
                ("Path", "/var/lib/apt/lists/x_Packages"),
                ("Product", "Debian 12; main"),
                ("Say", "a \"b\""),
            ])
        );
        assert!(p("").is_empty());
    }

    #[test]
    fn bad_input_says_where_and_how() {
        for (s, needle) in [
            ("Path", "no `=`"),
            ("Path=a b", "quote it"),
            ("Path=\"open", "never closed"),
            ("A=1;A=2", "given twice"),
            ("Path=/a;path=/b", "given twice (also as Path)"),
            ("=1", "empty name"),
            ("1x=2", "not a valid name"),
            ("A=1 B=2", "quote it"),
            ("A=x\"y", "inside a bare value"),
            ("A=\"x\"y", "separate pairs"),
        ] {
            let e = parse(s).unwrap_err();
            assert!(e.contains(needle), "{s:?}: {e}");
        }
        let args = parse("Path=/x;Classification=Security").unwrap();
        assert!(check(
            "apt",
            &args,
            &["Path", "Classification", "Product"],
            &["Path"]
        )
        .is_ok());
        assert!(check("apt", &args, &["Path"], &["Path"])
            .unwrap_err()
            .contains("no argument Classification"));
        assert!(check(
            "apt",
            &parse("Product=x").unwrap(),
            &["Path", "Product"],
            &["Path"]
        )
        .unwrap_err()
        .contains("needs Path"));
        assert_eq!(get(&args, "path"), Some("/x"));
    }
}
