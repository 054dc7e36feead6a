//! The bundle file format: one volume, written and read as a stream.
//!
//! ```text
//! preamble   8 bytes  magic "SRBUNDLE"
//!            u16 LE   format version (1)
//!            u16 LE   kind: 1 bundle (parent to child), 2 receipt (child to parent)
//!            u32 LE   header length H (at most 64 KiB)
//! header     H bytes  BundleHeader (schema::encoding: magic, version, bincode)
//! section*   u8       kind: 1 events, 2 chunks, 3 reports, 4 receipt state
//!            7 bytes  zero
//!            u64 LE   length L of the section's bytes
//!            32 bytes BLAKE3 of those L bytes
//!            L bytes  one zstd frame
//! end        u8 0, 7 zero bytes, u64 0, 32 zero bytes
//! trailer    32 bytes digest: BLAKE3 of the preamble, the header and every section
//!                     descriptor (kind, zero, length, hash) and the end, in order
//!            64 bytes ed25519 signature of the source site over the digest
//!            8 bytes  magic "SRBUNEND"
//! ```
//!
//! The events, reports and state sections hold one `schema::encoding` value each. The chunks
//! section holds records `chunk id (32) | u32 LE length | that many bytes of the chunk file as
//! the content store keeps it` (the receiver verifies each chunk against its id).
//!
//! The reader trusts no length before checking it against what is left of the file, reads
//! every section through its hash, and checks the digest and signature at the end: the
//! caller keeps what it read staged (nothing applied, nothing renamed into a store) until
//! [`VolumeReader::finish`] says the volume is whole and signed by the expected key.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use schema::{ChunkId, SiteCode};
use serde::{Deserialize, Serialize};
use std::io::{self, Read, Seek, SeekFrom, Write};

pub const MAGIC: [u8; 8] = *b"SRBUNDLE";
pub const END_MAGIC: [u8; 8] = *b"SRBUNEND";
pub const FORMAT_VERSION: u16 = 1;
const PREAMBLE_LEN: u64 = 16;
const DESCRIPTOR_LEN: u64 = 48;
const TRAILER_LEN: u64 = 32 + 64 + 8;
const MAX_HEADER: u64 = 64 << 10;
/// The largest chunk file in a chunks section (a raw 4 MiB chunk and its store header).
pub const MAX_CHUNK_FILE: u32 = (4 << 20) + 64;
/// zstd level of the sections: chunk files are already compressed one by one where it pays,
/// so the sections only need zstd's fast path.
const LEVEL: i32 = 1;
/// The largest zstd window a reader accepts (4 MiB): what this writer makes is far smaller,
/// and a hostile frame cannot make the reader allocate more.
const WINDOW_LOG_MAX: u32 = 22;

/// What a volume carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// Parent to child: config events and chunks.
    Bundle = 1,
    /// Child to parent: reports, applied cursor, inventory.
    Receipt = 2,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SectionKind {
    Events = 1,
    Chunks = 2,
    Reports = 3,
    State = 4,
}

impl SectionKind {
    fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            1 => SectionKind::Events,
            2 => SectionKind::Chunks,
            3 => SectionKind::Reports,
            4 => SectionKind::State,
            _ => return None,
        })
    }
    pub fn name(&self) -> &'static str {
        match self {
            SectionKind::Events => "events",
            SectionKind::Chunks => "chunks",
            SectionKind::Reports => "reports",
            SectionKind::State => "state",
        }
    }
}

/// The header of every volume of a bundle or receipt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleHeader {
    /// Names the bundle: the same in every volume of it.
    pub bundle_id: [u8; 16],
    pub source: SiteCode,
    pub destination: SiteCode,
    /// Positions of the source's log carried: config log (bundle) or report log (receipt);
    /// `first > last` when none.
    pub first: u64,
    pub last: u64,
    /// Chunks in the whole bundle (every volume).
    pub chunks: u64,
    pub created: chrono::DateTime<chrono::Utc>,
    /// This volume's number, from 1, and how many there are.
    pub volume: u32,
    pub volumes: u32,
}

impl BundleHeader {
    pub fn id_hex(&self) -> String {
        hex(&self.bundle_id)
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("not a bundle (bad magic): is this the right file?")]
    NotABundle,
    #[error("bundle format version {0} is not known to this build (it reads {FORMAT_VERSION}): upgrade site-server")]
    UnknownVersion(u16),
    #[error("the file is cut off ({0}): copy it again from the medium")]
    Truncated(String),
    #[error("{what} says {len} bytes but only {left} are left in the file: the file is damaged or cut off")]
    TooLong { what: String, len: u64, left: u64 },
    #[error("the {0} section does not match its hash: the file is damaged or was altered")]
    SectionHash(&'static str),
    #[error("the bundle's digest does not match its contents: the file is damaged or was altered")]
    Digest,
    #[error("the signature does not verify with {0}'s key: the bundle was altered or signed by another site")]
    Signature(String),
    #[error("{0}")]
    Malformed(String),
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
}

fn malformed(e: impl std::fmt::Display) -> BundleError {
    BundleError::Malformed(format!("the bundle is malformed: {e}"))
}

/// A writer that counts and hashes what goes through it.
struct Tally<W> {
    inner: W,
    hasher: blake3::Hasher,
    len: u64,
}

impl<W: Write> Write for Tally<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn descriptor(kind: u8, len: u64, hash: &[u8; 32]) -> [u8; DESCRIPTOR_LEN as usize] {
    let mut d = [0u8; DESCRIPTOR_LEN as usize];
    d[0] = kind;
    d[8..16].copy_from_slice(&len.to_le_bytes());
    d[16..].copy_from_slice(hash);
    d
}

/// Writes one volume to a file (it seeks back to fill in each section's length and hash).
pub struct VolumeWriter<W: Write + Seek> {
    out: W,
    digest: blake3::Hasher,
    written: u64,
}

impl<W: Write + Seek> VolumeWriter<W> {
    pub fn new(mut out: W, kind: Kind, header: &BundleHeader) -> Result<Self, BundleError> {
        let h = schema::encoding::encode(header).map_err(malformed)?;
        let mut pre = Vec::with_capacity(PREAMBLE_LEN as usize + h.len());
        pre.extend_from_slice(&MAGIC);
        pre.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        pre.extend_from_slice(&(kind as u16).to_le_bytes());
        pre.extend_from_slice(&(h.len() as u32).to_le_bytes());
        pre.extend_from_slice(&h);
        out.write_all(&pre)?;
        let mut digest = blake3::Hasher::new();
        digest.update(&pre);
        Ok(VolumeWriter {
            out,
            digest,
            written: pre.len() as u64,
        })
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Writes a section whose content `fill` streams into the given writer (compressed
    /// on the way).
    pub fn section(
        &mut self,
        kind: SectionKind,
        fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> Result<(), BundleError> {
        self.framed(kind, |tally| {
            let mut enc = zstd::stream::write::Encoder::new(tally, LEVEL)?;
            enc.include_checksum(false)?;
            fill(&mut enc)?;
            enc.finish()
        })
    }

    /// As [`VolumeWriter::section`], but the zstd frame is made of stored (raw) blocks: for
    /// content that is already compressed (chunk files), where compressing again costs CPU
    /// and saves nothing. Any zstd decoder reads it.
    pub fn section_stored(
        &mut self,
        kind: SectionKind,
        fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> Result<(), BundleError> {
        self.framed(kind, |mut tally| {
            // Frame header: magic, descriptor (no checksum, no content size, not single
            // segment), window descriptor for a 128 KiB window.
            tally.write_all(&[0x28, 0xB5, 0x2F, 0xFD, 0x00, (17 - 10) << 3])?;
            let mut raw = RawBlocks {
                out: tally,
                buf: Vec::with_capacity(RAW_BLOCK),
            };
            fill(&mut raw)?;
            raw.finish()
        })
    }

    /// A section: a blank descriptor, the bytes `body` writes through a tally, then the
    /// descriptor filled in (length, hash) and added to the digest.
    fn framed(
        &mut self,
        kind: SectionKind,
        body: impl FnOnce(Tally<&mut W>) -> io::Result<Tally<&mut W>>,
    ) -> Result<(), BundleError> {
        let at = self.out.stream_position()?;
        self.out.write_all(&[0u8; DESCRIPTOR_LEN as usize])?;
        let tally = body(Tally {
            inner: &mut self.out,
            hasher: blake3::Hasher::new(),
            len: 0,
        })?;
        let (len, hash) = (tally.len, *tally.hasher.finalize().as_bytes());
        let d = descriptor(kind as u8, len, &hash);
        self.out.seek(SeekFrom::Start(at))?;
        self.out.write_all(&d)?;
        self.out.seek(SeekFrom::End(0))?;
        self.digest.update(&d);
        self.written += DESCRIPTOR_LEN + len;
        Ok(())
    }

    /// Writes the end marker and the signed trailer; returns the output.
    pub fn finish(mut self, key: &SigningKey) -> Result<W, BundleError> {
        let end = descriptor(0, 0, &[0u8; 32]);
        self.out.write_all(&end)?;
        self.digest.update(&end);
        let digest = self.digest.finalize();
        let sig = key.sign(digest.as_bytes());
        self.out.write_all(digest.as_bytes())?;
        self.out.write_all(&sig.to_bytes())?;
        self.out.write_all(&END_MAGIC)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// The largest zstd block.
const RAW_BLOCK: usize = 128 << 10;

/// Writes zstd raw blocks of at most [`RAW_BLOCK`] bytes.
struct RawBlocks<W: Write> {
    out: W,
    buf: Vec<u8>,
}

impl<W: Write> RawBlocks<W> {
    fn block(&mut self, last: bool) -> io::Result<()> {
        let h = ((self.buf.len() as u32) << 3) | u32::from(last);
        self.out.write_all(&h.to_le_bytes()[..3])?;
        self.out.write_all(&self.buf)?;
        self.buf.clear();
        Ok(())
    }
    fn finish(mut self) -> io::Result<W> {
        self.block(true)?;
        Ok(self.out)
    }
}

impl<W: Write> Write for RawBlocks<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.is_empty() && data.len() >= RAW_BLOCK {
            // A whole block straight from the caller's buffer.
            let h = ((RAW_BLOCK as u32) << 3).to_le_bytes();
            self.out.write_all(&h[..3])?;
            self.out.write_all(&data[..RAW_BLOCK])?;
            return Ok(RAW_BLOCK);
        }
        let n = data.len().min(RAW_BLOCK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == RAW_BLOCK {
            self.block(false)?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Writes one chunk record into a chunks section.
pub fn write_chunk(w: &mut dyn Write, id: &ChunkId, file: &[u8]) -> io::Result<()> {
    w.write_all(&id.0)?;
    w.write_all(&(file.len() as u32).to_le_bytes())?;
    w.write_all(file)
}

/// A reader that hashes what goes through it and never reads past `left`.
struct Limited<'a, R> {
    inner: &'a mut R,
    left: u64,
    hasher: blake3::Hasher,
}

impl<R: Read> Read for Limited<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let max = buf.len().min(self.left as usize);
        let n = self.inner.read(&mut buf[..max])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file ends inside a section",
            ));
        }
        self.hasher.update(&buf[..n]);
        self.left -= n as u64;
        Ok(n)
    }
}

fn read_exact_or(r: &mut impl Read, buf: &mut [u8], what: &str) -> Result<(), BundleError> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => BundleError::Truncated(format!("it ends inside {what}")),
        _ => BundleError::Io(e),
    })
}

/// Reads one volume, section by section.
pub struct VolumeReader<R: Read> {
    input: R,
    /// Bytes of the file not read yet.
    left: u64,
    digest: blake3::Hasher,
    pub kind: Kind,
    pub header: BundleHeader,
    done: bool,
}

impl<R: Read> VolumeReader<R> {
    /// Reads the preamble and the header; `file_len` is the file's size.
    pub fn open(mut input: R, file_len: u64) -> Result<Self, BundleError> {
        if file_len < 8 {
            return Err(BundleError::Truncated(
                "it is shorter than a bundle's magic".into(),
            ));
        }
        let mut pre = [0u8; PREAMBLE_LEN as usize];
        read_exact_or(&mut input, &mut pre[..8], "the magic")?;
        if pre[..8] != MAGIC {
            return Err(BundleError::NotABundle);
        }
        read_exact_or(&mut input, &mut pre[8..], "the preamble")?;
        let version = u16::from_le_bytes([pre[8], pre[9]]);
        if version != FORMAT_VERSION {
            return Err(BundleError::UnknownVersion(version));
        }
        let kind = match u16::from_le_bytes([pre[10], pre[11]]) {
            1 => Kind::Bundle,
            2 => Kind::Receipt,
            k => return Err(malformed(format!("unknown kind {k}"))),
        };
        let hlen = u32::from_le_bytes(pre[12..16].try_into().expect("4 bytes")) as u64;
        let left = file_len - PREAMBLE_LEN.min(file_len);
        if hlen > MAX_HEADER || hlen + DESCRIPTOR_LEN + TRAILER_LEN > left {
            return Err(BundleError::TooLong {
                what: "the header".into(),
                len: hlen,
                left,
            });
        }
        let mut h = vec![0u8; hlen as usize];
        read_exact_or(&mut input, &mut h, "the header")?;
        let header: BundleHeader = schema::encoding::decode(&h).map_err(malformed)?;
        let mut digest = blake3::Hasher::new();
        digest.update(&pre);
        digest.update(&h);
        Ok(VolumeReader {
            input,
            left: left - hlen,
            digest,
            kind,
            header,
            done: false,
        })
    }

    /// The next section's kind, or `None` at the end marker. Then read it with
    /// [`VolumeReader::read_blob`] or [`VolumeReader::read_chunks`].
    pub fn next_section(&mut self) -> Result<Option<(SectionKind, u64, [u8; 32])>, BundleError> {
        if self.done {
            return Ok(None);
        }
        if self.left < DESCRIPTOR_LEN + TRAILER_LEN {
            return Err(BundleError::Truncated(
                "it ends before its end marker".into(),
            ));
        }
        let mut d = [0u8; DESCRIPTOR_LEN as usize];
        read_exact_or(&mut self.input, &mut d, "a section descriptor")?;
        self.left -= DESCRIPTOR_LEN;
        self.digest.update(&d);
        let len = u64::from_le_bytes(d[8..16].try_into().expect("8 bytes"));
        let hash: [u8; 32] = d[16..].try_into().expect("32 bytes");
        if d[0] == 0 {
            if len != 0 || d[1..8] != [0; 7] || hash != [0; 32] {
                return Err(malformed("bad end marker"));
            }
            self.done = true;
            return Ok(None);
        }
        let kind = SectionKind::from_u8(d[0])
            .ok_or_else(|| malformed(format!("unknown section kind {}", d[0])))?;
        if len > self.left - TRAILER_LEN {
            return Err(BundleError::TooLong {
                what: format!("the {} section", kind.name()),
                len,
                left: self.left - TRAILER_LEN,
            });
        }
        Ok(Some((kind, len, hash)))
    }

    fn section_reader(&mut self, len: u64) -> Limited<'_, R> {
        self.left -= len;
        Limited {
            inner: &mut self.input,
            left: len,
            hasher: blake3::Hasher::new(),
        }
    }

    /// Reads a whole (small) section: events, reports or state. At most `max` bytes once
    /// decompressed.
    pub fn read_blob(
        &mut self,
        (kind, len, hash): (SectionKind, u64, [u8; 32]),
        max: u64,
    ) -> Result<Vec<u8>, BundleError> {
        let mut lim = self.section_reader(len);
        let mut out = Vec::new();
        {
            let mut dec = zstd::stream::read::Decoder::new(&mut lim).map_err(BundleError::Io)?;
            dec.window_log_max(WINDOW_LOG_MAX)
                .map_err(BundleError::Io)?;
            let r = dec.take(max + 1).read_to_end(&mut out);
            section_io(r, kind)?;
        }
        if out.len() as u64 > max {
            return Err(malformed(format!(
                "the {} section is over {max} bytes",
                kind.name()
            )));
        }
        finish_section(lim, kind, &hash)?;
        Ok(out)
    }

    /// Reads a chunks section, handing each record to `each` (which must only stage it: the
    /// section and the volume are not verified until this and [`VolumeReader::finish`] return).
    pub fn read_chunks(
        &mut self,
        (kind, len, hash): (SectionKind, u64, [u8; 32]),
        mut each: impl FnMut(ChunkId, &[u8]) -> Result<(), BundleError>,
    ) -> Result<u64, BundleError> {
        let mut lim = self.section_reader(len);
        let mut n = 0;
        {
            let mut dec = zstd::stream::read::Decoder::new(&mut lim).map_err(BundleError::Io)?;
            dec.window_log_max(WINDOW_LOG_MAX)
                .map_err(BundleError::Io)?;
            let mut buf = Vec::new();
            let mut rec = [0u8; 36];
            loop {
                // A record header, or the end of the section.
                let mut got = 0;
                while got < rec.len() {
                    let k = section_io(dec.read(&mut rec[got..]), kind)?;
                    if k == 0 {
                        break;
                    }
                    got += k;
                }
                if got == 0 {
                    break;
                }
                if got < rec.len() {
                    return Err(malformed("the chunks section ends inside a record"));
                }
                let id = ChunkId(rec[..32].try_into().expect("32 bytes"));
                let flen = u32::from_le_bytes(rec[32..].try_into().expect("4 bytes"));
                if flen > MAX_CHUNK_FILE {
                    return Err(malformed(format!("chunk {id} claims {flen} bytes")));
                }
                buf.resize(flen as usize, 0);
                section_io(dec.read_exact(&mut buf).map(|()| 0), kind)?;
                each(id, &buf)?;
                n += 1;
            }
        }
        finish_section(lim, kind, &hash)?;
        Ok(n)
    }

    /// Skips a section (still checking its hash).
    pub fn skip(&mut self, s: (SectionKind, u64, [u8; 32])) -> Result<(), BundleError> {
        let mut lim = self.section_reader(s.1);
        io::copy(&mut lim, &mut io::sink()).map_err(|e| section_err(e, s.0))?;
        finish_section(lim, s.0, &s.2)
    }

    /// Reads the trailer: checks the digest and the signature with `key` (whose owner is
    /// named `signer` in errors). Call after the end marker.
    pub fn finish(mut self, key: &VerifyingKey, signer: &str) -> Result<(), BundleError> {
        if !self.done {
            return Err(malformed("finish before the end marker"));
        }
        if self.left != TRAILER_LEN {
            return Err(malformed(format!(
                "{} bytes after the end marker, expected {TRAILER_LEN}",
                self.left
            )));
        }
        let mut t = [0u8; TRAILER_LEN as usize];
        read_exact_or(&mut self.input, &mut t, "the trailer")?;
        if t[96..] != END_MAGIC {
            return Err(BundleError::Truncated("its trailer is missing".into()));
        }
        if t[..32] != *self.digest.finalize().as_bytes() {
            return Err(BundleError::Digest);
        }
        let sig = Signature::from_bytes(t[32..96].try_into().expect("64 bytes"));
        key.verify(&t[..32], &sig)
            .map_err(|_| BundleError::Signature(signer.to_string()))
    }
}

fn section_err(e: io::Error, kind: SectionKind) -> BundleError {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => {
            BundleError::Truncated(format!("it ends inside the {} section", kind.name()))
        }
        _ => BundleError::Malformed(format!(
            "the {} section does not decompress ({e}): the file is damaged or was altered",
            kind.name()
        )),
    }
}

fn section_io<T>(r: io::Result<T>, kind: SectionKind) -> Result<T, BundleError> {
    r.map_err(|e| section_err(e, kind))
}

fn finish_section<R: Read>(
    mut lim: Limited<'_, R>,
    kind: SectionKind,
    hash: &[u8; 32],
) -> Result<(), BundleError> {
    // Whatever follows the zstd frame inside the section still counts (and is refused).
    let mut rest = [0u8; 1];
    let extra = lim.read(&mut rest).map_err(|e| section_err(e, kind))?;
    if extra != 0 {
        // Drain for the hash check's sake, then refuse.
        let _ = io::copy(&mut lim, &mut io::sink());
        return Err(BundleError::SectionHash(kind.name()));
    }
    if lim.hasher.finalize().as_bytes() != hash {
        return Err(BundleError::SectionHash(kind.name()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn header() -> BundleHeader {
        BundleHeader {
            bundle_id: [7; 16],
            source: SiteCode::new("P01").unwrap(),
            destination: SiteCode::new("S02").unwrap(),
            first: 1,
            last: 3,
            chunks: 2,
            created: chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            volume: 1,
            volumes: 1,
        }
    }

    fn key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    fn sample() -> Vec<u8> {
        let mut w = VolumeWriter::new(Cursor::new(Vec::new()), Kind::Bundle, &header()).unwrap();
        w.section(SectionKind::Events, |w| w.write_all(b"the events"))
            .unwrap();
        w.section_stored(SectionKind::Chunks, |w| {
            write_chunk(w, &ChunkId::of(b"a"), b"file a")?;
            write_chunk(w, &ChunkId::of(b"b"), &[9u8; 300_000])
        })
        .unwrap();
        w.finish(&key(1)).unwrap().into_inner()
    }

    type Read = (Vec<u8>, Vec<(ChunkId, usize)>);

    /// Reads a whole volume: (events, chunks) or the first error.
    fn read(bytes: &[u8], k: &SigningKey) -> Result<Read, BundleError> {
        let mut r = VolumeReader::open(Cursor::new(bytes), bytes.len() as u64)?;
        let (mut ev, mut ch) = (Vec::new(), Vec::new());
        while let Some(s) = r.next_section()? {
            match s.0 {
                SectionKind::Events => ev = r.read_blob(s, 1 << 20)?,
                SectionKind::Chunks => {
                    r.read_chunks(s, |id, f| {
                        ch.push((id, f.len()));
                        Ok(())
                    })?;
                }
                _ => r.skip(s)?,
            }
        }
        r.finish(&k.verifying_key(), "P01")?;
        Ok((ev, ch))
    }

    #[test]
    fn round_trip() {
        let b = sample();
        let (ev, ch) = read(&b, &key(1)).unwrap();
        assert_eq!(ev, b"the events");
        assert_eq!(
            ch,
            vec![(ChunkId::of(b"a"), 6), (ChunkId::of(b"b"), 300_000)]
        );
    }

    #[test]
    fn a_flipped_byte_anywhere_a_cut_or_another_key_is_refused() {
        let b = sample();
        // Every byte of the framing (the first and last 400), and every 53rd in between.
        let every: Vec<usize> = (0..b.len())
            .filter(|i| *i < 400 || *i >= b.len() - 400 || i % 53 == 0)
            .collect();
        for i in every {
            let mut x = b.clone();
            x[i] ^= 0x40;
            assert!(read(&x, &key(1)).is_err(), "flipped byte {i} accepted");
        }
        for cut in [0, 5, 16, 40, b.len() / 2, b.len() - 1] {
            assert!(read(&b[..cut], &key(1)).is_err(), "cut at {cut} accepted");
        }
        assert!(matches!(read(&b, &key(2)), Err(BundleError::Signature(_))));
        let mut v = b.clone();
        v[8] = 9;
        assert!(matches!(
            read(&v, &key(1)),
            Err(BundleError::UnknownVersion(_))
        ));
    }

    proptest::proptest! {
        #[test]
        fn garbage_never_panics_or_allocates_wildly(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..4096)) {
            let _ = read(&bytes, &key(1));
            let mut b = sample();
            let len = b.len();
            for (i, x) in bytes.iter().take(len).enumerate() {
                if *x < 8 {
                    b[(i * 131) % len] ^= x + 1;
                }
            }
            let _ = read(&b, &key(1));
        }
    }
}
