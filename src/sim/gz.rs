//! One gzip stream per response, built from independently compressed pieces.
//!
//! Each piece ("segment") is raw deflate ending with a *full* flush: the
//! output is byte aligned and the compressor's dictionary is reset, so a
//! segment never refers to bytes before it. Any sequence of segments after a
//! gzip header is therefore a valid deflate stream, whatever connection it is
//! sent on: a batch is compressed once and shared by every connection of its
//! partition. The CRC-32 of a response is the combination of its segments'
//! CRCs, and the stream is closed with an empty final block and the trailer.

use bytes::Bytes;
use flate2::{Compress, Compression, Crc, FlushCompress, Status};

/// Gzip member header: no name, no mtime, OS unknown.
pub(crate) const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// A compressed piece plus the CRC of what it decompresses to.
pub(crate) struct Piece {
    pub compressed: Bytes,
    pub crc: Crc,
}

/// Reusable raw-deflate compressor producing full-flushed segments.
pub(crate) struct SegmentCompressor {
    c: Compress,
}

impl SegmentCompressor {
    pub(crate) fn new(level: u32) -> SegmentCompressor {
        SegmentCompressor { c: Compress::new(Compression::new(level), false) }
    }

    /// Compresses `data` as a self-contained, full-flushed run of blocks.
    pub(crate) fn segment(&mut self, data: &[u8]) -> Bytes {
        Bytes::from(self.run(data, FlushCompress::Full))
    }

    /// Compresses `data` with a sync flush (so it can be decoded at once) but
    /// keeps the dictionary: only for a connection's last, deliberately
    /// broken piece.
    pub(crate) fn sync(&mut self, data: &[u8]) -> Bytes {
        Bytes::from(self.run(data, FlushCompress::Sync))
    }

    fn run(&mut self, data: &[u8], flush: FlushCompress) -> Vec<u8> {
        let mut out: Vec<u8> = Vec::with_capacity(data.len() / 3 + 64);
        let start = self.c.total_in();
        // Bounded: every round either consumes input or grows the output.
        for _ in 0..10_000 {
            let consumed = (self.c.total_in() - start) as usize;
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(256));
            }
            let st = self.c.compress_vec(&data[consumed..], &mut out, flush);
            let consumed = (self.c.total_in() - start) as usize;
            match st {
                Ok(Status::Ok) | Ok(Status::BufError) | Ok(Status::StreamEnd) => {
                    if consumed == data.len() && out.len() < out.capacity() {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        out
    }
}

/// A self-contained segment plus its CRC.
pub(crate) fn piece(c: &mut SegmentCompressor, data: &[u8]) -> Piece {
    let mut crc = Crc::new();
    crc.update(data);
    Piece { compressed: c.segment(data), crc }
}

/// Empty final block, CRC-32 and length: ends the gzip member.
pub(crate) fn trailer(crc: &Crc) -> Bytes {
    let mut t = Vec::with_capacity(10);
    t.extend_from_slice(&[0x03, 0x00]);
    t.extend_from_slice(&crc.sum().to_le_bytes());
    t.extend_from_slice(&crc.amount().to_le_bytes());
    Bytes::from(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn gunzip(b: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(b).read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn segments_concatenate_in_any_subset() {
        let mut c = SegmentCompressor::new(1);
        let parts: Vec<Vec<u8>> =
            (0..5).map(|k| format!("{{\"delete\":{{\"n\":{k}}}}}\r\n").repeat(50 + k).into_bytes()).collect();
        let pieces: Vec<Piece> = parts.iter().map(|p| piece(&mut c, p)).collect();
        // Start at piece 2, as a connection opened late would.
        let mut body = GZIP_HEADER.to_vec();
        let mut crc = Crc::new();
        let mut expect = Vec::new();
        for (k, p) in pieces.iter().enumerate().skip(2) {
            body.extend_from_slice(&p.compressed);
            crc.combine(&p.crc);
            expect.extend_from_slice(&parts[k]);
        }
        body.extend_from_slice(&trailer(&crc));
        assert_eq!(gunzip(&body).expect("valid gzip"), expect);
        // Without the trailer the member is truncated.
        assert!(gunzip(&body[..body.len() - 10]).is_err());
    }
}
