//! Chunked transfer coding (RFC 9112 §7.1), decoded incrementally and without copying the data.

use bytes::{Buf, Bytes};

use super::HttpError;

/// Longest chunk-size line (with extensions) or trailer line accepted.
const MAX_LINE: usize = 4096;
/// Most trailer bytes accepted.
const MAX_TRAILERS: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Size,
    Data(u64),
    DataCr,
    DataLf,
    Trailer,
    Done,
}

/// An incremental decoder of a chunked body. Data chunks come out as zero-copy slices of the
/// input `Bytes`.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    line: Vec<u8>,
    trailer_bytes: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    /// A decoder at the start of a body.
    pub fn new() -> Self {
        ChunkedDecoder { state: State::Size, line: Vec::new(), trailer_bytes: 0 }
    }

    /// True once the last chunk and the trailers have been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes what it can of `input`, pushing data slices to `out`. On return `input` holds
    /// the bytes after the end of the body (if the body ended), else it is empty.
    pub fn decode(&mut self, input: &mut Bytes, out: &mut Vec<Bytes>) -> Result<(), HttpError> {
        while !input.is_empty() {
            match self.state {
                State::Size => {
                    if let Some(line) = self.take_line(input)? {
                        let size = parse_size_line(&line)?;
                        self.state = if size == 0 { State::Trailer } else { State::Data(size) };
                    }
                }
                State::Data(rem) => {
                    let n = (input.len() as u64).min(rem) as usize;
                    out.push(input.split_to(n));
                    let left = rem - n as u64;
                    self.state = if left == 0 { State::DataCr } else { State::Data(left) };
                }
                State::DataCr => {
                    match input[0] {
                        b'\r' => self.state = State::DataLf,
                        b'\n' => self.state = State::Size,
                        _ => return Err(HttpError::new(502, "bad chunk terminator")),
                    }
                    input.advance(1);
                }
                State::DataLf => {
                    if input[0] != b'\n' {
                        return Err(HttpError::new(502, "bad chunk terminator"));
                    }
                    input.advance(1);
                    self.state = State::Size;
                }
                State::Trailer => {
                    if let Some(line) = self.take_line(input)? {
                        if line.is_empty() {
                            self.state = State::Done;
                        } else {
                            self.trailer_bytes += line.len();
                            if self.trailer_bytes > MAX_TRAILERS {
                                return Err(HttpError::new(502, "trailers too large"));
                            }
                        }
                    }
                }
                State::Done => return Ok(()),
            }
        }
        Ok(())
    }

    /// Accumulates one line (without its CRLF); `None` until the line is complete.
    fn take_line(&mut self, input: &mut Bytes) -> Result<Option<Vec<u8>>, HttpError> {
        match input.iter().position(|b| *b == b'\n') {
            Some(i) => {
                self.line.extend_from_slice(&input[..i]);
                input.advance(i + 1);
                if self.line.last() == Some(&b'\r') {
                    self.line.pop();
                }
                if self.line.len() > MAX_LINE {
                    return Err(HttpError::new(502, "chunk line too long"));
                }
                Ok(Some(std::mem::take(&mut self.line)))
            }
            None => {
                self.line.extend_from_slice(input);
                input.clear();
                if self.line.len() > MAX_LINE {
                    return Err(HttpError::new(502, "chunk line too long"));
                }
                Ok(None)
            }
        }
    }
}

/// Parses `1a3f[;ext...]`: hex digits, optional whitespace and extensions.
fn parse_size_line(line: &[u8]) -> Result<u64, HttpError> {
    let end = line.iter().position(|b| *b == b';').unwrap_or(line.len());
    let digits = super::trim_ascii(&line[..end]);
    if digits.is_empty() || digits.len() > 15 {
        return Err(HttpError::new(502, "bad chunk size"));
    }
    let mut size: u64 = 0;
    for d in digits {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            b'A'..=b'F' => d - b'A' + 10,
            _ => return Err(HttpError::new(502, "bad chunk size")),
        };
        size = size * 16 + v as u64;
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const BODY: &[u8] = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-T: 1\r\n\r\nNEXT";

    fn decode_split(input: &[u8], splits: &[usize]) -> Result<(Vec<u8>, Vec<u8>, bool), HttpError> {
        let mut d = ChunkedDecoder::new();
        let mut out = Vec::new();
        let mut rest = Vec::new();
        let mut last = 0;
        let mut points: Vec<usize> = splits.iter().copied().filter(|p| *p <= input.len()).collect();
        points.sort_unstable();
        points.push(input.len());
        for p in points {
            if p < last {
                continue;
            }
            let mut b = Bytes::copy_from_slice(&input[last..p]);
            last = p;
            if d.is_done() {
                rest.extend_from_slice(&b);
                continue;
            }
            d.decode(&mut b, &mut out)?;
            rest.extend_from_slice(&b);
        }
        Ok((out.concat(), rest, d.is_done()))
    }

    #[test]
    fn whole() {
        let (data, rest, done) = decode_split(BODY, &[]).unwrap();
        assert_eq!(data, b"hello, world");
        assert_eq!(rest, b"NEXT");
        assert!(done);
    }

    #[test]
    fn every_split_point_gives_same_result() {
        let expect = decode_split(BODY, &[]).unwrap();
        for i in 0..=BODY.len() {
            assert_eq!(decode_split(BODY, &[i]).unwrap(), expect, "split at {i}");
        }
    }

    #[test]
    fn bad_sizes_fail() {
        assert!(decode_split(b"zz\r\n", &[]).is_err());
        assert!(decode_split(b"\r\n", &[]).is_err());
        assert!(decode_split(b"5\r\nhelloXX", &[]).is_err());
        assert!(decode_split(b"ffffffffffffffffff\r\n", &[]).is_err());
        let long = vec![b'1'; 5000];
        assert!(decode_split(&long, &[]).is_err());
    }

    #[test]
    fn truncated_is_not_done() {
        let (_, _, done) = decode_split(b"5\r\nhel", &[]).unwrap();
        assert!(!done);
    }

    proptest! {
        #[test]
        fn random_splits(splits in proptest::collection::vec(0usize..60, 0..10)) {
            let expect = decode_split(BODY, &[]).unwrap();
            prop_assert_eq!(decode_split(BODY, &splits).unwrap(), expect);
        }

        #[test]
        fn never_panics(input in proptest::collection::vec(any::<u8>(), 0..200), splits in proptest::collection::vec(0usize..200, 0..5)) {
            let _ = decode_split(&input, &splits);
        }
    }
}
