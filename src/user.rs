//! `user` (seed M4, LU interface): the server side of HTTP/1.1 toward one viewer connection —
//! its input buffer and parsed (pipelined) requests, and its output queue of shared `Bytes`.
//! Which object answers a request is the node's decision; this module only keeps the wire state.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes, BytesMut};

use crate::http::{find_header_end, parse_request, HttpError, Request, RequestLimits};
use crate::store::ObjId;

/// How the front response reads its object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrontMode {
    /// Waiting for the upstream head.
    AwaitHead,
    /// Streaming body chunks as they arrive; `chunked` frames each one.
    Body {
        /// Frame chunks with chunked coding.
        chunked: bool,
    },
    /// Waiting for the object to complete (Range requests are served from complete objects).
    AwaitComplete,
}

/// The response being produced for the oldest request.
#[derive(Debug, Clone)]
pub struct Front {
    /// The request.
    pub req: Request,
    /// The object it reads.
    pub obj: ObjId,
    /// Token that proves a store reader entry is this attachment (not a stale one).
    pub token: u64,
    /// How it reads.
    pub mode: FrontMode,
    /// Channel id the bytes are counted against.
    pub channel: u64,
}

/// One queued piece of output and the channel it is counted against (0: none).
#[derive(Debug, Clone)]
pub struct OutChunk {
    /// Bytes to write (shared with the store for bodies).
    pub bytes: Bytes,
    /// Channel id, or 0.
    pub channel: u64,
}

/// The state of one viewer connection.
#[derive(Debug)]
pub struct ViewerConn {
    /// Unparsed input.
    inbuf: BytesMut,
    /// Bytes of `inbuf` already searched for the end of a head.
    scanned: usize,
    /// When the first byte of the head in progress arrived.
    pub head_started: Option<u64>,
    /// Parsed requests not yet being answered (pipelining).
    pub pending: VecDeque<Request>,
    /// The response being produced.
    pub front: Option<Front>,
    /// Output not yet written.
    pub out: VecDeque<OutChunk>,
    /// Total bytes in `out`.
    pub out_len: u64,
    /// Close once `out` is flushed (Connection: close, or after an error response).
    pub close_after_flush: bool,
    /// Close at once, dropping output (an upstream failure after the head was sent).
    pub abort: bool,
    /// A protocol error to answer once the responses before it are queued; then close.
    pub pending_error: Option<(u16, &'static str)>,
    /// Input is no longer parsed (after an error or `Connection: close`).
    pub stop_reading: bool,
    /// Last time anything happened on this connection.
    pub last_activity: u64,
    /// Channel of the latest request (viewer accounting).
    pub channel: Option<u64>,
    /// The client's address, if the host told it.
    pub peer: Option<std::net::IpAddr>,
    /// Earliest heap entry scheduled for this viewer's timer.
    pub scheduled: u64,
    /// Already in the node's ready queue.
    pub in_ready: bool,
    /// A complete request head arrived on this connection (a connection that never sends one
    /// is closed at the head timeout, not kept for the idle timeout).
    pub seen_request: bool,
}

impl ViewerConn {
    /// A fresh connection opened at `now`.
    pub fn new(now: u64) -> Self {
        ViewerConn {
            inbuf: BytesMut::new(),
            scanned: 0,
            head_started: None,
            pending: VecDeque::new(),
            front: None,
            out: VecDeque::new(),
            out_len: 0,
            close_after_flush: false,
            abort: false,
            stop_reading: false,
            pending_error: None,
            last_activity: now,
            channel: None,
            peer: None,
            scheduled: u64::MAX,
            in_ready: false,
            seen_request: false,
        }
    }

    /// Takes input bytes and parses every complete request head in them, up to `max_pipeline`
    /// queued requests (the rest stays buffered). An error is the status to answer with; the
    /// connection then stops reading.
    pub fn recv(&mut self, now: u64, data: &[u8], limits: &RequestLimits, max_pipeline: usize) -> Result<(), HttpError> {
        self.last_activity = now;
        if self.stop_reading {
            return Ok(());
        }
        if !data.is_empty() && self.inbuf.is_empty() {
            self.head_started = Some(now);
        }
        self.inbuf.extend_from_slice(data);
        // A client that pipelines far ahead of its responses gets no unbounded buffer.
        if self.pending.len() >= max_pipeline && self.inbuf.len() > 4 * limits.max_head_bytes {
            self.stop_reading = true;
            self.inbuf.clear();
            return Err(HttpError::bad_request("too many pipelined requests"));
        }
        self.parse_buffered(now, limits, max_pipeline)
    }

    /// Parses buffered heads (also called when the pipeline drains).
    pub fn parse_buffered(&mut self, now: u64, limits: &RequestLimits, max_pipeline: usize) -> Result<(), HttpError> {
        while !self.stop_reading && self.pending.len() < max_pipeline && !self.inbuf.is_empty() {
            // Only search bytes not searched before (a byte-at-a-time sender costs O(n)).
            let from = self.scanned.saturating_sub(3);
            let limit = limits.max_head_bytes + 8;
            let found = find_header_end(&self.inbuf[from..], limit.saturating_sub(from)).map(|e| e + from);
            if found.is_none() {
                self.scanned = self.inbuf.len();
                if self.inbuf.len() <= limits.max_head_bytes {
                    // Still growing: answer early only if it can never become valid.
                    parse_request(&self.inbuf, limits)?;
                    return Ok(());
                }
            }
            match parse_request(&self.inbuf, limits) {
                Ok(Some((req, used))) => {
                    self.seen_request = true;
                    self.inbuf.advance(used);
                    self.scanned = 0;
                    self.head_started = if self.inbuf.is_empty() { None } else { Some(now) };
                    if !req.keep_alive {
                        self.stop_reading = true;
                    }
                    self.pending.push_back(req);
                }
                Ok(None) => return Ok(()),
                Err(e) => {
                    self.stop_reading = true;
                    self.inbuf.clear();
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// True when a partial head is buffered.
    pub fn has_partial_head(&self) -> bool {
        !self.inbuf.is_empty() && !self.stop_reading
    }

    /// Queues output counted against `channel` (0 for none).
    pub fn push_out(&mut self, bytes: Bytes, channel: u64) {
        if bytes.is_empty() || self.abort {
            return;
        }
        self.out_len += bytes.len() as u64;
        self.out.push_back(OutChunk { bytes, channel });
    }

    /// Fills `slices` with the queued output, in order; returns how many were filled.
    pub fn poll_transmit<'a>(&'a self, slices: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (slot, chunk) in slices.iter_mut().zip(self.out.iter()) {
            *slot = IoSlice::new(&chunk.bytes);
            n += 1;
        }
        n
    }

    /// Consumes `n` written bytes from the queue, reporting (channel, bytes) for accounting.
    pub fn sent(&mut self, mut n: u64, mut account: impl FnMut(u64, u64)) -> u64 {
        let mut taken = 0;
        while n > 0 {
            let Some(front) = self.out.front_mut() else { break };
            let len = front.bytes.len() as u64;
            if n >= len {
                account(front.channel, len);
                n -= len;
                taken += len;
                self.out.pop_front();
            } else {
                front.bytes.advance(n as usize);
                account(front.channel, n);
                taken += n;
                n = 0;
            }
        }
        self.out_len -= taken;
        taken
    }

    /// True when the host should close this connection now.
    pub fn wants_close(&self) -> bool {
        self.abort || (self.close_after_flush && self.out.is_empty())
    }

    /// True when nothing is in progress: no request, no output, no partial head.
    pub fn is_idle(&self) -> bool {
        self.front.is_none()
            && self.pending.is_empty()
            && self.pending_error.is_none()
            && self.out.is_empty()
            && self.inbuf.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PIPELINE: &[u8] = b"GET /live/ch1/index.m3u8 HTTP/1.1\r\nHost: node\r\n\r\nHEAD /live/ch1/seg_1.ts?x=1 HTTP/1.1\r\nHost: node\r\nRange: bytes=0-9\r\n\r\nGET /live/ch1/seg_2.ts HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n";

    fn feed(input: &[u8], splits: &[usize]) -> (Vec<Request>, Result<(), HttpError>) {
        let mut v = ViewerConn::new(0);
        let mut points: Vec<usize> = splits.iter().copied().filter(|p| *p <= input.len()).collect();
        points.sort_unstable();
        points.push(input.len());
        let mut last = 0;
        for p in points {
            if p < last {
                continue;
            }
            if let Err(e) = v.recv(0, &input[last..p], &RequestLimits::default(), 64) {
                return (v.pending.into_iter().collect(), Err(e));
            }
            last = p;
        }
        (v.pending.into_iter().collect(), Ok(()))
    }

    #[test]
    fn pipelined_requests_in_order() {
        let (reqs, r) = feed(PIPELINE, &[]);
        assert!(r.is_ok());
        assert_eq!(reqs.len(), 3);
        assert_eq!(reqs[1].range.as_deref(), Some("bytes=0-9"));
        assert!(!reqs[2].keep_alive);
    }

    #[test]
    fn every_split_point_gives_same_requests() {
        let expect = feed(PIPELINE, &[]);
        for i in 0..=PIPELINE.len() {
            assert_eq!(feed(PIPELINE, &[i]), expect, "split at {i}");
        }
    }

    #[test]
    fn byte_at_a_time() {
        let all: Vec<usize> = (0..PIPELINE.len()).collect();
        assert_eq!(feed(PIPELINE, &all), feed(PIPELINE, &[]));
    }

    #[test]
    fn oversized_head_is_431_even_when_fed_slowly() {
        let big = format!("GET / HTTP/1.1\r\nHost: x\r\nX: {}\r\n\r\n", "a".repeat(9000));
        let splits: Vec<usize> = (0..big.len()).step_by(100).collect();
        let (_, r) = feed(big.as_bytes(), &splits);
        assert_eq!(r.unwrap_err().status, 431);
    }

    #[test]
    fn pipelining_flood_is_bounded() {
        let mut v = ViewerConn::new(0);
        let one = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
        let mut err = None;
        for _ in 0..10_000 {
            if let Err(e) = v.recv(0, one, &RequestLimits::default(), 16) {
                err = Some(e);
                break;
            }
        }
        assert_eq!(err.map(|e| e.status), Some(400));
        assert_eq!(v.pending.len(), 16, "parsed requests stay answerable, in order");
        assert!(v.inbuf.is_empty());
    }

    #[test]
    fn output_queue_partial_writes() {
        let mut v = ViewerConn::new(0);
        v.push_out(Bytes::from_static(b"hello"), 1);
        v.push_out(Bytes::from_static(b"world"), 2);
        let mut counted = Vec::new();
        assert_eq!(v.sent(7, |c, n| counted.push((c, n))), 7);
        assert_eq!(counted, vec![(1, 5), (2, 2)]);
        let mut slices = [IoSlice::new(&[]); 4];
        assert_eq!(v.poll_transmit(&mut slices), 1);
        assert_eq!(&*slices[0], b"rld");
        assert_eq!(v.out_len, 3);
    }

    proptest! {
        #[test]
        fn random_splits_give_same_requests(splits in proptest::collection::vec(0usize..PIPELINE.len(), 0..12)) {
            prop_assert_eq!(feed(PIPELINE, &splits), feed(PIPELINE, &[]));
        }

        #[test]
        fn arbitrary_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..400), splits in proptest::collection::vec(0usize..400, 0..6)) {
            let _ = feed(&input, &splits);
        }
    }
}
