//! Writes the seed corpora: valid frames, bundles, apt records, plug-in arguments and
//! ranges, so that the fuzzers start from inputs that get past the first check.
//! `cargo run -p siterep-fuzz-seeds` (from `fuzz/`); the files go to `corpus/<target>/seed-*`.

use courier::{BundleHeader, Kind, SectionKind, VolumeWriter};
use ed25519_dalek::SigningKey;
use schema::event::{ConfigEvent, EventEnvelope};
use schema::wire::{encode_frame, ChunkReply, Frame};
use schema::{ChunkId, SiteCode};
use std::io::Cursor;
use std::path::Path;

fn put(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new("corpus").join(target);
    std::fs::create_dir_all(&dir).expect("corpus directory");
    std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("seed file");
}

fn main() {
    let cen = SiteCode::new("CEN").unwrap();
    let p01 = SiteCode::new("P01").unwrap();
    let time = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();

    // Frames: one of each common kind, cut into 16-byte reads (first byte 15).
    let frames = [
        Frame::Hello {
            site: p01,
            config_applied: 41,
            reports_acked: 7,
        },
        Frame::Events {
            first: 42,
            events: vec![EventEnvelope::signed(
                cen,
                9,
                time,
                ConfigEvent::SyncRequest { catalog_version: 3 },
                &ed25519_dalek::SigningKey::from_bytes(&[7; 32]),
            )
            .expect("signs")],
        },
        Frame::EventsAck { upto: 42 },
        Frame::ChunkRequest {
            ids: vec![ChunkId::of(b"a"), ChunkId::of(b"b")],
        },
        Frame::Refused {
            reason: "unknown site".into(),
        },
    ];
    let mut all = ChunkReply::Chunk {
        id: ChunkId::of(b"a"),
        len: 300,
    }
    .encode()
    .to_vec();
    all.insert(0, 15);
    for (i, f) in frames.iter().enumerate() {
        let mut one = vec![15u8];
        encode_frame(f, &mut one).unwrap();
        put("wire_frames", &format!("frame{i}"), &one);
        encode_frame(f, &mut all).unwrap();
    }
    put("wire_frames", "all", &all);

    // A bundle and a receipt, signed with the key the target checks.
    let header = BundleHeader {
        bundle_id: [7; 16],
        source: p01,
        destination: SiteCode::new("S02").unwrap(),
        first: 1,
        last: 3,
        chunks: 2,
        created: time,
        volume: 1,
        volumes: 1,
    };
    let key = SigningKey::from_bytes(&[1; 32]);
    for (name, kind) in [("bundle", Kind::Bundle), ("receipt", Kind::Receipt)] {
        let mut w = VolumeWriter::new(Cursor::new(Vec::new()), kind, &header).unwrap();
        w.section(SectionKind::Events, |w| w.write_all(b"the events"))
            .unwrap();
        w.section_stored(SectionKind::Chunks, |w| {
            courier::format::write_chunk(w, &ChunkId::of(b"a"), b"file a")?;
            courier::format::write_chunk(w, &ChunkId::of(b"b"), &[9u8; 3000])
        })
        .unwrap();
        w.section(SectionKind::Chunks, |w| {
            courier::format::write_chunk(w, &ChunkId::of(b"c"), b"file c")
        })
        .unwrap();
        let bytes = w.finish(&key).unwrap().into_inner();
        put("bundle_reader", name, &bytes);
    }

    put(
        "apt_index",
        "two",
        b"Package: hello\nVersion: 2.10-3\nArchitecture: amd64\nSize: 53000\nFilename: pool/main/h/hello/hello_2.10-3_amd64.deb\nSHA256: 00ff\nDescription: example package\n long description\n .\n more\nPriority: optional\n\nPackage: hello\nVersion: 2.9-1\n\n",
    );
    put(
        "plugin_args",
        "cau",
        b"Path='/srv/Packages';Classification=Update;Product=\"Soak \"\"x\"\"\";QueryString=\"UpdateID=''f6ce'' and IsInstalled=0\";",
    );
    // The size (8 bytes, little-endian), then the header's value.
    for (i, v) in ["bytes=0-9", "bytes=90-", "bytes=-10", "bytes=0-1,5-6", "items=1-2"]
        .iter()
        .enumerate()
    {
        let mut b = 100u64.to_le_bytes().to_vec();
        b.extend_from_slice(v.as_bytes());
        put("http_range", &format!("r{i}"), &b);
    }
    println!("seeds written under corpus/");
}
