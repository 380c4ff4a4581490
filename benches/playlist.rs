//! Playlist parsing per refresh (issue 7, item 1c): `parse_playlist` of the real fixtures
//! (`tests/fixtures/index.m3u8`, an ffmpeg live HLS media playlist; `manifest.mpd`, a live DASH
//! MPD with a SegmentTimeline) and of synthetic live HLS media playlists of 6 and 1 000 segments
//! (with `#EXT-X-PROGRAM-DATE-TIME` on every segment, as packagers write them).
//!
//! The node parses a playlist once per refresh (at most every half target duration), not per
//! viewer, so this is a per-channel cost. Expectation: a few µs for a 6-segment playlist and
//! linear in size (`Throughput::Bytes`), i.e. a 1 000-segment DVR window in well under 1 ms.

mod common;

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use listo::media::{parse_playlist, PlaylistKind};

use common::hls_playlist;

fn fixture(name: &str) -> Vec<u8> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("fixture {}: {e}", p.display()))
}

fn playlist(c: &mut Criterion) {
    let mut g = c.benchmark_group("playlist");
    g.measurement_time(Duration::from_secs(3));
    g.warm_up_time(Duration::from_millis(500));
    let cases: Vec<(&str, &str, Vec<u8>, PlaylistKind, usize)> = vec![
        ("fixture_index.m3u8", "/live/ch1/index.m3u8", fixture("index.m3u8"), PlaylistKind::HlsMedia, 1),
        ("fixture_manifest.mpd", "/live/ch1/manifest.mpd", fixture("manifest.mpd"), PlaylistKind::Dash, 1),
        ("hls_6_segments", "/live/ch1/index.m3u8", hls_playlist(6, 171_234).into_bytes(), PlaylistKind::HlsMedia, 6),
        (
            "hls_1000_segments",
            "/live/ch1/index.m3u8",
            hls_playlist(1000, 171_234).into_bytes(),
            PlaylistKind::HlsMedia,
            1000,
        ),
    ];
    for (name, path, body, kind, min_uris) in &cases {
        let info = parse_playlist(path, body).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(info.kind, *kind, "{name}");
        assert!(info.uris.len() >= *min_uris, "{name}: {} uris", info.uris.len());
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(*name, |b| b.iter(|| parse_playlist(black_box(path), black_box(body))));
    }
    g.finish();
}

criterion_group!(benches, playlist);
criterion_main!(benches);
