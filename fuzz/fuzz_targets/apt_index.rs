//! An apt `Packages` index from a catalog source: parsed into updates. Nothing may panic,
//! and no more updates come out than records went in.
#![no_main]

use chrono::DateTime;
use libfuzzer_sys::fuzz_target;
use schema::catalog::Classification;
use site_server::sansio::catalog_plan::{parse_apt, AptSource};

fuzz_target!(|text: &str| {
    let src = AptSource {
        classification: Classification::Update,
        product: "Fuzz".into(),
        now: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
    };
    if let Ok(updates) = parse_apt(text, &src) {
        // A record starts at a non-blank line after a blank one (or the first line).
        let mut records = 0;
        let mut blank = true;
        for line in text.lines() {
            let b = line.trim().is_empty();
            records += (blank && !b) as usize;
            blank = b;
        }
        assert!(updates.len() <= records, "{} updates from {records} records", updates.len());
    }
});
