//! Node configuration: limits, timeouts and cache policy. All durations in nanoseconds.

/// One second in the node's time unit (nanoseconds).
pub const SECOND: u64 = 1_000_000_000;

/// How a node behaves. `Config::default()` suits an access node; every field can be tuned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Body bytes the store tries to keep at most (live objects being read are never evicted).
    pub memory_budget: u64,
    /// Most instructed channels; over it an instruction is refused.
    pub max_channels: usize,
    /// Largest viewer request head; beyond → 431.
    pub max_head_bytes: usize,
    /// Most header fields in a viewer request; beyond → 431.
    pub max_headers: usize,
    /// Longest request target; beyond → 414.
    pub max_uri_bytes: usize,
    /// Pipelined requests parsed ahead per viewer connection.
    pub max_pipeline: usize,
    /// A request head must be complete this long after its first byte, else 408.
    pub head_timeout: u64,
    /// An idle viewer connection (no request in progress) is closed after this long.
    pub idle_timeout: u64,
    /// Upstream connections per CDN endpoint.
    pub upstream_pool_size: usize,
    /// Upstream connect timeout (→ 504, or retry on the next endpoint).
    pub connect_timeout: u64,
    /// Time from request to the first response byte upstream (→ 504 / retry).
    pub first_byte_timeout: u64,
    /// Longest silence inside an upstream body (→ the object fails).
    pub body_idle_timeout: u64,
    /// An idle pooled upstream connection is closed after this long.
    pub pool_idle_timeout: u64,
    /// Playlist freshness when neither `max-age` nor a target duration is known.
    pub playlist_default_ttl: u64,
    /// Segment freshness when the upstream gives no `max-age` (the live window extends it).
    pub segment_ttl: u64,
    /// How long a segment stays after it left the latest playlist.
    pub window_grace: u64,
    /// How long a 404/410 from upstream is remembered (at most 1 s). A segment's 404 that
    /// carries no max-age is remembered 100 ms at most: a live segment asked a moment early must
    /// not stay 404 once it exists.
    pub negative_ttl: u64,
    /// Events kept for the host before the oldest are dropped.
    pub event_queue: usize,
    /// Output bytes a viewer may have queued (references, not copies) before it is
    /// disconnected as too slow: a viewer further behind than the live window only wastes memory.
    /// Checked as a filling object streams in; responses from complete objects are bounded
    /// instead by answering a pipelined request only once the previous output (nearly) went out,
    /// so a viewer that never reads holds one response and then waits for its idle timeout.
    pub max_viewer_backlog: u64,
    /// Follow playlists with viewers and fetch new segments before anyone asks.
    pub prefetch: bool,
    /// Stop following a playlist nobody asked for in this long.
    pub follow_idle: u64,
    /// How many of the newest segments of a followed playlist are prefetched.
    pub prefetch_segments: usize,
    /// Longest a refreshed playlist is held back while its new segments are prefetched.
    pub gate_timeout: u64,
    /// `Access-Control-Allow-Origin` value added to responses whose upstream sent none
    /// (`*` or an origin); `None` passes the upstream's CORS headers through unchanged.
    pub cors_origin: Option<String>,
    /// Compact large completed objects into memory-backed files (one descriptor each, at most
    /// [`crate::store::MAX_FILES`]) so the host can `sendfile` them
    /// ([`crate::store::file_of`]). Off by default: the library opens no descriptors of its own
    /// unless asked. The reference driver turns it on.
    pub file_backed_objects: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            memory_budget: 256 << 20,
            max_channels: 1024,
            max_head_bytes: 8192,
            max_headers: 64,
            max_uri_bytes: 4096,
            max_pipeline: 16,
            head_timeout: 10 * SECOND,
            idle_timeout: 60 * SECOND,
            upstream_pool_size: 16,
            connect_timeout: 3 * SECOND,
            first_byte_timeout: 5 * SECOND,
            body_idle_timeout: 5 * SECOND,
            pool_idle_timeout: 30 * SECOND,
            playlist_default_ttl: SECOND,
            segment_ttl: 30 * SECOND,
            window_grace: 30 * SECOND,
            negative_ttl: SECOND,
            event_queue: 1024,
            max_viewer_backlog: 32 << 20,
            prefetch: true,
            follow_idle: 10 * SECOND,
            prefetch_segments: 3,
            gate_timeout: 2 * SECOND,
            cors_origin: None,
            file_backed_objects: false,
        }
    }
}
