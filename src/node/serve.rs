//! Serving viewers: route a request to a channel and an object (hit / coalesce / miss), then
//! fan the object out — head, shared body chunks as they arrive, end — to every reader.

use bytes::Bytes;

use super::{ConnId, Node, ViewerId};
use crate::admin::Event;
use crate::http::{write_response_head, BodyFraming, BodyKind, Method, Request};
use crate::media;
use crate::store::{Lookup, ObjId, ObjKind, ObjState, ObjectKey};
use crate::user::{Front, FrontMode};

/// The store key for a path and query: the query's parameters sorted, so `?a=1&b=2` and
/// `?b=2&a=1` share one object.
pub(crate) fn normalize_key(path: &str, query: Option<&str>) -> String {
    match query {
        None | Some("") => path.to_string(),
        Some(q) => {
            let mut params: Vec<&str> = q.split('&').filter(|p| !p.is_empty()).collect();
            params.sort_unstable();
            format!("{}?{}", path, params.join("&"))
        }
    }
}

const CRLF: Bytes = Bytes::from_static(b"\r\n");
const LAST_CHUNK: Bytes = Bytes::from_static(b"0\r\n\r\n");

/// Unwritten output above which a viewer's next pipelined request waits (see `progress_viewer`).
const PIPELINE_OUTPUT_WINDOW: u64 = 256 * 1024;

impl Node {
    /// Starts answering queued requests until one has to wait; then schedules the viewer.
    pub(super) fn progress_viewer(&mut self, now: u64, id: u64) {
        for _ in 0..=self.cfg.max_pipeline * 2 {
            let Some(v) = self.viewers.get_mut(&id) else { return };
            if v.front.is_some() || v.abort || v.close_after_flush {
                break;
            }
            // Answer the next pipelined request only once what is queued has (nearly) gone out:
            // a client that pipelines cached objects and never reads would otherwise make the
            // node queue a response per request without bound. Its requests wait parsed (up to
            // `max_pipeline`), then unparsed, then it gets 400 (`ViewerConn::recv`).
            if v.out_len > PIPELINE_OUTPUT_WINDOW && !v.pending.is_empty() {
                break;
            }
            if let Some(req) = v.pending.pop_front() {
                if v.pending.is_empty() && v.pending.capacity() > 0 {
                    // An idle keep-alive connection keeps no request-sized buffers.
                    v.pending = std::collections::VecDeque::new();
                }
                self.start_request(now, id, req);
                continue;
            }
            if let Some((status, _)) = v.pending_error.take() {
                self.send_error(now, id, status, false, 0);
                break;
            }
            let (limits, pipe) = (self.limits, self.cfg.max_pipeline);
            match v.parse_buffered(now, &limits, pipe) {
                Err(e) => self.reject(now, id, e.status, e.reason),
                Ok(()) if v.pending.is_empty() => break,
                Ok(()) => {}
            }
        }
        if let Some(v) = self.viewers.get(&id) {
            if !v.out.is_empty() || v.wants_close() {
                self.mark_ready(ConnId::Viewer(ViewerId(id)));
            }
        }
        self.reschedule_viewer(id);
    }

    /// Answers with an error status and closes after it (protocol errors, 408). The error goes
    /// out after the responses to the requests parsed before it, in order.
    pub(super) fn reject(&mut self, _now: u64, id: u64, status: u16, reason: &'static str) {
        self.events.push(Event::RequestRejected { status, reason: reason.to_string() });
        if let Some(v) = self.viewers.get_mut(&id) {
            v.stop_reading = true;
            v.pending_error.get_or_insert((status, reason));
        }
    }

    /// Queues a small error response. `keep_alive` leaves the connection usable.
    fn send_error(&mut self, now: u64, id: u64, status: u16, keep_alive: bool, channel: u64) {
        *self.errors.entry(status).or_default() += 1;
        let (ch, _) = super::renditions::untag(channel);
        if let Some(s) = self.chan_stats.get_mut(&ch) {
            match s.error_responses.iter_mut().find(|(st, _)| *st == status) {
                Some((_, n)) => *n += 1,
                None => {
                    s.error_responses.push((status, 1));
                    s.error_responses.sort_unstable();
                }
            }
        }
        let date = self.date_header(now);
        let Some(v) = self.viewers.get_mut(&id) else { return };
        let body = format!("{} {}\n", status, crate::http::reason_phrase(status));
        let mut extra: Vec<&[u8]> = vec![b"Content-Type: text/plain\r\nCache-Control: no-store\r\n"];
        if status == 405 {
            extra.push(b"Allow: GET, HEAD, OPTIONS\r\n");
        }
        if status == 503 || status == 502 || status == 504 {
            extra.push(b"Retry-After: 1\r\n");
        }
        let is_head = v.front.as_ref().is_some_and(|f| f.req.method == Method::Head);
        let framing = if is_head { BodyFraming::NoBody(Some(body.len() as u64)) } else { BodyFraming::Length(body.len() as u64) };
        let head = write_response_head(status, &date, &extra, framing, keep_alive);
        v.push_out(head, channel);
        if !is_head {
            v.push_out(Bytes::from(body), channel);
        }
        if !keep_alive {
            v.close_after_flush = true;
            v.stop_reading = true;
        }
        self.mark_ready(ConnId::Viewer(ViewerId(id)));
    }

    /// Answers a CORS preflight for an instructed channel's path.
    fn preflight(&mut self, now: u64, id: u64, req: Request) {
        let date = self.date_header(now);
        let origin = self.cfg.cors_origin.clone().unwrap_or_else(|| "*".to_string());
        // Echo the requested headers only if they are plain tokens (no header injection).
        let allow_headers = req
            .cors_request_headers
            .as_deref()
            .filter(|h| h.bytes().all(|b| b.is_ascii_alphanumeric() || b" ,-_".contains(&b)))
            .unwrap_or("Range, If-None-Match, If-Modified-Since");
        let lines = format!(
            "Access-Control-Allow-Origin: {origin}\r\nAccess-Control-Allow-Methods: GET, HEAD, OPTIONS\r\nAccess-Control-Allow-Headers: {allow_headers}\r\nAccess-Control-Max-Age: 86400\r\n"
        );
        let keep = req.keep_alive;
        let h = write_response_head(204, &date, &[lines.as_bytes()], BodyFraming::NoBody(None), keep);
        self.set_front(id, req, 0, 0, FrontMode::AwaitHead);
        if let Some(v) = self.viewers.get_mut(&id) {
            v.push_out(h, 0);
        }
        self.finish_front(id);
    }

    /// Routes one request: unknown channel → 404; else hit, coalesce or miss.
    fn start_request(&mut self, now: u64, id: u64, mut req: Request) {
        if self.draining {
            req.keep_alive = false;
        }
        if req.method == Method::Options && self.channels.route(&req.path).is_some() {
            self.preflight(now, id, req);
            return;
        }
        let Some(ch) = self.channels.route(&req.path).filter(|_| req.method != Method::Options) else {
            self.events.push(Event::RequestRejected { status: 404, reason: "no channel for path".into() });
            let keep = req.keep_alive;
            self.set_front(id, req, 0, 0, FrontMode::AwaitHead);
            self.send_error(now, id, 404, keep, 0);
            self.finish_front(id);
            return;
        };
        let channel = ch.id;
        let key = ObjectKey { channel, path: normalize_key(&req.path, req.query.as_deref()).into() };
        let mut peer = None;
        if let Some(v) = self.viewers.get_mut(&id) {
            v.channel = Some(channel);
            peer = v.peer;
        }
        let session = super::audience::session_key(peer, req.user_agent.as_deref(), id);
        let is_playlist = media::is_playlist_path(&req.path);
        let rendition = self.renditions.entry(channel).or_default().classify(&req.path, &key.path, is_playlist);
        self.note_session(now, channel, rendition, session);
        // Bytes sent for this request are counted against its channel and rendition.
        let tag = super::renditions::tag(channel, rendition);
        // LL-HLS blocking reload: keyed by (rendition, msn, part) like any query, so every
        // viewer holding for the same part shares one upstream blocking request.
        let blocking = is_playlist && req.query.as_deref().is_some_and(|q| q.split('&').any(|p| p.starts_with("_HLS_msn=")));
        if is_playlist && !req.query.as_deref().is_some_and(|q| q.contains("_HLS_")) {
            self.note_playlist_viewer(now, &key);
        }
        let lookup = self.store.lookup(&key, now);
        let stats = self.chan_stats.entry(channel).or_default();
        let mut rstats = rendition.and_then(|r| self.renditions.get_mut(&channel)?.stats_mut(r));
        stats.requests += 1;
        if let Some(r) = rstats.as_deref_mut() {
            r.requests += 1;
        }
        if !is_playlist {
            stats.segment_requests += 1;
        }
        match lookup {
            Lookup::Hit(obj) => {
                stats.hits += 1;
                if let Some(r) = rstats {
                    r.hits += 1;
                }
                if !is_playlist {
                    stats.segment_hits += 1;
                }
                self.set_front(id, req, obj, tag, FrontMode::AwaitHead);
                self.respond_from_object(now, id);
            }
            Lookup::Filling(obj) => {
                stats.coalesced += 1;
                if let Some(r) = rstats {
                    r.coalesced += 1;
                }
                self.attach(now, id, req, obj, tag);
            }
            Lookup::Miss => {
                stats.misses += 1;
                if let Some(r) = rstats {
                    r.misses += 1;
                }
                let kind = if is_playlist { ObjKind::Playlist } else { ObjKind::Segment };
                // Upstream gets the viewer's query as sent (signed CDN URLs depend on its order);
                // only the cache key is normalized.
                let upstream_path = req.path_and_query();
                let obj = self.store.insert_filling(key, kind, now);
                self.attach(now, id, req, obj, tag);
                if blocking {
                    let target = self.audience.get(&channel).and_then(|a| a.target()).unwrap_or(6 * crate::SECOND);
                    self.start_fetch_blocking(now, obj, channel, upstream_path, target.saturating_mul(3));
                } else {
                    self.start_fetch(now, obj, channel, upstream_path);
                }
            }
        }
    }

    fn set_front(&mut self, id: u64, req: Request, obj: ObjId, channel: u64, mode: FrontMode) -> u64 {
        let token = self.alloc_id();
        if let Some(v) = self.viewers.get_mut(&id) {
            v.front = Some(Front { req, obj, token, mode, channel });
        }
        token
    }

    /// Attaches a viewer to a filling object: it reads from the first byte as bytes arrive.
    fn attach(&mut self, now: u64, id: u64, req: Request, obj: ObjId, channel: u64) {
        let token = self.set_front(id, req, obj, channel, FrontMode::AwaitHead);
        let head_known = match self.store.get_mut(obj) {
            Some(o) => {
                o.readers.push((id, token));
                o.head.is_some()
            }
            None => false,
        };
        if head_known {
            self.respond_from_object(now, id);
        }
    }

    /// The viewer's front request, given its object now has a head: 304, HEAD, a complete
    /// response, a Range wait, or a stream of the chunks so far and those to come.
    fn respond_from_object(&mut self, now: u64, id: u64) {
        let date = self.date_header(now);
        let Some(v) = self.viewers.get_mut(&id) else { return };
        let Some(mut front) = v.front.take() else { return };
        let Some(o) = self.store.get(front.obj).filter(|o| o.head.is_some()) else {
            v.front = Some(front);
            return;
        };
        let Some(head) = o.head.as_ref() else { return };
        let complete = o.state == ObjState::Complete;
        let channel = front.channel;
        let keep = front.req.keep_alive;
        let ok = head.status == 200;
        let cors = cors_line(self.cfg.cors_origin.as_deref(), &head.passthrough);
        let known_len = match (complete, head.body) {
            (true, _) => Some(o.len),
            (false, BodyKind::Length(n)) => Some(n),
            (false, BodyKind::Empty) => Some(0),
            _ => None,
        };
        let req = &front.req;
        let mut finished = true;
        if ok && not_modified(req, head.etag.as_deref(), head.last_modified.as_deref()) {
            let h = write_response_head(304, &date, &[&head.passthrough, &cors], BodyFraming::NoBody(None), keep);
            v.push_out(h, channel);
        } else if req.method == Method::Head {
            let h = write_response_head(head.status, &date, &[&head.passthrough, &cors], BodyFraming::NoBody(known_len), keep);
            v.push_out(h, channel);
        } else if !complete && o.kind == ObjKind::Playlist && self.cfg.prefetch {
            // Playlists may be gated until their new segments are in: answer once complete.
            front.mode = FrontMode::AwaitComplete;
            finished = false;
        } else if ok && req.range.is_some() && !complete {
            front.mode = FrontMode::AwaitComplete;
            finished = false;
        } else if let Some((start, end)) = req.range.as_deref().filter(|_| ok).and_then(|r| parse_range(r, o.len)) {
            let cr = format!("Content-Range: bytes {}-{}/{}\r\n", start, end, o.len);
            let extra: [&[u8]; 3] = [&head.passthrough, cr.as_bytes(), &cors];
            let h = write_response_head(206, &date, &extra, BodyFraming::Length(end - start + 1), keep);
            v.push_out(h, channel);
            for piece in slice_chunks(&o.chunks, start, end + 1) {
                v.push_out(piece, channel);
            }
        } else if ok && req.range.as_deref().is_some_and(|r| range_unsatisfiable(r, o.len)) {
            let cr = format!("Content-Range: bytes */{}\r\n", o.len);
            let h = write_response_head(416, &date, &[cr.as_bytes(), &cors], BodyFraming::Length(0), keep);
            v.push_out(h, channel);
        } else if known_len.is_none() && req.minor_version == 0 {
            // An HTTP/1.0 viewer cannot be sent chunked coding, and a close-delimited body would
            // make a truncated fetch look complete to it: it gets the object with its length,
            // once complete (or the fetch's error status).
            front.mode = FrontMode::AwaitComplete;
            finished = false;
        } else {
            // The whole object (also for unparsable or multi-range requests, as RFC 9110 allows).
            let framing = match known_len {
                Some(n) => BodyFraming::Length(n),
                None if req.minor_version >= 1 => BodyFraming::Chunked,
                None => BodyFraming::Close,
            };
            let keep = keep && framing != BodyFraming::Close;
            let h = write_response_head(head.status, &date, &[&head.passthrough, &cors], framing, keep);
            v.push_out(h, channel);
            let chunked = framing == BodyFraming::Chunked;
            for c in &o.chunks {
                push_body(v, c, chunked, channel);
            }
            front.req.keep_alive = keep;
            front.mode = FrontMode::Body { chunked };
            if complete && chunked {
                v.push_out(LAST_CHUNK, channel);
            }
            finished = complete;
        }
        v.front = Some(front);
        if finished {
            self.finish_front(id);
        }
    }

    /// The front response is fully queued: move on to the next request (or close).
    fn finish_front(&mut self, id: u64) {
        let Some(v) = self.viewers.get_mut(&id) else { return };
        let Some(front) = v.front.take() else { return };
        if !front.req.keep_alive {
            v.close_after_flush = true;
            v.stop_reading = true;
            v.pending.clear();
        }
        self.mark_ready(ConnId::Viewer(ViewerId(id)));
    }

    /// Readers of `obj` that are still attached (stale entries dropped).
    fn live_readers(&mut self, obj: ObjId) -> Vec<u64> {
        let Some(o) = self.store.get_mut(obj) else { return Vec::new() };
        let viewers = &self.viewers;
        o.readers.retain(|(vid, token)| viewers.get(vid).and_then(|v| v.front.as_ref()).is_some_and(|f| f.token == *token));
        o.readers.iter().map(|(vid, _)| *vid).collect()
    }

    /// The object's head arrived: every reader waiting for it gets its response started.
    pub(super) fn object_head(&mut self, now: u64, obj: ObjId) {
        for id in self.live_readers(obj) {
            self.respond_from_object(now, id);
            self.progress_viewer(now, id);
        }
    }

    /// A body chunk arrived: every streaming reader gets a reference to it.
    pub(super) fn object_data(&mut self, _now: u64, obj: ObjId, chunk: Bytes) {
        let Some(o) = self.store.get_mut(obj) else { return };
        let mut stale = false;
        for (vid, token) in o.readers.iter() {
            let Some(v) = self.viewers.get_mut(vid) else {
                stale = true;
                continue;
            };
            let Some(front) = v.front.as_ref() else { continue };
            if front.token != *token {
                stale = true;
                continue;
            }
            if let FrontMode::Body { chunked } = front.mode {
                let channel = front.channel;
                push_body(v, &chunk, chunked, channel);
                if v.out_len > self.cfg.max_viewer_backlog {
                    // Further behind than the live window: drop it rather than hold its backlog.
                    v.abort = true;
                    v.out.clear();
                    v.out_len = 0;
                    self.slow_viewers += 1;
                }
                if !v.in_ready {
                    v.in_ready = true;
                    self.ready.push_back(ConnId::Viewer(ViewerId(*vid)));
                }
            }
        }
        if stale {
            self.live_readers(obj);
        }
    }

    /// The object completed: streaming readers end their response, waiting ones get it whole.
    pub(super) fn object_complete(&mut self, now: u64, obj: ObjId) {
        let readers = self.live_readers(obj);
        if let Some(o) = self.store.get_mut(obj) {
            o.readers = Vec::new();
        }
        for id in readers {
            let mode = self.viewers.get(&id).and_then(|v| v.front.as_ref()).map(|f| (f.mode, f.channel));
            match mode {
                Some((FrontMode::Body { chunked }, channel)) => {
                    if chunked {
                        if let Some(v) = self.viewers.get_mut(&id) {
                            v.push_out(LAST_CHUNK, channel);
                        }
                    }
                    self.finish_front(id);
                }
                Some(_) => self.respond_from_object(now, id),
                None => {}
            }
            self.progress_viewer(now, id);
        }
        // A complete object dropped by the store (no-store, no freshness) is not there now;
        // its readers had their references already.
        let _ = now;
    }

    /// The fetch failed for good: waiting readers get `status`, streaming ones are closed.
    pub(super) fn object_failed(&mut self, now: u64, readers: Vec<(u64, u64)>, _obj: ObjId, status: u16) {
        for (id, token) in readers {
            let Some(v) = self.viewers.get_mut(&id) else { continue };
            let Some(front) = v.front.as_ref() else { continue };
            if front.token != token {
                continue;
            }
            match front.mode {
                FrontMode::Body { .. } => {
                    // Part of the body is out: close so the player retries; never a clean end.
                    v.abort = true;
                    v.out.clear();
                    v.out_len = 0;
                    self.mark_ready(ConnId::Viewer(ViewerId(id)));
                }
                FrontMode::AwaitHead | FrontMode::AwaitComplete => {
                    let (keep, channel) = (front.req.keep_alive, front.channel);
                    self.send_error(now, id, status, keep, channel);
                    self.finish_front(id);
                    self.progress_viewer(now, id);
                }
            }
        }
    }
}

/// Queues one body chunk, framed when the response is chunked.
fn push_body(v: &mut crate::user::ViewerConn, chunk: &Bytes, chunked: bool, channel: u64) {
    if chunk.is_empty() {
        return;
    }
    if chunked {
        v.push_out(Bytes::from(format!("{:x}\r\n", chunk.len())), channel);
        v.push_out(chunk.clone(), channel);
        v.push_out(CRLF, channel);
    } else {
        v.push_out(chunk.clone(), channel);
    }
}

/// CORS lines added for browser players when the node is configured with an origin and the
/// upstream sent no `Access-Control-Allow-Origin` of its own (those are passed through).
fn cors_line(configured: Option<&str>, passthrough: &[u8]) -> Bytes {
    let Some(origin) = configured else { return Bytes::new() };
    let has_own = passthrough.windows(27).any(|w| w.eq_ignore_ascii_case(b"access-control-allow-origin"));
    if has_own {
        return Bytes::new();
    }
    Bytes::from(format!(
        "Access-Control-Allow-Origin: {origin}\r\nAccess-Control-Expose-Headers: Content-Length, Content-Range, Date, ETag, Last-Modified\r\n"
    ))
}

/// RFC 9110 §13.1.2/§13.1.3: If-None-Match wins over If-Modified-Since.
fn not_modified(req: &Request, etag: Option<&str>, last_modified: Option<&str>) -> bool {
    if let Some(inm) = req.if_none_match.as_deref() {
        let Some(etag) = etag else { return false };
        let weak = |s: &str| s.trim().trim_start_matches("W/").to_string();
        return inm.split(',').any(|t| t.trim() == "*" || weak(t) == weak(etag));
    }
    if let (Some(ims), Some(lm)) = (req.if_modified_since.as_deref(), last_modified) {
        if let (Ok(ims), Ok(lm)) = (httpdate::parse_http_date(ims), httpdate::parse_http_date(lm)) {
            return lm <= ims;
        }
    }
    false
}

/// A single `bytes=` range resolved against `len`: inclusive (start, end).
pub(crate) fn parse_range(header: &str, len: u64) -> Option<(u64, u64)> {
    let spec = header.trim().strip_prefix("bytes=")?.trim();
    if spec.contains(',') || len == 0 {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        if n == 0 {
            return None;
        }
        return Some((len.saturating_sub(n), len - 1));
    }
    let start: u64 = a.parse().ok()?;
    let end: u64 = if b.is_empty() { len - 1 } else { b.parse::<u64>().ok()?.min(len - 1) };
    if start > end || start >= len {
        return None;
    }
    Some((start, end))
}

fn range_unsatisfiable(header: &str, len: u64) -> bool {
    let Some(spec) = header.trim().strip_prefix("bytes=") else { return false };
    if spec.contains(',') {
        return false;
    }
    match spec.split_once('-') {
        Some((a, _)) if !a.trim().is_empty() => a.trim().parse::<u64>().is_ok_and(|s| s >= len),
        Some((_, b)) => b.trim().parse::<u64>().is_ok_and(|n| n == 0) || len == 0,
        None => false,
    }
}

/// Zero-copy slices of `chunks` covering bytes `[start, end)`.
fn slice_chunks(chunks: &[Bytes], start: u64, end: u64) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut pos = 0u64;
    for c in chunks {
        let (cs, ce) = (pos, pos + c.len() as u64);
        pos = ce;
        if ce <= start || cs >= end {
            continue;
        }
        let from = start.saturating_sub(cs) as usize;
        let to = (end.min(ce) - cs) as usize;
        out.push(c.slice(from..to));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_normalization() {
        assert_eq!(normalize_key("/a", Some("b=2&a=1")), "/a?a=1&b=2");
        assert_eq!(normalize_key("/a", Some("")), "/a");
        assert_eq!(normalize_key("/a", None), "/a");
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some((0, 9)));
        assert_eq!(parse_range("bytes=90-", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=-10", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=50-500", 100), Some((50, 99)));
        assert_eq!(parse_range("bytes=100-", 100), None);
        assert!(range_unsatisfiable("bytes=100-", 100));
        assert_eq!(parse_range("bytes=0-1,5-6", 100), None);
    }

    #[test]
    fn chunk_slicing() {
        let chunks = vec![Bytes::from_static(b"hello"), Bytes::from_static(b"world")];
        let s: Vec<u8> = slice_chunks(&chunks, 3, 7).concat();
        assert_eq!(s, b"lowo");
    }
}
