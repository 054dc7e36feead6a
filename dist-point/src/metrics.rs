//! `/metrics` in the Prometheus text format (OpenMetrics): the encoder both daemons use
//! ([`Families`], a snapshot taken at each scrape), and the distribution point's own
//! metrics: requests and bytes served by status code, versions per install state,
//! validation results, chunks pulled, the store's size.
//!
//! Shared state: [`HttpCounters`], written by the counting middleware on every client
//! request (a `std` mutex taken alone, for an increment), read at each scrape; the store's
//! size is cached for [`STORE_EVERY`] (walking a big store on every scrape is too slow).

use crate::node::Node;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The content type of a `/metrics` answer.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How long the store's size is reused between scrapes.
pub const STORE_EVERY: Duration = Duration::from_secs(60);

/// The labels of one sample.
pub type Labels = Vec<(&'static str, String)>;

#[derive(Debug)]
struct Family {
    name: &'static str,
    help: &'static str,
    counter: bool,
    samples: Vec<(Labels, f64)>,
}

/// One scrape's metric families, in the order they were added.
#[derive(Debug, Default)]
pub struct Families {
    families: Vec<Family>,
}

/// Adds samples to the family just made.
pub struct Adder<'a>(&'a mut Family);

impl Adder<'_> {
    pub fn add(&mut self, labels: Labels, v: f64) -> &mut Self {
        self.0.samples.push((labels, v));
        self
    }
}

impl Families {
    /// A gauge named `name` (with `siterep_` or `process_` first, in base units).
    pub fn gauge(&mut self, name: &'static str, help: &'static str) -> Adder<'_> {
        self.family(name, help, false)
    }

    /// A counter named `name` (without `_total`: the encoder adds it).
    pub fn counter(&mut self, name: &'static str, help: &'static str) -> Adder<'_> {
        self.family(name, help, true)
    }

    fn family(&mut self, name: &'static str, help: &'static str, counter: bool) -> Adder<'_> {
        self.families.push(Family {
            name,
            help,
            counter,
            samples: Vec::new(),
        });
        Adder(self.families.last_mut().expect("pushed"))
    }

    /// The text format.
    pub fn render(self) -> Result<String, std::fmt::Error> {
        let mut reg = prometheus_client::registry::Registry::default();
        reg.register_collector(Box::new(self));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg)?;
        Ok(out)
    }
}

fn encode_one(
    counter: bool,
    v: f64,
    m: prometheus_client::encoding::MetricEncoder<'_>,
) -> Result<(), std::fmt::Error> {
    if counter {
        ConstCounter::new(v as u64).encode(m)
    } else {
        ConstGauge::new(v).encode(m)
    }
}

impl Collector for Families {
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
                    encode_one(f.counter, *v, m)?;
                    continue;
                }
            }
            for (labels, v) in &f.samples {
                encode_one(f.counter, *v, m.encode_family(labels)?)?;
            }
        }
        Ok(())
    }
}

/// Requests and bytes served to clients, by status code.
#[derive(Debug, Default)]
pub struct HttpCounters {
    by_code: Mutex<BTreeMap<u16, (u64, u64)>>,
    store: Mutex<Option<(Instant, crate::StoreUsage)>>,
}

impl HttpCounters {
    fn served(&self, code: u16, requests: u64, bytes: u64) {
        let mut m = self.by_code.lock().unwrap_or_else(|e| e.into_inner());
        let e = m.entry(code).or_default();
        e.0 += requests;
        e.1 += bytes;
    }
}

/// A response body that counts the bytes it hands to the connection (a client that goes
/// away early is counted for what it got).
struct Counting {
    inner: axum::body::Body,
    code: u16,
    counters: Arc<HttpCounters>,
}

impl http_body::Body for Counting {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if let std::task::Poll::Ready(Some(Ok(f))) = &r {
            if let Some(d) = f.data_ref() {
                self.counters.served(self.code, 0, d.len() as u64);
            }
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Middleware: counts each client request by its status code, and the bytes of its body.
pub async fn count(State(c): State<Arc<HttpCounters>>, req: Request, next: Next) -> Response {
    let r = next.run(req).await;
    let code = r.status().as_u16();
    c.served(code, 1, 0);
    let (parts, body) = r.into_parts();
    Response::from_parts(
        parts,
        axum::body::Body::new(Counting {
            inner: body,
            code,
            counters: c,
        }),
    )
}

/// The DP's metrics (reads the store's directory when its cached size is old: call it on a
/// blocking thread).
pub fn render(node: &Node, http: &HttpCounters) -> Result<String, std::fmt::Error> {
    let mut f = Families::default();
    let st = node.status();
    f.gauge("siterep_dp_info", "This distribution point (value 1).")
        .add(
            vec![
                ("dp", st.id.clone()),
                ("site", st.site.clone().unwrap_or_default()),
            ],
            1.0,
        );
    f.gauge(
        "siterep_dp_site_link_up",
        "1 when the link to the site is active, else 0.",
    )
    .add(vec![], if st.site_link == "up" { 1.0 } else { 0.0 });
    let by_code = http
        .by_code
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let mut a = f.counter(
        "siterep_dp_http_requests",
        "Client requests answered (files, manifests, chunks, agents), by status code.",
    );
    for (code, (n, _)) in &by_code {
        a.add(vec![("code", code.to_string())], *n as f64);
    }
    let mut a = f.counter(
        "siterep_dp_http_sent_bytes",
        "Bytes of response bodies handed to clients, by status code.",
    );
    for (code, (_, b)) in &by_code {
        a.add(vec![("code", code.to_string())], *b as f64);
    }
    let mut states: BTreeMap<String, u64> = BTreeMap::new();
    for v in &st.versions {
        *states.entry(v.state.clone()).or_default() += 1;
    }
    let mut a = f.gauge(
        "siterep_dp_versions",
        "Package versions held or wanted here, by install state.",
    );
    for (s, n) in &states {
        a.add(vec![("state", s.clone())], *n as f64);
    }
    let mut a = f.counter(
        "siterep_dp_chunks_pulled",
        "Chunks stored since start, by source (a DP id, or site).",
    );
    for (src, n) in &st.pulled {
        a.add(vec![("source", src.clone())], *n as f64);
    }
    f.gauge("siterep_dp_pulls_in_flight", "Chunk requests in flight.")
        .add(vec![], st.in_flight as f64);
    f.gauge("siterep_dp_pulls_queued", "Chunks waiting to be asked for.")
        .add(vec![], st.queued as f64);
    let v = node.validations();
    let mut a = f.counter(
        "siterep_dp_validations",
        "Validations run since start, by result (clean: nothing damaged or missing).",
    );
    a.add(vec![("result", "clean".into())], v.clean as f64)
        .add(vec![("result", "damaged".into())], v.damaged as f64);
    f.counter(
        "siterep_dp_validation_checked_chunks",
        "Chunks re-hashed by validations since start.",
    )
    .add(vec![], v.checked as f64);
    f.counter(
        "siterep_dp_validation_bad_chunks",
        "Chunks validations found corrupt (removed) or missing, since start.",
    )
    .add(vec![("kind", "corrupt".into())], v.corrupt as f64)
    .add(vec![("kind", "missing".into())], v.missing as f64);
    let usage = {
        let mut cached = http.store.lock().unwrap_or_else(|e| e.into_inner());
        match *cached {
            Some((t, u)) if t.elapsed() < STORE_EVERY => Some(u),
            _ => {
                let u = node.store.usage().ok();
                *cached = u.map(|u| (Instant::now(), u));
                u
            }
        }
    };
    if let Some(u) = usage {
        f.gauge(
            "siterep_content_store_bytes",
            "Bytes of the chunk files in the content store (compressed).",
        )
        .add(vec![], u.bytes as f64);
        f.gauge(
            "siterep_content_store_chunks",
            "Chunks in the content store.",
        )
        .add(vec![], u.chunks as f64);
    }
    f.render()
}
