//! Per-rendition accounting (seed M2): which rendition of a channel a request is for, and that
//! rendition's counters and audience. A rendition is an HLS media playlist together with the
//! segments it lists; objects no media playlist names (DASH segments, a segment asked before
//! its playlist was seen) belong to the rendition of their directory — the one media playlist
//! living there, else the directory itself (`/live/ch1/v1/`). Master playlists and MPDs are
//! counted per channel only.
//!
//! Bytes written to viewers are attributed through an accounting *tag* carried by every queued
//! piece of output: the channel id in the low 48 bits, the rendition index + 1 in the high 16.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::audience::ChannelAudience;
use crate::admin::RenditionStats;

/// Renditions tracked per channel; requests of further ones count for the channel only.
const MAX_RENDITIONS: usize = 64;
/// Segment → rendition entries kept per channel (a few windows' worth per rendition).
const MAX_SEGMENTS: usize = 64 * 1024;
const CHANNEL_BITS: u32 = 48;
const CHANNEL_MASK: u64 = (1 << CHANNEL_BITS) - 1;

/// The accounting tag for bytes of `channel`'s `rendition`.
pub(super) fn tag(channel: u64, rendition: Option<u16>) -> u64 {
    (channel & CHANNEL_MASK) | rendition.map_or(0, |r| (u64::from(r) + 1) << CHANNEL_BITS)
}

/// The channel and rendition of an accounting tag.
pub(super) fn untag(tag: u64) -> (u64, Option<u16>) {
    let r = tag >> CHANNEL_BITS;
    (tag & CHANNEL_MASK, r.checked_sub(1).and_then(|r| u16::try_from(r).ok()))
}

/// The directory part of a path, with its trailing `/`.
fn dir_of(path: &str) -> &str {
    match path.rfind('/') {
        Some(i) => &path[..=i],
        None => "/",
    }
}

#[derive(Debug, Default)]
struct Entry {
    stats: RenditionStats,
    audience: ChannelAudience,
    /// Turned out to be a master playlist: not shown.
    hidden: bool,
}

/// Renditions of one channel.
#[derive(Debug, Default)]
pub(super) struct ChannelRenditions {
    entries: Vec<Entry>,
    index: HashMap<Arc<str>, u16>,
    /// Segment cache key → (rendition, listed until).
    segments: HashMap<Arc<str>, (u16, u64)>,
    /// Directory → the one media playlist rendition in it (`None`: several).
    dirs: HashMap<Arc<str>, Option<u16>>,
    /// Master playlists: counted per channel only.
    masters: HashSet<Arc<str>>,
}

impl ChannelRenditions {
    /// The rendition a request for `path` (no query; `key` is its cache key) belongs to.
    pub(super) fn classify(&mut self, path: &str, key: &str, is_playlist: bool) -> Option<u16> {
        if is_playlist {
            if self.masters.contains(path) || path.ends_with(".mpd") {
                return None;
            }
            return self.index_of(path);
        }
        if let Some((r, _)) = self.segments.get(key) {
            return Some(*r);
        }
        let dir = dir_of(path);
        match self.dirs.get(dir) {
            Some(Some(r)) => Some(*r),
            _ => self.index_of(dir),
        }
    }

    fn index_of(&mut self, name: &str) -> Option<u16> {
        if let Some(i) = self.index.get(name) {
            return Some(*i);
        }
        if self.entries.len() >= MAX_RENDITIONS {
            return None;
        }
        let i = u16::try_from(self.entries.len()).ok()?;
        let name: Arc<str> = name.into();
        self.entries.push(Entry { stats: RenditionStats { rendition: name.to_string(), ..Default::default() }, ..Default::default() });
        self.index.insert(name, i);
        Some(i)
    }

    /// A media playlist at `path` was parsed: the segments it lists (cache keys, each with the
    /// time it stays listed until) are its own.
    pub(super) fn media_playlist<'a>(&mut self, path: &str, segments: impl Iterator<Item = (&'a str, u64)>) {
        let Some(r) = self.index_of(path) else { return };
        let dir = dir_of(path);
        match self.dirs.get_mut(dir) {
            Some(slot) if *slot != Some(r) => *slot = None,
            Some(_) => {}
            None => {
                self.dirs.insert(dir.into(), Some(r));
            }
        }
        for (s, until) in segments {
            if self.segments.len() >= MAX_SEGMENTS && !self.segments.contains_key(s) {
                break;
            }
            self.segments.insert(s.into(), (r, until));
        }
    }

    /// The playlist at `path` is a master playlist (or an MPD): not a rendition.
    pub(super) fn master_playlist(&mut self, path: &str) {
        if self.masters.len() < MAX_RENDITIONS && self.masters.insert(path.into()) {
            if let Some(i) = self.index.get(path) {
                if let Some(e) = self.entries.get_mut(usize::from(*i)) {
                    e.hidden = true;
                }
            }
        }
    }

    /// Counters of rendition `r`.
    pub(super) fn stats_mut(&mut self, r: u16) -> Option<&mut RenditionStats> {
        self.entries.get_mut(usize::from(r)).map(|e| &mut e.stats)
    }

    /// A session asked for something of rendition `r`.
    pub(super) fn note_session(&mut self, r: u16, now: u64, session: u64) {
        if let Some(e) = self.entries.get_mut(usize::from(r)) {
            e.audience.note(now, session);
        }
    }

    /// Once a second: audiences counted, segments no longer listed forgotten.
    pub(super) fn tick(&mut self, now: u64, target: Option<u64>) {
        for e in &mut self.entries {
            e.audience.tick(now, target);
        }
        self.segments.retain(|_, (_, until)| *until >= now);
    }

    /// Snapshot for `stats()`.
    pub(super) fn snapshot(&self) -> Vec<RenditionStats> {
        self.entries
            .iter()
            .filter(|e| !e.hidden)
            .map(|e| RenditionStats {
                viewers: e.audience.current,
                peak_viewers: e.audience.peak,
                viewer_seconds: e.audience.viewer_seconds(),
                ..e.stats.clone()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip() {
        assert_eq!(untag(tag(7, None)), (7, None));
        assert_eq!(untag(tag(7, Some(0))), (7, Some(0)));
        assert_eq!(untag(tag(123_456, Some(63))), (123_456, Some(63)));
        assert_eq!(untag(0), (0, None));
    }

    #[test]
    fn segments_follow_their_media_playlist() {
        let mut r = ChannelRenditions::default();
        let hi = r.classify("/ch/hi.m3u8", "/ch/hi.m3u8", true);
        let lo = r.classify("/ch/lo.m3u8", "/ch/lo.m3u8", true);
        assert_ne!(hi, lo);
        r.media_playlist("/ch/hi.m3u8", [("/ch/hi_1.ts", 100), ("/ch/hi_2.ts", 100)].into_iter());
        r.media_playlist("/ch/lo.m3u8", [("/ch/lo_1.ts", 100)].into_iter());
        assert_eq!(r.classify("/ch/hi_2.ts", "/ch/hi_2.ts", false), hi);
        assert_eq!(r.classify("/ch/lo_1.ts", "/ch/lo_1.ts", false), lo);
        // Flat layout with two playlists in one directory: an unlisted segment gets the directory.
        let unknown = r.classify("/ch/x_9.ts", "/ch/x_9.ts", false);
        assert!(unknown.is_some() && unknown != hi && unknown != lo);
        r.tick(101, None);
        assert_eq!(r.classify("/ch/hi_1.ts", "/ch/hi_1.ts", false), unknown, "forgotten once no longer listed");
    }

    #[test]
    fn one_playlist_per_directory_claims_unlisted_segments_and_masters_hide() {
        let mut r = ChannelRenditions::default();
        let master = r.classify("/ch/master.m3u8", "/ch/master.m3u8", true);
        r.master_playlist("/ch/master.m3u8");
        assert_eq!(r.classify("/ch/master.m3u8", "/ch/master.m3u8", true), None);
        assert!(master.is_some());
        let v = r.classify("/ch/720p/index.m3u8", "/ch/720p/index.m3u8", true);
        r.media_playlist("/ch/720p/index.m3u8", std::iter::empty());
        assert_eq!(r.classify("/ch/720p/seg9.ts", "/ch/720p/seg9.ts", false), v);
        assert_eq!(r.classify("/ch/dash.mpd", "/ch/dash.mpd", true), None);
        let names: Vec<String> = r.snapshot().into_iter().map(|s| s.rendition).collect();
        assert_eq!(names, vec!["/ch/720p/index.m3u8".to_string()], "the master is not a rendition");
    }
}
