//! Decompression of a stream's body, a piece at a time: incremental gzip
//! (several members in a row are one stream), or identity when the server
//! did not compress. The partition streams feed it small pieces, so one
//! decoded piece stays small whatever the compression ratio.

use flate2::write::MultiGzDecoder;
use std::io::{self, Write};

/// A body being decoded.
pub enum Inflate {
    Identity,
    Gzip(Box<MultiGzDecoder<Vec<u8>>>),
}

impl Inflate {
    pub fn gzip() -> Inflate {
        Inflate::Gzip(Box::new(MultiGzDecoder::new(Vec::with_capacity(256 * 1024))))
    }

    pub fn identity() -> Inflate {
        Inflate::Identity
    }

    /// Decodes one chunk; the decoded bytes are in `out` afterwards.
    ///
    /// # Errors
    /// Data that is not gzip, or a corrupt stream.
    pub fn decode(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        out.clear();
        match self {
            Inflate::Identity => {
                out.extend_from_slice(chunk);
                Ok(())
            }
            Inflate::Gzip(d) => {
                d.write_all(chunk)?;
                d.flush()?;
                std::mem::swap(d.get_mut(), out);
                Ok(())
            }
        }
    }

    /// The body ended: was the gzip member complete? What was still held is
    /// in `out` afterwards.
    ///
    /// # Errors
    /// A gzip stream cut before its trailer.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        out.clear();
        match self {
            Inflate::Identity => Ok(()),
            Inflate::Gzip(d) => {
                let res = d.try_finish();
                std::mem::swap(d.get_mut(), out);
                res
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_is_decoded_across_any_chunking_and_truncation_is_detected() {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let text = "{\"a\":1}\r\n\r\ncaf\u{e9}\r\n".repeat(200);
        enc.write_all(text.as_bytes()).unwrap();
        let gz = enc.finish().unwrap();
        for chunk in [1, 7, 64, 4096] {
            let mut inf = Inflate::gzip();
            let mut all = Vec::new();
            let mut out = Vec::new();
            for c in gz.chunks(chunk) {
                inf.decode(c, &mut out).unwrap();
                all.extend_from_slice(&out);
            }
            inf.finish(&mut out).unwrap();
            all.extend_from_slice(&out);
            assert_eq!(all, text.as_bytes(), "chunk {chunk}");
        }
        let mut inf = Inflate::gzip();
        let mut out = Vec::new();
        inf.decode(&gz[..gz.len() - 6], &mut out).unwrap();
        assert!(inf.finish(&mut out).is_err(), "a missing trailer is an error");
    }
}
