//! The whole node in virtual time: a simulated live origin, one node, many players.
//! Guards the product's promise: one upstream fetch per segment and per playlist refresh,
//! whatever the number of viewers, with no stalls and every byte accounted for.

use listo::sim::{run, SimConfig};

#[test]
fn thousand_viewers_two_channels_cost_one_fetch_per_segment() {
    let cfg = SimConfig { viewers: 1000, seconds: 120, channels: 2, seed: 7, ..SimConfig::default() };
    let r = run(&cfg);
    assert!(r.distinct_segments > 100, "players watched the whole run: {r:?}");
    assert_eq!(r.upstream_segment_requests, r.distinct_segments, "one upstream request per distinct segment");
    // One refresh per half target duration (2 s target → 1 s), plus start-up slack.
    let bound = cfg.seconds / (cfg.segment_secs / 2).max(1) + 2;
    assert!(
        r.upstream_playlist_requests_max_per_channel <= bound,
        "playlist upstream requests {} > {bound} for one channel",
        r.upstream_playlist_requests_max_per_channel
    );
    assert_eq!(r.stalls, 0, "{r:?}");
    assert_eq!(r.errors, 0, "{r:?}");
    assert_eq!(r.corrupt, 0, "checked players got the origin's exact bytes");
    assert_eq!(r.downstream_bytes, r.node_downstream_bytes, "downstream bytes equal what viewers received");
    assert!(r.segments_received >= 1000 * 20, "{r:?}");
    assert!(r.saving_ratio > 0.99, "{r:?}");
}

#[test]
fn prefetch_makes_segment_requests_hits_without_extra_fetches() {
    let on = run(&SimConfig { viewers: 1000, seconds: 120, channels: 2, seed: 11, ..SimConfig::default() });
    assert!(on.prefetch);
    assert!(on.hit_ratio >= 0.99, "hit ratio with prefetch {}", on.hit_ratio);
    assert_eq!(on.upstream_segment_requests, on.distinct_segments, "prefetch never fetches a segment twice or in vain");
    assert_eq!(on.stalls, 0);
    let mut cfg = SimConfig { viewers: 1000, seconds: 120, channels: 2, seed: 11, ..SimConfig::default() };
    cfg.node.prefetch = false;
    let off = run(&cfg);
    assert!(!off.prefetch);
    assert!(off.hit_ratio < on.hit_ratio, "prefetch off {} vs on {}", off.hit_ratio, on.hit_ratio);
    assert_eq!(off.upstream_segment_requests, off.distinct_segments);
}

#[test]
fn same_seed_same_result() {
    let cfg = SimConfig { viewers: 50, seconds: 20, channels: 3, seed: 42, ..SimConfig::default() };
    assert_eq!(run(&cfg), run(&cfg));
}

#[test]
fn one_viewer_fetches_each_segment_once_too() {
    // Without prefetch: with one player the node's own playlist refreshes could fetch a
    // segment the player only asks for after the run ends.
    let mut cfg = SimConfig { viewers: 1, seconds: 60, channels: 1, seed: 3, verify_every: 1, ..SimConfig::default() };
    cfg.node.prefetch = false;
    let r = run(&cfg);
    assert_eq!(r.upstream_segment_requests, r.distinct_segments);
    assert_eq!(r.stalls, 0);
    assert_eq!(r.corrupt, 0);
    assert!(r.saving_ratio.abs() < 0.01, "one viewer saves nothing: {}", r.saving_ratio);
}
