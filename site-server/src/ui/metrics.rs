//! `/metrics` of `site-server`, in the Prometheus text format (OpenMetrics), from a snapshot
//! taken at each scrape: the views the console shows, the link counters and the sampler's
//! store size. Names follow the conventions: `siterep_` first, base units (bytes, seconds),
//! `_total` on counters, labels `peer` (a site code), `role` (`parent`, `child`),
//! `priority` (`high`, `medium`, `low`), `severity`.

use super::sampler::Shared;
use crate::sansio::links::{LinkState, Role};
use crate::site::{OpError, Site};
use dist_point::metrics::Families;
use std::collections::BTreeMap;

fn role(r: Role) -> String {
    match r {
        Role::Parent => "parent",
        Role::Child => "child",
    }
    .to_string()
}

/// The labels of a link: its peer and this site's role towards it.
fn link_labels(l: &crate::site::SiteLinkRow) -> Vec<(&'static str, String)> {
    vec![
        ("peer", l.link.peer.to_string()),
        ("role", role(l.link.role)),
    ]
}

fn u(v: u64) -> f64 {
    v as f64
}

/// Takes the snapshot (reads the database: call it on a blocking thread) and renders it.
pub fn render(site: &Site, samples: &Shared) -> Result<String, OpError> {
    let mut s = Families::default();
    let code = site.code().to_string();
    s.gauge("siterep_site_info", "This site (value 1).")
        .add(vec![("site", code.clone())], 1.0);

    // One read of the links and the process (`status sites`).
    let view = site.sites_view()?;
    let links = &view.links;
    let mut f = s.gauge(
        "siterep_link_up",
        "1 when the link to the peer is active, else 0.",
    );
    for l in links {
        let up = l.link.state == LinkState::Active;
        f.add(link_labels(l), if up { 1.0 } else { 0.0 });
    }
    let mut f = s.gauge(
        "siterep_link_failures",
        "Failed attempts or drops of the link since it was last active.",
    );
    for l in links {
        f.add(link_labels(l), f64::from(l.link.failures));
    }
    let mut f = s.counter(
        "siterep_link_connects",
        "Connections made on the link since the process started (reconnects included).",
    );
    for l in links {
        f.add(link_labels(l), u(l.link.connects));
    }
    let mut f = s.gauge(
        "siterep_child_backlog_events",
        "Events of this site's log the child has not acknowledged.",
    );
    for l in links.iter().filter(|l| l.link.role == Role::Child) {
        f.add(vec![("peer", l.link.peer.to_string())], u(l.backlog_events));
    }
    let mut f = s.gauge(
        "siterep_child_backlog_bytes",
        "Bytes of the events the child has not acknowledged.",
    );
    for l in links.iter().filter(|l| l.link.role == Role::Child) {
        f.add(vec![("peer", l.link.peer.to_string())], u(l.backlog_bytes));
    }

    let senders = site.senders();
    let mut f = s.counter("siterep_sent_bytes", "Bytes written to the peer since the process started (events, reports, chunks), by the priority of their job.");
    for l in &senders.links {
        for (p, b) in &l.sent_bytes {
            f.add(
                vec![("peer", l.dest.to_string()), ("priority", p.clone())],
                u(*b),
            );
        }
    }
    let mut f = s.gauge(
        "siterep_sender_queue_jobs",
        "Jobs queued, sending or retrying on the link, by priority.",
    );
    for l in &senders.links {
        for (p, q) in &l.queue {
            f.add(
                vec![("peer", l.dest.to_string()), ("priority", p.clone())],
                u(q.jobs),
            );
        }
    }
    let mut f = s.gauge(
        "siterep_sender_queue_bytes",
        "Bytes still queued on the link, by priority.",
    );
    for l in &senders.links {
        for (p, q) in &l.queue {
            f.add(
                vec![("peer", l.dest.to_string()), ("priority", p.clone())],
                u(q.bytes),
            );
        }
    }

    let counters = site.counters().snapshot();
    let peer_counter = |s: &mut Families,
                        name: &'static str,
                        help: &'static str,
                        get: fn(&crate::site::PeerCount) -> u64| {
        let mut f = s.counter(name, help);
        for (peer, c) in &counters {
            f.add(vec![("peer", peer.clone())], u(get(c)));
        }
    };
    peer_counter(
        &mut s,
        "siterep_received_bytes",
        "Bytes of chunks received from the peer since the process started.",
        |c| c.received_bytes,
    );
    peer_counter(
        &mut s,
        "siterep_chunks_fetched",
        "Chunks received from the peer.",
        |c| c.chunks_fetched,
    );
    peer_counter(
        &mut s,
        "siterep_chunks_verified",
        "Chunks received that hashed to their name and were stored.",
        |c| c.chunks_verified,
    );
    peer_counter(
        &mut s,
        "siterep_chunks_refused",
        "Chunks received that did not decode or hash to their name.",
        |c| c.chunks_refused,
    );

    let store = samples.lock().unwrap_or_else(|e| e.into_inner()).store;
    if let Some(st) = store {
        s.gauge(
            "siterep_content_store_bytes",
            "Bytes of the chunk files in the content store (compressed), as last counted.",
        )
        .add(vec![], u(st.bytes));
        s.gauge(
            "siterep_content_store_chunks",
            "Chunks in the content store, as last counted.",
        )
        .add(vec![], u(st.chunks));
    }

    let counts = site.db().counts()?;
    s.gauge(
        "siterep_config_log_events",
        "Events in this site's config log (its newest position).",
    )
    .add(vec![], u(counts.config_events));
    s.gauge(
        "siterep_report_log_position",
        "The newest position of this site's report log.",
    )
    .add(vec![], u(counts.reports));
    let mut f = s.gauge("siterep_config_acked_position", "The last position of this site's log the child acknowledged, or of the parent's log applied here.");
    for l in links {
        f.add(link_labels(l), u(l.config_cursor));
    }
    s.gauge(
        "siterep_catalog_version",
        "The software update catalog version applied at this site.",
    )
    .add(vec![], u(site.db().meta()?.catalog_version));
    let by_sev: BTreeMap<String, u64> = site.db().message_counts()?;
    let mut f = s.counter(
        "siterep_status_messages",
        "Status messages stored at this site (its own and its subtree's), by severity.",
    );
    for sev in ["info", "warning", "error"] {
        f.add(
            vec![("severity", sev.to_string())],
            u(by_sev.get(sev).copied().unwrap_or(0)),
        );
    }

    let p = &view.site;
    s.gauge("process_resident_memory_bytes", "Resident memory.")
        .add(vec![], u(p.rss_bytes));
    s.gauge("process_open_fds", "Open file descriptors.")
        .add(vec![], u(p.open_files));
    s.gauge("process_max_fds", "The open-file limit.")
        .add(vec![], u(p.open_files_limit));
    s.counter("process_cpu_seconds", "CPU time used (user and system).")
        .add(vec![], p.cpu_secs);
    s.gauge("siterep_db_bytes", "The database's size on disk.")
        .add(vec![], u(p.db_bytes));

    s.render()
        .map_err(|e| OpError::Internal(format!("cannot encode the metrics: {e}")))
}
