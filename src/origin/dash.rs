//! Live MPEG-DASH in the synthetic origin (ISO/IEC 23009-1): a dynamic MPD and real fMP4.
//!
//! One MPD per channel, `/live/ch{c}/manifest.mpd`, with two adaptation sets that exercise both
//! addressing schemes a cache meets:
//!
//! * video (`Representation id="video"`): `SegmentTemplate` with `@duration` and `$Number$`
//!   (`dash/video/seg_{n}.m4s`, `startNumber="0"`), no timeline — the client computes the
//!   newest number from `availabilityStartTime` and its clock;
//! * audio (`Representation id="audio"`): `SegmentTemplate` with a `SegmentTimeline` and
//!   `$Time$` (`dash/audio/seg_{t}.m4s`, t = n × d in the 48 kHz timescale).
//!
//! Segment n of either track is the same stretch of stream time as HLS segment n: it covers
//! `[n·S, (n+1)·S)` and becomes available (200; 404 before) at `availabilityStartTime + (n+1)·S`,
//! i.e. when HLS segment n is published; `availabilityStartTime` is the origin's start minus
//! `window` segments, so the time-shift buffer (`window` segments) is full at once.
//!
//! The bytes are real CMAF from an ffmpeg capture (`src/origin/fixtures/`, from
//! `/work/shared/fixtures/dash-live-ffmpeg`: H.264 320x180 25 fps, AAC-LC 48 kHz, 2 s
//! segments of one moof+mdat per frame): init segments as captured, and media segment n = the
//! captured segment `n % 4` with every `tfdt` moved so that its first decode time is exactly
//! the segment's start (`$Time$` for audio) and the `mfhd` sequence numbers increasing, followed
//! by a `free` box naming (channel, track, n) so that every segment is distinct. With 2 s segments
//! (the default) the media timing is exact; with other `--segment-secs` each segment still holds
//! 2 s of media, which players tolerate and caches do not care about.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};

use super::OriginConfig;

/// A DASH track of the synthetic origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DashTrack {
    /// H.264 video, addressed by `$Number$`.
    Video,
    /// AAC audio, addressed by `$Time$` with a `SegmentTimeline`.
    Audio,
}

impl DashTrack {
    /// Directory name (`video`, `audio`).
    pub fn name(self) -> &'static str {
        match self {
            DashTrack::Video => "video",
            DashTrack::Audio => "audio",
        }
    }

    /// Media timescale (ticks per second) of the track's fMP4.
    pub fn timescale(self) -> u64 {
        match self {
            DashTrack::Video => 12_800,
            DashTrack::Audio => 48_000,
        }
    }

    fn init(self) -> &'static [u8] {
        match self {
            DashTrack::Video => VIDEO_INIT,
            DashTrack::Audio => AUDIO_INIT,
        }
    }

    fn media(self, n: u64) -> &'static [u8] {
        let i = (n % 4) as usize;
        match self {
            DashTrack::Video => VIDEO[i],
            DashTrack::Audio => AUDIO[i],
        }
    }
}

const VIDEO_INIT: &[u8] = include_bytes!("fixtures/video_init.mp4");
const AUDIO_INIT: &[u8] = include_bytes!("fixtures/audio_init.mp4");
const VIDEO: [&[u8]; 4] = [
    include_bytes!("fixtures/video_0.m4s"),
    include_bytes!("fixtures/video_1.m4s"),
    include_bytes!("fixtures/video_2.m4s"),
    include_bytes!("fixtures/video_3.m4s"),
];
const AUDIO: [&[u8]; 4] = [
    include_bytes!("fixtures/audio_0.m4s"),
    include_bytes!("fixtures/audio_1.m4s"),
    include_bytes!("fixtures/audio_2.m4s"),
    include_bytes!("fixtures/audio_3.m4s"),
];

/// Path of channel `c`'s MPD.
pub fn mpd_path(c: usize) -> String {
    format!("/live/ch{c}/manifest.mpd")
}

/// Path of channel `c`'s init segment for `track`.
pub fn dash_init_path(c: usize, track: DashTrack) -> String {
    format!("/live/ch{c}/dash/{}/init.mp4", track.name())
}

impl OriginConfig {
    /// Duration of one DASH segment in `track`'s timescale.
    pub fn dash_segment_ticks(&self, track: DashTrack) -> u64 {
        self.segment_ms().saturating_mul(track.timescale()) / 1000
    }

    /// Path of DASH segment `n` of channel `c`, `track` (`$Number$` = n for video, `$Time$` =
    /// n × d for audio).
    pub fn dash_segment_path(&self, c: usize, track: DashTrack, n: u64) -> String {
        let name = match track {
            DashTrack::Video => n,
            DashTrack::Audio => n.saturating_mul(self.dash_segment_ticks(track)),
        };
        format!("/live/ch{c}/dash/{}/seg_{name}.m4s", track.name())
    }

    /// The segment number named by the file part `seg_{x}.m4s` of a DASH path (None: not a
    /// segment of this stream, e.g. an `$Time$` that is no segment's start).
    pub(super) fn dash_segment_number(&self, track: DashTrack, x: u64) -> Option<u64> {
        match track {
            DashTrack::Video => Some(x),
            DashTrack::Audio => {
                let d = self.dash_segment_ticks(track).max(1);
                x.is_multiple_of(d).then_some(x / d)
            }
        }
    }

    /// The init segment of `track` (as captured).
    pub fn dash_init(&self, track: DashTrack) -> Bytes {
        Bytes::from_static(track.init())
    }

    /// The bytes of DASH segment `n` of channel `c`, `track`: deterministic, distinct per
    /// (c, track, n), real fMP4 (see the module documentation).
    pub fn dash_segment_bytes(&self, c: usize, track: DashTrack, n: u64) -> Bytes {
        let src = track.media(n);
        let marker = format!("LISTO-ORIGIN ch={c} dash={} seg={n} ", track.name());
        let mut b = BytesMut::with_capacity(src.len() + 8 + marker.len());
        b.put_slice(src);
        let start = n.saturating_mul(self.dash_segment_ticks(track));
        retime_fmp4(&mut b, start, n);
        b.put_u32(8 + marker.len() as u32);
        b.put_slice(b"free");
        b.put_slice(marker.as_bytes());
        b.freeze()
    }

    /// `availabilityStartTime` for an origin started at `start_wall`: the stream is `window`
    /// segments old at start.
    pub fn dash_availability_start(&self, start_wall: SystemTime) -> SystemTime {
        let back = Duration::from_millis(self.window_len().saturating_mul(self.segment_ms()));
        start_wall.checked_sub(back).unwrap_or(UNIX_EPOCH)
    }

    /// Whether DASH segment `n` can be fetched at `elapsed_ms` (the same rule as HLS segment n).
    pub fn dash_available(&self, n: u64, elapsed_ms: u64) -> bool {
        self.is_available(n, elapsed_ms)
    }

    /// The dynamic MPD of channel `c` at `elapsed_ms` for an origin started at `start_wall`.
    pub fn mpd(&self, c: usize, elapsed_ms: u64, start_wall: SystemTime) -> String {
        let _ = c;
        let secs = self.segment_secs.max(1);
        let ast = iso_time(self.dash_availability_start(start_wall));
        let publish = iso_time(start_wall + Duration::from_millis(elapsed_ms));
        let depth = self.window_len().saturating_mul(secs);
        let first = self.first_listed(elapsed_ms);
        let edge = self.live_edge(elapsed_ms);
        let (vd, ad) = (self.dash_segment_ticks(DashTrack::Video), self.dash_segment_ticks(DashTrack::Audio));
        let mut s = String::with_capacity(2048);
        let _ = write!(
            s,
            r#"<?xml version="1.0" encoding="utf-8"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" profiles="urn:mpeg:dash:profile:isoff-live:2011" type="dynamic"
	availabilityStartTime="{ast}" publishTime="{publish}" minimumUpdatePeriod="PT{secs}S"
	timeShiftBufferDepth="PT{depth}S" maxSegmentDuration="PT{secs}S" minBufferTime="PT{secs}S"
	suggestedPresentationDelay="PT{delay}S">
	<Period id="0" start="PT0S">
		<AdaptationSet id="0" contentType="video" mimeType="video/mp4" segmentAlignment="true" startWithSAP="1" maxWidth="320" maxHeight="180" frameRate="25">
			<Representation id="video" codecs="avc1.42c00d" bandwidth="300000" width="320" height="180" sar="1:1">
				<SegmentTemplate timescale="12800" duration="{vd}" startNumber="0" initialization="dash/video/init.mp4" media="dash/video/seg_$Number$.m4s"/>
			</Representation>
		</AdaptationSet>
		<AdaptationSet id="1" contentType="audio" mimeType="audio/mp4" segmentAlignment="true" startWithSAP="1" lang="und">
			<Representation id="audio" codecs="mp4a.40.2" bandwidth="64000" audioSamplingRate="48000">
				<AudioChannelConfiguration schemeIdUri="urn:mpeg:dash:23003:3:audio_channel_configuration:2011" value="1"/>
				<SegmentTemplate timescale="48000" initialization="dash/audio/init.mp4" media="dash/audio/seg_$Time$.m4s">
					<SegmentTimeline>
						<S t="{t}" d="{ad}" r="{r}"/>
					</SegmentTimeline>
				</SegmentTemplate>
			</Representation>
		</AdaptationSet>
	</Period>
</MPD>
"#,
            delay = 2 * secs,
            t = first.saturating_mul(ad),
            r = edge.saturating_sub(first),
        );
        s
    }
}

/// Big-endian u32 at `at`, if in bounds.
fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Walks the boxes in `b[from..to]`, calling `f(type, start, end)` for each (stops at the first
/// malformed size).
fn each_box(b: &[u8], from: usize, to: usize, mut f: impl FnMut(&[u8], usize, usize)) {
    let mut at = from;
    while at + 8 <= to {
        let Some(size) = be32(b, at) else { return };
        let size = size as usize;
        if size < 8 || at + size > to {
            return;
        }
        f(&b[at + 4..at + 8], at, at + size);
        at += size;
    }
}

/// Moves every `tfdt` of a CMAF segment so the first is `start`, and renumbers the `mfhd`
/// sequence numbers from `n × 1000 + 1`.
fn retime_fmp4(b: &mut [u8], start: u64, n: u64) {
    // Collect the positions first (the walk borrows immutably).
    let mut tfdts = Vec::new();
    let mut mfhds = Vec::new();
    let r: &[u8] = b;
    each_box(r, 0, r.len(), |t, s, e| {
        if t == b"moof" {
            each_box(r, s + 8, e, |t, s, e| {
                if t == b"mfhd" {
                    mfhds.push(s + 12);
                } else if t == b"traf" {
                    each_box(r, s + 8, e, |t, s, _| {
                        if t == b"tfdt" {
                            tfdts.push((s + 12, r.get(s + 8).copied().unwrap_or(0)));
                        }
                    });
                }
            });
        }
    });
    let read = |b: &[u8], at: usize, v1: bool| -> Option<u64> {
        if v1 {
            Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
        } else {
            be32(b, at).map(u64::from)
        }
    };
    let Some(&(at0, v0)) = tfdts.first() else { return };
    let Some(first) = read(b, at0, v0 == 1) else { return };
    for &(at, v) in &tfdts {
        let Some(t) = read(b, at, v == 1) else { continue };
        let moved = t.wrapping_sub(first).wrapping_add(start);
        if v == 1 {
            b[at..at + 8].copy_from_slice(&moved.to_be_bytes());
        } else {
            b[at..at + 4].copy_from_slice(&(moved as u32).to_be_bytes());
        }
    }
    for (i, &at) in mfhds.iter().enumerate() {
        if at + 4 <= b.len() {
            let seq = (n.wrapping_mul(1000).wrapping_add(i as u64 + 1)) as u32;
            b[at..at + 4].copy_from_slice(&seq.to_be_bytes());
        }
    }
}

/// `YYYY-MM-DDThh:mm:ss.sssZ` (UTC) for `t`.
pub fn iso_time(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let (secs, ms) = (d.as_secs(), d.subsec_millis());
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{ms:03}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Parses what [`iso_time`] writes (and any `YYYY-MM-DDThh:mm:ss[.fff]Z`), for tests and tools.
pub fn parse_iso_time(s: &str) -> Option<SystemTime> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|x| x.parse::<u64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    let frac_ms: u64 = format!("{frac:0<3}").get(..3)?.parse().ok()?;
    // Days from civil (H. Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = u64::try_from(era * 146_097 + doe - 719_468).ok()?;
    let ms = (days * 86_400 + hh * 3600 + mm * 60 + ss) * 1000 + frac_ms;
    UNIX_EPOCH.checked_add(Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tfdts(b: &[u8]) -> Vec<u64> {
        let mut out = Vec::new();
        each_box(b, 0, b.len(), |t, s, e| {
            if t == b"moof" {
                each_box(b, s + 8, e, |t, s, e| {
                    if t == b"traf" {
                        each_box(b, s + 8, e, |t, s, _| {
                            if t == b"tfdt" {
                                out.push(u64::from_be_bytes(b[s + 12..s + 20].try_into().expect("8 bytes")));
                            }
                        });
                    }
                });
            }
        });
        out
    }

    #[test]
    fn segments_are_retimed_real_fmp4() {
        let c = OriginConfig { segment_secs: 2, ..OriginConfig::default() };
        for n in [0u64, 3, 4, 17] {
            let v = c.dash_segment_bytes(0, DashTrack::Video, n);
            let t = tfdts(&v);
            assert_eq!(t.len(), 50, "one moof per frame");
            assert_eq!(t[0], n * 25_600);
            assert!(t.windows(2).all(|w| w[1] == w[0] + 512), "25 fps in 12.8 kHz");
            assert_eq!(&v[4..8], b"styp");
            let a = c.dash_segment_bytes(0, DashTrack::Audio, n);
            assert_eq!(tfdts(&a)[0], n * 96_000);
            assert!(a.ends_with(format!("dash=audio seg={n} ").as_bytes()));
        }
        assert_ne!(c.dash_segment_bytes(0, DashTrack::Video, 4), c.dash_segment_bytes(1, DashTrack::Video, 4));
        assert_ne!(c.dash_segment_bytes(0, DashTrack::Video, 4), c.dash_segment_bytes(0, DashTrack::Video, 0));
        assert_eq!(c.dash_segment_bytes(0, DashTrack::Video, 4), c.dash_segment_bytes(0, DashTrack::Video, 4));
        assert_eq!(c.dash_segment_number(DashTrack::Audio, 96_000 * 5), Some(5));
        assert_eq!(c.dash_segment_number(DashTrack::Audio, 96_001), None);
        assert_eq!(c.dash_segment_path(1, DashTrack::Audio, 2), "/live/ch1/dash/audio/seg_192000.m4s");
        assert_eq!(c.dash_segment_path(1, DashTrack::Video, 2), "/live/ch1/dash/video/seg_2.m4s");
    }

    #[test]
    fn iso_times_round_trip() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_595_227_732);
        assert_eq!(iso_time(t), "2026-11-25T08:27:07.732Z");
        assert_eq!(parse_iso_time("2026-11-25T08:27:07.732Z"), Some(t));
        assert_eq!(iso_time(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(parse_iso_time("2000-02-29T23:59:59Z").map(iso_time).as_deref(), Some("2000-02-29T23:59:59.000Z"));
    }

    #[test]
    fn mpd_is_dynamic_and_parses() {
        let c = OriginConfig { ll: true, segment_secs: 2, window: 6, ..OriginConfig::default() };
        let start = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mpd = c.mpd(0, 2500, start);
        assert!(mpd.contains(r#"type="dynamic""#));
        assert!(mpd.contains(&format!("availabilityStartTime=\"{}\"", iso_time(start - Duration::from_secs(12)))));
        assert!(mpd.contains(r#"<S t="96000" d="96000" r="5"/>"#), "{mpd}");
        let info = crate::media::parse_playlist("/live/ch0/manifest.mpd", mpd.as_bytes()).expect("parses");
        assert_eq!(info.kind, crate::media::PlaylistKind::Dash);
        assert_eq!(info.target_duration_ms, Some(2000));
        assert_eq!(info.window_ms, 12_000);
        assert!(info.uris.iter().any(|u| u == "dash/audio/seg_576000.m4s"), "{:?}", info.uris);
    }
}
