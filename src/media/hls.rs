//! HLS playlists (RFC 8216 and its LL-HLS successor draft): line-based.

use super::{MediaError, PlaylistInfo, PlaylistKind, UriSink};

/// Parses an HLS media or master playlist. `body` may start with a UTF-8 BOM.
pub(crate) fn parse(body: &[u8]) -> Result<PlaylistInfo, MediaError> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let text = String::from_utf8_lossy(body);
    // LF, CRLF and lone CR all end a line; the blank "lines" this makes are skipped.
    let mut lines = text
        .split(['\n', '\r'])
        .map(str::trim)
        .filter(|l| !l.is_empty());
    match lines.next() {
        Some(first) if first.starts_with("#EXTM3U") => {}
        _ => return Err(MediaError::NotAPlaylist),
    }

    let mut sink = UriSink::default();
    let mut master = false;
    let mut ended = false;
    let mut target: Option<&str> = None;
    let mut sequence: Option<&str> = None;
    let mut pending_us: Option<u64> = None;
    let mut window_us: u64 = 0;

    for line in lines {
        if !line.starts_with('#') {
            if let Some(d) = pending_us.take() {
                window_us = window_us.saturating_add(d);
            }
            sink.push(line.to_string());
            continue;
        }
        let (tag, value) = match line.split_once(':') {
            Some((t, v)) => (t.trim_end(), v.trim()),
            None => (line, ""),
        };
        match tag {
            "#EXTINF" => {
                // "#EXTINF:<duration>,[<title>]"; IPTV lists write "-1 attr=..." — unknown means 0.
                let d = value
                    .split(',')
                    .next()
                    .and_then(|d| d.split_ascii_whitespace().next())
                    .and_then(parse_decimal_us)
                    .unwrap_or(0);
                pending_us = Some(d);
            }
            "#EXT-X-TARGETDURATION" => target = Some(value),
            "#EXT-X-MEDIA-SEQUENCE" => sequence = Some(value),
            "#EXT-X-ENDLIST" => ended = true,
            "#EXT-X-STREAM-INF" => master = true,
            "#EXT-X-I-FRAME-STREAM-INF" => {
                master = true;
                push_uri_attr(&mut sink, value);
            }
            "#EXT-X-MEDIA" | "#EXT-X-MAP" | "#EXT-X-PART" | "#EXT-X-PRELOAD-HINT" => {
                push_uri_attr(&mut sink, value);
            }
            _ => {} // Unknown tags and comments.
        }
    }

    if master {
        return Ok(PlaylistInfo {
            kind: PlaylistKind::HlsMaster,
            target_duration_ms: None,
            media_sequence: None,
            uris: sink.uris,
            window_ms: 0,
            ended,
        });
    }
    let target_duration_ms =
        match target {
            None => None,
            Some(v) => Some(parse_decimal_us(v).map(us_to_ms).ok_or_else(|| {
                MediaError::Malformed(format!("bad EXT-X-TARGETDURATION {v:.32?}"))
            })?),
        };
    let media_sequence = match sequence {
        None => 0,
        Some(v) => v
            .parse::<u64>()
            .map_err(|_| MediaError::Malformed(format!("bad EXT-X-MEDIA-SEQUENCE {v:.32?}")))?,
    };
    Ok(PlaylistInfo {
        kind: PlaylistKind::HlsMedia,
        target_duration_ms,
        media_sequence: Some(media_sequence),
        uris: sink.uris,
        window_ms: us_to_ms(window_us),
        ended,
    })
}

fn push_uri_attr(sink: &mut UriSink, list: &str) {
    if let Some(uri) = attr(list, "URI") {
        if !uri.is_empty() {
            sink.push(uri.to_string());
        }
    }
}

fn us_to_ms(us: u64) -> u64 {
    us.saturating_add(500) / 1000
}

/// Value of `key` in an HLS attribute list (`A=1,URI="x,y",B=C`), quotes removed.
pub(crate) fn attr<'a>(list: &'a str, key: &str) -> Option<&'a str> {
    let mut rest = list;
    loop {
        rest = rest.trim_start_matches(|c: char| c == ',' || c.is_ascii_whitespace());
        if rest.is_empty() {
            return None;
        }
        let name_end = rest.find(['=', ',']).unwrap_or(rest.len());
        let name = rest[..name_end].trim();
        rest = &rest[name_end..];
        let Some(after_eq) = rest.strip_prefix('=') else {
            continue; // A bare name without value; the ',' (or end) is skipped next round.
        };
        let after_eq = after_eq.trim_start();
        let value;
        if let Some(quoted) = after_eq.strip_prefix('"') {
            let end = quoted.find('"').unwrap_or(quoted.len());
            value = &quoted[..end];
            let tail = quoted.get(end + 1..).unwrap_or("");
            rest = &tail[tail.find(',').unwrap_or(tail.len())..];
        } else {
            let end = after_eq.find(',').unwrap_or(after_eq.len());
            value = after_eq[..end].trim();
            rest = &after_eq[end..];
        }
        if name == key {
            return Some(value);
        }
    }
}

/// Non-negative decimal seconds ("2", "2.000000", "0.33334") in microseconds;
/// digits past the sixth decimal are truncated, huge values saturate.
pub(crate) fn parse_decimal_us(s: &str) -> Option<u64> {
    let s = s.trim();
    let s = s.strip_prefix('+').unwrap_or(s);
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, f),
        None => (s, ""),
    };
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut secs: u64 = 0;
    for b in int.bytes() {
        secs = secs.saturating_mul(10).saturating_add(u64::from(b - b'0'));
    }
    let mut micros: u64 = 0;
    let mut scale: u64 = 100_000;
    for b in frac.bytes().take(6) {
        micros += u64::from(b - b'0') * scale;
        scale /= 10;
    }
    Some(secs.saturating_mul(1_000_000).saturating_add(micros))
}

#[cfg(test)]
mod tests {
    use super::super::{parse_playlist, MediaError, PlaylistInfo, PlaylistKind, MAX_URIS};
    use super::*;

    const FIXTURE: &[u8] = include_bytes!("../../tests/fixtures/index.m3u8");

    fn parse_str(s: &str) -> Result<PlaylistInfo, MediaError> {
        parse_playlist("/live/ch1/index.m3u8", s.as_bytes())
    }

    #[test]
    fn ffmpeg_live_fixture() {
        let info = parse_playlist("/live/ch1/index.m3u8", FIXTURE).unwrap();
        assert_eq!(
            info,
            PlaylistInfo {
                kind: PlaylistKind::HlsMedia,
                target_duration_ms: Some(2000),
                media_sequence: Some(1),
                uris: vec![
                    "seg_1.ts".into(),
                    "seg_2.ts".into(),
                    "seg_3.ts".into(),
                    "seg_4.ts".into()
                ],
                window_ms: 8000,
                ended: false,
            }
        );
    }

    #[test]
    fn crlf_bom_blank_lines_and_unknown_tags() {
        let body = "\u{feff}#EXTM3U\r\n\r\n#EXT-X-VERSION:3\r\n#EXT-X-TARGETDURATION:6\r\n#EXT-X-FOO:bar\r\n\
                    # a comment\r\n#EXTINF:5.5,title, with comma\r\n  a.ts  \r\n\r\n#EXTINF:4.25,\r\nb.ts\r\n#EXT-X-ENDLIST\r\n";
        let info = parse_str(body).unwrap();
        assert_eq!(info.kind, PlaylistKind::HlsMedia);
        assert_eq!(info.target_duration_ms, Some(6000));
        assert_eq!(info.media_sequence, Some(0));
        assert_eq!(info.uris, vec!["a.ts", "b.ts"]);
        assert_eq!(info.window_ms, 9750);
        assert!(info.ended);
        // Lone CR line endings too.
        let info = parse_str("#EXTM3U\r#EXT-X-TARGETDURATION:2\r#EXTINF:2,\rx.ts\r").unwrap();
        assert_eq!(info.uris, vec!["x.ts"]);
        assert_eq!(info.window_ms, 2000);
        // Same as the LF fixture once CRLF'd.
        let crlf = String::from_utf8_lossy(FIXTURE).replace('\n', "\r\n");
        assert_eq!(parse_str(&crlf), parse_playlist("/i.m3u8", FIXTURE));
    }

    #[test]
    fn master_playlist() {
        let body = r#"#EXTM3U
#EXT-X-VERSION:6
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="aud",NAME="English, main",LANGUAGE="en",DEFAULT=YES,URI="audio/en.m3u8"
#EXT-X-MEDIA:TYPE=CLOSED-CAPTIONS,GROUP-ID="cc",NAME="CC1",INSTREAM-ID="CC1"
#EXT-X-STREAM-INF:BANDWIDTH=1280000,CODECS="avc1.4d401f,mp4a.40.2",RESOLUTION=640x360,AUDIO="aud"
low/index.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=2560000,CODECS="avc1.4d401f,mp4a.40.2",AUDIO="aud"

http://cdn.example/hi/index.m3u8?x=1
#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=86000,URI="low/iframe.m3u8"
"#;
        let info = parse_str(body).unwrap();
        assert_eq!(info.kind, PlaylistKind::HlsMaster);
        assert_eq!(info.target_duration_ms, None);
        assert_eq!(info.media_sequence, None);
        assert_eq!(info.window_ms, 0);
        assert!(!info.ended);
        assert_eq!(
            info.uris,
            vec![
                "audio/en.m3u8",
                "low/index.m3u8",
                "http://cdn.example/hi/index.m3u8?x=1",
                "low/iframe.m3u8"
            ]
        );
    }

    #[test]
    fn ll_hls_parts_map_and_preload_hint() {
        let body = r#"#EXTM3U
#EXT-X-TARGETDURATION:4
#EXT-X-VERSION:9
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.0,CAN-SKIP-UNTIL=12.0
#EXT-X-PART-INF:PART-TARGET=0.33334
#EXT-X-MEDIA-SEQUENCE:266
#EXT-X-MAP:URI="init.mp4"
#EXTINF:4.00008,
fileSequence266.mp4
#EXT-X-PART:DURATION=0.33334,URI="filePart267.0.mp4"
#EXT-X-PART:DURATION=0.33334,INDEPENDENT=YES,URI="filePart267.1.mp4"
#EXTINF:4.00008,
fileSequence267.mp4
#EXT-X-PART:DURATION=0.33334,URI="filePart268.0.mp4",INDEPENDENT=YES
#EXT-X-PRELOAD-HINT:TYPE=PART,URI="filePart268.1.mp4"
#EXT-X-RENDITION-REPORT:URI="../1M/waitForMSN.php",LAST-MSN=273,LAST-PART=2
"#;
        let info = parse_str(body).unwrap();
        assert_eq!(info.kind, PlaylistKind::HlsMedia);
        assert_eq!(info.target_duration_ms, Some(4000));
        assert_eq!(info.media_sequence, Some(266));
        assert_eq!(info.window_ms, 8000);
        assert_eq!(
            info.uris,
            vec![
                "init.mp4",
                "fileSequence266.mp4",
                "filePart267.0.mp4",
                "filePart267.1.mp4",
                "fileSequence267.mp4",
                "filePart268.0.mp4",
                "filePart268.1.mp4",
            ]
        );
    }

    #[test]
    fn errors_not_panics() {
        assert_eq!(parse_str(""), Err(MediaError::NotAPlaylist));
        assert_eq!(
            parse_str("seg.ts\n#EXTM3U\n"),
            Err(MediaError::NotAPlaylist)
        );
        assert_eq!(
            parse_playlist("/a.m3u8", b"\xff\xfe\x00garbage"),
            Err(MediaError::NotAPlaylist)
        );
        assert!(matches!(
            parse_str("#EXTM3U\n#EXT-X-TARGETDURATION:abc\n"),
            Err(MediaError::Malformed(_))
        ));
        assert!(matches!(
            parse_str("#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:-4\n"),
            Err(MediaError::Malformed(_))
        ));
        // Bad EXTINF durations count as 0 instead of failing (IPTV-style lists).
        let info = parse_str(
            "#EXTM3U\n#EXTINF:-1 tvg-id=\"x\",Ch 1\nhttp://h/ch1.ts\n#EXTINF:nan,\nb.ts\n",
        )
        .unwrap();
        assert_eq!(info.uris, vec!["http://h/ch1.ts", "b.ts"]);
        assert_eq!(info.window_ms, 0);
        // Invalid UTF-8 inside is replaced, not fatal.
        let info = parse_playlist("/a.m3u8", b"#EXTM3U\n#EXTINF:1,\nse\xffg.ts\n").unwrap();
        assert_eq!(info.uris.len(), 1);
        // Huge numbers saturate rather than overflow.
        let info = parse_str("#EXTM3U\n#EXT-X-TARGETDURATION:99999999999999999999999\n#EXTINF:99999999999999999999.9,\na\n#EXTINF:99999999999999999999,\nb\n").unwrap();
        assert_eq!(info.target_duration_ms, Some(u64::MAX / 1000));
        assert_eq!(info.window_ms, u64::MAX / 1000);
    }

    #[test]
    fn uri_cap() {
        let mut body = String::from("#EXTM3U\n#EXT-X-TARGETDURATION:1\n");
        for i in 0..(MAX_URIS + 50) {
            body.push_str(&format!("#EXTINF:1,\ns{i}.ts\n"));
        }
        let info = parse_str(&body).unwrap();
        assert_eq!(info.uris.len(), MAX_URIS);
        assert_eq!(info.uris.last().map(String::as_str), Some("s9999.ts"));
        // The window still covers every segment.
        assert_eq!(info.window_ms, (MAX_URIS as u64 + 50) * 1000);
    }

    #[test]
    fn attribute_lists() {
        let l = r#"TYPE=AUDIO,NAME="a, b=c",URI="x.m3u8",BARE,DEFAULT=YES"#;
        assert_eq!(attr(l, "TYPE"), Some("AUDIO"));
        assert_eq!(attr(l, "NAME"), Some("a, b=c"));
        assert_eq!(attr(l, "URI"), Some("x.m3u8"));
        assert_eq!(attr(l, "DEFAULT"), Some("YES"));
        assert_eq!(attr(l, "BARE"), None);
        assert_eq!(attr(l, "b"), None);
        assert_eq!(
            attr(r#"URI="unterminated, still"#, "URI"),
            Some("unterminated, still")
        );
        assert_eq!(attr(r#"A="q"junk,URI=u"#, "URI"), Some("u"));
        assert_eq!(attr(" URI = \"s p\" ", "URI"), Some("s p"));
        assert_eq!(attr("", "URI"), None);
        assert_eq!(attr(",,,=,=\"", "URI"), None);
    }

    #[test]
    fn decimal_seconds() {
        assert_eq!(parse_decimal_us("2"), Some(2_000_000));
        assert_eq!(parse_decimal_us("2.000000"), Some(2_000_000));
        assert_eq!(parse_decimal_us("0.33334"), Some(333_340));
        assert_eq!(parse_decimal_us(".5"), Some(500_000));
        assert_eq!(parse_decimal_us("3."), Some(3_000_000));
        assert_eq!(parse_decimal_us("1.1234567"), Some(1_123_456));
        assert_eq!(parse_decimal_us("-1"), None);
        assert_eq!(parse_decimal_us("."), None);
        assert_eq!(parse_decimal_us(""), None);
        assert_eq!(parse_decimal_us("1e3"), None);
        assert_eq!(parse_decimal_us("inf"), None);
    }
}
