//! A blocking low-latency HLS player for `listo demo --ll` and tests.
//!
//! [`run_ll_player`] loads the media playlist once, then loops: a blocking playlist reload for
//! the part after the last one listed (`?_HLS_msn=M&_HLS_part=P`; once a segment is complete,
//! the next is `(M+1, 0)`), and a fetch of every part the reload newly lists, in order. For each
//! part it records the time to first byte of the part request and, when the caller can tell
//! when the part was published, the delay from publication to the part fully received. Two
//! keep-alive connections (playlists, parts), every socket operation bounded by the timeout of
//! [`HttpConn`]; no request starts after the configured duration.
//!
//! ```no_run
//! use std::time::Duration;
//! use listo::player_ll::{run_ll_player, LlPlayerConfig};
//! let cfg = LlPlayerConfig::new("127.0.0.1:8080".parse().unwrap(), "/live/ch0/v0/index.m3u8", Duration::from_secs(10));
//! let report = run_ll_player(cfg);
//! println!("{} parts, {} errors", report.parts, report.errors);
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::player::{resolve_uri, HttpConn, Verifier, DEFAULT_TIMEOUT};

/// Tells when the part at a path was published (`None`: unknown).
pub type PublishedAt = Arc<dyn Fn(&str) -> Option<Instant> + Send + Sync>;

/// Most parts one reload may add to the fetch list (guards against a broken playlist).
const MAX_NEW_PARTS: usize = 64;

/// What the LL player is told to play.
#[derive(Clone)]
pub struct LlPlayerConfig {
    /// Address to connect to (a node, or an origin directly).
    pub node: SocketAddr,
    /// Path of an LL-HLS media playlist.
    pub playlist_path: String,
    /// How long to play; no new request starts after it.
    pub duration: Duration,
    /// Timeout for connecting, each read and each write.
    pub timeout: Duration,
    /// Checks every received part body; a `false` counts as corrupt.
    pub verify: Option<Verifier>,
    /// When each part was published (for the publication → received delay).
    pub published_at: Option<PublishedAt>,
}

impl fmt::Debug for LlPlayerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LlPlayerConfig")
            .field("node", &self.node)
            .field("playlist_path", &self.playlist_path)
            .field("duration", &self.duration)
            .field("timeout", &self.timeout)
            .field("verify", &self.verify.is_some())
            .field("published_at", &self.published_at.is_some())
            .finish()
    }
}

impl LlPlayerConfig {
    /// A player of `playlist_path` at `node` for `duration`, 10 s timeouts, nothing else.
    pub fn new(node: SocketAddr, playlist_path: impl Into<String>, duration: Duration) -> Self {
        LlPlayerConfig {
            node,
            playlist_path: playlist_path.into(),
            duration,
            timeout: DEFAULT_TIMEOUT,
            verify: None,
            published_at: None,
        }
    }

    /// The same with a part verifier.
    pub fn with_verify(mut self, verify: Verifier) -> Self {
        self.verify = Some(verify);
        self
    }

    /// The same with a publication clock.
    pub fn with_published_at(mut self, published_at: PublishedAt) -> Self {
        self.published_at = Some(published_at);
        self
    }
}

/// What one LL player run saw.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LlPlayerReport {
    /// Parts received complete with status 200.
    pub parts: u64,
    /// Bytes received (heads, framing and bodies; playlists and parts).
    pub bytes: u64,
    /// Failed requests: non-200 status, unparsable playlist or I/O error.
    pub errors: u64,
    /// Playlist loads answered 200 (the first load and every blocking reload).
    pub playlists: u64,
    /// Time to first byte of every received part (request sent → first byte), in ms.
    pub part_ttfb_ms: Vec<f64>,
    /// For every received live-edge part (published after the player asked the playlist for
    /// it, with a known publication time): publication → last byte, ms.
    pub part_delay_ms: Vec<f64>,
    /// Received parts that were already published when the player asked for the playlist that
    /// listed them (catching up after joining, from a cached playlist): no delay recorded.
    pub catch_up_parts: u64,
    /// Paths of the received parts, in order.
    pub part_paths: Vec<String>,
    /// Parts the verifier rejected.
    pub corrupt: u64,
    /// TCP connections opened.
    pub connects: u64,
}

/// One `EXT-X-PART` of a playlist: segment, index within it, URI.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Part {
    msn: u64,
    index: u64,
    uri: String,
}

/// What the LL player needs from a playlist.
#[derive(Debug, Default, PartialEq, Eq)]
struct LlPlaylist {
    /// Parts in playlist order.
    parts: Vec<Part>,
    /// Highest complete segment listed (`EXTINF` + URI).
    last_segment: Option<u64>,
    /// Whether `EXT-X-ENDLIST` was seen.
    ended: bool,
}

impl LlPlaylist {
    /// The `(msn, part)` a blocking reload should wait for: the part after the last one listed.
    fn next_directive(&self) -> Option<(u64, u64)> {
        let last = self.parts.last()?;
        if self.last_segment.is_some_and(|s| s >= last.msn) {
            Some((last.msn.saturating_add(1), 0))
        } else {
            Some((last.msn, last.index.saturating_add(1)))
        }
    }
}

/// The value of `URI="..."` in an attribute list.
fn uri_attr(attrs: &str) -> Option<&str> {
    let i = attrs.find("URI=\"")?;
    let rest = &attrs[i + 5..];
    let end = rest.find('"')?;
    Some(&rest[..end])
}

fn parse_ll(body: &[u8]) -> Option<LlPlaylist> {
    let text = std::str::from_utf8(body).ok()?;
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    if lines.next()? != "#EXTM3U" {
        return None;
    }
    let mut p = LlPlaylist::default();
    let mut seq = 0u64;
    let mut index = 0u64;
    for l in lines {
        if let Some(v) = l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            seq = v.trim().parse().ok()?;
        } else if let Some(v) = l.strip_prefix("#EXT-X-PART:") {
            let uri = uri_attr(v)?;
            p.parts.push(Part { msn: seq, index, uri: uri.to_string() });
            index += 1;
        } else if l == "#EXT-X-ENDLIST" {
            p.ended = true;
        } else if !l.starts_with('#') {
            // A complete segment: the parts listed before it were its parts.
            p.last_segment = Some(seq);
            seq += 1;
            index = 0;
        }
    }
    Some(p)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Plays `cfg.playlist_path` as a low-latency client for `cfg.duration` and reports per-part
/// timings.
pub fn run_ll_player(cfg: LlPlayerConfig) -> LlPlayerReport {
    let start = Instant::now();
    let end = start + cfg.duration;
    let mut report = LlPlayerReport::default();
    let mut pl_conn = HttpConn::new(cfg.node, cfg.timeout);
    let mut part_conn = HttpConn::new(cfg.node, cfg.timeout);
    let base = cfg.playlist_path.split('?').next().unwrap_or(&cfg.playlist_path).to_string();
    // The last part fetched (or skipped at the start): `(msn, index)`.
    let mut done: Option<(u64, u64)> = None;
    let mut directive: Option<(u64, u64)> = None;
    // Bounded by `end`; each pass makes at least one request bounded by the timeouts, and a
    // failed pass waits a little before the next.
    while Instant::now() < end {
        let path = match directive {
            Some((m, p)) => format!("{base}?_HLS_msn={m}&_HLS_part={p}"),
            None => base.clone(),
        };
        let asked = Instant::now();
        let playlist = match pl_conn.request("GET", &path, &[]) {
            Ok(r) => {
                report.bytes += r.wire_bytes;
                if r.status == 200 {
                    parse_ll(&r.body)
                } else {
                    None
                }
            }
            Err(_) => None,
        };
        let Some(playlist) = playlist else {
            report.errors += 1;
            // Start over from a plain load, after a short pause.
            directive = None;
            std::thread::sleep(Duration::from_millis(100).min(end.saturating_duration_since(Instant::now())));
            continue;
        };
        report.playlists += 1;
        if playlist.ended {
            break;
        }
        let Some(next) = playlist.next_directive() else {
            // No parts listed (not an LL playlist): nothing to block on; retry shortly.
            report.errors += 1;
            directive = None;
            std::thread::sleep(Duration::from_millis(200).min(end.saturating_duration_since(Instant::now())));
            continue;
        };
        directive = Some(next);
        // First load: start at the live edge (the part being produced next).
        let Some(last) = done else {
            done = playlist.parts.last().map(|p| (p.msn, p.index));
            continue;
        };
        let new: Vec<&Part> = playlist.parts.iter().filter(|p| (p.msn, p.index) > last).take(MAX_NEW_PARTS).collect();
        for part in new {
            if Instant::now() >= end {
                break;
            }
            done = Some((part.msn, part.index));
            let ppath = resolve_uri(&base, &part.uri);
            match part_conn.request("GET", &ppath, &[]) {
                Ok(r) => {
                    report.bytes += r.wire_bytes;
                    if r.status == 200 {
                        let received = Instant::now();
                        report.parts += 1;
                        report.part_ttfb_ms.push(ms(r.ttfb));
                        match cfg.published_at.as_ref().and_then(|f| f(&ppath)) {
                            Some(at) if at >= asked => {
                                report.part_delay_ms.push(ms(received.saturating_duration_since(at)))
                            }
                            Some(_) => report.catch_up_parts += 1,
                            None => {}
                        }
                        if let Some(v) = &cfg.verify {
                            if !v(&ppath, &r.body) {
                                report.corrupt += 1;
                            }
                        }
                        report.part_paths.push(ppath);
                    } else {
                        report.errors += 1;
                    }
                }
                Err(_) => report.errors += 1,
            }
        }
    }
    report.connects = pl_conn.connects() + part_conn.connects();
    report
}

/// `(msn, index)` of an LL-HLS part path `.../seg_K.part_I.ts` (the synthetic origin's naming).
pub fn part_of_path(path: &str) -> Option<(u64, u64)> {
    let name = path.rsplit('/').next()?;
    let rest = name.strip_prefix("seg_")?.strip_suffix(".ts")?;
    let (k, i) = rest.split_once(".part_")?;
    Some((k.parse().ok()?, i.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_parts_and_the_next_directive() {
        let body = b"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:5\n\
            #EXTINF:1.000,\nseg_5.ts\n\
            #EXT-X-PART:DURATION=0.333,URI=\"seg_6.part_0.ts\",INDEPENDENT=YES\n\
            #EXT-X-PART:DURATION=0.333,URI=\"seg_6.part_1.ts\"\n\
            #EXT-X-PART:DURATION=0.334,URI=\"seg_6.part_2.ts\"\n\
            #EXTINF:1.000,\nseg_6.ts\n\
            #EXT-X-PART:DURATION=0.333,URI=\"seg_7.part_0.ts\",INDEPENDENT=YES\n\
            #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"seg_7.part_1.ts\"\n";
        let p = parse_ll(body).unwrap_or_default();
        assert_eq!(p.parts.len(), 4);
        assert_eq!(p.parts[2], Part { msn: 6, index: 2, uri: "seg_6.part_2.ts".into() });
        assert_eq!(p.parts[3].msn, 7);
        assert_eq!(p.last_segment, Some(6));
        assert_eq!(p.next_directive(), Some((7, 1)));
        // The segment's last part listed with the segment complete: next is (msn + 1, 0).
        let full = b"#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:6\n\
            #EXT-X-PART:DURATION=0.333,URI=\"seg_6.part_0.ts\"\n\
            #EXTINF:1.000,\nseg_6.ts\n";
        assert_eq!(parse_ll(full).unwrap_or_default().next_directive(), Some((7, 0)));
        assert!(parse_ll(b"nope").is_none());
        assert_eq!(part_of_path("/live/ch0/v1/seg_12.part_2.ts"), Some((12, 2)));
        assert_eq!(part_of_path("/live/ch0/v1/seg_12.ts"), None);
    }
}
