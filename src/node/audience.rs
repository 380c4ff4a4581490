//! Viewer accounting (seed M2): viewers are *sessions*, not TCP connections — one player may
//! open several connections, several players may share one. A session is identified by the
//! client address and its `User-Agent`; it counts as watching a channel while it asked for
//! something of it within the channel's target duration. Counted once a second: current and
//! peak viewers, and viewer-seconds.

use std::hash::{Hash, Hasher};
use std::net::IpAddr;

use super::Node;
use crate::config::SECOND;

/// Audience of one channel.
#[derive(Debug, Default)]
pub(super) struct ChannelAudience {
    /// Session key (already a hash) → last request time.
    last_seen: crate::idmap::IdMap<u64>,
    /// Sessions active within the window at the last tick.
    pub(super) current: u64,
    /// Most sessions seen at once.
    pub(super) peak: u64,
    /// Sum of `current` over time, in viewer-nanoseconds.
    viewer_ns: u128,
    last_tick: Option<u64>,
    /// The channel's target duration, once a playlist told it.
    target: Option<u64>,
}

impl ChannelAudience {
    /// The channel's target duration, once a playlist told it.
    pub(super) fn target(&self) -> Option<u64> {
        self.target
    }

    /// Viewer-seconds so far.
    pub(super) fn viewer_seconds(&self) -> u64 {
        (self.viewer_ns / SECOND as u128) as u64
    }
}

/// A session key from the client's address and user agent (a connection id without address).
/// Keyed SipHash (a random key per process): the keys index an `IdMap`, whose cheap hash is
/// only safe for values a viewer cannot steer into collisions.
pub(super) fn session_key(peer: Option<IpAddr>, user_agent: Option<&str>, conn: u64) -> u64 {
    static KEY: std::sync::OnceLock<std::collections::hash_map::RandomState> = std::sync::OnceLock::new();
    let mut h = std::hash::BuildHasher::build_hasher(KEY.get_or_init(std::collections::hash_map::RandomState::new));
    match peer {
        Some(ip) => ip.hash(&mut h),
        None => conn.hash(&mut h),
    }
    user_agent.unwrap_or("").hash(&mut h);
    h.finish()
}

impl ChannelAudience {
    /// Records that `session` asked for something at `now`.
    pub(super) fn note(&mut self, now: u64, session: u64) {
        if self.last_seen.insert(session, now).is_none() {
            // Count a new viewer at once (the tick refines it).
            self.current += 1;
            self.peak = self.peak.max(self.current);
        }
    }

    /// Drops sessions idle for longer than the target duration (`target`, else this
    /// audience's own), counts the rest and adds to viewer-seconds.
    pub(super) fn tick(&mut self, now: u64, target: Option<u64>) {
        // A player asks at least once per target duration; allow one period of jitter.
        let window = target.or(self.target).unwrap_or(6 * SECOND).max(2 * SECOND);
        self.last_seen.retain(|_, t| now.saturating_sub(*t) <= window);
        if let Some(last) = self.last_tick {
            self.viewer_ns += self.current as u128 * now.saturating_sub(last) as u128;
        }
        self.last_tick = Some(now);
        self.current = self.last_seen.len() as u64;
        self.peak = self.peak.max(self.current);
    }
}

impl Node {
    /// Records that a session asked for something of `channel` (and `rendition`) at `now`.
    pub(super) fn note_session(&mut self, now: u64, channel: u64, rendition: Option<u16>, session: u64) {
        self.audience.entry(channel).or_default().note(now, session);
        if let Some(r) = rendition {
            self.renditions.entry(channel).or_default().note_session(r, now, session);
        }
        self.timers.arm_sweep(now);
    }

    /// A playlist of `channel` told its target duration.
    pub(super) fn note_target(&mut self, channel: u64, target_ns: u64) {
        self.audience.entry(channel).or_default().target = Some(target_ns);
    }

    /// Once a second: drop sessions idle for longer than the target duration, count the rest.
    pub(super) fn audience_tick(&mut self, now: u64) {
        for (channel, a) in self.audience.iter_mut() {
            a.tick(now, None);
            if let Some(r) = self.renditions.get_mut(channel) {
                r.tick(now, a.target);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_keys() {
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(session_key(Some(ip), Some("hls.js"), 1), session_key(Some(ip), Some("hls.js"), 2), "connections of one player share a session");
        assert_ne!(session_key(Some(ip), Some("hls.js"), 1), session_key(Some(ip), Some("ExoPlayer"), 1));
        assert_ne!(session_key(None, None, 1), session_key(None, None, 2));
    }
}
