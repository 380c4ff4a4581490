//! Playlist knowledge for HLS and MPEG-DASH: what the cache needs to decide
//! playlist freshness and the live window.
//!
//! Everything here is pure (no clock, no I/O) and bounded: any input parses in
//! time and memory roughly proportional to its size, with the list of URIs
//! capped at [`MAX_URIS`] entries and [`MAX_URI_BYTES`] bytes in total.

mod dash;
mod hls;

pub use dash::parse_iso_duration_ms;

/// Most URIs [`parse_playlist`] lists for one body; further ones are dropped.
pub const MAX_URIS: usize = 10_000;

/// Most bytes (summed over all entries) of [`PlaylistInfo::uris`]; further URIs are dropped.
pub const MAX_URI_BYTES: usize = 8 * 1024 * 1024;

/// What kind of playlist a body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaylistKind {
    /// HLS media playlist (lists segments).
    HlsMedia,
    /// HLS master (multivariant) playlist (lists other playlists).
    HlsMaster,
    /// MPEG-DASH MPD.
    Dash,
}

/// What the cache needs to know about one playlist body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaylistInfo {
    /// What kind of playlist the body is.
    pub kind: PlaylistKind,
    /// HLS: #EXT-X-TARGETDURATION in ms. DASH: minimumUpdatePeriod in ms.
    /// None for master playlists / static MPDs without it.
    pub target_duration_ms: Option<u64>,
    /// HLS #EXT-X-MEDIA-SEQUENCE (0 when absent in a media playlist); DASH and HLS master: None.
    pub media_sequence: Option<u64>,
    /// URIs referenced, exactly as written (DASH: after template expansion and
    /// BaseURL prefixing), in document order, duplicates kept; resolve them with [`resolve`].
    ///
    /// HLS media: every segment URI plus EXT-X-MAP, EXT-X-PART and
    /// EXT-X-PRELOAD-HINT URIs. HLS master: variant stream URIs, EXT-X-MEDIA and
    /// EXT-X-I-FRAME-STREAM-INF URI attributes. DASH: initialization and media
    /// URLs of every listed segment (SegmentTemplate with SegmentTimeline, or
    /// with @duration for static MPDs; SegmentList), prefixed by BaseURL.
    /// Capped at [`MAX_URIS`] entries / [`MAX_URI_BYTES`] bytes.
    pub uris: Vec<String>,
    /// Sum of segment durations in ms (HLS media), or timeShiftBufferDepth in ms (DASH); 0 if unknown.
    pub window_ms: u64,
    /// HLS #EXT-X-ENDLIST present, or DASH type="static".
    pub ended: bool,
}

/// Why a body could not be parsed as a playlist.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum MediaError {
    /// The body is neither an HLS playlist (#EXTM3U) nor a DASH MPD.
    #[error("not a playlist")]
    NotAPlaylist,
    /// The body looks like a playlist but a required part is broken.
    #[error("malformed playlist: {0}")]
    Malformed(String),
}

/// True when a URL path (without query) names a playlist: ends with .m3u8, .m3u, or .mpd (case-insensitive).
pub fn is_playlist_path(path: &str) -> bool {
    let p = path.as_bytes();
    [&b".m3u8"[..], b".m3u", b".mpd"]
        .iter()
        .any(|ext| p.len() >= ext.len() && p[p.len() - ext.len()..].eq_ignore_ascii_case(ext))
}

/// Parse a playlist body; `path` is the request path it was fetched from (used to pick HLS vs DASH if the body is ambiguous). Never panics on any input.
pub fn parse_playlist(path: &str, body: &[u8]) -> Result<PlaylistInfo, MediaError> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let start = body
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(body.len());
    let head = &body[start..];
    if head.starts_with(b"#EXTM3U") {
        return hls::parse(body);
    }
    if head.starts_with(b"<") {
        return dash::parse(body);
    }
    // Ambiguous body (empty, or starts with neither marker): the path decides
    // which parser reports the error.
    let p = path.split(['?', '#']).next().unwrap_or("");
    let pb = p.as_bytes();
    if pb.len() >= 4 && pb[pb.len() - 4..].eq_ignore_ascii_case(b".mpd") {
        dash::parse(body)
    } else if is_playlist_path(p) {
        hls::parse(body)
    } else {
        Err(MediaError::NotAPlaylist)
    }
}

/// Resolve a URI found in a playlist fetched from `base_path` (an absolute path like "/live/ch1/index.m3u8", possibly with "?query") into an absolute path (+ query) on the same host; None for URIs naming a scheme or another host.
///
/// Follows RFC 3986 §5.2 with the base's scheme and authority left out:
/// "seg_1.ts" -> "/live/ch1/seg_1.ts", "../a/b.ts" -> "/live/a/b.ts",
/// "/x/y.ts" stays, "?q" keeps the base path. Any URI with a scheme
/// ("http://…", "data:…", "skd://…") or a network-path ("//host/…") gives
/// None. Dot segments are removed (§5.2.4; "%2e" counts as "." like the WHATWG
/// URL standard does), so the result never climbs above "/". The fragment is
/// dropped, and bytes that may not appear in an HTTP request-target (controls,
/// space, non-ASCII, and any of `"` `<` `>` `\` `^` `{` `|` `}` or a backquote)
/// are percent-encoded.
pub fn resolve(base_path: &str, uri: &str) -> Option<String> {
    let uri = uri.trim_matches(|c: char| c.is_ascii_whitespace() || c.is_ascii_control());
    if has_scheme(uri) || uri.starts_with("//") {
        return None;
    }
    let (base_path, base_query) = split_path_query(base_path);
    let (upath, uquery) = split_path_query(uri);

    let (merged, query) = if upath.is_empty() {
        (base_path.to_string(), uquery.or(base_query))
    } else if upath.starts_with('/') {
        (upath.to_string(), uquery)
    } else {
        let dir = match base_path.rfind('/') {
            Some(i) => &base_path[..=i],
            None => "",
        };
        (format!("{dir}{upath}"), uquery)
    };
    let path = if merged.starts_with('/') {
        remove_dot_segments(&merged)
    } else {
        remove_dot_segments(&format!("/{merged}"))
    };
    let mut out = String::with_capacity(path.len() + query.map_or(0, |q| q.len() + 1));
    push_encoded(&mut out, &path);
    if let Some(q) = query {
        out.push('?');
        push_encoded(&mut out, q);
    }
    Some(out)
}

/// RFC 3986 scheme: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) ":" before any '/', '?' or '#'.
pub(crate) fn has_scheme(uri: &str) -> bool {
    let b = uri.as_bytes();
    match b.first() {
        Some(c) if c.is_ascii_alphabetic() => {}
        _ => return false,
    }
    for &c in &b[1..] {
        match c {
            b':' => return true,
            c if c.is_ascii_alphanumeric() || c == b'+' || c == b'-' || c == b'.' => {}
            _ => return false,
        }
    }
    false
}

/// Splits "path?query#frag" into ("path", Some("query")), dropping the fragment.
fn split_path_query(s: &str) -> (&str, Option<&str>) {
    let s = s.split('#').next().unwrap_or("");
    match s.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (s, None),
    }
}

fn is_dot(seg: &str) -> bool {
    seg == "." || seg.eq_ignore_ascii_case("%2e")
}

fn is_dotdot(seg: &str) -> bool {
    if seg.len() > 6 {
        return false;
    }
    let s = seg.to_ascii_lowercase();
    s == ".." || s == ".%2e" || s == "%2e." || s == "%2e%2e"
}

/// RFC 3986 §5.2.4 on an absolute path (one starting with '/'), segment-wise.
fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segs: Vec<&str> = path.split('/').skip(1).collect();
    let n = segs.len();
    for (i, seg) in segs.into_iter().enumerate() {
        let last = i + 1 == n;
        if is_dot(seg) {
            if last {
                out.push("");
            }
        } else if is_dotdot(seg) {
            out.pop();
            if last {
                out.push("");
            }
        } else {
            out.push(seg);
        }
    }
    let mut s = String::with_capacity(path.len());
    for seg in &out {
        s.push('/');
        s.push_str(seg);
    }
    if s.is_empty() {
        s.push('/');
    }
    s
}

fn push_encoded(out: &mut String, s: &str) {
    for &b in s.as_bytes() {
        let bad = b <= 0x20
            || b >= 0x7f
            || matches!(
                b,
                b'"' | b'<' | b'>' | b'\\' | b'^' | b'`' | b'{' | b'|' | b'}'
            );
        if bad {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 15)] as char);
        } else {
            out.push(b as char);
        }
    }
}

/// Most loop steps one parse may take in loops that need not produce a URI
/// each time (e.g. DASH timeline entries without @d, walked once per Representation).
const MAX_STEPS: usize = 1_000_000;

/// Collects URIs under the [`MAX_URIS`] / [`MAX_URI_BYTES`] caps, and counts
/// loop steps so that no input keeps a parser busy for long.
#[derive(Debug, Default)]
pub(crate) struct UriSink {
    pub(crate) uris: Vec<String>,
    bytes: usize,
    steps: usize,
}

impl UriSink {
    /// False once a cap or the step budget is reached (callers should stop producing).
    pub(crate) fn has_room(&self) -> bool {
        self.uris.len() < MAX_URIS && self.bytes < MAX_URI_BYTES && self.steps < MAX_STEPS
    }

    /// Counts one loop step; false once a cap or the step budget is reached.
    pub(crate) fn step(&mut self) -> bool {
        self.charge(1)
    }

    /// Counts `n` loop steps' worth of work; false once a cap or the step budget is reached.
    pub(crate) fn charge(&mut self, n: usize) -> bool {
        self.steps = self.steps.saturating_add(n);
        self.has_room()
    }

    /// Adds one URI if it still fits; returns whether there is room for more.
    pub(crate) fn push(&mut self, uri: String) -> bool {
        if self.has_room() && self.bytes.saturating_add(uri.len()) <= MAX_URI_BYTES {
            self.bytes += uri.len();
            self.uris.push(uri);
        } else {
            // Stop here even if a shorter URI might still fit: keep the list a prefix.
            self.bytes = MAX_URI_BYTES;
        }
        self.has_room()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HLS_FIXTURE: &[u8] = include_bytes!("../../tests/fixtures/index.m3u8");
    const DASH_FIXTURE: &[u8] = include_bytes!("../../tests/fixtures/manifest.mpd");

    #[test]
    fn playlist_paths() {
        assert!(is_playlist_path("/live/ch1/index.m3u8"));
        assert!(is_playlist_path("/a/B.M3U8"));
        assert!(is_playlist_path("/a/list.m3u"));
        assert!(is_playlist_path("/a/manifest.MPD"));
        assert!(is_playlist_path("x.mpd"));
        assert!(!is_playlist_path("/a/seg_1.ts"));
        assert!(!is_playlist_path("/a/m3u8"));
        assert!(!is_playlist_path("/a/index.m3u8/"));
        assert!(!is_playlist_path(""));
        assert!(!is_playlist_path("/a/chunk.m4s"));
    }

    #[test]
    fn dispatch_by_body_and_path() {
        assert_eq!(parse_playlist("/x", b""), Err(MediaError::NotAPlaylist));
        assert_eq!(
            parse_playlist("/x.m3u8", b""),
            Err(MediaError::NotAPlaylist)
        );
        assert!(parse_playlist("/x.mpd", b"").is_err());
        assert_eq!(
            parse_playlist("/x.ts", b"\x47\x40\x00\x10garbage"),
            Err(MediaError::NotAPlaylist)
        );
        // The body wins over the path.
        assert_eq!(
            parse_playlist("/x.mpd", HLS_FIXTURE).map(|i| i.kind),
            Ok(PlaylistKind::HlsMedia)
        );
        assert_eq!(
            parse_playlist("/x.m3u8", DASH_FIXTURE).map(|i| i.kind),
            Ok(PlaylistKind::Dash)
        );
        // HTML error page served for a playlist URL.
        assert_eq!(
            parse_playlist("/x.mpd", b"<html><body>502</body></html>"),
            Err(MediaError::NotAPlaylist)
        );
    }

    #[test]
    fn resolve_relative() {
        let b = "/live/ch1/index.m3u8";
        assert_eq!(
            resolve(b, "seg_1.ts").as_deref(),
            Some("/live/ch1/seg_1.ts")
        );
        assert_eq!(
            resolve(b, "./seg_1.ts").as_deref(),
            Some("/live/ch1/seg_1.ts")
        );
        assert_eq!(resolve(b, "../a/b.ts").as_deref(), Some("/live/a/b.ts"));
        assert_eq!(resolve(b, "/x/y.ts").as_deref(), Some("/x/y.ts"));
        assert_eq!(
            resolve(b, "hd/seg.ts?tok=1").as_deref(),
            Some("/live/ch1/hd/seg.ts?tok=1")
        );
        assert_eq!(
            resolve("/live/ch1/index.m3u8?tok=9", "seg.ts").as_deref(),
            Some("/live/ch1/seg.ts")
        );
        assert_eq!(
            resolve("/live/ch1/index.m3u8?a/b/c", "seg.ts").as_deref(),
            Some("/live/ch1/seg.ts")
        );
        assert_eq!(
            resolve(b, "seg.ts#t=1").as_deref(),
            Some("/live/ch1/seg.ts")
        );
        assert_eq!(
            resolve(b, "?v=2").as_deref(),
            Some("/live/ch1/index.m3u8?v=2")
        );
        assert_eq!(resolve("/i.m3u8?q=1", "").as_deref(), Some("/i.m3u8?q=1"));
        assert_eq!(resolve("/index.m3u8", "seg.ts").as_deref(), Some("/seg.ts"));
        assert_eq!(resolve("/live/", "seg.ts").as_deref(), Some("/live/seg.ts"));
    }

    #[test]
    fn resolve_dot_segments() {
        let b = "/live/ch1/index.m3u8";
        // RFC 3986 §5.4.2 style abnormal examples: never above the root.
        assert_eq!(resolve(b, "../../../../g").as_deref(), Some("/g"));
        assert_eq!(resolve(b, "/../g").as_deref(), Some("/g"));
        assert_eq!(resolve(b, "/./g").as_deref(), Some("/g"));
        assert_eq!(resolve(b, "g.").as_deref(), Some("/live/ch1/g."));
        assert_eq!(resolve(b, "..g").as_deref(), Some("/live/ch1/..g"));
        assert_eq!(resolve(b, "./../g").as_deref(), Some("/live/g"));
        assert_eq!(resolve(b, "./g/.").as_deref(), Some("/live/ch1/g/"));
        assert_eq!(resolve(b, "g/./h").as_deref(), Some("/live/ch1/g/h"));
        assert_eq!(resolve(b, "g/../h").as_deref(), Some("/live/ch1/h"));
        assert_eq!(resolve(b, "..").as_deref(), Some("/live/"));
        assert_eq!(resolve(b, ".").as_deref(), Some("/live/ch1/"));
        assert_eq!(
            resolve(b, "a/b/c/./../../g").as_deref(),
            Some("/live/ch1/a/g")
        );
        assert_eq!(resolve("/../../x/i.m3u8", "../../y").as_deref(), Some("/y"));
        // Percent-encoded dots count as dots.
        assert_eq!(
            resolve(b, "%2e%2E/%2e%2e/%2E%2e/etc").as_deref(),
            Some("/etc")
        );
        assert_eq!(resolve(b, ".%2e/x").as_deref(), Some("/live/x"));
    }

    #[test]
    fn resolve_absolute_and_odd() {
        let b = "/live/ch1/index.m3u8";
        assert_eq!(resolve(b, "http://cdn.example/a.ts"), None);
        assert_eq!(resolve(b, "HTTPS://cdn.example/a.ts"), None);
        assert_eq!(resolve(b, "//cdn.example/a.ts"), None);
        assert_eq!(resolve(b, "data:text/plain,hi"), None);
        assert_eq!(resolve(b, "skd://key"), None);
        // A colon after a slash is not a scheme.
        assert_eq!(resolve(b, "./a:b.ts").as_deref(), Some("/live/ch1/a:b.ts"));
        assert_eq!(resolve(b, "1a:b.ts").as_deref(), Some("/live/ch1/1a:b.ts"));
        // Unsafe request-target bytes get percent-encoded.
        assert_eq!(
            resolve(b, "my seg\u{e9}.ts").as_deref(),
            Some("/live/ch1/my%20seg%C3%A9.ts")
        );
        assert_eq!(
            resolve(b, "a\r\nb.ts").as_deref(),
            Some("/live/ch1/a%0D%0Ab.ts")
        );
        // Bases that are not absolute paths still give absolute paths.
        assert_eq!(resolve("", "a.ts").as_deref(), Some("/a.ts"));
        assert_eq!(resolve("x/i.m3u8", "a.ts").as_deref(), Some("/x/a.ts"));
    }

    #[test]
    fn fixture_uris_resolve() {
        let info = parse_playlist("/live/ch1/index.m3u8", HLS_FIXTURE).unwrap();
        let r: Vec<_> = info
            .uris
            .iter()
            .filter_map(|u| resolve("/live/ch1/index.m3u8", u))
            .collect();
        assert_eq!(r[0], "/live/ch1/seg_1.ts");
        assert_eq!(r.len(), 4);
        let info = parse_playlist("/d/manifest.mpd", DASH_FIXTURE).unwrap();
        assert!(info
            .uris
            .iter()
            .filter_map(|u| resolve("/d/manifest.mpd", u))
            .any(|p| p == "/d/chunk-stream1-00005.m4s"));
    }

    fn check_resolve_invariants(base: &str, uri: &str) {
        if let Some(p) = resolve(base, uri) {
            assert!(p.starts_with('/'), "{p:?}");
            let path = p.split('?').next().unwrap_or("");
            assert!(!path.split('/').any(|s| s == ".." || s == "."), "{p:?}");
            assert!(p.bytes().all(|b| b > 0x20 && b < 0x7f), "{p:?}");
        }
    }

    fn mutate(src: &[u8], edits: &[(usize, u8, u8)]) -> Vec<u8> {
        let mut v = src.to_vec();
        for &(pos, op, byte) in edits {
            if v.is_empty() {
                v.push(byte);
                continue;
            }
            let i = pos % v.len();
            match op % 4 {
                0 => v[i] = byte,
                1 => {
                    v.remove(i);
                }
                2 => v.insert(i, byte),
                _ => {
                    // Duplicate a chunk: exercises repeated tags / elements.
                    let end = (i + usize::from(byte)).min(v.len());
                    let chunk = v[i..end].to_vec();
                    v.splice(i..i, chunk);
                }
            }
        }
        v
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn never_panics_on_bytes(path in "[a-z/.]{0,12}(\\.m3u8|\\.mpd|)", body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_playlist(&path, &body);
        }

        #[test]
        fn never_panics_on_marked_bytes(prefix in prop_oneof![Just(&b"#EXTM3U\n"[..]), Just(&b"<MPD>"[..]), Just(&b"<?xml version=\"1.0\"?><MPD type=\"static\">"[..])],
                                        body in "[#A-Z:=\",.$%0-9a-z<>/ \n\r-]{0,400}") {
            let mut v = prefix.to_vec();
            v.extend_from_slice(body.as_bytes());
            let _ = parse_playlist("/x", &v);
        }

        #[test]
        fn never_panics_on_hls_mutations(edits in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 0..12)) {
            let v = mutate(HLS_FIXTURE, &edits);
            if let Ok(info) = parse_playlist("/live/ch1/index.m3u8", &v) {
                prop_assert!(info.uris.len() <= MAX_URIS);
                for u in &info.uris { check_resolve_invariants("/live/ch1/index.m3u8", u); }
            }
        }

        #[test]
        fn never_panics_on_dash_mutations(edits in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 0..12)) {
            let v = mutate(DASH_FIXTURE, &edits);
            if let Ok(info) = parse_playlist("/d/manifest.mpd", &v) {
                prop_assert!(info.uris.len() <= MAX_URIS);
                for u in &info.uris { check_resolve_invariants("/d/manifest.mpd", u); }
            }
        }

        #[test]
        fn resolve_never_escapes(base in "(/[a-z.%2eE]{0,4}){0,5}(\\?[a-z/.]{0,6})?", uri in "[a-z./%2eE?#: ]{0,24}") {
            check_resolve_invariants(&base, &uri);
        }
    }
}
