//! The simulated live HLS origin: C channels, one media playlist each, fixed-duration segments
//! published on a clock, sizes drawn per segment, latency and bandwidth per connection.

use bytes::{BufMut, Bytes, BytesMut};

use super::SimConfig;

/// splitmix64: a tiny deterministic PRNG step (reproducible runs from `--seed`).
pub fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// What the origin answers for one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginObject {
    /// A media playlist of this channel.
    Playlist(usize),
    /// Segment `seq` of this channel.
    Segment(usize, u64),
    /// Anything else.
    NotFound,
}

/// The origin's content model.
#[derive(Debug)]
pub struct Origin {
    cfg: SimConfig,
    /// Shared pseudo-random bytes; every segment is a window into it (so viewers can check
    /// bytes exactly without the origin keeping every segment).
    pattern: Bytes,
}

/// Path of channel `c`'s media playlist.
pub fn playlist_path(c: usize) -> String {
    format!("/live/ch{c}/index.m3u8")
}

/// Path of channel `c`'s segment `seq`.
pub fn segment_path(c: usize, seq: u64) -> String {
    format!("/live/ch{c}/seg_{seq}.ts")
}

impl Origin {
    /// An origin for `cfg`.
    pub fn new(cfg: &SimConfig) -> Self {
        let mut state = cfg.seed ^ 0xA5A5;
        let len = cfg.max_segment_bytes as usize + 4096;
        let mut b = BytesMut::with_capacity(len);
        while b.len() + 8 <= len {
            b.put_u64(splitmix(&mut state));
        }
        Origin { cfg: cfg.clone(), pattern: b.freeze() }
    }

    /// Origin time (ns) at simulation time `t`: the stream has been live for a while already.
    fn origin_time(&self, t: u64) -> u64 {
        t + self.cfg.segment_ns() * (self.cfg.window as u64 + 2)
    }

    /// The newest segment published at sim time `t` (segment k is complete at (k+1)·duration).
    pub fn live_edge(&self, t: u64) -> u64 {
        (self.origin_time(t) / self.cfg.segment_ns()).saturating_sub(1)
    }

    /// Size of segment `seq` of channel `c`.
    pub fn segment_size(&self, c: usize, seq: u64) -> u64 {
        let mut s = self.cfg.seed ^ ((c as u64) << 40) ^ seq.wrapping_mul(0x2545_F491_4F6C_DD1D);
        let span = self.cfg.max_segment_bytes - self.cfg.min_segment_bytes + 1;
        self.cfg.min_segment_bytes + splitmix(&mut s) % span
    }

    /// The bytes of segment `seq` of channel `c`.
    pub fn segment_bytes(&self, c: usize, seq: u64) -> Bytes {
        let size = self.segment_size(c, seq) as usize;
        let room = self.pattern.len() - size;
        let off = ((c as u64 * 7919 + seq * 104_729) % room as u64) as usize;
        self.pattern.slice(off..off + size)
    }

    /// The media playlist of channel `c` at sim time `t`.
    pub fn playlist(&self, _c: usize, t: u64) -> Bytes {
        let edge = self.live_edge(t);
        let first = edge.saturating_sub(self.cfg.window as u64 - 1);
        let secs = self.cfg.segment_secs;
        let mut s = format!(
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:{secs}\n#EXT-X-MEDIA-SEQUENCE:{first}\n"
        );
        for k in first..=edge {
            s.push_str(&format!("#EXTINF:{secs}.000,\nseg_{k}.ts\n"));
        }
        Bytes::from(s)
    }

    /// What `path` names at sim time `t` (a segment not yet published is not found).
    pub fn classify(&self, path: &str, t: u64) -> OriginObject {
        let Some(rest) = path.strip_prefix("/live/ch") else { return OriginObject::NotFound };
        let Some((c, file)) = rest.split_once('/') else { return OriginObject::NotFound };
        let Ok(c) = c.parse::<usize>() else { return OriginObject::NotFound };
        if c >= self.cfg.channels {
            return OriginObject::NotFound;
        }
        if file == "index.m3u8" {
            return OriginObject::Playlist(c);
        }
        match file.strip_prefix("seg_").and_then(|f| f.strip_suffix(".ts")).and_then(|n| n.parse::<u64>().ok()) {
            Some(seq) if seq <= self.live_edge(t) => OriginObject::Segment(c, seq),
            _ => OriginObject::NotFound,
        }
    }

    /// The full response (head + body) for `path` at sim time `t`.
    pub fn respond(&self, path: &str, t: u64) -> (OriginObject, Bytes, Bytes) {
        let obj = self.classify(path, t);
        let (status, ctype, cache, body) = match &obj {
            OriginObject::Playlist(c) => (200, "application/vnd.apple.mpegurl", "", self.playlist(*c, t)),
            OriginObject::Segment(c, seq) => (200, "video/mp2t", "Cache-Control: max-age=60\r\n", self.segment_bytes(*c, *seq)),
            OriginObject::NotFound => (404, "text/plain", "", Bytes::from_static(b"not found\n")),
        };
        let head = format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: {ctype}\r\n{cache}Content-Length: {}\r\n\r\n",
            if status == 200 { "OK" } else { "Not Found" },
            body.len()
        );
        (obj, Bytes::from(head), body)
    }
}
