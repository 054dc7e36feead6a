//! Content-defined chunking with FastCDC (2020 variant, normalization level 1).
//!
//! Chunk boundaries depend only on content, so an edit in a file changes only the chunks
//! around it. The chunker works on a caller-owned buffer: a file is streamed through a
//! reusable buffer of [`BUFFER_SIZE`] bytes and never held whole in memory.

use std::io::{self, Read};

/// Smallest chunk (except a file's last).
pub const MIN_SIZE: usize = 64 * 1024;
/// Target average chunk size.
pub const AVG_SIZE: usize = 256 * 1024;
/// Largest chunk.
pub const MAX_SIZE: usize = 1024 * 1024;
/// The streaming buffer: a few chunks' worth, so reads are large and copies rare.
pub const BUFFER_SIZE: usize = 4 * MAX_SIZE;

/// Cut-point finder with fixed parameters.
#[derive(Clone, Copy, Debug)]
pub struct Chunker {
    min: usize,
    avg: usize,
    max: usize,
    mask_s: u64,
    mask_l: u64,
}

impl Default for Chunker {
    fn default() -> Self {
        Chunker::new(MIN_SIZE, AVG_SIZE, MAX_SIZE)
    }
}

impl Chunker {
    /// Panics unless `min <= avg <= max` and all are within FastCDC's bounds.
    pub fn new(min: usize, avg: usize, max: usize) -> Self {
        use fastcdc::v2020::*;
        assert!(min <= avg && avg <= max);
        assert!((MINIMUM_MIN as usize..=MINIMUM_MAX as usize).contains(&min));
        assert!((AVERAGE_MIN as usize..=AVERAGE_MAX as usize).contains(&avg));
        assert!((MAXIMUM_MIN as usize..=MAXIMUM_MAX as usize).contains(&max));
        let bits = logarithm2(avg as u32);
        let norm = Normalization::Level1.bits();
        Chunker {
            min,
            avg,
            max,
            mask_s: MASKS[(bits + norm) as usize],
            mask_l: MASKS[(bits - norm) as usize],
        }
    }

    /// The largest chunk this chunker cuts, in bytes.
    pub fn max_size(&self) -> usize {
        self.max
    }

    /// The length of the next chunk of `data` (which starts at a chunk boundary), or `None` if
    /// more bytes are needed to decide. `eof` says that no bytes follow `data`.
    pub fn next_cut(&self, data: &[u8], eof: bool) -> Option<usize> {
        if data.is_empty() || (!eof && data.len() < self.max) {
            return None;
        }
        let (_, n) = fastcdc::v2020::cut(
            data,
            self.min,
            self.avg,
            self.max,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
        );
        Some(n)
    }

    /// Streams `reader` through `buf` (grown to at least [`BUFFER_SIZE`] once, then reused)
    /// and calls `f` with each chunk in order. Returns the number of bytes read.
    pub fn for_each_chunk<R: Read, E: From<io::Error>>(
        &self,
        mut reader: R,
        buf: &mut Vec<u8>,
        mut f: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<u64, E> {
        let cap = BUFFER_SIZE.max(self.max);
        if buf.len() < cap {
            buf.resize(cap, 0);
        }
        let (mut start, mut end, mut eof, mut total) = (0usize, 0usize, false, 0u64);
        loop {
            if !eof && end - start < self.max {
                if start > 0 {
                    buf.copy_within(start..end, 0);
                    end -= start;
                    start = 0;
                }
                while end < buf.len() {
                    match reader.read(&mut buf[end..]) {
                        Ok(0) => {
                            eof = true;
                            break;
                        }
                        Ok(n) => {
                            end += n;
                            total += n as u64;
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            match self.next_cut(&buf[start..end], eof) {
                Some(n) => {
                    f(&buf[start..start + n])?;
                    start += n;
                }
                None => {
                    debug_assert!(eof && start == end);
                    return Ok(total);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::noise;

    fn chunks_of(data: &[u8], reader_piece: usize) -> Vec<Vec<u8>> {
        struct Dribble<'a>(&'a [u8], usize);
        impl Read for Dribble<'_> {
            fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
                let n = self.0.len().min(out.len()).min(self.1);
                out[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut out = Vec::new();
        let mut buf = Vec::new();
        let total = Chunker::default()
            .for_each_chunk(Dribble(data, reader_piece), &mut buf, |c| {
                out.push(c.to_vec());
                Ok::<_, io::Error>(())
            })
            .unwrap();
        assert_eq!(total as usize, data.len());
        out
    }

    #[test]
    fn streaming_matches_whole_buffer_chunking() {
        let data = noise(9 * MAX_SIZE + 12345, 7);
        let whole: Vec<usize> =
            fastcdc::v2020::FastCDC::new(&data, MIN_SIZE as u32, AVG_SIZE as u32, MAX_SIZE as u32)
                .map(|c| c.length)
                .collect();
        for piece in [usize::MAX, 65_536, 1_000_003] {
            let got: Vec<usize> = chunks_of(&data, piece).iter().map(|c| c.len()).collect();
            assert_eq!(got, whole, "piece {piece}");
        }
        let joined: Vec<u8> = chunks_of(&data, 4096).concat();
        assert_eq!(joined, data);
    }

    #[test]
    fn sizes_are_bounded_and_edits_are_local() {
        let data = noise(8 * MAX_SIZE, 3);
        let a = chunks_of(&data, usize::MAX);
        for c in &a[..a.len() - 1] {
            assert!(c.len() >= MIN_SIZE && c.len() <= MAX_SIZE);
        }
        let mut edited = data.clone();
        edited[3 * MAX_SIZE] ^= 0xff;
        let b = chunks_of(&edited, usize::MAX);
        let same = b.iter().filter(|c| a.contains(c)).count();
        assert!(same + 3 >= a.len(), "{same} of {} chunks kept", a.len());
    }

    #[test]
    fn empty_and_tiny_inputs() {
        assert!(chunks_of(&[], usize::MAX).is_empty());
        assert_eq!(chunks_of(b"abc", usize::MAX), vec![b"abc".to_vec()]);
    }
}
