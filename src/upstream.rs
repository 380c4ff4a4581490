//! `upstream` (seed M5, LE interface): the client side of HTTP/1.1 toward a CDN endpoint, "as if
//! it were a viewer". One [`UpConn`] per TCP connection the host opened for the node; it writes
//! one GET at a time and turns the response bytes into [`UpEvent`]s (head, body chunks, end).
//! Pooling, retries and what the events mean for viewers are the node's business.

use std::net::SocketAddr;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::http::{parse_response_head, BodyKind, ChunkedDecoder, HttpError, ResponseHead};
use crate::store::ObjId;

/// Where an upstream connection is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpPhase {
    /// The host is connecting.
    Connecting,
    /// Connected, no request outstanding (in the pool).
    Idle,
    /// Request sent (or being sent), head not complete yet.
    AwaitHead,
    /// Receiving the body.
    Body,
    /// The node asked the host to close it.
    Closing,
}

#[derive(Debug)]
enum BodyState {
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
}

/// What a response turned into, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpEvent {
    /// The final response head.
    Head(ResponseHead),
    /// A body chunk (a zero-copy slice of what the host gave).
    Data(Bytes),
    /// The body ended cleanly; `reusable` if the connection can serve another request.
    Done {
        /// Whether the connection can go back to the pool.
        reusable: bool,
    },
    /// The response is broken (malformed, truncated); the connection must be closed.
    Failed(HttpError),
}

/// One connection toward a CDN endpoint.
#[derive(Debug)]
pub struct UpConn {
    /// The endpoint.
    pub endpoint: SocketAddr,
    /// Its phase.
    pub phase: UpPhase,
    /// The object being fetched on it.
    pub fetch: Option<ObjId>,
    /// Request bytes not yet written.
    pub out: Bytes,
    buf: BytesMut,
    body: Option<BodyState>,
    keep_alive: bool,
    /// It served a response before (a silent close on reuse is retried, not failed).
    pub reused: bool,
    /// Response bytes received for the current request.
    pub received: u64,
    /// Deadline of the current phase (connect, first byte, idle body, idle in pool).
    pub deadline: u64,
    /// Earliest heap entry scheduled for this connection.
    pub scheduled: u64,
    /// Already in the node's ready queue.
    pub in_ready: bool,
    /// Its pool slot was given back (the node asked the host to close it).
    pub released: bool,
}

impl UpConn {
    /// A connection the host is about to open.
    pub fn new(endpoint: SocketAddr, fetch: Option<ObjId>) -> Self {
        UpConn {
            endpoint,
            phase: UpPhase::Connecting,
            fetch,
            out: Bytes::new(),
            buf: BytesMut::new(),
            body: None,
            keep_alive: false,
            reused: false,
            received: 0,
            deadline: u64::MAX,
            scheduled: u64::MAX,
            in_ready: false,
            released: false,
        }
    }

    /// Starts a GET for `path` with `host` on this (connected, idle) connection.
    pub fn start_request(&mut self, obj: ObjId, path: &str, host: &str) {
        let mut b = BytesMut::with_capacity(96 + path.len() + host.len());
        b.put_slice(b"GET ");
        b.put_slice(path.as_bytes());
        b.put_slice(b" HTTP/1.1\r\nHost: ");
        b.put_slice(host.as_bytes());
        b.put_slice(b"\r\nUser-Agent: listo/");
        b.put_slice(env!("CARGO_PKG_VERSION").as_bytes());
        b.put_slice(b"\r\nAccept: */*\r\nConnection: keep-alive\r\n\r\n");
        self.out = b.freeze();
        self.fetch = Some(obj);
        self.phase = UpPhase::AwaitHead;
        self.buf.clear();
        self.body = None;
        self.received = 0;
    }

    /// Consumes `n` written request bytes.
    pub fn sent(&mut self, n: usize) -> usize {
        let n = n.min(self.out.len());
        self.out.advance(n);
        n
    }

    /// Feeds response bytes; pushes what they mean to `events`.
    pub fn recv(&mut self, data: Bytes, events: &mut Vec<UpEvent>) {
        if data.is_empty() {
            return;
        }
        self.received += data.len() as u64;
        if !matches!(self.phase, UpPhase::AwaitHead | UpPhase::Body) {
            // Bytes nobody asked for: the connection is out of step; drop it.
            events.push(UpEvent::Failed(HttpError::new(502, "unsolicited upstream bytes")));
            self.phase = UpPhase::Closing;
            return;
        }
        let mut data = data;
        if self.phase == UpPhase::AwaitHead {
            self.buf.extend_from_slice(&data);
            loop {
                match parse_response_head(&self.buf) {
                    Ok(None) => return,
                    Ok(Some((head, used))) => {
                        self.buf.advance(used);
                        if head.status < 200 {
                            if head.status == 101 {
                                self.fail(events, HttpError::new(502, "upstream switched protocols"));
                                return;
                            }
                            continue; // 100 Continue, 103 Early Hints: wait for the final head.
                        }
                        self.keep_alive = head.keep_alive;
                        self.body = Some(match head.body {
                            BodyKind::Empty => BodyState::Length(0),
                            BodyKind::Length(n) => BodyState::Length(n),
                            BodyKind::Chunked => BodyState::Chunked(ChunkedDecoder::new()),
                            BodyKind::UntilClose => BodyState::UntilClose,
                        });
                        events.push(UpEvent::Head(head));
                        self.phase = UpPhase::Body;
                        data = self.buf.split().freeze();
                        break;
                    }
                    Err(e) => {
                        self.fail(events, e);
                        return;
                    }
                }
            }
        }
        self.body_bytes(data, events);
    }

    fn body_bytes(&mut self, mut data: Bytes, events: &mut Vec<UpEvent>) {
        let Some(body) = self.body.as_mut() else { return };
        match body {
            BodyState::Length(rem) => {
                let n = (data.len() as u64).min(*rem) as usize;
                if n > 0 {
                    events.push(UpEvent::Data(data.split_to(n)));
                }
                *rem -= n as u64;
                if *rem == 0 {
                    self.finish(!data.is_empty(), events);
                }
            }
            BodyState::Chunked(dec) => {
                let mut chunks = Vec::new();
                let r = dec.decode(&mut data, &mut chunks);
                let done = dec.is_done();
                events.extend(chunks.into_iter().map(UpEvent::Data));
                match r {
                    Err(e) => self.fail(events, e),
                    Ok(()) if done => self.finish(!data.is_empty(), events),
                    Ok(()) => {}
                }
            }
            BodyState::UntilClose => events.push(UpEvent::Data(data)),
        }
    }

    fn finish(&mut self, extra_bytes: bool, events: &mut Vec<UpEvent>) {
        // Extra bytes after a complete response mean the peer is out of step: don't reuse.
        let reusable = self.keep_alive && !extra_bytes;
        self.body = None;
        self.fetch = None;
        self.phase = if reusable { UpPhase::Idle } else { UpPhase::Closing };
        self.reused = true;
        events.push(UpEvent::Done { reusable });
    }

    fn fail(&mut self, events: &mut Vec<UpEvent>, e: HttpError) {
        self.phase = UpPhase::Closing;
        self.body = None;
        events.push(UpEvent::Failed(e));
    }

    /// The peer closed (EOF or reset): ends a close-delimited body cleanly, anything else in
    /// progress as truncated.
    pub fn closed(&mut self, events: &mut Vec<UpEvent>) {
        match (&self.phase, &self.body) {
            (UpPhase::Body, Some(BodyState::UntilClose)) => {
                self.keep_alive = false;
                self.finish(false, events);
                self.phase = UpPhase::Closing;
            }
            (UpPhase::AwaitHead, _) => self.fail(events, HttpError::new(502, "upstream closed before the head")),
            (UpPhase::Body, _) => self.fail(events, HttpError::new(502, "upstream body truncated")),
            _ => self.phase = UpPhase::Closing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn run(resp: &[u8], splits: &[usize], eof: bool) -> Vec<UpEvent> {
        let mut c = UpConn::new("127.0.0.1:1".parse().unwrap(), None);
        c.phase = UpPhase::Idle;
        c.start_request(1, "/a.ts", "cdn");
        let mut events = Vec::new();
        let mut points: Vec<usize> = splits.iter().copied().filter(|p| *p <= resp.len()).collect();
        points.sort_unstable();
        points.push(resp.len());
        let mut last = 0;
        for p in points {
            if p < last || c.phase == UpPhase::Closing || c.phase == UpPhase::Idle {
                continue;
            }
            c.recv(Bytes::copy_from_slice(&resp[last..p]), &mut events);
            last = p;
        }
        if eof {
            c.closed(&mut events);
        }
        // Coalesce data so split results compare equal.
        let mut merged: Vec<UpEvent> = Vec::new();
        for e in events {
            match (merged.last_mut(), e) {
                (Some(UpEvent::Data(prev)), UpEvent::Data(d)) => {
                    let mut b = BytesMut::from(&prev[..]);
                    b.extend_from_slice(&d);
                    *prev = b.freeze();
                }
                (_, e) => merged.push(e),
            }
        }
        merged
    }

    const CL: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world";
    const CHUNKED: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";

    #[test]
    fn request_bytes() {
        let mut c = UpConn::new("127.0.0.1:1".parse().unwrap(), None);
        c.start_request(7, "/live/a.ts?x=1", "cdn.example");
        let s = std::str::from_utf8(&c.out).unwrap();
        assert!(s.starts_with("GET /live/a.ts?x=1 HTTP/1.1\r\nHost: cdn.example\r\n"));
        assert!(s.ends_with("\r\n\r\n"));
    }

    #[test]
    fn content_length_and_chunked_bodies() {
        for resp in [CL, CHUNKED] {
            let ev = run(resp, &[], false);
            assert!(matches!(&ev[0], UpEvent::Head(h) if h.status == 200));
            assert_eq!(ev[1], UpEvent::Data(Bytes::from_static(b"hello world")));
            assert_eq!(ev[2], UpEvent::Done { reusable: true });
        }
    }

    #[test]
    fn every_split_point_gives_same_events() {
        for resp in [CL, CHUNKED] {
            let expect = run(resp, &[], false);
            for i in 0..=resp.len() {
                assert_eq!(run(resp, &[i], false), expect, "split at {i}");
            }
        }
    }

    #[test]
    fn truncation_is_a_failure_never_done() {
        let ev = run(&CL[..CL.len() - 3], &[], true);
        assert!(matches!(ev.last(), Some(UpEvent::Failed(_))));
        assert!(!ev.iter().any(|e| matches!(e, UpEvent::Done { .. })));
        let ev = run(&CHUNKED[..CHUNKED.len() - 5], &[], true);
        assert!(matches!(ev.last(), Some(UpEvent::Failed(_))));
    }

    #[test]
    fn close_delimited_body_ends_on_close() {
        let ev = run(b"HTTP/1.0 200 OK\r\n\r\nabc", &[], true);
        assert_eq!(ev[1], UpEvent::Data(Bytes::from_static(b"abc")));
        assert_eq!(ev[2], UpEvent::Done { reusable: false });
    }

    #[test]
    fn extra_bytes_after_body_prevent_reuse() {
        let ev = run(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\naJUNK", &[], false);
        assert_eq!(ev.last(), Some(&UpEvent::Done { reusable: false }));
    }

    proptest! {
        #[test]
        fn random_splits(splits in proptest::collection::vec(0usize..90, 0..10)) {
            for resp in [CL, CHUNKED] {
                prop_assert_eq!(run(resp, &splits, false), run(resp, &[], false));
            }
        }

        #[test]
        fn arbitrary_responses_never_panic(input in proptest::collection::vec(any::<u8>(), 0..300), splits in proptest::collection::vec(0usize..300, 0..5)) {
            let _ = run(&input, &splits, true);
        }
    }
}
