//! What the synthetic origin serves: paths, the live clock, playlists and segment bytes.
//!
//! Everything here is a pure function of the [`OriginConfig`] and the origin's age, so a test
//! can rebuild any segment's bytes and compare them with what a node delivered.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use bytes::{BufMut, Bytes, BytesMut};
use parking_lot::Mutex;

use super::dash::DashTrack;
use super::OriginConfig;

/// Size of one MPEG-TS packet.
pub const TS_PACKET: usize = 188;

/// The real MPEG-TS fixtures every segment starts with (segment k uses fixture k % 2).
const FIXTURES: [&[u8]; 2] = [include_bytes!("../../tests/fixtures/seg_1.ts"), include_bytes!("../../tests/fixtures/seg_2.ts")];

/// Codecs of the fixtures (H.264 Constrained Baseline level 1.3, AAC-LC).
pub const CODECS: &str = "avc1.42c00d,mp4a.40.2";

/// One path the origin knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OriginPath {
    /// `/live/ch{c}/master.m3u8`.
    Master {
        /// Channel.
        channel: usize,
    },
    /// `/live/ch{c}/v{r}/index.m3u8`, or the alias `/live/ch{c}/index.m3u8` of rendition 0
    /// (`alias` is then true and its segment URIs are `v0/seg_{k}.ts`).
    Media {
        /// Channel.
        channel: usize,
        /// Rendition index into [`OriginConfig::renditions_kbps`].
        rendition: usize,
        /// Requested through the channel-level alias.
        alias: bool,
    },
    /// `/live/ch{c}/v{r}/seg_{k}.ts`.
    Segment {
        /// Channel.
        channel: usize,
        /// Rendition index.
        rendition: usize,
        /// Segment number (equal to its media sequence number).
        seq: u64,
    },
    /// `/origin/stats`.
    Stats,
    /// `/live/ch{c}/v{r}/seg_{k}.part_{i}.ts` (LL only).
    Part {
        /// Channel.
        channel: usize,
        /// Rendition index.
        rendition: usize,
        /// Segment number.
        seq: u64,
        /// Part index within the segment.
        part: u64,
    },
    /// `/live/ch{c}/manifest.mpd` (LL only).
    Mpd {
        /// Channel.
        channel: usize,
    },
    /// `/live/ch{c}/dash/{video,audio}/init.mp4` (LL only).
    DashInit {
        /// Channel.
        channel: usize,
        /// Track.
        track: DashTrack,
    },
    /// `/live/ch{c}/dash/video/seg_{n}.m4s` or `/live/ch{c}/dash/audio/seg_{n·d}.m4s` (LL only).
    DashSegment {
        /// Channel.
        channel: usize,
        /// Track.
        track: DashTrack,
        /// Segment number (the `$Number$`; for audio, `$Time$` / d).
        seq: u64,
    },
}

/// Kind of a request path, for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathKind {
    /// A media path: `.ts` (segments and LL-HLS parts), `.m4s`, `.mp4`.
    Segment,
    /// A playlist path: `.m3u8`, `.mpd`.
    Playlist,
    /// Anything else.
    Other,
}

/// Counting kind of `path` (by suffix, whether or not the origin knows it).
pub fn path_kind(path: &str) -> PathKind {
    let p = path.split(['?', '#']).next().unwrap_or(path);
    if p.ends_with(".ts") || p.ends_with(".m4s") || p.ends_with(".mp4") {
        PathKind::Segment
    } else if p.ends_with(".m3u8") || p.ends_with(".mpd") {
        PathKind::Playlist
    } else {
        PathKind::Other
    }
}

/// Path of channel `c`'s master playlist.
pub fn master_path(c: usize) -> String {
    format!("/live/ch{c}/master.m3u8")
}

/// Path of channel `c`'s rendition `r` media playlist.
pub fn media_path(c: usize, r: usize) -> String {
    format!("/live/ch{c}/v{r}/index.m3u8")
}

/// Path of segment `k` of channel `c`, rendition `r`.
pub fn segment_path(c: usize, r: usize, k: u64) -> String {
    format!("/live/ch{c}/v{r}/seg_{k}.ts")
}

/// A decimal number without sign or leading `+` (leading zeros are refused: one spelling per path).
fn parse_num(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0')) {
        return None;
    }
    s.parse().ok()
}

impl OriginConfig {
    /// Parses a request path (query ignored) into an [`OriginPath`] that exists in this
    /// configuration's shape (channel and rendition in range); time is not checked here.
    pub fn parse_path(&self, path: &str) -> Option<OriginPath> {
        let path = path.split(['?', '#']).next().unwrap_or(path);
        if path == "/origin/stats" {
            return Some(OriginPath::Stats);
        }
        let rest = path.strip_prefix("/live/ch")?;
        let (c, rest) = rest.split_once('/')?;
        let channel = usize::try_from(parse_num(c)?).ok().filter(|&c| c < self.channels)?;
        match rest {
            "master.m3u8" => return Some(OriginPath::Master { channel }),
            "index.m3u8" => return Some(OriginPath::Media { channel, rendition: 0, alias: true }),
            "manifest.mpd" if self.ll => return Some(OriginPath::Mpd { channel }),
            _ => {}
        }
        if self.ll {
            if let Some(dash) = rest.strip_prefix("dash/") {
                let (t, file) = dash.split_once('/')?;
                let track = match t {
                    "video" => DashTrack::Video,
                    "audio" => DashTrack::Audio,
                    _ => return None,
                };
                if file == "init.mp4" {
                    return Some(OriginPath::DashInit { channel, track });
                }
                let x = parse_num(file.strip_prefix("seg_")?.strip_suffix(".m4s")?)?;
                return Some(OriginPath::DashSegment { channel, track, seq: self.dash_segment_number(track, x)? });
            }
        }
        let rest = rest.strip_prefix('v')?;
        let (r, file) = rest.split_once('/')?;
        let rendition = usize::try_from(parse_num(r)?).ok().filter(|&r| r < self.renditions_kbps.len())?;
        if file == "index.m3u8" {
            return Some(OriginPath::Media { channel, rendition, alias: false });
        }
        let k = file.strip_prefix("seg_")?.strip_suffix(".ts")?;
        if self.ll {
            if let Some((k, i)) = k.split_once(".part_") {
                return Some(OriginPath::Part { channel, rendition, seq: parse_num(k)?, part: parse_num(i)? });
            }
        }
        Some(OriginPath::Segment { channel, rendition, seq: parse_num(k)? })
    }

    /// The stream clock at origin age `elapsed_ms`: the age itself, frozen at
    /// [`stall_after_ms`](Self::stall_after_ms) when set.
    pub fn stream_clock(&self, elapsed_ms: u64) -> u64 {
        match self.stall_after_ms {
            Some(s) => elapsed_ms.min(s),
            None => elapsed_ms,
        }
    }

    /// Segment duration in milliseconds (at least 1 s).
    pub fn segment_ms(&self) -> u64 {
        self.segment_secs.max(1).saturating_mul(1000)
    }

    /// Playlist window in segments (at least 1).
    pub fn window_len(&self) -> u64 {
        self.window.max(1) as u64
    }

    /// The newest published segment when the origin has run for `elapsed_ms`: segment k is
    /// published at stream time (k+1)·segment_secs and the stream is `window` segments old at start.
    pub fn live_edge(&self, elapsed_ms: u64) -> u64 {
        let stream_ms = elapsed_ms.saturating_add(self.window_len() * self.segment_ms());
        (stream_ms / self.segment_ms()).saturating_sub(1)
    }

    /// First segment listed in the media playlist at `elapsed_ms`.
    pub fn first_listed(&self, elapsed_ms: u64) -> u64 {
        (self.live_edge(elapsed_ms) + 1).saturating_sub(self.window_len())
    }

    /// Whether segment `k` can be fetched at `elapsed_ms`: published, and not older than a further
    /// window plus one segment past the playlist (RFC 8216 §6.2.2 keeps removed segments available
    /// for about the playlist's duration).
    pub fn is_available(&self, k: u64, elapsed_ms: u64) -> bool {
        let edge = self.live_edge(elapsed_ms);
        let oldest = self.first_listed(elapsed_ms).saturating_sub(self.window_len() + 1);
        k <= edge && k >= oldest
    }

    /// Length in bytes of every segment of rendition `r` built from fixture `k % 2`: the
    /// rendition's bitrate × segment duration rounded up to whole TS packets, and never shorter
    /// than the fixture plus the one marker packet.
    pub fn segment_len(&self, r: usize, k: u64) -> usize {
        let fixture = FIXTURES[(k % 2) as usize].len();
        let kbps = self.renditions_kbps.get(r).copied().unwrap_or(0);
        let target = kbps.saturating_mul(125).saturating_mul(self.segment_secs.max(1));
        let target = usize::try_from(target).unwrap_or(usize::MAX / 2);
        let packets = target.div_ceil(TS_PACKET);
        (packets * TS_PACKET).max(fixture + TS_PACKET)
    }

    /// Peak bit rate of rendition `r` in bits per second (for `BANDWIDTH`).
    pub fn peak_bps(&self, r: usize) -> u64 {
        let max = self.segment_len(r, 0).max(self.segment_len(r, 1)) as u64;
        max * 8 / self.segment_secs.max(1)
    }

    /// The bytes of segment `k` of channel `c`, rendition `r`: the real TS fixture `k % 2`
    /// (its PCR/PTS/DTS and continuity counters shifted so that consecutive segments form one
    /// continuous stream, 2 s of media per segment), then TS null packets (PID 0x1FFF) up to [`segment_len`](Self::segment_len); the first null
    /// packet's payload carries an ASCII marker naming (c, r, k), so every segment is distinct.
    /// Deterministic: the same arguments always give the same bytes.
    pub fn segment_bytes(&self, c: usize, r: usize, k: u64) -> Bytes {
        let fixture = FIXTURES[(k % 2) as usize];
        let len = self.segment_len(r, k);
        let mut b = BytesMut::with_capacity(len);
        b.put_slice(fixture);
        retime(&mut b, k / 2);
        let marker = format!("LISTO-ORIGIN ch={c} v={r} seg={k} ");
        let mut first = true;
        while b.len() + TS_PACKET <= len {
            b.put_slice(&[0x47, 0x1F, 0xFF, 0x10]);
            let mut payload = [0xFFu8; TS_PACKET - 4];
            if first {
                let m = marker.as_bytes();
                let n = m.len().min(payload.len());
                payload[..n].copy_from_slice(&m[..n]);
                first = false;
            }
            b.put_slice(&payload);
        }
        b.freeze()
    }

    /// The body a segment path must have (for checking what a node delivered), if it is one
    /// (with [`ll`](Self::ll) also LL-HLS parts and DASH init and media segments).
    pub fn expected_segment(&self, path: &str) -> Option<Bytes> {
        match self.parse_path(path)? {
            OriginPath::Segment { channel, rendition, seq } => Some(self.segment_bytes(channel, rendition, seq)),
            OriginPath::Part { channel, rendition, seq, part } => {
                Some(self.part_bytes(channel, rendition, seq, part)).filter(|b| !b.is_empty())
            }
            OriginPath::DashInit { track, .. } => Some(self.dash_init(track)),
            OriginPath::DashSegment { channel, track, seq } => Some(self.dash_segment_bytes(channel, track, seq)),
            _ => None,
        }
    }

    /// The master playlist of channel `c`.
    pub fn master_playlist(&self, c: usize) -> String {
        let _ = c;
        let mut s = String::from("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-INDEPENDENT-SEGMENTS\n");
        for (r, &kbps) in self.renditions_kbps.iter().enumerate() {
            let (w, h) = resolution_for(kbps);
            let _ = writeln!(
                s,
                "#EXT-X-STREAM-INF:BANDWIDTH={},AVERAGE-BANDWIDTH={},RESOLUTION={w}x{h},CODECS=\"{CODECS}\"\nv{r}/index.m3u8",
                self.peak_bps(r),
                kbps.saturating_mul(1000).max(1),
            );
        }
        s
    }

    /// The media playlist of channel `c`, rendition `r` at `elapsed_ms`: the last `window`
    /// published segments, no `EXT-X-ENDLIST`. With `alias`, URIs are relative to the channel
    /// directory (`v{r}/seg_{k}.ts`). With [`ll`](Self::ll), the LL-HLS playlist
    /// ([`ll_media_playlist`](Self::ll_media_playlist)).
    pub fn media_playlist(&self, c: usize, r: usize, alias: bool, elapsed_ms: u64) -> String {
        if self.ll {
            return self.ll_media_playlist(c, r, alias, elapsed_ms);
        }
        let first = self.first_listed(elapsed_ms);
        let edge = self.live_edge(elapsed_ms);
        let secs = self.segment_secs.max(1);
        let mut s = format!("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:{secs}\n#EXT-X-MEDIA-SEQUENCE:{first}\n");
        let dir = if alias { format!("v{r}/") } else { String::new() };
        for k in first..=edge {
            let _ = write!(s, "#EXTINF:{secs}.000,\n{dir}seg_{k}.ts\n");
        }
        s
    }
}

/// What is needed to chain the two fixtures into an endless continuous stream.
struct Chain {
    /// 90 kHz ticks covered by the pair (seg_1 + seg_2).
    pair_ticks: u64,
    /// Per PID: continuity-counter advance over the pair.
    cc_delta: Vec<u8>,
}

fn pid_of(p: &[u8]) -> usize {
    (usize::from(p[1] & 0x1F) << 8) | usize::from(p[2])
}

fn pcr_base(p: &[u8]) -> Option<u64> {
    let afc = (p[3] >> 4) & 3;
    if afc & 2 == 0 || p[4] < 7 || p[5] & 0x10 == 0 {
        return None;
    }
    let b = &p[6..11];
    Some(
        (u64::from(b[0]) << 25)
            | (u64::from(b[1]) << 17)
            | (u64::from(b[2]) << 9)
            | (u64::from(b[3]) << 1)
            | (u64::from(b[4]) >> 7),
    )
}

fn chain() -> &'static Chain {
    static CHAIN: std::sync::OnceLock<Chain> = std::sync::OnceLock::new();
    CHAIN.get_or_init(|| {
        let first_pcr = |f: &[u8]| f.chunks_exact(TS_PACKET).find_map(pcr_base);
        let pair_ticks = match (first_pcr(FIXTURES[0]), first_pcr(FIXTURES[1])) {
            (Some(a), Some(b)) if b > a => 2 * (b - a),
            _ => 360_000,
        };
        // The fixtures are consecutive segments of one encode, so counters run on from seg_1
        // into seg_2; over the pair each PID advances by (last + 1 − first) mod 16.
        let mut first = vec![None::<u8>; 8192];
        let mut last = vec![None::<u8>; 8192];
        for (i, f) in FIXTURES.iter().enumerate() {
            for p in f.chunks_exact(TS_PACKET).filter(|p| (p[3] >> 4) & 1 == 1) {
                let pid = pid_of(p);
                if i == 0 && first[pid].is_none() {
                    first[pid] = Some(p[3] & 0x0F);
                }
                if i == 1 {
                    last[pid] = Some(p[3] & 0x0F);
                }
            }
        }
        let cc_delta = first
            .iter()
            .zip(&last)
            .map(|(f, l)| match (f, l) {
                (Some(f), Some(l)) => (l + 17 - f) % 16,
                _ => 0,
            })
            .collect();
        Chain { pair_ticks, cc_delta }
    })
}

/// Writes a 33-bit PES timestamp into the 5 bytes at `b`, keeping the 4-bit prefix.
fn put_pes_ts(b: &mut [u8], ts: u64) {
    b[0] = (b[0] & 0xF0) | (((ts >> 30) & 0x07) as u8) << 1 | 1;
    b[1] = (ts >> 22) as u8;
    b[2] = (((ts >> 15) & 0x7F) as u8) << 1 | 1;
    b[3] = (ts >> 7) as u8;
    b[4] = ((ts & 0x7F) as u8) << 1 | 1;
}

fn pes_ts(b: &[u8]) -> u64 {
    (u64::from((b[0] >> 1) & 0x07) << 30)
        | (u64::from(b[1]) << 22)
        | (u64::from(b[2] >> 1) << 15)
        | (u64::from(b[3]) << 7)
        | u64::from(b[4] >> 1)
}

/// Shifts a copy of a fixture to the `pair`-th repetition: PCR, PTS and DTS by `pair` × the
/// pair's duration, continuity counters by `pair` × their advance over the pair.
fn retime(ts: &mut [u8], pair: u64) {
    if pair == 0 {
        return;
    }
    const MASK: u64 = (1 << 33) - 1;
    let ch = chain();
    let add = pair.wrapping_mul(ch.pair_ticks) & MASK;
    for p in ts.chunks_exact_mut(TS_PACKET) {
        if p[0] != 0x47 {
            continue;
        }
        let pid = pid_of(p);
        if pid == 0x1FFF {
            continue;
        }
        let afc = (p[3] >> 4) & 3;
        if afc & 1 == 1 {
            let delta = ((pair % 16) as u8 * ch.cc_delta[pid]) % 16;
            p[3] = (p[3] & 0xF0) | (((p[3] & 0x0F) + delta) % 16);
        }
        let mut off = 4;
        if afc & 2 != 0 {
            if let Some(base) = pcr_base(p) {
                let base = (base + add) & MASK;
                p[6] = (base >> 25) as u8;
                p[7] = (base >> 17) as u8;
                p[8] = (base >> 9) as u8;
                p[9] = (base >> 1) as u8;
                p[10] = (p[10] & 0x7F) | (((base & 1) as u8) << 7);
            }
            off = 5 + usize::from(p[4]);
        }
        let pusi = p[1] & 0x40 != 0;
        if !pusi || afc & 1 == 0 || off + 19 > TS_PACKET || p[off..off + 3] != [0, 0, 1] {
            continue;
        }
        let flags = p[off + 7] >> 6;
        if flags & 2 != 0 {
            let t = (pes_ts(&p[off + 9..off + 14]) + add) & MASK;
            put_pes_ts(&mut p[off + 9..off + 14], t);
        }
        if flags == 3 {
            let t = (pes_ts(&p[off + 14..off + 19]) + add) & MASK;
            put_pes_ts(&mut p[off + 14..off + 19], t);
        }
    }
}

/// A plausible resolution for a rendition of `kbps` (the ladder a real packager would use).
fn resolution_for(kbps: u64) -> (u32, u32) {
    match kbps {
        0..=500 => (416, 234),
        501..=1200 => (640, 360),
        1201..=2000 => (960, 540),
        2001..=4500 => (1280, 720),
        _ => (1920, 1080),
    }
}

/// A bounded cache of generated segments (the recent window of every channel and rendition).
#[derive(Debug)]
pub struct SegmentCache {
    map: Mutex<BTreeMap<(u64, usize, usize), Bytes>>,
    capacity: usize,
}

impl SegmentCache {
    /// A cache able to hold about two windows (plus a few) of every channel and rendition.
    pub fn new(cfg: &OriginConfig) -> Self {
        let per_stream = 2 * cfg.window.max(1) + 4;
        let capacity = per_stream.saturating_mul(cfg.channels.max(1)).saturating_mul(cfg.renditions_kbps.len().max(1));
        SegmentCache { map: Mutex::new(BTreeMap::new()), capacity }
    }

    /// Segment (c, r, k), built once and kept while it is among the recent ones.
    pub fn get(&self, cfg: &OriginConfig, c: usize, r: usize, k: u64) -> Bytes {
        if let Some(b) = self.map.lock().get(&(k, c, r)) {
            return b.clone();
        }
        let b = cfg.segment_bytes(c, r, k);
        let mut map = self.map.lock();
        map.insert((k, c, r), b.clone());
        while map.len() > self.capacity {
            // Keys sort by segment number first: drop the oldest.
            if map.pop_first().is_none() {
                break;
            }
        }
        b
    }

    /// Number of cached segments.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> OriginConfig {
        OriginConfig { channels: 2, ..OriginConfig::default() }
    }

    #[test]
    fn fixtures_are_whole_ts_packets() {
        for f in FIXTURES {
            assert_eq!(f.len() % TS_PACKET, 0);
            assert_eq!(f[0], 0x47);
        }
    }

    #[test]
    fn segment_sizes_follow_bitrate() {
        let c = cfg();
        // 800 kbit/s × 2 s = 200 000 B; 2500 kbit/s × 2 s = 625 000 B (rounded up to packets).
        assert_eq!(c.segment_len(0, 0), 200_000usize.div_ceil(188) * 188);
        assert_eq!(c.segment_len(1, 5), 625_000usize.div_ceil(188) * 188);
        let low = OriginConfig { renditions_kbps: vec![100], ..cfg() };
        assert_eq!(low.segment_len(0, 0), FIXTURES[0].len() + 188);
        assert_eq!(low.segment_len(0, 1), FIXTURES[1].len() + 188);
    }

    #[test]
    fn segments_are_ts_distinct_and_deterministic() {
        let c = cfg();
        let a = c.segment_bytes(0, 0, 7);
        assert_eq!(a, c.segment_bytes(0, 0, 7));
        assert_eq!(a.len() % TS_PACKET, 0);
        assert!(a.chunks(TS_PACKET).all(|p| p[0] == 0x47));
        assert_ne!(a, c.segment_bytes(1, 0, 7));
        assert_ne!(c.segment_bytes(0, 0, 9), c.segment_bytes(0, 0, 7));
        let marker = b"LISTO-ORIGIN ch=0 v=0 seg=7 ";
        let at = FIXTURES[1].len() + 4;
        assert_eq!(&a[at..at + marker.len()], marker);
    }

    /// (first, last) PTS of the video PID and every PID's (first, last) counter, per segment.
    fn scan(b: &[u8]) -> (Vec<u64>, BTreeMap<usize, (u8, u8)>) {
        let mut pts = Vec::new();
        let mut cc: BTreeMap<usize, (u8, u8)> = BTreeMap::new();
        for p in b.chunks_exact(TS_PACKET) {
            let pid = pid_of(p);
            let afc = (p[3] >> 4) & 3;
            if pid == 0x1FFF || afc & 1 == 0 {
                continue;
            }
            let e = cc.entry(pid).or_insert((p[3] & 15, p[3] & 15));
            e.1 = p[3] & 15;
            let off = if afc & 2 != 0 { 5 + usize::from(p[4]) } else { 4 };
            if pid == 0x100 && p[1] & 0x40 != 0 && p[off..off + 3] == [0, 0, 1] {
                pts.push(pes_ts(&p[off + 9..off + 14]));
            }
        }
        (pts, cc)
    }

    #[test]
    fn consecutive_segments_are_one_continuous_stream() {
        let c = cfg();
        let frame = 3600; // 25 fps in 90 kHz ticks
        for k in 0..5u64 {
            let (a_pts, a_cc) = scan(&c.segment_bytes(0, 0, k));
            let (b_pts, b_cc) = scan(&c.segment_bytes(0, 0, k + 1));
            assert_eq!(a_pts.last().map(|t| t + frame), b_pts.first().copied(), "PTS continue from {k} to {}", k + 1);
            for (pid, (_, last)) in &a_cc {
                assert_eq!(b_cc.get(pid).map(|e| e.0), Some((last + 1) % 16), "CC of PID {pid:#x} from {k}");
            }
            let pcr_a = c.segment_bytes(0, 0, k).chunks_exact(TS_PACKET).find_map(pcr_base);
            let pcr_b = c.segment_bytes(0, 0, k + 1).chunks_exact(TS_PACKET).find_map(pcr_base);
            assert_eq!(pcr_a.map(|p| p + 180_000), pcr_b);
        }
    }

    #[test]
    fn paths_round_trip() {
        let c = cfg();
        assert_eq!(c.parse_path(&segment_path(1, 1, 42)), Some(OriginPath::Segment { channel: 1, rendition: 1, seq: 42 }));
        assert_eq!(c.parse_path(&media_path(0, 1)), Some(OriginPath::Media { channel: 0, rendition: 1, alias: false }));
        assert_eq!(c.parse_path(&master_path(1)), Some(OriginPath::Master { channel: 1 }));
        assert_eq!(c.parse_path("/live/ch0/index.m3u8"), Some(OriginPath::Media { channel: 0, rendition: 0, alias: true }));
        assert_eq!(c.parse_path("/origin/stats"), Some(OriginPath::Stats));
        for bad in [
            "/live/ch2/master.m3u8",
            "/live/ch0/v2/index.m3u8",
            "/live/ch00/master.m3u8",
            "/live/ch0/v0/seg_x.ts",
            "/live/ch0/v0/seg_-1.ts",
            "/",
            "/live/ch/v0/seg_1.ts",
            "/live/ch0/v0/seg_1.tsx",
        ] {
            assert_eq!(c.parse_path(bad), None, "{bad}");
        }
        assert_eq!(path_kind("/a/seg_1.ts?x=1"), PathKind::Segment);
        assert_eq!(path_kind("/a/index.m3u8"), PathKind::Playlist);
        assert_eq!(path_kind("/origin/stats"), PathKind::Other);
    }

    #[test]
    fn window_is_full_at_start_and_slides() {
        let c = OriginConfig { segment_secs: 2, window: 6, ..cfg() };
        assert_eq!(c.live_edge(0), 5);
        assert_eq!(c.first_listed(0), 0);
        assert_eq!(c.live_edge(1999), 5);
        assert_eq!(c.live_edge(2000), 6);
        assert_eq!(c.first_listed(2000), 1);
        assert!(c.is_available(5, 0));
        assert!(!c.is_available(6, 1999));
        assert!(c.is_available(6, 2000));
        let p = c.media_playlist(0, 0, false, 2000);
        assert!(p.contains("#EXT-X-MEDIA-SEQUENCE:1\n"));
        assert_eq!(p.matches("#EXTINF:2.000,").count(), 6);
        assert!(p.ends_with("seg_6.ts\n"));
        assert!(!p.contains("ENDLIST"));
        // Long after: removed segments stay available for one more window, then go.
        let t = 100_000;
        let first = c.first_listed(t);
        assert!(c.is_available(first - 7, t));
        assert!(!c.is_available(first - 8, t));
    }

    #[test]
    fn cache_is_bounded() {
        let c = OriginConfig { channels: 1, renditions_kbps: vec![100], window: 2, ..cfg() };
        let cache = SegmentCache::new(&c);
        for k in 0..100 {
            assert_eq!(cache.get(&c, 0, 0, k), c.segment_bytes(0, 0, k));
        }
        assert!(cache.len() <= 8);
    }
}
