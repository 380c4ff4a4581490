//! Low-latency HLS in the synthetic origin (RFC 8216bis §4.4.3.7–§4.4.5.3, §6.2.5.2): parts,
//! the clock that publishes them, LL media playlists and blocking playlist reloads.
//!
//! Segment k covers stream time `[k·S, (k+1)·S)` (S = segment duration); it is cut into
//! [`OriginConfig::parts_per_segment`] parts, part i covering `[k·S + b(i), k·S + b(i+1))` with
//! `b(i) = i·S/n`. A part is *published* (listed, fetchable with a `Content-Length`) when its
//! interval has ended; while it is being produced it is the playlist's `EXT-X-PRELOAD-HINT`, and
//! a request for it is answered at once with a chunked body whose pieces leave as they are
//! "produced". A whole segment is published with its last part, exactly as in the plain origin.
//!
//! The bytes of part i are a slice of the segment's bytes cut at TS packet boundaries, so the
//! parts of a segment concatenate to exactly [`OriginConfig::segment_bytes`].
//!
//! ```
//! use listo::origin::OriginConfig;
//! let cfg = OriginConfig { ll: true, segment_secs: 1, part_ms: 333, ..OriginConfig::default() };
//! assert_eq!(cfg.parts_per_segment(), 3);
//! let whole: Vec<u8> = (0..3).flat_map(|i| cfg.part_bytes(0, 0, 7, i).to_vec()).collect();
//! assert_eq!(whole, cfg.segment_bytes(0, 0, 7).to_vec());
//! ```

use std::fmt::Write as _;
use std::ops::Range;

use bytes::Bytes;

use super::content::TS_PACKET;
use super::OriginConfig;

/// Path of part `i` of segment `k` of channel `c`, rendition `r`.
pub fn part_path(c: usize, r: usize, k: u64, i: u64) -> String {
    format!("/live/ch{c}/v{r}/seg_{k}.part_{i}.ts")
}

/// Pieces a part being produced is streamed in (one chunk each).
pub const STREAM_PIECES: u64 = 4;

/// The delivery directives of a blocking playlist reload (`_HLS_msn`, `_HLS_part`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockingQuery {
    /// `_HLS_msn`: the media sequence number waited for.
    pub msn: u64,
    /// `_HLS_part`: the part index waited for within `msn` (`None`: the whole segment).
    pub part: Option<u64>,
}

/// Reads `_HLS_msn` / `_HLS_part` from a query string. `Ok(None)`: no directive; `Err(())`: a
/// malformed value, or `_HLS_part` without `_HLS_msn` (both answered 400, §6.2.5.2).
#[allow(clippy::result_unit_err)]
pub fn parse_blocking_query(query: &str) -> Result<Option<BlockingQuery>, ()> {
    let (mut msn, mut part) = (None, None);
    for kv in query.split('&') {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        match k {
            "_HLS_msn" => msn = Some(v.parse::<u64>().map_err(|_| ())?),
            "_HLS_part" => part = Some(v.parse::<u64>().map_err(|_| ())?),
            _ => {}
        }
    }
    match (msn, part) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err(()),
        (Some(msn), part) => Ok(Some(BlockingQuery { msn, part })),
    }
}

/// Where a part stands at some moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartState {
    /// Complete: served whole.
    Published,
    /// Being produced now (the preload hint): served chunked as it is produced.
    InProduction,
    /// Starts within one part duration (a client that raced ahead of the playlist): held until
    /// it starts, then streamed.
    Next,
    /// Too far ahead, long gone, or no such part: 404.
    Unavailable,
}

/// Seconds with three decimals (`1.000`, `0.334`).
fn secs3(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

impl OriginConfig {
    /// Parts per segment: the segment duration over [`part_ms`](Self::part_ms), rounded to the
    /// nearest whole number (at least 1).
    pub fn parts_per_segment(&self) -> u64 {
        let s = self.segment_ms();
        let p = self.part_ms.max(1);
        ((s + p / 2) / p).clamp(1, s)
    }

    /// Start of part `i` within its segment in ms (`i` = n gives the segment duration).
    pub fn part_offset_ms(&self, i: u64) -> u64 {
        let n = self.parts_per_segment();
        i.min(n).saturating_mul(self.segment_ms()) / n
    }

    /// Duration of part `i` in ms.
    pub fn part_duration_ms(&self, i: u64) -> u64 {
        self.part_offset_ms(i + 1) - self.part_offset_ms(i)
    }

    /// `PART-TARGET` in ms: the longest part.
    pub fn part_target_ms(&self) -> u64 {
        self.segment_ms().div_ceil(self.parts_per_segment())
    }

    /// Stream time (ms) → origin age (ms): the stream is `window` segments old at start.
    fn age_of(&self, stream_ms: u64) -> u64 {
        stream_ms.saturating_sub(self.window_len().saturating_mul(self.segment_ms()))
    }

    /// Origin age (ms) at which part `i` of segment `k` starts being produced.
    pub fn part_started_ms(&self, k: u64, i: u64) -> u64 {
        self.age_of(k.saturating_mul(self.segment_ms()).saturating_add(self.part_offset_ms(i)))
    }

    /// Origin age (ms) at which part `i` of segment `k` is published (complete).
    pub fn part_published_ms(&self, k: u64, i: u64) -> u64 {
        self.age_of(k.saturating_mul(self.segment_ms()).saturating_add(self.part_offset_ms(i + 1)))
    }

    /// The segment being produced at `elapsed_ms` and how many of its parts are published (the
    /// next one, `(seg, done)`, is the preload hint).
    pub fn production(&self, elapsed_ms: u64) -> (u64, u64) {
        let s = self.segment_ms();
        let stream = elapsed_ms.saturating_add(self.window_len().saturating_mul(s));
        let (k, within) = (stream / s, stream % s);
        let n = self.parts_per_segment();
        let done = (1..=n).take_while(|&j| self.part_offset_ms(j) <= within).count() as u64;
        (k, done)
    }

    /// Where part `i` of segment `k` stands at `elapsed_ms`.
    pub fn part_state(&self, k: u64, i: u64, elapsed_ms: u64) -> PartState {
        if i >= self.parts_per_segment() {
            return PartState::Unavailable;
        }
        let oldest = self.first_listed(elapsed_ms).saturating_sub(self.window_len() + 1);
        if k < oldest {
            return PartState::Unavailable;
        }
        if self.part_published_ms(k, i) <= elapsed_ms {
            return PartState::Published;
        }
        let start = self.part_started_ms(k, i);
        if start <= elapsed_ms {
            PartState::InProduction
        } else if start - elapsed_ms <= self.part_target_ms() {
            PartState::Next
        } else {
            PartState::Unavailable
        }
    }

    /// Byte range of part `i` within segment `k` of rendition `r` (cut at TS packet boundaries).
    pub fn part_range(&self, r: usize, k: u64, i: u64) -> Range<usize> {
        let packets = (self.segment_len(r, k) / TS_PACKET) as u64;
        let n = self.parts_per_segment();
        let at = |j: u64| usize::try_from(packets.saturating_mul(j.min(n)) / n).unwrap_or(0) * TS_PACKET;
        at(i)..at(i + 1)
    }

    /// The bytes of part `i` of segment `k` of channel `c`, rendition `r` (empty past the last part).
    pub fn part_bytes(&self, c: usize, r: usize, k: u64, i: u64) -> Bytes {
        if i >= self.parts_per_segment() {
            return Bytes::new();
        }
        self.segment_bytes(c, r, k).slice(self.part_range(r, k, i))
    }

    /// Origin age (ms) at which a blocking reload for `q` can be answered: when the playlist
    /// holds part `q.part` of `q.msn` (or, without `_HLS_part`, all of segment `q.msn`). A part
    /// index past the segment's last part waits for the first part of the next segment.
    pub fn blocking_ready_ms(&self, q: BlockingQuery) -> u64 {
        let n = self.parts_per_segment();
        match q.part {
            None => self.part_published_ms(q.msn, n - 1),
            Some(p) if p >= n => self.part_published_ms(q.msn.saturating_add(1), 0),
            Some(p) => self.part_published_ms(q.msn, p),
        }
    }

    /// Whether a blocking reload for `q` at `elapsed_ms` asks too far ahead: `_HLS_msn` more than
    /// two past the last complete segment (§6.2.5.2: answered 400 at once).
    pub fn blocking_too_far(&self, q: BlockingQuery, elapsed_ms: u64) -> bool {
        q.msn > self.live_edge(elapsed_ms).saturating_add(2)
    }

    /// The LL-HLS media playlist of channel `c`, rendition `r` at `elapsed_ms`: the plain
    /// window plus `EXT-X-SERVER-CONTROL`, `EXT-X-PART-INF`, the parts of the last three
    /// segments and of the segment in production, and the preload hint for the next part.
    pub fn ll_media_playlist(&self, c: usize, r: usize, alias: bool, elapsed_ms: u64) -> String {
        let _ = c;
        let first = self.first_listed(elapsed_ms);
        let edge = self.live_edge(elapsed_ms);
        let (producing, done) = self.production(elapsed_ms);
        let secs = self.segment_secs.max(1);
        let target = self.part_target_ms();
        let mut s = format!(
            "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:{secs}\n\
             #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={}\n\
             #EXT-X-PART-INF:PART-TARGET={}\n#EXT-X-MEDIA-SEQUENCE:{first}\n",
            secs3(3 * target),
            secs3(target),
        );
        let dir = if alias { format!("v{r}/") } else { String::new() };
        let parts = |s: &mut String, k: u64, upto: u64| {
            for i in 0..upto {
                let _ = writeln!(
                    s,
                    "#EXT-X-PART:DURATION={},URI=\"{dir}seg_{k}.part_{i}.ts\"{}",
                    secs3(self.part_duration_ms(i)),
                    if i == 0 { ",INDEPENDENT=YES" } else { "" }
                );
            }
        };
        let n = self.parts_per_segment();
        for k in first..=edge {
            if k + 3 > edge {
                parts(&mut s, k, n);
            }
            let _ = write!(s, "#EXTINF:{secs}.000,\n{dir}seg_{k}.ts\n");
        }
        parts(&mut s, producing, done);
        let _ = writeln!(s, "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{dir}seg_{producing}.part_{done}.ts\"");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> OriginConfig {
        OriginConfig { ll: true, segment_secs: 1, part_ms: 333, window: 6, ..OriginConfig::default() }
    }

    #[test]
    fn parts_tile_the_segment() {
        let c = cfg();
        assert_eq!(c.parts_per_segment(), 3);
        assert_eq!((0..=3).map(|i| c.part_offset_ms(i)).collect::<Vec<_>>(), vec![0, 333, 666, 1000]);
        assert_eq!(c.part_target_ms(), 334);
        let two = OriginConfig { segment_secs: 2, ..c.clone() };
        assert_eq!(two.parts_per_segment(), 6);
        for k in [0u64, 1, 9] {
            let mut joined = Vec::new();
            for i in 0..3 {
                let p = c.part_bytes(0, 1, k, i);
                assert_eq!(p.len() % TS_PACKET, 0);
                assert!(!p.is_empty());
                joined.extend_from_slice(&p);
            }
            assert_eq!(joined, c.segment_bytes(0, 1, k).to_vec());
        }
        assert!(c.part_bytes(0, 0, 1, 3).is_empty());
    }

    #[test]
    fn clock_publishes_parts_then_the_segment() {
        let c = cfg();
        // At age 0 segments 0..=5 are complete and segment 6 starts.
        assert_eq!(c.production(0), (6, 0));
        assert_eq!(c.part_started_ms(6, 0), 0);
        assert_eq!(c.part_published_ms(6, 0), 333);
        assert_eq!(c.production(332), (6, 0));
        assert_eq!(c.production(333), (6, 1));
        assert_eq!(c.production(999), (6, 2));
        assert_eq!(c.production(1000), (7, 0));
        assert_eq!(c.part_published_ms(6, 2), 1000);
        assert_eq!(c.live_edge(1000), 6);
        assert_eq!(c.part_state(6, 0, 100), PartState::InProduction);
        assert_eq!(c.part_state(6, 1, 100), PartState::Next);
        assert_eq!(c.part_state(6, 2, 100), PartState::Unavailable);
        assert_eq!(c.part_state(6, 0, 333), PartState::Published);
        assert_eq!(c.part_state(5, 2, 0), PartState::Published);
        assert_eq!(c.part_state(5, 3, 0), PartState::Unavailable);
    }

    #[test]
    fn blocking_directives() {
        let c = cfg();
        assert_eq!(parse_blocking_query("a=1"), Ok(None));
        assert_eq!(parse_blocking_query("_HLS_msn=7&_HLS_part=2"), Ok(Some(BlockingQuery { msn: 7, part: Some(2) })));
        assert_eq!(parse_blocking_query("_HLS_msn=7"), Ok(Some(BlockingQuery { msn: 7, part: None })));
        assert!(parse_blocking_query("_HLS_part=2").is_err());
        assert!(parse_blocking_query("_HLS_msn=x").is_err());
        assert_eq!(c.blocking_ready_ms(BlockingQuery { msn: 6, part: Some(1) }), 666);
        assert_eq!(c.blocking_ready_ms(BlockingQuery { msn: 6, part: None }), 1000);
        assert_eq!(c.blocking_ready_ms(BlockingQuery { msn: 6, part: Some(3) }), 1333);
        assert_eq!(c.blocking_ready_ms(BlockingQuery { msn: 2, part: Some(0) }), 0);
        assert!(!c.blocking_too_far(BlockingQuery { msn: 7, part: None }, 0));
        assert!(c.blocking_too_far(BlockingQuery { msn: 8, part: None }, 0));
    }

    #[test]
    fn playlist_lists_parts_and_the_hint() {
        let c = cfg();
        let p = c.ll_media_playlist(0, 0, false, 400);
        assert!(p.contains("#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.002\n"), "{p}");
        assert!(p.contains("#EXT-X-PART-INF:PART-TARGET=0.334\n"));
        assert!(p.contains("#EXT-X-MEDIA-SEQUENCE:0\n"));
        assert_eq!(p.matches("#EXTINF:1.000,").count(), 6);
        // Parts of segments 3, 4, 5 (3 each) and part 0 of the segment in production.
        assert_eq!(p.matches("#EXT-X-PART:").count(), 10);
        assert!(p.contains("#EXT-X-PART:DURATION=0.333,URI=\"seg_6.part_0.ts\",INDEPENDENT=YES\n"));
        assert!(p.ends_with("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"seg_6.part_1.ts\"\n"), "{p}");
        let alias = c.ll_media_playlist(0, 0, true, 400);
        assert!(alias.contains("URI=\"v0/seg_6.part_0.ts\""));
    }
}
