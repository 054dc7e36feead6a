//! The console's pages, rendered on the server (maud): pure functions from the views of
//! `crate::site` to HTML. Each page has a live part (`#live`) that the browser replaces with
//! what `/live/...` pushes; the rest (navigation, filters) stays.

use crate::sansio::rollups::MessageQuery;
use crate::site::{
    AdvertsView, ContentRow, HierarchyView, Known, MessageRow, SendersView, SiteRow,
};
use maud::{html, Markup, DOCTYPE};
use std::collections::{BTreeMap, VecDeque};

/// The pages, in the navigation's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Page {
    Hierarchy,
    Content,
    Senders,
    Adverts,
    Messages,
    Site,
}

impl Page {
    pub const NAV: [Page; 5] = [
        Page::Hierarchy,
        Page::Content,
        Page::Senders,
        Page::Adverts,
        Page::Messages,
    ];

    pub fn path(self) -> &'static str {
        match self {
            Page::Hierarchy => "/hierarchy",
            Page::Content => "/content",
            Page::Senders => "/senders",
            Page::Adverts => "/adverts",
            Page::Messages => "/messages",
            Page::Site => "/site",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Page::Hierarchy => "Hierarchy",
            Page::Content => "Content",
            Page::Senders => "Senders",
            Page::Adverts => "Advertisements",
            Page::Messages => "Messages",
            Page::Site => "Site",
        }
    }

    /// The page a path names (`/site/P01` is the site page).
    pub fn from_path(p: &str) -> Option<Page> {
        if p.starts_with("/site/") {
            return Some(Page::Site);
        }
        Page::NAV.into_iter().find(|x| x.path() == p)
    }
}

/// A whole page around its live part.
pub fn layout(site: &str, page: Page, heading: &str, top: Markup, live: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (site) " · " (heading) }
                link rel="stylesheet" href="/static/console.css";
            }
            body data-page=(page.title().to_lowercase()) {
                header {
                    span.site { (site) }
                    @for p in Page::NAV {
                        a href=(p.path()) class=[(p == page).then_some("here")] { (p.title()) }
                    }
                    span.right { "read-only · " a href="/logout" { "sign out" } }
                }
                main {
                    h1 { (heading) }
                    (top)
                    div #live { (live) }
                }
                script src="/static/console.js" {}
            }
        }
    }
}

/// The sign-in page.
pub fn login(site: &str, error: Option<&str>) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (site) " · sign in" }
                link rel="stylesheet" href="/static/console.css";
            }
            body {
                form.login method="post" action="/login" {
                    h1 { "Site " (site) }
                    p.muted { "Sign in with the viewer token (" code { "site-server ui token" } ") or the admin token." }
                    @if let Some(e) = error { p.err #error { (e) } }
                    input type="password" name="token" autocomplete="off" autofocus placeholder="token";
                    button type="submit" { "Sign in" }
                }
            }
        }
    }
}

fn state(s: &str) -> Markup {
    html! { span class={ "state state-" (s) } { (s) } }
}

fn bar(pct: u8) -> Markup {
    // A <progress>, not a styled span: the console's CSP allows no inline style.
    html! {
        progress.bar max="100" value=(pct.min(100)) {}
        span.pct { (pct) "%" }
    }
}

fn bytes(n: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < U.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

fn ago(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

/// The hierarchy's live part.
pub fn hierarchy(v: &HierarchyView) -> Markup {
    html! {
        table #hierarchy {
            tr { th { "Site" } th { "State" } th { "Since" } th.num { "Backlog" } th { "Last error" } th.num { "Catalog" } th { "View from the top" } th { "DPs" } }
            @for r in &v.rows { (site_row(r)) }
        }
    }
}

/// The deepest indentation the stylesheet has (deeper rows are drawn at it).
const MAX_INDENT: usize = 8;

fn site_row(r: &SiteRow) -> Markup {
    let indent = format!("depth-{}", r.depth.min(MAX_INDENT));
    html! {
        tr data-site=(r.code) data-state=(r.state) data-known=(known(r.known)) {
            td class=(indent) { a href={ "/site/" (r.code) } { (r.code) } }
            td {
                (state(&r.state))
                @match r.known {
                    Known::Reported => { " " span.stale-note { "as its parent said" } }
                    Known::Stale => { " " span.stale-note { "last word; a site on the way is unreachable" } }
                    _ => {}
                }
            }
            td { (ago(r.since)) }
            td.num { @if let (Some(e), Some(b)) = (r.backlog_events, r.backlog_bytes) { (e) " events, " (bytes(b)) } }
            td.err { @if let Some(e) = &r.last_error { (e) } }
            td.num { @if let Some(c) = r.catalog_version { (c) } }
            td { @match r.frozen { Some(true) => (state("stale")), Some(false) => "fresh", None => "" } }
            td { @for (id, s) in &r.dps { span data-dp=(id) { (id) " " (state(s)) " " } } }
        }
    }
}

fn known(k: Known) -> &'static str {
    match k {
        Known::Here => "here",
        Known::Link => "link",
        Known::Reported => "reported",
        Known::Stale => "stale",
    }
}

/// The content page's live part.
pub fn content(rows: &[ContentRow]) -> Markup {
    html! {
        @if rows.is_empty() { p.muted { "No package is published or passed on here yet." } }
        @for r in rows {
            @let here_pct = (r.chunks_present * 100).checked_div(r.chunks).unwrap_or(100).min(100) as u8;
            section data-package=(r.package) data-version=(r.source_version) {
                h2 { (r.package) " " (r.name) " v" (r.source_version) }
                p {
                    "Here: " (r.chunks_present) " of " (r.chunks) " chunks (" (bytes(r.bytes_present)) " of " (bytes(r.bytes)) ") "
                    (bar(here_pct))
                }
                table {
                    tr { th { "Site" } th { "Sent by" } th { "Sent" } th { "State" } th { "DPs targeted" } th { "Installed" } th { "Error" } }
                    @let sites: std::collections::BTreeSet<_> = r.sending.iter().map(|s| s.site).chain(r.dps.iter().map(|d| d.site)).collect();
                    @for site in &sites {
                        @let snd = r.sending.iter().find(|s| s.site == *site);
                        @let dps = r.dps.iter().find(|d| d.site == *site);
                        tr data-site=(site) data-pct=(snd.map(|s| s.pct).unwrap_or(0)) data-state=(snd.map(|s| s.state.as_str()).unwrap_or("")) {
                            td { a href={ "/site/" (site) } { (site) } }
                            td { @if let Some(s) = snd { (s.from) } }
                            td { @if let Some(s) = snd { (bar(s.pct)) } }
                            td { @if let Some(s) = snd { (state(&s.state)) } }
                            td.num { @if let Some(d) = dps { (d.targeted) } }
                            td { @if let Some(d) = dps { (d.installed) " (" (d.pct_installed) "%) " @for i in &d.dps { span title=(i.state) { (i.dp) " " } } } }
                            td.err { @if let Some(e) = snd.and_then(|s| s.error.as_ref()) { (e) } }
                        }
                    }
                }
            }
        }
    }
}

/// A bytes/s chart of the last hour, as an inline SVG polyline.
fn chart(rates: Option<&VecDeque<u64>>) -> Markup {
    let (w, h) = (360.0f64, 60.0f64);
    let Some(r) = rates.filter(|r| !r.is_empty()) else {
        return html! { span.muted { "no samples yet" } };
    };
    let max = r.iter().copied().max().unwrap_or(0).max(1) as f64;
    let n = super::sampler::KEPT as f64;
    let start = n - r.len() as f64;
    let points: Vec<String> = r
        .iter()
        .enumerate()
        .map(|(i, v)| {
            format!(
                "{:.1},{:.1}",
                (start + i as f64) * w / n,
                h - (*v as f64) * (h - 4.0) / max
            )
        })
        .collect();
    html! {
        svg.chart width=(w) height=(h) viewBox={ "0 0 " (w) " " (h) } role="img" {
            title { "bytes/s over the last hour; peak " (bytes(max as u64)) "/s" }
            polyline fill="none" stroke="#00796b" stroke-width="1.5" points=(points.join(" ")) {}
        }
        span.muted { " peak " (bytes(max as u64)) "/s" }
    }
}

/// The senders page's live part.
pub fn senders(v: &SendersView, rates: &BTreeMap<String, VecDeque<u64>>) -> Markup {
    html! {
        p.muted { "Schedules in zone " (v.zone) "." }
        @if v.links.is_empty() { p.muted { "This site sends to no child." } }
        @for l in &v.links {
            section data-link=(l.dest) {
                h2 { "To " (l.dest) " " (state(if l.connected { "active" } else { "down" })) }
                table {
                    tr { th { "Window now" } th { "Rate now" } th { "Sending now" } th.num { "Bytes/s (last minute)" } }
                    tr { td { (l.window.to_string()) } td { (l.rate.to_string()) } td { (l.current.clone().unwrap_or_default()) } td.num { (bytes(l.bytes_per_sec)) "/s" } }
                }
                table {
                    tr { th { "Priority" } th.num { "Jobs" } th.num { "Bytes queued" } th.num { "Sent since start" } }
                    @for (p, q) in ["high", "medium", "low"].iter().filter_map(|p| l.queue.get(*p).map(|q| (p, q))) {
                        tr data-priority=(p) { td { (p) } td.num { (q.jobs) } td.num { (bytes(q.bytes)) } td.num { (bytes(l.sent_bytes.get(*p).copied().unwrap_or(0))) } }
                    }
                }
                p { (chart(rates.get(l.dest.as_str()))) }
                @if !l.jobs.is_empty() {
                    table {
                        tr { th { "Package" } th { "Priority" } th { "State" } th { "Sent" } th { "Error" } }
                        @for j in &l.jobs {
                            tr { td { (j.package) " v" (j.version) } td { (j.priority) } td { (state(&j.state)) } td { (bar(j.pct)) } td.err { (j.last_error.clone().unwrap_or_default()) } }
                        }
                    }
                }
            }
        }
    }
}

/// The advertisements page's live part.
pub fn adverts(v: &AdvertsView) -> Markup {
    html! {
        @if v.adverts.is_empty() { p.muted { "No advertisement." } }
        @for a in &v.adverts {
            section data-advert=(a.id) {
                h2 { (a.id) " " (a.name) " (package " (a.package) ", collection " (a.collection) ")" @if !a.enabled { " " (state("disabled")) } }
                table {
                    tr { th { "Site" } th.num { "In collection" } th.num { "Received" } th.num { "Running" } th.num { "Succeeded" } th.num { "Failed" } th.num { "Reboot pending" } th.num { "Not applicable" } }
                    @for r in v.rows.iter().filter(|r| r.advert == Some(a.id) && r.site.is_some()) {
                        tr data-site=[r.site] { td { @if let Some(s) = r.site { (s) } } td.num { (r.in_collection) } td.num { (r.received) } td.num { (r.running) } td.num { (r.succeeded) } td.num.err { (r.failed) } td.num { (r.reboot_pending) } td.num { (r.not_applicable) } }
                    }
                }
                @let failed: Vec<_> = v.failed.iter().filter(|m| m.advert == a.id).collect();
                @if !failed.is_empty() {
                    h2 { "Failed machines" }
                    table {
                        tr { th { "Site" } th { "Machine" } th.num { "Exit code" } th { "When" } th { "Detail" } }
                        @for m in failed {
                            tr { td { (m.site) } td { (m.machine) } td.num { @if let Some(e) = m.exit { (e) } } td { (ago(Some(m.time))) } td { (m.detail) } }
                        }
                    }
                }
            }
        }
    }
}

/// The messages page's filters (outside the live part).
pub fn message_filters(q: &MessageQuery) -> Markup {
    let v = |o: Option<String>| o.unwrap_or_default();
    html! {
        form.filters method="get" action="/messages" {
            input name="id" placeholder="id" size="6" value=(v(q.id.map(|i| i.to_string())));
            input name="site" placeholder="site" size="4" value=(v(q.site.map(|s| s.to_string())));
            select name="severity" {
                option value="" { "any severity" }
                @for s in ["info", "warning", "error"] {
                    option value=(s) selected[q.severity.map(|x| x.to_string()) == Some(s.to_string())] { (s) }
                }
            }
            input name="component" placeholder="component" value=(v(q.component.clone()));
            input name="limit" placeholder="rows" size="4" value=(q.page());
            button type="submit" { "Filter" }
            a href="/messages" { "clear" }
        }
    }
}

/// The messages table (newest last, as the log holds them).
pub fn messages(rows: &[MessageRow]) -> Markup {
    html! {
        @if rows.is_empty() { p.muted { "No message matches." } }
        table #messages {
            tr { th.num { "Position" } th { "Time" } th { "Site" } th.num { "Id" } th { "Severity" } th { "Component" } th { "Machine" } th { "Text" } }
            @for m in rows {
                tr data-id=(m.id) data-site=(m.site) {
                    td.num { (m.position) } td { (ago(Some(m.time))) } td { a href={ "/site/" (m.site) } { (m.site) } } td.num { (m.id) }
                    td class={ "sev-" (m.severity) } { (m.severity) } td { (m.component) } td { (m.machine) } td { (m.text) }
                }
            }
        }
    }
}

/// One site's page: its row, and its newest messages.
pub fn site(row: Option<&SiteRow>, code: &str, recent: &[MessageRow]) -> Markup {
    html! {
        @match row {
            Some(r) => {
                table { tr { th { "Site" } th { "State" } th { "Since" } th.num { "Backlog" } th { "Last error" } th.num { "Catalog" } th { "View from the top" } th { "DPs" } } (site_row(r)) }
                p { "Parent: " @if let Some(p) = r.parent { a href={ "/site/" (p) } { (p) } } @else { "none (the top)" } }
            }
            None => p.err { "Site " (code) " is not in this site's subtree." }
        }
        h2 { "Newest messages" }
        (messages(recent))
        p { a href={ "/messages?site=" (code) } { "all of " (code) "'s messages" } }
    }
}
