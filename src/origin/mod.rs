//! `listo origin`: a synthetic live HLS origin on real sockets, the CDN stand-in for demos and
//! tests.
//!
//! Paths (channels `ch0..ch{N-1}`, renditions `v0..v{R-1}`):
//!
//! * `/live/ch{c}/master.m3u8` — master playlist, one `EXT-X-STREAM-INF` per rendition;
//! * `/live/ch{c}/v{r}/index.m3u8` — media playlist, a sliding window of `window` segments;
//! * `/live/ch{c}/index.m3u8` — alias of rendition 0's media playlist (URIs `v0/seg_{k}.ts`);
//! * `/live/ch{c}/v{r}/seg_{k}.ts` — segment k: real MPEG-TS padded with null packets to the
//!   rendition's bitrate × duration (see [`OriginConfig::segment_bytes`]);
//! * `/origin/stats` — the request counts as JSON.
//!
//! Segment k is published (listed, and fetchable) at start + (k + 1 − window) · segment_secs, so
//! playlists are full at once; a segment not yet published, long gone, or any unknown path → 404.
//!
//! With [`OriginConfig::ll`] (`listo origin --ll`) the origin also serves low-latency HLS and
//! live DASH (see [`ll`] and [`dash`]):
//!
//! * media playlists carry `EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES`, `EXT-X-PART-INF`,
//!   `EXT-X-PART` lines and an `EXT-X-PRELOAD-HINT` for the part being produced;
//!   `/live/ch{c}/v{r}/seg_{k}.part_{i}.ts` is part i of segment k (the parts of a segment
//!   concatenate to its bytes); `_HLS_msn`/`_HLS_part` reloads are held until that part exists;
//! * `/live/ch{c}/manifest.mpd` — a dynamic MPD; `/live/ch{c}/dash/{video,audio}/init.mp4` and
//!   `/live/ch{c}/dash/video/seg_{n}.m4s` (`$Number$`), `/live/ch{c}/dash/audio/seg_{t}.m4s`
//!   (`$Time$` with a `SegmentTimeline`): real fMP4 from an ffmpeg capture.
//!
//! Blocking I/O, one thread per connection: a test and demo tool, not the node.
//!
//! ```no_run
//! use listo::origin::{OriginConfig, OriginServer};
//! let origin = OriginServer::start("127.0.0.1:0".parse().unwrap(), OriginConfig::default()).unwrap();
//! println!("http://{}/live/ch0/master.m3u8", origin.local_addr());
//! origin.shutdown();
//! ```

mod content;
pub mod dash;
pub mod ll;
mod server;

use std::collections::BTreeMap;
use std::net::SocketAddr;

pub use content::{master_path, media_path, path_kind, segment_path, OriginPath, PathKind, CODECS, TS_PACKET};
pub use server::OriginServer;

/// Configuration of the synthetic origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginConfig {
    /// Number of channels (`ch0..`).
    pub channels: usize,
    /// Bit rate of each rendition in kbit/s (`v0, v1, ..`).
    pub renditions_kbps: Vec<u64>,
    /// Segment duration in seconds (0 is taken as 1).
    pub segment_secs: u64,
    /// Segments per media playlist (0 is taken as 1).
    pub window: usize,
    /// Delay before every response head, in milliseconds (models a far CDN).
    pub latency_ms: u64,
    /// Per-connection send rate in Mbit/s (`None`: unlimited).
    pub rate_mbps: Option<u64>,
    /// Log one line per request to stderr.
    pub verbose: bool,
    /// Low latency: LL-HLS parts, blocking playlist reloads and preload hints, and the DASH
    /// paths (`listo origin --ll`). Off: the plain HLS origin, byte for byte as before.
    pub ll: bool,
    /// LL-HLS part duration in milliseconds (the segment is cut into the nearest whole number
    /// of parts; 0 is taken as 1).
    pub part_ms: u64,
    /// The stream stops advancing this many milliseconds after start (models a stalled
    /// encoder: nothing new is published, blocking reloads end in 503). `None`: never.
    pub stall_after_ms: Option<u64>,
}

impl Default for OriginConfig {
    fn default() -> Self {
        OriginConfig {
            channels: 2,
            renditions_kbps: vec![800, 2500],
            segment_secs: 2,
            window: 6,
            latency_ms: 0,
            rate_mbps: None,
            verbose: false,
            ll: false,
            part_ms: 333,
            stall_after_ms: None,
        }
    }
}

/// A snapshot of what the origin served.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OriginCounts {
    /// Requests for `.ts`, `.m4s` and `.mp4` paths (any status; LL-HLS parts included).
    pub segment_requests: u64,
    /// Requests for `.m3u8` and `.mpd` paths (any status).
    pub playlist_requests: u64,
    /// Other requests (stats, unknown paths).
    pub other_requests: u64,
    /// Bytes handed to sockets (heads and bodies; counted just before each write).
    pub bytes_sent: u64,
    /// TCP connections accepted.
    pub connections: u64,
    /// Requests per path (query included as sent).
    pub per_path: BTreeMap<String, u64>,
}

impl OriginCounts {
    /// All requests.
    pub fn requests(&self) -> u64 {
        self.segment_requests + self.playlist_requests + self.other_requests
    }

    /// Requests for `path`.
    pub fn path(&self, path: &str) -> u64 {
        self.per_path.get(path).copied().unwrap_or(0)
    }

    /// The counts as one JSON object (what `GET /origin/stats` answers).
    pub fn to_json(&self) -> String {
        let per_path: serde_json::Map<String, serde_json::Value> =
            self.per_path.iter().map(|(k, v)| (k.clone(), serde_json::Value::from(*v))).collect();
        serde_json::json!({
            "segment_requests": self.segment_requests,
            "playlist_requests": self.playlist_requests,
            "other_requests": self.other_requests,
            "requests": self.requests(),
            "bytes_sent": self.bytes_sent,
            "connections": self.connections,
            "per_path": per_path,
        })
        .to_string()
    }
}

/// Shared between the server handle, the accept thread and connection threads.
#[derive(Debug)]
struct Shared {
    cfg: OriginConfig,
    start: std::time::Instant,
    /// Wall-clock time of `start` (DASH `availabilityStartTime` is derived from it).
    start_wall: std::time::SystemTime,
    /// Set when the server shuts down (held requests give up).
    stopping: std::sync::atomic::AtomicBool,
    cache: content::SegmentCache,
    counts: parking_lot::Mutex<OriginCounts>,
}

impl Shared {
    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The stream clock: milliseconds since start, frozen at [`OriginConfig::stall_after_ms`].
    fn stream_ms(&self) -> u64 {
        self.cfg.stream_clock(self.elapsed_ms())
    }
}

/// Starts an origin on `listen` (convenience for [`OriginServer::start`]).
pub fn start(listen: SocketAddr, cfg: OriginConfig) -> std::io::Result<OriginServer> {
    OriginServer::start(listen, cfg)
}
