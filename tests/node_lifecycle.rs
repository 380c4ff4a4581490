//! Operating a node: the instruction lifecycle (add, replace, withdraw, expire, refusals),
//! prefetch following that stops with the viewers, endpoint health events, drain, and events
//! delivered to another thread.

mod common;

use common::*;
use listo::{Config, Event, Instruction, SECOND};

fn drain_events(h: &mut Harness) -> Vec<Event> {
    let mut out = Vec::new();
    while let Some(e) = h.node.poll_event() {
        out.push(e);
    }
    out
}

#[test]
fn instruction_with_ttl_expires_unless_renewed() {
    let mut h = Harness::default_node();
    let mut ins = Instruction::new("tmp", "/live/tmp/", addr(EP1));
    ins.ttl_s = Some(10);
    h.instruct(ins.clone());
    h.advance(6 * SECOND);
    h.instruct(ins); // renewal: another 10 s from now
    h.advance(6 * SECOND);
    assert!(h.node.instructions().any(|i| i.channel == "tmp"), "renewed instruction still there at 12 s");
    h.advance(5 * SECOND);
    assert!(!h.node.instructions().any(|i| i.channel == "tmp"), "expired 10 s after the renewal");
    let events = drain_events(&mut h);
    assert!(!events.contains(&Event::ChannelReplaced { channel: "tmp".into() }), "a renewal is not a replacement: {events:?}");
    assert!(events.contains(&Event::ChannelExpired { channel: "tmp".into() }), "{events:?}");
    let r = h.fetch_through("/live/tmp/seg_1.ts", b"");
    assert_eq!(r.status, 404, "an expired channel is not served");
    h.assert_still_serving();
}

#[test]
fn refused_instructions_change_nothing() {
    let cfg = Config { max_channels: 2, ..Config::default() };
    let mut h = Harness::new(cfg);
    let before: Vec<Instruction> = h.node.instructions().cloned().collect();
    let third = h.node.instruct(h.now, Instruction::new("ch3", "/live/ch3/", addr(EP1)));
    assert!(matches!(third, Err(listo::Error::TooManyChannels(2))), "{third:?}");
    // Same prefix as ch1 under another name: refused for the overlap (checked with room left).
    let mut table_with_room = Harness::default_node();
    let clash = table_with_room.node.instruct(0, Instruction::new("other", "/live/ch1/", addr(EP1)));
    assert!(matches!(clash, Err(listo::Error::InvalidInstruction(_))), "{clash:?}");
    let bad = h.node.instruct(h.now, Instruction::new("ch1", "no-slash/", addr(EP1)));
    assert!(matches!(bad, Err(listo::Error::InvalidInstruction(_))), "{bad:?}");
    let after: Vec<Instruction> = h.node.instructions().cloned().collect();
    assert_eq!(before, after);
    // Replacing an existing channel is not "one more channel".
    h.node.instruct(h.now, Instruction::new("ch1", "/live/ch1/", addr(EP1B))).unwrap();
}

#[test]
fn replaced_endpoints_apply_to_new_fetches_while_in_flight_ones_finish() {
    let mut h = Harness::default_node();
    let body = fixture("seg_1.ts");
    let v = h.get("/live/ch1/seg_1.ts");
    let (u, r) = h.next_request();
    assert_eq!(r.target, "/live/ch1/seg_1.ts");
    assert_eq!(h.ups[&u].addr, addr(EP1));
    h.instruct(Instruction::new("ch1", "/live/ch1/", addr(EP1B)));
    h.cdn_send(u, &resp_200(&body, ""));
    assert!(h.response(v).body == body, "the viewer of the in-flight fetch is not dropped");
    let w = h.get("/live/ch1/seg_2.ts");
    let (u2, _) = h.next_request();
    assert_eq!(h.ups[&u2].addr, addr(EP1B), "new fetches go to the new endpoint");
    h.cdn_send(u2, &resp_200(b"x", ""));
    assert_eq!(h.response(w).status, 200);
}

#[test]
fn followed_playlist_stops_being_fetched_when_viewers_leave() {
    let mut h = Harness::default_node();
    let mut origin = live_origin;
    let v = h.get("/live/ch1/index.m3u8");
    h.cdn_serve_all(&mut origin);
    assert_eq!(h.response(v).status, 200);
    // Nobody asks again: after follow_idle the node stops refreshing on its own.
    let idle = h.node.config().follow_idle;
    h.advance_serving(h.now + idle + 2 * SECOND, &mut origin);
    let before = h.cdn_requests();
    let served = h.advance_serving(h.now + 30 * SECOND, &mut origin);
    assert!(served.is_empty(), "no upstream fetch without viewers: {served:?}");
    assert_eq!(h.cdn_requests(), before);
    assert_eq!(h.stats().followed_playlists, 0);
}

#[test]
fn endpoint_failure_failover_and_recovery_are_reported() {
    let mut h = Harness::default_node();
    let mut ins = Instruction::new("ch1", "/live/ch1/", addr(EP1));
    ins.endpoints.push(addr(EP1B));
    h.instruct(ins);
    drain_events(&mut h);
    let v = h.get("/live/ch1/seg_1.ts");
    let (u, _) = h.next_request();
    h.cdn_send(u, &resp_status(503, "Service Unavailable", b"", ""));
    let (u2, _) = h.next_request();
    assert_eq!(h.ups[&u2].addr, addr(EP1B));
    h.cdn_send(u2, &resp_200(b"ok", ""));
    assert_eq!(h.response(v).status, 200);
    let w = h.get("/live/ch1/seg_2.ts");
    let (u3, _) = h.next_request();
    assert_eq!(h.ups[&u3].addr, addr(EP1), "new fetches try the primary first");
    h.cdn_send(u3, &resp_200(b"ok", ""));
    assert_eq!(h.response(w).status, 200);
    let events = drain_events(&mut h);
    let kinds: Vec<&str> = events.iter().map(|e| e.kind()).collect();
    assert!(kinds.contains(&"endpoint_failed"), "{kinds:?}");
    assert!(kinds.contains(&"failover"), "{kinds:?}");
    assert!(kinds.contains(&"endpoint_recovered"), "{kinds:?}");
    let ep = h.stats().endpoints.into_iter().find(|e| e.endpoint == EP1).unwrap();
    assert!(ep.healthy);
    assert_eq!(ep.failures, 1);
    assert_eq!(ep.consecutive_failures, 0);
}

#[test]
fn drain_closes_idle_connections_and_ends_keep_alive() {
    let mut h = Harness::default_node();
    let idle = h.get("/live/ch1/seg_1.ts");
    h.serve_next("/live/ch1/seg_1.ts", &resp_200(b"abc", "Cache-Control: max-age=60\r\n"));
    assert_eq!(h.response(idle).status, 200);
    assert!(!h.is_closed(idle));
    let rx = h.node.event_receiver();
    h.node.drain(h.now);
    h.pump();
    assert!(h.is_closed(idle), "an idle keep-alive connection closes at drain");
    let v = h.get("/live/ch1/seg_1.ts");
    let r = h.response(v);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Connection"), Some("close"), "responses during drain close their connection");
    assert!(h.stats().draining);
    assert_eq!(rx.try_recv().ok(), Some(Event::NodeDraining), "events reach a receiver on another thread");
    let t = std::thread::spawn(move || rx.try_iter().count());
    assert!(t.join().is_ok());
}

#[test]
fn every_event_has_a_severity_kind_and_fields() {
    let e = Event::UpstreamFailed { channel: "c".into(), path: "/p".into(), status: 502, reason: "r".into() };
    assert_eq!(e.kind(), "upstream_failed");
    assert_eq!(e.severity(), listo::admin::Severity::Error);
    assert_eq!(e.fields().len(), 4);
    assert_eq!(Event::NodeDraining.severity(), listo::admin::Severity::Notice);
}
