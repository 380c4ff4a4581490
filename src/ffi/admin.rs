//! Events, statistics and the last error message.

use std::os::raw::{c_char, c_int};

use super::{
    check_size, code_i64, code_int, ffi, fill_chars, listo_err, listo_node, node_mut, node_ref, Fail, LISTO_DONE,
    LISTO_OK,
};
use crate::admin::RenditionStats;
use crate::{ChannelStats, Event, Stats};

/// What a `listo_event` reports.
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum listo_event_kind {
    /// A channel was instructed (added or replaced): `channel`.
    ChannelInstructed = 1,
    /// A channel was withdrawn: `channel`.
    ChannelWithdrawn = 2,
    /// An upstream fetch failed for good: `channel`, `path`, `status` (502 or 504) sent to its
    /// viewers (or their connections were closed), `reason`.
    UpstreamFailed = 3,
    /// A viewer request was refused: `status` (400, 404, 405, 408, 414, 431, 505), `reason`.
    RequestRejected = 4,
    /// An instructed channel was replaced: `channel`.
    ChannelReplaced = 5,
    /// A channel's instruction reached its `ttl_s` unrenewed and was withdrawn: `channel`.
    ChannelExpired = 6,
    /// A CDN endpoint failed: `channel`, `path` holds the endpoint "IP:PORT", `reason`.
    EndpointFailed = 7,
    /// A failed CDN endpoint answered again: `path` holds the endpoint.
    EndpointRecovered = 8,
    /// A fetch is retried on the next endpoint: `channel`, `path` holds "FROM -> TO".
    Failover = 9,
    /// The store evicted objects for its memory budget: `reason` holds "evicted=N store_bytes=B".
    MemoryPressure = 10,
    /// The node started draining.
    NodeDraining = 11,
    /// A rendition's media sequence went backwards (origin restart); its cached segments were
    /// dropped: `channel`, `path` holds the playlist, `reason` "from=A to=B dropped=N".
    RenditionReset = 12,
}

/// One admin event, filled by `listo_node_poll_event` into the caller's struct. Set `size` to
/// `sizeof(listo_event)` before the call. Strings are NUL-terminated UTF-8 copies (empty when
/// the kind has none), cut at a character boundary when longer than the array; `truncated`
/// is then non-zero. The struct owns nothing: no pointer to free.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct listo_event {
    /// `sizeof(listo_event)`, set by the caller; the library sets it to the bytes it filled.
    pub size: usize,
    /// A `listo_event_kind`. Later versions may add kinds: ignore the ones you do not know.
    pub kind: listo_event_kind,
    /// HTTP status for `UPSTREAM_FAILED` and `REQUEST_REJECTED`, else 0.
    pub status: u16,
    /// Non-zero if a string below was cut to fit.
    pub truncated: u16,
    /// Channel name.
    pub channel: [c_char; 256],
    /// Request path.
    pub path: [c_char; 1024],
    /// Human-readable reason.
    pub reason: [c_char; 256],
}

/// Node-wide counters, filled by `listo_node_stats`. Set `size` to `sizeof(listo_stats)`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct listo_stats {
    /// `sizeof(listo_stats)`, set by the caller; the library sets it to the bytes it filled.
    pub size: usize,
    /// Instructed channels (valid indexes for `listo_node_channel_stats` are 0 to this - 1).
    pub channels: u64,
    /// Open viewer connections.
    pub viewer_connections: u64,
    /// Open upstream connections.
    pub upstream_connections: u64,
    /// Objects in the cache.
    pub store_objects: u64,
    /// Body bytes in the cache.
    pub store_bytes: u64,
    /// Objects evicted for the memory budget.
    pub evictions: u64,
    /// Bytes written to viewers (all channels and error responses).
    pub downstream_bytes: u64,
    /// Error responses sent to viewers (all statuses).
    pub error_responses: u64,
    /// Viewers disconnected because their queued output exceeded `max_viewer_backlog`.
    pub slow_viewers_dropped: u64,
    /// Media playlists the node is following (refreshing and prefetching) for its viewers.
    pub followed_playlists: u64,
}

/// Counters of one channel, filled by `listo_node_channel_stats`. Set `size` to
/// `sizeof(listo_channel_stats)`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct listo_channel_stats {
    /// `sizeof(listo_channel_stats)`, set by the caller; the library sets it to the bytes filled.
    pub size: usize,
    /// Channel name (NUL-terminated; channel names are at most 128 bytes).
    pub channel: [c_char; 256],
    /// Viewers: distinct sessions (client address + User-Agent) active within the channel's
    /// target duration — not TCP connections.
    pub viewers: u64,
    /// Most viewers at once.
    pub peak_viewers: u64,
    /// Viewer-seconds watched.
    pub viewer_seconds: u64,
    /// Open viewer connections whose latest request was for this channel.
    pub viewer_connections: u64,
    /// Requests routed to this channel.
    pub requests: u64,
    /// Requests answered from a complete, fresh cached object.
    pub hits: u64,
    /// Requests attached to an object already being fetched (read-while-write).
    pub coalesced: u64,
    /// Requests that started an upstream fetch.
    pub misses: u64,
    /// Upstream requests sent (retries included).
    pub upstream_requests: u64,
    /// Upstream body bytes received.
    pub upstream_bytes: u64,
    /// Bytes the host reported written to this channel's viewers.
    pub downstream_bytes: u64,
    /// Upstream fetches that failed.
    pub upstream_failures: u64,
    /// Segment fetches the node started before any viewer asked.
    pub prefetches: u64,
    /// Viewer requests for segments (not playlists).
    pub segment_requests: u64,
    /// Segment requests answered entirely from a complete cached object.
    pub segment_hits: u64,
    /// Failed upstream attempts: the TCP connection could not be made.
    pub upstream_errors_connect: u64,
    /// Failed upstream attempts: connect, first byte or body timed out.
    pub upstream_errors_timeout: u64,
    /// Failed upstream attempts: the endpoint answered 5xx.
    pub upstream_errors_status: u64,
    /// Failed upstream attempts: malformed, truncated or reset responses.
    pub upstream_errors_malformed: u64,
    /// Error responses sent to this channel's viewers (all statuses).
    pub error_responses: u64,
    /// Upstream latencies observed (request sent → response head).
    pub upstream_latency_count: u64,
    /// Their sum, in microseconds.
    pub upstream_latency_sum_us: u64,
    /// Upstream latency histogram, not cumulative: bucket `i` counts latencies up to
    /// 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000 ms (above the previous bound);
    /// the last bucket those above 5 s.
    pub upstream_latency_buckets: [u64; LISTO_LATENCY_BUCKETS],
    /// Renditions with counters (valid indexes for `listo_node_rendition_stats`).
    pub renditions: u64,
}

/// Buckets of `listo_channel_stats.upstream_latency_buckets`.
pub const LISTO_LATENCY_BUCKETS: usize = 13;

/// Counters of one rendition of a channel, filled by `listo_node_rendition_stats`. Set `size`
/// to `sizeof(listo_rendition_stats)`. A rendition is an HLS media playlist with the segments
/// it lists, or the directory of objects no media playlist names (DASH).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct listo_rendition_stats {
    /// `sizeof(listo_rendition_stats)`, set by the caller; the library sets it to the bytes filled.
    pub size: usize,
    /// The media playlist path or directory (NUL-terminated, cut to fit; `truncated` then set).
    pub rendition: [c_char; 1024],
    /// Non-zero if `rendition` was cut to fit.
    pub truncated: u64,
    /// Viewer sessions active within the channel's target duration.
    pub viewers: u64,
    /// Most viewer sessions at once.
    pub peak_viewers: u64,
    /// Viewer-seconds watched.
    pub viewer_seconds: u64,
    /// Requests for it.
    pub requests: u64,
    /// Requests answered from a complete, fresh cached object.
    pub hits: u64,
    /// Requests attached to an object being fetched.
    pub coalesced: u64,
    /// Requests that started an upstream fetch.
    pub misses: u64,
    /// Upstream body bytes received for it.
    pub upstream_bytes: u64,
    /// Bytes written to its viewers.
    pub downstream_bytes: u64,
}

fn event_to_c(e: &Event) -> listo_event {
    let mut out = listo_event {
        size: std::mem::size_of::<listo_event>(),
        kind: listo_event_kind::ChannelInstructed,
        status: 0,
        truncated: 0,
        channel: [0; 256],
        path: [0; 1024],
        reason: [0; 256],
    };
    let mut cut = false;
    match e {
        Event::ChannelInstructed { channel } => {
            cut |= fill_chars(&mut out.channel, channel);
        }
        Event::ChannelWithdrawn { channel } => {
            out.kind = listo_event_kind::ChannelWithdrawn;
            cut |= fill_chars(&mut out.channel, channel);
        }
        Event::UpstreamFailed { channel, path, status, reason } => {
            out.kind = listo_event_kind::UpstreamFailed;
            out.status = *status;
            cut |= fill_chars(&mut out.channel, channel);
            cut |= fill_chars(&mut out.path, path);
            cut |= fill_chars(&mut out.reason, reason);
        }
        Event::RequestRejected { status, reason } => {
            out.kind = listo_event_kind::RequestRejected;
            out.status = *status;
            cut |= fill_chars(&mut out.reason, reason);
        }
        Event::ChannelReplaced { channel } => {
            out.kind = listo_event_kind::ChannelReplaced;
            cut |= fill_chars(&mut out.channel, channel);
        }
        Event::ChannelExpired { channel } => {
            out.kind = listo_event_kind::ChannelExpired;
            cut |= fill_chars(&mut out.channel, channel);
        }
        Event::EndpointFailed { channel, endpoint, reason } => {
            out.kind = listo_event_kind::EndpointFailed;
            cut |= fill_chars(&mut out.channel, channel);
            cut |= fill_chars(&mut out.path, endpoint);
            cut |= fill_chars(&mut out.reason, reason);
        }
        Event::EndpointRecovered { endpoint } => {
            out.kind = listo_event_kind::EndpointRecovered;
            cut |= fill_chars(&mut out.path, endpoint);
        }
        Event::Failover { channel, from, to } => {
            out.kind = listo_event_kind::Failover;
            cut |= fill_chars(&mut out.channel, channel);
            cut |= fill_chars(&mut out.path, &format!("{from} -> {to}"));
        }
        Event::MemoryPressure { evicted, store_bytes } => {
            out.kind = listo_event_kind::MemoryPressure;
            cut |= fill_chars(&mut out.reason, &format!("evicted={evicted} store_bytes={store_bytes}"));
        }
        Event::NodeDraining => out.kind = listo_event_kind::NodeDraining,
        Event::RenditionReset { channel, playlist, from, to, dropped } => {
            out.kind = listo_event_kind::RenditionReset;
            cut |= fill_chars(&mut out.channel, channel);
            cut |= fill_chars(&mut out.path, playlist);
            cut |= fill_chars(&mut out.reason, &format!("from={from} to={to} dropped={dropped}"));
        }
    }
    out.truncated = u16::from(cut);
    out
}

/// Takes the oldest admin event into `*out` (caller-owned, `out->size` set). Returns
/// `LISTO_OK`, `LISTO_DONE` (no event), `LISTO_ERR_NULL`, or `LISTO_ERR_INVALID` (`size` not
/// set; the event stays queued). The queue is bounded (`listo_config.event_queue`): the oldest
/// events are dropped when the host does not drain it.
#[no_mangle]
pub unsafe extern "C" fn listo_node_poll_event(node: *mut listo_node, out: *mut listo_event) -> c_int {
    ffi!(code_int, {
        let mut h = node_mut(node)?;
        if out.is_null() {
            return h.check(Err(Fail::null("out")));
        }
        h.check(check_size(out, "listo_event"))?;
        let Some(e) = h.node.poll_event() else { return Ok(LISTO_DONE) };
        std::ptr::write_unaligned(out, event_to_c(&e));
        Ok(LISTO_OK)
    })
}

/// Fills `*out` (caller-owned, `out->size` set) with node-wide counters. Returns `LISTO_OK`,
/// `LISTO_ERR_NULL` or `LISTO_ERR_INVALID` (`size` not set).
#[no_mangle]
pub unsafe extern "C" fn listo_node_stats(node: *const listo_node, out: *mut listo_stats) -> c_int {
    ffi!(code_int, {
        let h = node_ref(node)?;
        if out.is_null() {
            return Err(Fail::null("out"));
        }
        check_size(out, "listo_stats")?;
        let s = h.node.stats();
        let v = listo_stats {
            size: std::mem::size_of::<listo_stats>(),
            channels: s.channels.len() as u64,
            viewer_connections: s.viewer_connections,
            upstream_connections: s.upstream_connections,
            store_objects: s.store_objects,
            store_bytes: s.store_bytes,
            evictions: s.evictions,
            downstream_bytes: s.downstream_bytes,
            error_responses: s.errors.iter().map(|(_, n)| n).sum(),
            slow_viewers_dropped: s.slow_viewers_dropped,
            followed_playlists: s.followed_playlists,
        };
        std::ptr::write_unaligned(out, v);
        Ok(LISTO_OK)
    })
}

fn channel_to_c(c: &ChannelStats) -> listo_channel_stats {
    let mut out = listo_channel_stats {
        size: std::mem::size_of::<listo_channel_stats>(),
        channel: [0; 256],
        viewers: c.viewers,
        peak_viewers: c.peak_viewers,
        viewer_seconds: c.viewer_seconds,
        viewer_connections: c.viewer_connections,
        requests: c.requests,
        hits: c.hits,
        coalesced: c.coalesced,
        misses: c.misses,
        upstream_requests: c.upstream_requests,
        upstream_bytes: c.upstream_bytes,
        downstream_bytes: c.downstream_bytes,
        upstream_failures: c.upstream_failures,
        prefetches: c.prefetches,
        segment_requests: c.segment_requests,
        segment_hits: c.segment_hits,
        upstream_errors_connect: c.upstream_errors.connect,
        upstream_errors_timeout: c.upstream_errors.timeout,
        upstream_errors_status: c.upstream_errors.status,
        upstream_errors_malformed: c.upstream_errors.malformed,
        error_responses: c.error_responses.iter().map(|(_, n)| n).sum(),
        upstream_latency_count: c.upstream_latency.count,
        upstream_latency_sum_us: c.upstream_latency.sum_us,
        upstream_latency_buckets: c.upstream_latency.counts,
        renditions: c.renditions.len() as u64,
    };
    fill_chars(&mut out.channel, &c.channel);
    out
}

fn rendition_to_c(r: &RenditionStats) -> listo_rendition_stats {
    let mut out = listo_rendition_stats {
        size: std::mem::size_of::<listo_rendition_stats>(),
        rendition: [0; 1024],
        truncated: 0,
        viewers: r.viewers,
        peak_viewers: r.peak_viewers,
        viewer_seconds: r.viewer_seconds,
        requests: r.requests,
        hits: r.hits,
        coalesced: r.coalesced,
        misses: r.misses,
        upstream_bytes: r.upstream_bytes,
        downstream_bytes: r.downstream_bytes,
    };
    out.truncated = u64::from(fill_chars(&mut out.rendition, &r.rendition));
    out
}

/// Fills `*out` (caller-owned, `out->size` set) with the counters of rendition `rendition` of
/// the `channel`-th channel (instruction order). Loop `rendition` from 0 until `LISTO_DONE`.
/// Returns `LISTO_OK`, `LISTO_DONE` (either index past the last), `LISTO_ERR_NULL` or
/// `LISTO_ERR_INVALID` (`size` not set).
#[no_mangle]
pub unsafe extern "C" fn listo_node_rendition_stats(
    node: *const listo_node,
    channel: usize,
    rendition: usize,
    out: *mut listo_rendition_stats,
) -> c_int {
    ffi!(code_int, {
        let h = node_ref(node)?;
        if out.is_null() {
            return Err(Fail::null("out"));
        }
        check_size(out, "listo_rendition_stats")?;
        let s = h.node.stats();
        let Some(r) = s.channels.get(channel).and_then(|c| c.renditions.get(rendition)) else { return Ok(LISTO_DONE) };
        std::ptr::write_unaligned(out, rendition_to_c(r));
        Ok(LISTO_OK)
    })
}

/// Fills `*out` (caller-owned, `out->size` set) with the counters of the `index`-th channel, in
/// instruction order. Loop `index` from 0 until `LISTO_DONE`. Returns `LISTO_OK`, `LISTO_DONE`
/// (`index` past the last channel), `LISTO_ERR_NULL` or `LISTO_ERR_INVALID` (`size` not set).
#[no_mangle]
pub unsafe extern "C" fn listo_node_channel_stats(
    node: *const listo_node,
    index: usize,
    out: *mut listo_channel_stats,
) -> c_int {
    ffi!(code_int, {
        let h = node_ref(node)?;
        if out.is_null() {
            return Err(Fail::null("out"));
        }
        check_size(out, "listo_channel_stats")?;
        let s = h.node.stats();
        let Some(c) = s.channels.get(index) else { return Ok(LISTO_DONE) };
        std::ptr::write_unaligned(out, channel_to_c(c));
        Ok(LISTO_OK)
    })
}

/// The JSON form of the statistics: the keys of the admin port's `GET /v1/stats`, less the
/// reference driver's own connection counters.
pub(crate) fn stats_json(s: &Stats) -> String {
    s.to_json().to_string()
}

/// Writes the statistics as one JSON object (NUL-terminated) into `buf`, a caller buffer of
/// `cap` bytes. Returns the JSON length (without the NUL). With `buf` NULL and `cap` 0 it only
/// returns the length needed (add 1 for the NUL). Returns `LISTO_ERR_BUFFER_TOO_SMALL` (and
/// writes an empty string if `cap` > 0) when the JSON and its NUL do not fit — never a
/// truncated JSON; `LISTO_ERR_NULL` if `node` is NULL, or `buf` is NULL with `cap` > 0.
#[no_mangle]
pub unsafe extern "C" fn listo_node_stats_json(node: *const listo_node, buf: *mut c_char, cap: usize) -> i64 {
    ffi!(code_i64, {
        let h = node_ref(node)?;
        let json = stats_json(&h.node.stats());
        let len = i64::try_from(json.len()).unwrap_or(i64::MAX);
        if buf.is_null() {
            return if cap == 0 { Ok(len) } else { Err(Fail::null("buf")) };
        }
        let out = std::slice::from_raw_parts_mut(buf as *mut u8, cap);
        if json.len() >= cap {
            if let Some(first) = out.first_mut() {
                *first = 0;
            }
            return Err(Fail::new(listo_err::BufferTooSmall, "stats JSON does not fit"));
        }
        out[..json.len()].copy_from_slice(json.as_bytes());
        out[json.len()] = 0;
        Ok(len)
    })
}

/// Copies the message of the most recent failed call on this node ("" if none) into `buf`, a
/// caller buffer of `cap` bytes, NUL-terminated and cut to fit. Returns the bytes written
/// (without the NUL), or `LISTO_ERR_NULL`, or `LISTO_ERR_BUFFER_TOO_SMALL` (`cap` is 0).
#[no_mangle]
pub unsafe extern "C" fn listo_node_last_error(node: *const listo_node, buf: *mut c_char, cap: usize) -> i64 {
    ffi!(code_i64, {
        // A poisoned node can still say why.
        let h = (node as *const super::Handle).as_ref().ok_or_else(|| Fail::null("node"))?;
        if buf.is_null() {
            return Err(Fail::null("buf"));
        }
        if cap == 0 {
            return Err(Fail::new(listo_err::BufferTooSmall, "cap is 0"));
        }
        let out = std::slice::from_raw_parts_mut(buf, cap);
        fill_chars(out, &h.last_error);
        let n = out.iter().position(|&c| c == 0).unwrap_or(0);
        Ok(i64::try_from(n).unwrap_or(0))
    })
}
