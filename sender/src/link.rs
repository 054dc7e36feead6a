//! Frames over a QUIC stream: the thin async shell around [`schema::wire`].

use schema::wire::{encode_frame, Frame, FrameDecoder, FrameError};

/// Why sending or receiving a frame failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// A frame too large, or one that does not encode or decode.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// Writing to the QUIC stream failed (the stream was stopped or the connection lost).
    #[error("link write failed: {0}")]
    Write(#[from] quinn::WriteError),
    /// Reading from the QUIC stream failed (the stream was reset or the connection lost).
    #[error("link read failed: {0}")]
    Read(#[from] quinn::ReadError),
    /// The peer finished the stream.
    #[error("the peer closed the stream")]
    Closed,
}

/// Writes frames to a QUIC send stream, reusing one buffer.
pub struct FrameWriter {
    stream: quinn::SendStream,
    buf: Vec<u8>,
}

impl FrameWriter {
    /// Wraps a send stream.
    pub fn new(stream: quinn::SendStream) -> Self {
        FrameWriter {
            stream,
            buf: Vec::new(),
        }
    }

    /// The stream, for bytes encoded elsewhere (the sender writes a frame in metered slices).
    pub fn stream(&mut self) -> &mut quinn::SendStream {
        &mut self.stream
    }

    /// Encodes `frame` and writes all of it.
    pub async fn send(&mut self, frame: &Frame) -> Result<(), LinkError> {
        self.buf.clear();
        encode_frame(frame, &mut self.buf)?;
        self.stream.write_all(&self.buf).await?;
        Ok(())
    }
}

/// Reads whole frames from a QUIC receive stream.
pub struct FrameReader {
    stream: quinn::RecvStream,
    decoder: FrameDecoder,
    buf: Vec<u8>,
}

impl FrameReader {
    /// Wraps a receive stream; it is read in pieces of up to 64 KiB.
    pub fn new(stream: quinn::RecvStream) -> Self {
        FrameReader {
            stream,
            decoder: FrameDecoder::new(),
            buf: vec![0u8; 64 * 1024],
        }
    }

    /// The next frame; [`LinkError::Closed`] when the peer finished the stream.
    pub async fn recv(&mut self) -> Result<Frame, LinkError> {
        loop {
            if let Some(f) = self.decoder.next_frame()? {
                return Ok(f);
            }
            match self.stream.read(&mut self.buf).await? {
                Some(n) => self.decoder.push(&self.buf[..n]),
                None => return Err(LinkError::Closed),
            }
        }
    }
}
