//! `/metrics` of `site-server`, in the Prometheus text format (OpenMetrics), from a snapshot
//! taken at each scrape: the views the console shows, the link counters and the sampler's
//! store size. Names follow the conventions: `siterep_` first, base units (bytes, seconds),
//! `_total` on counters, labels `peer` (a site code), `role` (`parent`, `child`),
//! `priority` (`high`, `medium`, `low`), `severity`.

use super::sampler::Shared;
use crate::sansio::links::{LinkState, Role};
use crate::site::{OpError, Site};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;

type Labels = Vec<(&'static str, String)>;

/// One metric family: its name, help, type and samples.
#[derive(Debug)]
struct Family {
    name: &'static str,
    help: &'static str,
    counter: bool,
    samples: Vec<(Labels, f64)>,
}

/// Everything one scrape shows.
#[derive(Debug, Default)]
struct Snapshot {
    families: Vec<Family>,
}

impl Snapshot {
    fn family(&mut self, name: &'static str, help: &'static str, counter: bool) -> &mut Family {
        self.families.push(Family {
            name,
            help,
            counter,
            samples: Vec::new(),
        });
        self.families.last_mut().expect("pushed")
    }
}

impl Family {
    fn add(&mut self, labels: Labels, v: impl Into<f64>) -> &mut Self {
        self.samples.push((labels, v.into()));
        self
    }
}

impl Collector for Snapshot {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        for f in &self.families {
            let kind = if f.counter {
                MetricType::Counter
            } else {
                MetricType::Gauge
            };
            let mut m = enc.encode_descriptor(f.name, f.help, None, kind)?;
            // One sample without labels: no `{}` after the name.
            if let [(labels, v)] = &f.samples[..] {
                if labels.is_empty() {
                    if f.counter {
                        ConstCounter::new(*v as u64).encode(m)?;
                    } else {
                        ConstGauge::new(*v).encode(m)?;
                    }
                    continue;
                }
            }
            for (labels, v) in &f.samples {
                let fam = m.encode_family(labels)?;
                if f.counter {
                    ConstCounter::new(*v as u64).encode(fam)?;
                } else {
                    ConstGauge::new(*v).encode(fam)?;
                }
            }
        }
        Ok(())
    }
}

fn role(r: Role) -> String {
    match r {
        Role::Parent => "parent",
        Role::Child => "child",
    }
    .to_string()
}

fn u(v: u64) -> f64 {
    v as f64
}

/// Takes the snapshot (reads the database: call it on a blocking thread) and renders it.
pub fn render(site: &Site, samples: &Shared) -> Result<String, OpError> {
    let mut s = Snapshot::default();
    let code = site.code().to_string();
    s.family("siterep_site_info", "This site (value 1).", false)
        .add(vec![("site", code.clone())], 1.0);

    let links = site.sites()?;
    let f = s.family(
        "siterep_link_up",
        "1 when the link to the peer is active, else 0.",
        false,
    );
    for l in &links {
        let up = l.link.state == LinkState::Active;
        f.add(
            vec![
                ("peer", l.link.peer.to_string()),
                ("role", role(l.link.role)),
            ],
            if up { 1.0 } else { 0.0 },
        );
    }
    let f = s.family(
        "siterep_link_failures",
        "Failed attempts or drops of the link since it was last active.",
        false,
    );
    for l in &links {
        f.add(
            vec![
                ("peer", l.link.peer.to_string()),
                ("role", role(l.link.role)),
            ],
            l.link.failures,
        );
    }
    let f = s.family(
        "siterep_link_connects",
        "Connections made on the link since the process started (reconnects included).",
        true,
    );
    for l in &links {
        f.add(
            vec![
                ("peer", l.link.peer.to_string()),
                ("role", role(l.link.role)),
            ],
            u(l.link.connects),
        );
    }
    let f = s.family(
        "siterep_child_backlog_events",
        "Events of this site's log the child has not acknowledged.",
        false,
    );
    for l in links.iter().filter(|l| l.link.role == Role::Child) {
        f.add(vec![("peer", l.link.peer.to_string())], u(l.backlog_events));
    }
    let f = s.family(
        "siterep_child_backlog_bytes",
        "Bytes of the events the child has not acknowledged.",
        false,
    );
    for l in links.iter().filter(|l| l.link.role == Role::Child) {
        f.add(vec![("peer", l.link.peer.to_string())], u(l.backlog_bytes));
    }

    let senders = site.senders();
    let f = s.family(
        "siterep_sent_bytes",
        "Bytes written to the peer since the process started (events, reports, chunks), by the priority of their job.",
        true,
    );
    for l in &senders.links {
        for (p, b) in &l.sent_bytes {
            f.add(
                vec![("peer", l.dest.to_string()), ("priority", p.clone())],
                u(*b),
            );
        }
    }
    let f = s.family(
        "siterep_sender_queue_jobs",
        "Jobs queued, sending or retrying on the link, by priority.",
        false,
    );
    for l in &senders.links {
        for (p, q) in &l.queue {
            f.add(
                vec![("peer", l.dest.to_string()), ("priority", p.clone())],
                u(q.jobs),
            );
        }
    }
    let f = s.family(
        "siterep_sender_queue_bytes",
        "Bytes still queued on the link, by priority.",
        false,
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
    let peer_counter = |s: &mut Snapshot,
                        name: &'static str,
                        help: &'static str,
                        get: fn(&crate::site::PeerCount) -> u64| {
        let f = s.family(name, help, true);
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
        s.family(
            "siterep_content_store_bytes",
            "Bytes of the chunk files in the content store (compressed), as last counted.",
            false,
        )
        .add(vec![], u(st.bytes));
        s.family(
            "siterep_content_store_chunks",
            "Chunks in the content store, as last counted.",
            false,
        )
        .add(vec![], u(st.chunks));
    }

    let counts = site.db().counts()?;
    s.family(
        "siterep_config_log_events",
        "Events in this site's config log (its newest position).",
        false,
    )
    .add(vec![], u(counts.config_events));
    s.family(
        "siterep_report_log_position",
        "The newest position of this site's report log.",
        false,
    )
    .add(vec![], u(counts.reports));
    let f = s.family(
        "siterep_config_acked_position",
        "The last position of this site's log the child acknowledged, or of the parent's log applied here.",
        false,
    );
    for l in &links {
        f.add(
            vec![
                ("peer", l.link.peer.to_string()),
                ("role", role(l.link.role)),
            ],
            u(l.config_cursor),
        );
    }
    s.family(
        "siterep_catalog_version",
        "The software update catalog version applied at this site.",
        false,
    )
    .add(vec![], u(site.db().meta()?.catalog_version));
    let by_sev: BTreeMap<String, u64> = site.db().message_counts()?;
    let f = s.family(
        "siterep_status_messages",
        "Status messages stored at this site (its own and its subtree's), by severity.",
        true,
    );
    for sev in ["info", "warning", "error"] {
        f.add(
            vec![("severity", sev.to_string())],
            u(by_sev.get(sev).copied().unwrap_or(0)),
        );
    }

    let p = site.sites_view()?.site;
    s.family("process_resident_memory_bytes", "Resident memory.", false)
        .add(vec![], u(p.rss_bytes));
    s.family("process_open_fds", "Open file descriptors.", false)
        .add(vec![], u(p.open_files));
    s.family("process_max_fds", "The open-file limit.", false)
        .add(vec![], u(p.open_files_limit));
    s.family(
        "process_cpu_seconds",
        "CPU time used (user and system).",
        true,
    )
    .add(vec![], p.cpu_secs);
    s.family("siterep_db_bytes", "The database's size on disk.", false)
        .add(vec![], u(p.db_bytes));

    let mut reg = Registry::default();
    reg.register_collector(Box::new(s));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &reg)
        .map_err(|e| OpError::Internal(format!("cannot encode the metrics: {e}")))?;
    Ok(out)
}
