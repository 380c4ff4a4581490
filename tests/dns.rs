//! The DNS mediator (issue 6): authoritative answers over UDP and TCP on loopback, checked with
//! hickory's client-side message types (and `dig` where installed): node choice by EDNS Client
//! Subnet (RFC 7871) with the scope echoed, by source address without it, the CDN endpoint for
//! clients in no PID, REFUSED outside the zone, NODATA/SOA/NS inside, FORMERR on a bad ECS
//! address, and the node instructed by a channel-named query. Every socket has a timeout.
#![cfg(all(feature = "driver", feature = "instructor"))]

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::{Name, RData, RecordType};
use listo::driver::{Driver, DriverConfig, Listener};
use listo::instructor::{DnsConfig, DnsServer, Instructor, InstructorConfig, Topology};
use listo::player::http_request;
use serde_json::{json, Value};

const ZONE: &str = "live.example";

fn topology() -> Value {
    json!({
        "network_map": {"meta": {}, "network-map": {
            "pid-a":  {"ipv4": ["10.1.0.0/16"]},
            "pid-a5": {"ipv4": ["10.1.5.0/24"]},
            "pid-b":  {"ipv4": ["10.2.0.0/16"], "ipv6": ["2001:db8:2::/48"]},
            "pid-lo": {"ipv4": ["127.0.0.0/8"]},
            "pid-empty": {"ipv4": ["10.3.0.0/16"]}
        }},
        "cost_map": {"meta": {}, "cost-map": {"pid-empty": {"cdn-far": 9, "cdn-near": 1}}},
        "nodes": {
            "pid-a":  [{"listen": "127.0.0.2:8080", "control": "127.0.0.2:8081"}],
            "pid-a5": [{"listen": "127.0.0.4:8080", "control": "127.0.0.4:8081"}],
            "pid-b":  [{"listen": "[2001:db8::b]:8080", "control": "[2001:db8::b]:8081"}],
            "pid-lo": [{"listen": "127.0.0.3:8080", "control": "127.0.0.3:8081"}]
        },
        "channels": {
            "ch1": {"path_prefix": "/live/ch1/", "endpoints": [
                {"address": "192.0.2.10:80", "pid": "cdn-far"}, {"address": "192.0.2.11:80", "pid": "cdn-near"}]},
            "ch2": {"path_prefix": "/live/ch2/", "endpoints": ["[2001:db8::cd]:80"]}
        }
    })
}

fn server_with(topo: Value, instruct: bool) -> (Arc<Instructor>, DnsServer) {
    let t = Topology::parse(topo.to_string().as_bytes(), None).expect("valid topology");
    let ins = Instructor::new(t, InstructorConfig::default());
    let mut cfg = DnsConfig::new("127.0.0.1:0".parse().expect("addr"), ZONE);
    cfg.instruct = instruct;
    let s = DnsServer::start(cfg, ins.clone()).expect("dns server");
    (ins, s)
}

fn query(name: &str, qtype: RecordType, ecs: Option<(&str, u8)>) -> Message {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).expect("name"), qtype));
    if let Some((ip, len)) = ecs {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        e.options_mut().insert(EdnsOption::Subnet(ClientSubnet::new(ip.parse().expect("ip"), len, 0)));
        m.edns = Some(e);
    }
    m
}

fn udp(server: SocketAddr, q: &Message) -> Message {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
    let bytes = q.to_vec().expect("encode");
    for _ in 0..3 {
        sock.send_to(&bytes, server).expect("send");
        let mut buf = [0u8; 4096];
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            let r = Message::from_vec(&buf[..n]).expect("decode answer");
            assert_eq!(r.metadata.id, q.metadata.id);
            assert_eq!(r.metadata.message_type, MessageType::Response);
            return r;
        }
    }
    panic!("no UDP answer from {server}");
}

fn tcp(server: SocketAddr, qs: &[Message]) -> Vec<Message> {
    let mut s = TcpStream::connect(server).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
    let mut out = Vec::new();
    for q in qs {
        let bytes = q.to_vec().expect("encode");
        let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&bytes);
        s.write_all(&framed).expect("write");
        let mut len = [0u8; 2];
        s.read_exact(&mut len).expect("length");
        let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
        s.read_exact(&mut msg).expect("message");
        out.push(Message::from_vec(&msg).expect("decode"));
    }
    out
}

fn addrs(r: &Message) -> Vec<IpAddr> {
    r.answers
        .iter()
        .filter_map(|rec| match &rec.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

fn ecs_echo(r: &Message) -> Option<ClientSubnet> {
    match r.edns.as_ref()?.option(EdnsCode::Subnet) {
        Some(EdnsOption::Subnet(s)) => Some(*s),
        _ => None,
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

#[test]
fn answers_by_client_subnet_with_the_scope_echoed() {
    let (_ins, s) = server_with(topology(), false);
    let at = s.local_addr();

    // 10.1.2.0/24 is in pid-a (10.1/16); pid-a5 (10.1.5/24) sits inside it, so the answer holds
    // only for 10.1.0.0/22 (10.1.2.x and 10.1.5.x first differ at bit 22).
    let r = udp(at, &query("ch1.live.example.", RecordType::A, Some(("10.1.2.0", 24))));
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(r.metadata.authoritative);
    assert_eq!(addrs(&r), vec![ip("127.0.0.2")]);
    assert_eq!(r.answers[0].ttl, 5);
    assert_eq!(r.answers[0].name.to_ascii(), "ch1.live.example.");
    let e = ecs_echo(&r).expect("ECS echoed");
    assert_eq!((e.addr(), e.source_prefix(), e.scope_prefix()), (ip("10.1.2.0"), 24, 22));

    // The more specific PID wins; its answer holds for its whole /24.
    let r = udp(at, &query("ch1.live.example.", RecordType::A, Some(("10.1.5.0", 24))));
    assert_eq!(addrs(&r), vec![ip("127.0.0.4")]);
    assert_eq!(ecs_echo(&r).map(|e| e.scope_prefix()), Some(24));

    // A /16 source covering pid-a5 partly: pid-a's node, scope longer than the source.
    let r = udp(at, &query("ch1.live.example.", RecordType::A, Some(("10.1.0.0", 16))));
    assert_eq!(addrs(&r), vec![ip("127.0.0.2")]);
    assert!(ecs_echo(&r).expect("echo").scope_prefix() > 16);

    // IPv6 subnet → the IPv6 node, AAAA; scope = the /48 of pid-b.
    let r = udp(at, &query("ch1.live.example.", RecordType::AAAA, Some(("2001:db8:2:100::", 56))));
    assert_eq!(addrs(&r), vec![ip("2001:db8::b")]);
    assert_eq!(ecs_echo(&r).map(|e| (e.source_prefix(), e.scope_prefix())), Some((56, 48)));
    // The same client asking A: the node has no IPv4 address → NODATA with the SOA.
    let r = udp(at, &query("ch1.live.example.", RecordType::A, Some(("10.2.3.0", 24))));
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(r.answers.is_empty());
    assert_eq!(r.authorities.first().map(|a| a.record_type()), Some(RecordType::SOA));

    // Client in no PID → the CDN endpoint (first: no cost row for an unknown client).
    let r = udp(at, &query("ch1.live.example.", RecordType::A, Some(("192.0.2.0", 24))));
    assert_eq!(addrs(&r), vec![ip("192.0.2.10")]);
    assert_eq!(ecs_echo(&r).map(|e| e.scope_prefix()), Some(1), "192/1 holds no PID");
    // Client in a PID without nodes → the endpoint cheapest from that PID.
    let r = udp(at, &query("ch1.live.example.", RecordType::A, Some(("10.3.7.0", 24))));
    assert_eq!(addrs(&r), vec![ip("192.0.2.11")]);
    // ch2's endpoint is IPv6.
    let r = udp(at, &query("ch2.live.example.", RecordType::AAAA, Some(("192.0.2.0", 24))));
    assert_eq!(addrs(&r), vec![ip("2001:db8::cd")]);

    // ECS /0: no client information; answered as for an unknown client, scope 0.
    let r = udp(at, &query("ch1.live.example.", RecordType::A, Some(("0.0.0.0", 0))));
    assert_eq!(addrs(&r), vec![ip("192.0.2.10")]);
    assert_eq!(ecs_echo(&r).map(|e| e.scope_prefix()), Some(0));

    // Without ECS: the source address (127.0.0.1, pid-lo); no OPT in, no OPT out.
    let r = udp(at, &query("ch1.live.example.", RecordType::A, None));
    assert_eq!(addrs(&r), vec![ip("127.0.0.3")]);
    assert!(r.edns.is_none());
    // Names: the apex and any name under it, case-insensitively; the answer keeps the case asked.
    let r = udp(at, &query("LIVE.example.", RecordType::A, None));
    assert_eq!(addrs(&r), vec![ip("127.0.0.3")]);
    let r = udp(at, &query("a.b.Ch1.live.example.", RecordType::A, None));
    assert_eq!(addrs(&r), vec![ip("127.0.0.3")]);
    assert_eq!(r.answers[0].name.to_ascii(), "a.b.Ch1.live.example.");
    assert!(s.stats().ecs >= 8);
}

#[test]
fn zone_edges_soa_ns_nodata_refused_and_errors() {
    let (_ins, s) = server_with(topology(), false);
    let at = s.local_addr();
    // Outside the zone → REFUSED, not authoritative, no answer.
    for name in ["example.com.", "example.", "xlive.example.", "."] {
        let r = udp(at, &query(name, RecordType::A, None));
        assert_eq!(r.metadata.response_code, ResponseCode::Refused, "{name}");
        assert!(!r.metadata.authoritative && r.answers.is_empty());
    }
    // SOA and NS at the apex.
    let r = udp(at, &query("live.example.", RecordType::SOA, None));
    match r.answers.first().map(|a| &a.data) {
        Some(RData::SOA(soa)) => {
            assert_eq!(soa.mname.to_ascii(), "ns1.live.example.");
            assert_eq!(soa.minimum, 5);
        }
        other => panic!("{other:?}"),
    }
    let r = udp(at, &query("live.example.", RecordType::NS, None));
    match r.answers.first().map(|a| &a.data) {
        Some(RData::NS(ns)) => assert_eq!(ns.0.to_ascii(), "ns1.live.example."),
        other => panic!("{other:?}"),
    }
    // Other types inside the zone → NODATA (NOERROR, empty, SOA in authority).
    for (name, t) in [("ch1.live.example.", RecordType::MX), ("ch1.live.example.", RecordType::TXT), ("x.live.example.", RecordType::SOA)] {
        let r = udp(at, &query(name, t, None));
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert!(r.answers.is_empty() && r.metadata.authoritative);
        assert_eq!(r.authorities.first().map(|a| a.record_type()), Some(RecordType::SOA));
    }
    // ECS with address bits beyond the source prefix (10.1.2.0/20) → FORMERR.
    let r = udp(at, &query("ch1.live.example.", RecordType::A, Some(("10.1.2.0", 20))));
    assert_eq!(r.metadata.response_code, ResponseCode::FormErr);
    // Another opcode → NOTIMP.
    let mut q = query("ch1.live.example.", RecordType::A, None);
    q.metadata.op_code = OpCode::Notify;
    assert_eq!(udp(at, &q).metadata.response_code, ResponseCode::NotImp);
    // EDNS version 1 → BADVERS.
    let mut q = query("ch1.live.example.", RecordType::A, Some(("10.1.2.0", 24)));
    if let Some(e) = q.edns.as_mut() {
        e.set_version(1);
    }
    // (16 is BADVERS with an OPT record; hickory names the code BADSIG when decoding.)
    let r = udp(at, &q);
    assert_eq!(u16::from(r.metadata.response_code), 16);
    assert!(r.edns.is_some(), "BADVERS travels in the OPT record");
    // Garbage with a header → FORMERR; shorter than a header → no answer (checked via stats).
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
    sock.send_to(&[0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0xff, 0xff], at).expect("send");
    let mut buf = [0u8; 512];
    let (n, _) = sock.recv_from(&mut buf).expect("FORMERR answer");
    assert_eq!(&buf[..2], &[0x12, 0x34]);
    assert_eq!(buf[3] & 0x0f, 1, "FORMERR");
    assert_eq!(n, 12);
    sock.send_to(&[1, 2, 3], at).expect("send");
    // A response is never answered.
    let mut resp = query("ch1.live.example.", RecordType::A, None);
    resp.metadata.message_type = MessageType::Response;
    sock.send_to(&resp.to_vec().expect("encode"), at).expect("send");
    sock.set_read_timeout(Some(Duration::from_millis(300))).expect("timeout");
    assert!(sock.recv_from(&mut buf).is_err(), "no answer to a runt or a response");
}

#[test]
fn tcp_carries_several_queries_per_connection() {
    let (_ins, s) = server_with(topology(), false);
    let rs = tcp(
        s.local_addr(),
        &[
            query("ch1.live.example.", RecordType::A, Some(("10.1.5.0", 24))),
            query("ch1.live.example.", RecordType::AAAA, Some(("2001:db8:2::", 48))),
            query("example.org.", RecordType::A, None),
        ],
    );
    assert_eq!(addrs(&rs[0]), vec![ip("127.0.0.4")]);
    assert_eq!(addrs(&rs[1]), vec![ip("2001:db8::b")]);
    assert_eq!(rs[2].metadata.response_code, ResponseCode::Refused);
    assert!(s.stats().tcp_queries >= 3);
}

#[test]
fn a_reload_changes_the_answers() {
    let (ins, s) = server_with(topology(), false);
    let q = query("ch1.live.example.", RecordType::A, Some(("10.1.2.0", 24)));
    assert_eq!(addrs(&udp(s.local_addr(), &q)), vec![ip("127.0.0.2")]);
    let mut t = topology();
    t["nodes"]["pid-a"] = json!([{"listen": "127.0.0.9:8080", "control": "127.0.0.9:8081"}]);
    ins.set_topology(Topology::parse(t.to_string().as_bytes(), None).expect("valid"));
    assert_eq!(addrs(&udp(s.local_addr(), &q)), vec![ip("127.0.0.9")]);
}

#[test]
fn a_channel_named_query_instructs_the_chosen_node() {
    let driver = Driver::bind(DriverConfig {
        listen: vec!["127.0.0.1:0".parse().expect("addr")],
        control: Some("127.0.0.1:0".parse().expect("addr")),
        drain: Duration::from_millis(300),
        ..DriverConfig::default()
    })
    .expect("driver");
    let viewers = driver.local_addr(Listener::Viewers).expect("viewers");
    let control = driver.local_addr(Listener::Control).expect("control");
    let stop = driver.stop_handle();
    let node = thread::spawn(move || driver.run());
    let mut t = topology();
    t["nodes"]["pid-a"] = json!([{"listen": viewers.to_string(), "control": control.to_string()}]);
    let (ins, s) = server_with(t, true);
    let r = udp(s.local_addr(), &query("ch1.live.example.", RecordType::A, Some(("10.1.2.0", 24))));
    assert_eq!(addrs(&r), vec![viewers.ip()]);
    let end = Instant::now() + Duration::from_secs(3);
    loop {
        let r = http_request(control, "GET", "/v1/channels", &[]).expect("control");
        let v: Value = serde_json::from_slice(&r.body).expect("json");
        if v["channels"].as_array().is_some_and(|a| a.iter().any(|c| c["channel"] == "ch1")) {
            break;
        }
        assert!(Instant::now() < end, "the node was not instructed: {v}");
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(ins.stats().posts, 1);
    stop.stop();
    let _ = node.join();
}

/// `dig` (where installed) agrees, ECS included.
#[test]
fn dig_agrees_where_installed() {
    let Ok(v) = Command::new("dig").arg("-v").output() else {
        eprintln!("dig not installed; skipped");
        return;
    };
    let _ = v;
    let (_ins, s) = server_with(topology(), false);
    let port = s.local_addr().port().to_string();
    let out = Command::new("dig")
        .args(["@127.0.0.1", "-p", &port, "ch1.live.example", "A", "+subnet=10.1.2.0/24", "+tries=1", "+time=2"])
        .output()
        .expect("dig runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("status: NOERROR"), "{text}");
    assert!(text.contains("flags: qr aa rd;") || text.contains("flags: qr aa rd "), "{text}");
    assert!(text.lines().any(|l| l.starts_with("ch1.live.example.") && l.contains("\tA\t") && l.ends_with("127.0.0.2")), "{text}");
    assert!(text.contains("CLIENT-SUBNET: 10.1.2.0/24/22"), "{text}");
    let out = Command::new("dig")
        .args(["@127.0.0.1", "-p", &port, "ch1.live.example", "AAAA", "+tcp", "+subnet=2001:db8:2::/56", "+short"])
        .output()
        .expect("dig runs");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2001:db8::b");
    let out = Command::new("dig").args(["@127.0.0.1", "-p", &port, "example.com", "A"]).output().expect("dig runs");
    assert!(String::from_utf8_lossy(&out.stdout).contains("status: REFUSED"));
}
