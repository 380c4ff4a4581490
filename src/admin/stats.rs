//! The node's counters (seed M2): per channel, per rendition, per CDN endpoint and node-wide,
//! as returned by `Node::stats` and rendered as JSON for `/v1/stats` and the C ABI.

use serde_json::{json, Map, Value};

/// Upper bounds (milliseconds) of the upstream latency histogram's buckets; a last, unbounded
/// bucket follows them.
pub const LATENCY_BOUNDS_MS: [u64; 12] = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000];

/// Upstream latency: time from sending a request to a CDN endpoint to receiving its response
/// head (blocking LL-HLS playlist reloads, which the CDN holds on purpose, are not counted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LatencyHistogram {
    /// Observations per bucket, not cumulative: `counts[i]` for `i < 12` counts latencies above
    /// `LATENCY_BOUNDS_MS[i - 1]` (0 for `i = 0`) and at most `LATENCY_BOUNDS_MS[i]`;
    /// `counts[12]` those above 5 s.
    pub counts: [u64; LATENCY_BOUNDS_MS.len() + 1],
    /// Observations.
    pub count: u64,
    /// Sum of the observations, in microseconds.
    pub sum_us: u64,
}

impl LatencyHistogram {
    /// Records one latency of `ns` nanoseconds.
    pub fn observe(&mut self, ns: u64) {
        let ms_ceil = ns.div_ceil(1_000_000);
        let i = LATENCY_BOUNDS_MS.iter().position(|&b| ms_ceil <= b).unwrap_or(LATENCY_BOUNDS_MS.len());
        self.counts[i] += 1;
        self.count += 1;
        self.sum_us = self.sum_us.saturating_add(ns / 1_000);
    }

    /// Cumulative counts per bucket bound, the last one being `+Inf` (= `count`), as
    /// Prometheus histograms want them.
    pub fn cumulative(&self) -> impl Iterator<Item = (Option<u64>, u64)> + '_ {
        let mut acc = 0;
        self.counts.iter().enumerate().map(move |(i, n)| {
            acc += n;
            (LATENCY_BOUNDS_MS.get(i).copied(), acc)
        })
    }
}

/// Why an upstream attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamErrorKind {
    /// The TCP connection to the endpoint could not be made.
    Connect,
    /// Connect, response head or body took longer than its timeout.
    Timeout,
    /// The endpoint answered 5xx.
    Status,
    /// The response was malformed, truncated or the connection reset mid-response.
    Malformed,
}

impl UpstreamErrorKind {
    /// Every kind, in the order of [`UpstreamErrors`]' fields.
    pub const ALL: [UpstreamErrorKind; 4] =
        [UpstreamErrorKind::Connect, UpstreamErrorKind::Timeout, UpstreamErrorKind::Status, UpstreamErrorKind::Malformed];

    /// A stable label (`connect`, `timeout`, `status`, `malformed`).
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamErrorKind::Connect => "connect",
            UpstreamErrorKind::Timeout => "timeout",
            UpstreamErrorKind::Status => "status",
            UpstreamErrorKind::Malformed => "malformed",
        }
    }
}

/// Failed upstream attempts by kind (each attempt counts, failovers included).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamErrors {
    /// Connections that could not be made.
    pub connect: u64,
    /// Timeouts (connect, first byte, body idle).
    pub timeout: u64,
    /// 5xx answers.
    pub status: u64,
    /// Malformed, truncated or reset responses.
    pub malformed: u64,
}

impl UpstreamErrors {
    /// Counts one failure of `kind`.
    pub fn add(&mut self, kind: UpstreamErrorKind) {
        *self.get_mut(kind) += 1;
    }

    /// The counter of `kind`.
    pub fn get(&self, kind: UpstreamErrorKind) -> u64 {
        match kind {
            UpstreamErrorKind::Connect => self.connect,
            UpstreamErrorKind::Timeout => self.timeout,
            UpstreamErrorKind::Status => self.status,
            UpstreamErrorKind::Malformed => self.malformed,
        }
    }

    fn get_mut(&mut self, kind: UpstreamErrorKind) -> &mut u64 {
        match kind {
            UpstreamErrorKind::Connect => &mut self.connect,
            UpstreamErrorKind::Timeout => &mut self.timeout,
            UpstreamErrorKind::Status => &mut self.status,
            UpstreamErrorKind::Malformed => &mut self.malformed,
        }
    }
}

/// Counters of one rendition of a channel: an HLS media playlist and the segments it lists, or,
/// where no media playlist names them (DASH, segments seen before their playlist), the
/// directory the objects live in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RenditionStats {
    /// The media playlist's path (`/live/ch1/720p/index.m3u8`), or a directory (`/live/ch1/v1/`).
    pub rendition: String,
    /// Viewer sessions active within the channel's target duration.
    pub viewers: u64,
    /// Most viewer sessions at once.
    pub peak_viewers: u64,
    /// Viewer-seconds watched.
    pub viewer_seconds: u64,
    /// Requests for it.
    pub requests: u64,
    /// Requests answered from a complete, fresh object.
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

/// Counters of one channel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelStats {
    /// Channel name.
    pub channel: String,
    /// Viewers: distinct sessions (client address + User-Agent) that asked for something of
    /// this channel within its target duration — not TCP connections.
    pub viewers: u64,
    /// Most viewers at once.
    pub peak_viewers: u64,
    /// Viewer-seconds watched.
    pub viewer_seconds: u64,
    /// Open viewer connections whose latest request was for this channel.
    pub viewer_connections: u64,
    /// Requests routed to this channel.
    pub requests: u64,
    /// Requests answered from a complete, fresh object.
    pub hits: u64,
    /// Requests attached to an object already being fetched (read-while-write).
    pub coalesced: u64,
    /// Requests that started an upstream fetch.
    pub misses: u64,
    /// Upstream requests sent (including retries).
    pub upstream_requests: u64,
    /// Upstream body bytes received.
    pub upstream_bytes: u64,
    /// Bytes (heads and bodies) the host reported written to this channel's viewers.
    pub downstream_bytes: u64,
    /// Upstream fetches that failed (viewers got 502/504 or a close).
    pub upstream_failures: u64,
    /// Segment fetches the node started before any viewer asked.
    pub prefetches: u64,
    /// Viewer requests for segments (not playlists).
    pub segment_requests: u64,
    /// Segment requests answered entirely from a complete object.
    pub segment_hits: u64,
    /// Failed upstream attempts, by kind.
    pub upstream_errors: UpstreamErrors,
    /// Upstream latency (request sent → response head).
    pub upstream_latency: LatencyHistogram,
    /// Error responses sent to this channel's viewers: (status, count), by status.
    pub error_responses: Vec<(u16, u64)>,
    /// Per rendition, in the order the node first saw them.
    pub renditions: Vec<RenditionStats>,
}

/// Node-wide counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Per channel, in instruction order.
    pub channels: Vec<ChannelStats>,
    /// Open viewer connections.
    pub viewer_connections: u64,
    /// Open upstream connections.
    pub upstream_connections: u64,
    /// Objects in the store.
    pub store_objects: u64,
    /// Body bytes in the store.
    pub store_bytes: u64,
    /// Objects evicted for the memory budget.
    pub evictions: u64,
    /// Error responses sent to viewers, by class: (status, count).
    pub errors: Vec<(u16, u64)>,
    /// Bytes written to viewers, all channels and error responses included.
    pub downstream_bytes: u64,
    /// Viewers disconnected because their queued output exceeded the backlog limit.
    pub slow_viewers_dropped: u64,
    /// Media playlists the node is following (refreshing and prefetching) for its viewers.
    pub followed_playlists: u64,
    /// CDN endpoints the node fetched from, with their health.
    pub endpoints: Vec<EndpointStats>,
    /// Events dropped because nobody drained them.
    pub events_dropped: u64,
    /// True once `drain` was called.
    pub draining: bool,
}

/// Health of one CDN endpoint as the node sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointStats {
    /// `IP:PORT`.
    pub endpoint: String,
    /// False after a failure until a fetch succeeds again.
    pub healthy: bool,
    /// Failures since the last success.
    pub consecutive_failures: u64,
    /// Fetches that completed.
    pub successes: u64,
    /// Failures in all.
    pub failures: u64,
    /// The last failure's reason.
    pub last_error: String,
}


impl RenditionStats {
    /// As JSON (an element of a channel's `renditions` in `/v1/stats`).
    pub fn to_json(&self) -> Value {
        json!({
            "rendition": self.rendition, "viewers": self.viewers, "peak_viewers": self.peak_viewers,
            "viewer_seconds": self.viewer_seconds, "requests": self.requests, "hits": self.hits,
            "coalesced": self.coalesced, "misses": self.misses, "upstream_bytes": self.upstream_bytes,
            "downstream_bytes": self.downstream_bytes,
        })
    }
}

impl ChannelStats {
    /// Bytes the channel's viewers received per byte fetched upstream, as a saving:
    /// `1 - upstream / downstream` (0 before any byte went down).
    pub fn saving_ratio(&self) -> f64 {
        if self.downstream_bytes == 0 {
            return 0.0;
        }
        1.0 - (self.upstream_bytes as f64 / self.downstream_bytes as f64).min(1.0)
    }

    /// As JSON (an element of `channels` in `/v1/stats`).
    pub fn to_json(&self) -> Value {
        let errors: Map<String, Value> =
            UpstreamErrorKind::ALL.iter().map(|k| (k.as_str().to_string(), Value::from(self.upstream_errors.get(*k)))).collect();
        let buckets: Vec<Value> = self
            .upstream_latency
            .cumulative()
            .map(|(le, n)| json!({"le_ms": le.map_or(Value::from("+Inf"), Value::from), "count": n}))
            .collect();
        let responses: Map<String, Value> = self.error_responses.iter().map(|(s, n)| (s.to_string(), Value::from(*n))).collect();
        json!({
            "channel": self.channel, "viewers": self.viewers, "peak_viewers": self.peak_viewers,
            "viewer_seconds": self.viewer_seconds, "viewer_connections": self.viewer_connections,
            "requests": self.requests, "hits": self.hits, "prefetches": self.prefetches,
            "segment_requests": self.segment_requests, "segment_hits": self.segment_hits,
            "coalesced": self.coalesced, "misses": self.misses, "upstream_requests": self.upstream_requests,
            "upstream_bytes": self.upstream_bytes, "downstream_bytes": self.downstream_bytes,
            "saving_ratio": self.saving_ratio(),
            "upstream_failures": self.upstream_failures,
            "upstream_errors": errors,
            "upstream_latency": {"count": self.upstream_latency.count, "sum_us": self.upstream_latency.sum_us, "buckets": buckets},
            "error_responses": responses,
            "renditions": self.renditions.iter().map(RenditionStats::to_json).collect::<Vec<_>>(),
        })
    }
}

impl EndpointStats {
    /// As JSON (an element of `endpoints` in `/v1/stats`).
    pub fn to_json(&self) -> Value {
        json!({
            "endpoint": self.endpoint, "healthy": self.healthy, "consecutive_failures": self.consecutive_failures,
            "successes": self.successes, "failures": self.failures, "last_error": self.last_error,
        })
    }
}

impl Stats {
    /// As one JSON object: the body of the admin port's `GET /v1/stats` (the reference driver
    /// adds its own connection counters) and of `listo_node_stats_json`.
    pub fn to_json(&self) -> Value {
        let errors: Map<String, Value> = self.errors.iter().map(|(k, v)| (k.to_string(), Value::from(*v))).collect();
        json!({
            "channels": self.channels.iter().map(ChannelStats::to_json).collect::<Vec<_>>(),
            "endpoints": self.endpoints.iter().map(EndpointStats::to_json).collect::<Vec<_>>(),
            "draining": self.draining,
            "events_dropped": self.events_dropped,
            "followed_playlists": self.followed_playlists,
            "viewer_connections": self.viewer_connections,
            "upstream_connections": self.upstream_connections,
            "store_objects": self.store_objects,
            "store_bytes": self.store_bytes,
            "evictions": self.evictions,
            "slow_viewers_dropped": self.slow_viewers_dropped,
            "downstream_bytes": self.downstream_bytes,
            "errors": errors,
        })
    }
}

impl LatencyHistogram {
    /// Adds another histogram's observations.
    pub fn merge(&mut self, o: &LatencyHistogram) {
        for (a, b) in self.counts.iter_mut().zip(o.counts.iter()) {
            *a += b;
        }
        self.count += o.count;
        self.sum_us = self.sum_us.saturating_add(o.sum_us);
    }
}

fn merge_statuses(into: &mut Vec<(u16, u64)>, from: &[(u16, u64)]) {
    for (st, n) in from {
        match into.iter_mut().find(|(s, _)| s == st) {
            Some((_, m)) => *m += n,
            None => into.push((*st, *n)),
        }
    }
    into.sort_unstable();
}

impl RenditionStats {
    /// Adds another node's counters of the same rendition.
    pub fn merge(&mut self, o: &RenditionStats) {
        self.viewers += o.viewers;
        self.peak_viewers += o.peak_viewers;
        self.viewer_seconds += o.viewer_seconds;
        self.requests += o.requests;
        self.hits += o.hits;
        self.coalesced += o.coalesced;
        self.misses += o.misses;
        self.upstream_bytes += o.upstream_bytes;
        self.downstream_bytes += o.downstream_bytes;
    }
}

impl ChannelStats {
    /// Adds another node's counters of the same channel (nodes sharing a store: one per
    /// worker). Viewers and peaks add up as sessions per node.
    pub fn merge(&mut self, o: &ChannelStats) {
        self.viewers += o.viewers;
        self.peak_viewers += o.peak_viewers;
        self.viewer_seconds += o.viewer_seconds;
        self.viewer_connections += o.viewer_connections;
        self.requests += o.requests;
        self.hits += o.hits;
        self.coalesced += o.coalesced;
        self.misses += o.misses;
        self.upstream_requests += o.upstream_requests;
        self.upstream_bytes += o.upstream_bytes;
        self.downstream_bytes += o.downstream_bytes;
        self.upstream_failures += o.upstream_failures;
        self.prefetches += o.prefetches;
        self.segment_requests += o.segment_requests;
        self.segment_hits += o.segment_hits;
        for k in UpstreamErrorKind::ALL {
            *self.upstream_errors.get_mut(k) += o.upstream_errors.get(k);
        }
        self.upstream_latency.merge(&o.upstream_latency);
        merge_statuses(&mut self.error_responses, &o.error_responses);
        for r in &o.renditions {
            match self.renditions.iter_mut().find(|x| x.rendition == r.rendition) {
                Some(x) => x.merge(r),
                None => self.renditions.push(r.clone()),
            }
        }
    }
}

impl Stats {
    /// Adds another node's counters (nodes sharing a store, one per worker thread): channels
    /// and endpoints by name, everything else summed.
    pub fn merge(&mut self, o: &Stats) {
        for c in &o.channels {
            match self.channels.iter_mut().find(|x| x.channel == c.channel) {
                Some(x) => x.merge(c),
                None => self.channels.push(c.clone()),
            }
        }
        for e in &o.endpoints {
            match self.endpoints.iter_mut().find(|x| x.endpoint == e.endpoint) {
                Some(x) => {
                    x.healthy &= e.healthy;
                    x.consecutive_failures = x.consecutive_failures.max(e.consecutive_failures);
                    x.successes += e.successes;
                    x.failures += e.failures;
                    if x.last_error.is_empty() {
                        x.last_error = e.last_error.clone();
                    }
                }
                None => self.endpoints.push(e.clone()),
            }
        }
        self.viewer_connections += o.viewer_connections;
        self.upstream_connections += o.upstream_connections;
        // One store's objects are in every node's index: count them once.
        self.store_objects = self.store_objects.max(o.store_objects);
        self.store_bytes = self.store_bytes.max(o.store_bytes);
        self.evictions += o.evictions;
        merge_statuses(&mut self.errors, &o.errors);
        self.downstream_bytes += o.downstream_bytes;
        self.slow_viewers_dropped += o.slow_viewers_dropped;
        self.followed_playlists = self.followed_playlists.max(o.followed_playlists);
        self.events_dropped += o.events_dropped;
        self.draining |= o.draining;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_buckets_are_upper_inclusive_and_cumulative() {
        let mut h = LatencyHistogram::default();
        h.observe(1_000_000); // exactly 1 ms → first bucket
        h.observe(1_000_001); // just over → 2 ms bucket
        h.observe(7_000_000_000); // 7 s → +Inf
        assert_eq!(h.counts[0], 1);
        assert_eq!(h.counts[1], 1);
        assert_eq!(h.counts[LATENCY_BOUNDS_MS.len()], 1);
        let cum: Vec<_> = h.cumulative().collect();
        assert_eq!(cum.first(), Some(&(Some(1), 1)));
        assert_eq!(cum.last(), Some(&(None, 3)), "+Inf bucket equals the count");
        assert_eq!(h.count, 3);
        assert_eq!(h.sum_us, 1_000 + 1_000 + 7_000_000);
    }

    #[test]
    fn upstream_errors_by_kind() {
        let mut e = UpstreamErrors::default();
        e.add(UpstreamErrorKind::Timeout);
        e.add(UpstreamErrorKind::Timeout);
        e.add(UpstreamErrorKind::Malformed);
        assert_eq!((e.connect, e.timeout, e.status, e.malformed), (0, 2, 0, 1));
    }
}
