//! What the console and `/metrics` need over time: each link's bytes sent per interval over
//! the last hour (the senders page's chart), and the content store's size (walking the store
//! is too slow for every scrape).
//!
//! Shared state: one `Samples` behind a `std` mutex, written by the sampler task every
//! [`EVERY`], read by the page renderers and `/metrics`. Taken alone, never across an await
//! or a database read.

use crate::site::Site;
use dist_point::StoreUsage;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often the sampler looks.
pub const EVERY: Duration = Duration::from_secs(10);
/// Samples kept per link: one hour.
pub const KEPT: usize = 360;
/// How often the store is walked.
const STORE_EVERY: u32 = 6;

/// The samples.
#[derive(Debug, Default)]
pub struct Samples {
    /// Per destination: bytes/s of each interval, oldest first.
    pub rates: BTreeMap<String, VecDeque<u64>>,
    /// The last totals seen per destination (to take differences).
    last: BTreeMap<String, u64>,
    /// The content store, as last walked (None before the first walk).
    pub store: Option<StoreUsage>,
}

impl Samples {
    /// Takes in the sent totals per destination (bytes since start), `secs` after the last.
    pub fn add(&mut self, totals: BTreeMap<String, u64>, secs: u64) {
        for (dest, total) in &totals {
            let prev = self.last.get(dest).copied().unwrap_or(*total);
            let rate = total.saturating_sub(prev) / secs.max(1);
            let q = self.rates.entry(dest.clone()).or_default();
            q.push_back(rate);
            while q.len() > KEPT {
                q.pop_front();
            }
        }
        self.rates.retain(|d, _| totals.contains_key(d));
        self.last = totals;
    }
}

/// The samples, shared.
pub type Shared = Arc<Mutex<Samples>>;

fn sent_totals(site: &Site) -> BTreeMap<String, u64> {
    site.senders()
        .links
        .into_iter()
        .map(|l| (l.dest.to_string(), l.sent_bytes.values().sum()))
        .collect()
}

/// Samples until the daemon stops.
pub async fn run(site: Arc<Site>, samples: Shared) {
    let mut tick = tokio::time::interval(EVERY);
    let mut n = 0u32;
    loop {
        tick.tick().await;
        let totals = sent_totals(&site);
        samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .add(totals, EVERY.as_secs());
        if n.is_multiple_of(STORE_EVERY) {
            let s = site.clone();
            if let Ok(Ok(u)) = tokio::task::spawn_blocking(move || s.store().usage()).await {
                samples.lock().unwrap_or_else(|e| e.into_inner()).store = Some(u);
            }
        }
        n = n.wrapping_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_differences_per_second_and_an_hour_is_kept() {
        let mut s = Samples::default();
        s.add([("P01".to_string(), 1000)].into(), 10);
        s.add([("P01".to_string(), 3000)].into(), 10);
        assert_eq!(s.rates["P01"], [0, 200]);
        for i in 0..KEPT as u64 + 5 {
            s.add([("P01".to_string(), 3000 + i)].into(), 10);
        }
        assert_eq!(s.rates["P01"].len(), KEPT);
        s.add(BTreeMap::new(), 10);
        assert!(s.rates.is_empty(), "a link gone is dropped");
    }
}
