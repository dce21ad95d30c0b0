//! RecordIO framing of the subscription stream (`<decimal length>\n<bytes>`, no separator between
//! records). The decoder is incremental, so HTTP chunk boundaries carry no meaning; it rejects a length
//! header longer than 20 digits or not made of digits, and caps a record at a configurable size.

use bytes::{Buf, Bytes, BytesMut};

/// Default cap on one record: 4 MiB, as mesos-go. Callers facing large clusters raise it (an OFFERS
/// event for 10,000 agents is ~10 MiB).
pub const DEFAULT_MAX_FRAME: usize = 4 << 20;
/// A u64 has at most 20 decimal digits.
const MAX_HEADER_DIGITS: usize = 20;

/// A framing error. After one, the stream is unusable and must be dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordIoError {
    #[error("RecordIO length header is longer than {MAX_HEADER_DIGITS} digits")]
    HeaderTooLong,
    #[error("RecordIO length header contains a non-digit byte 0x{0:02x}")]
    BadHeaderByte(u8),
    #[error("RecordIO length header is empty")]
    EmptyHeader,
    #[error("RecordIO record of {size} bytes exceeds the cap of {cap} bytes")]
    FrameTooLarge { size: u64, cap: usize },
    #[error("stream ended inside a RecordIO record")]
    Truncated,
}

/// Incremental decoder: feed it arbitrary chunks, take out complete records.
#[derive(Debug)]
pub struct Decoder {
    buf: BytesMut,
    max_frame: usize,
    /// Length of the record being read, once its header is complete.
    pending: Option<usize>,
    failed: Option<RecordIoError>,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME)
    }
}

impl Decoder {
    pub fn new(max_frame: usize) -> Self {
        Decoder {
            buf: BytesMut::new(),
            max_frame,
            pending: None,
            failed: None,
        }
    }

    /// Appends a chunk and returns every record now complete. Empty records (length 0) are skipped, as
    /// mesos-go does. Once an error is returned every later call returns it again.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<Bytes>, RecordIoError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        loop {
            match self.next_record() {
                Ok(Some(r)) => {
                    if !r.is_empty() {
                        out.push(r)
                    }
                }
                Ok(None) => return Ok(out),
                Err(e) => {
                    self.failed = Some(e.clone());
                    self.buf.clear();
                    return Err(e);
                }
            }
        }
    }

    /// Call at end of stream: an error if a record was left incomplete.
    pub fn finish(&self) -> Result<(), RecordIoError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.pending.is_some() || !self.buf.is_empty() {
            return Err(RecordIoError::Truncated);
        }
        Ok(())
    }

    fn next_record(&mut self) -> Result<Option<Bytes>, RecordIoError> {
        let len = match self.pending {
            Some(len) => len,
            None => {
                // Validate the header bytes seen so far even before the newline arrives, so that a
                // garbage stream fails fast instead of buffering without bound.
                let limit = self.buf.len().min(MAX_HEADER_DIGITS + 1);
                let nl = self.buf[..limit].iter().position(|&b| b == b'\n');
                let digits = nl.unwrap_or(limit);
                if let Some(&b) = self.buf[..digits].iter().find(|b| !b.is_ascii_digit()) {
                    return Err(RecordIoError::BadHeaderByte(b));
                }
                if digits > MAX_HEADER_DIGITS {
                    return Err(RecordIoError::HeaderTooLong);
                }
                let Some(nl) = nl else { return Ok(None) };
                if nl == 0 {
                    return Err(RecordIoError::EmptyHeader);
                }
                let text = std::str::from_utf8(&self.buf[..nl])
                    .map_err(|_| RecordIoError::BadHeaderByte(0))?;
                // 20 digits can still overflow u64; treat that as too large.
                let size: u64 = text.parse().map_err(|_| RecordIoError::FrameTooLarge {
                    size: u64::MAX,
                    cap: self.max_frame,
                })?;
                if size > self.max_frame as u64 {
                    return Err(RecordIoError::FrameTooLarge {
                        size,
                        cap: self.max_frame,
                    });
                }
                self.buf.advance(nl + 1);
                let len = size as usize;
                self.pending = Some(len);
                len
            }
        };
        if self.buf.len() < len {
            return Ok(None);
        }
        self.pending = None;
        Ok(Some(self.buf.split_to(len).freeze()))
    }
}

/// Encodes one record: `stringify(size) + "\n" + record`.
pub fn encode(record: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(record.len() + 12);
    out.extend_from_slice(record.len().to_string().as_bytes());
    out.extend_from_slice(b"\n");
    out.extend_from_slice(record);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn heartbeat_example() {
        let mut d = Decoder::default();
        let r = d.feed(b"20\n{\"type\":\"HEARTBEAT\"}").unwrap();
        assert_eq!(r, vec![Bytes::from_static(b"{\"type\":\"HEARTBEAT\"}")]);
        d.finish().unwrap();
    }

    #[test]
    fn rejects_long_header_before_newline() {
        let mut d = Decoder::default();
        assert_eq!(
            d.feed(b"000000000000000000001"),
            Err(RecordIoError::HeaderTooLong)
        );
        // Sticky.
        assert_eq!(d.feed(b"2\n{}"), Err(RecordIoError::HeaderTooLong));
    }

    #[test]
    fn rejects_oversized_frame_and_overflow() {
        let mut d = Decoder::new(10);
        assert_eq!(
            d.feed(b"11\n"),
            Err(RecordIoError::FrameTooLarge { size: 11, cap: 10 })
        );
        let mut d = Decoder::new(10);
        assert!(matches!(
            d.feed(b"99999999999999999999\n"),
            Err(RecordIoError::FrameTooLarge { .. })
        ));
    }

    #[test]
    fn truncated_stream_is_reported() {
        let mut d = Decoder::default();
        assert!(d.feed(b"5\nab").unwrap().is_empty());
        assert_eq!(d.finish(), Err(RecordIoError::Truncated));
    }

    #[test]
    fn empty_records_are_skipped() {
        let mut d = Decoder::default();
        assert_eq!(
            d.feed(b"0\n2\n{}").unwrap(),
            vec![Bytes::from_static(b"{}")]
        );
    }

    fn chunked(data: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
        points.sort_unstable();
        let mut out = Vec::new();
        let mut last = 0;
        for p in points {
            out.push(data[last..p].to_vec());
            last = p;
        }
        out.push(data[last..].to_vec());
        out
    }

    proptest! {
        #[test]
        fn random_records_survive_random_chunking(
            records in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..300), 0..20),
            cuts in proptest::collection::vec(any::<usize>(), 0..40),
        ) {
            let mut stream = Vec::new();
            for r in &records {
                stream.extend_from_slice(&encode(r));
            }
            let mut d = Decoder::default();
            let mut got = Vec::new();
            for c in chunked(&stream, &cuts) {
                got.extend(d.feed(&c).unwrap());
            }
            d.finish().unwrap();
            let got: Vec<Vec<u8>> = got.into_iter().map(|b| b.to_vec()).collect();
            prop_assert_eq!(got, records);
        }

        #[test]
        fn garbage_never_panics_and_errors_stick(
            data in proptest::collection::vec(any::<u8>(), 0..200),
            cuts in proptest::collection::vec(any::<usize>(), 0..10),
            cap in 1usize..64,
        ) {
            let mut d = Decoder::new(cap);
            let mut failed = false;
            for c in chunked(&data, &cuts) {
                match d.feed(&c) {
                    Ok(recs) => {
                        prop_assert!(!failed, "decoder recovered after an error");
                        for r in recs { prop_assert!(r.len() <= cap); }
                    }
                    Err(_) => failed = true,
                }
            }
        }

        #[test]
        fn non_digit_headers_are_rejected(prefix in "[0-9]{0,5}", bad in "[^0-9\n]", rest in ".{0,10}") {
            let mut d = Decoder::default();
            let text = format!("{prefix}{bad}{rest}\n");
            prop_assert!(d.feed(text.as_bytes()).is_err());
        }
    }
}
