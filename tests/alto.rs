//! The instructor as an ALTO server for a third-party CDN (issue 10): the RFC 7285 read side
//! checked the way a stock client reads it (directory → resources by media type, field names,
//! vtag / dependent-vtags, error bodies), the LISTO selection and notification resources with
//! their bearer tokens, and the seed's figure-3 flow end to end on loopback: viewer → stand-in
//! CDN controller (`examples/cdn_controller.rs`, included here as a module) → ALTO selection →
//! notification and 302 → the node, already instructed with the controller's endpoint and
//! fetching the playlist → one origin request per segment for 100 viewers.
//! Real sockets on 127.0.0.1 only; every socket has a timeout, every wait a bound, every child
//! process a kill-on-drop guard.
#![cfg(all(feature = "driver", feature = "instructor"))]

#[allow(dead_code)]
#[path = "../examples/cdn_controller.rs"]
mod cdn_controller;

mod live;

use std::collections::BTreeSet;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use cdn_controller::{Controller, ControllerConfig};
use listo::instructor::{AltoServer, AltoServerConfig, Instructor, InstructorConfig, Topology};
use listo::origin::{media_path, OriginServer};
use listo::player::{http_request, run_player, PlayerConfig};
use serde_json::{json, Value};

use live::{dead_addr, lo, location, origin, wait_for, TestNode};

const TOKEN: &str = "c0ntr0ller-t0ken";

// ---------------------------------------------------------------------------------------------
// Harness: nodes, origin, instructor + ALTO server, a raw HTTP client
// ---------------------------------------------------------------------------------------------


fn alto_server(topo: &Value, cfg: InstructorConfig) -> (Arc<Instructor>, AltoServer) {
    let t = Topology::parse(topo.to_string().as_bytes(), None).expect("valid topology");
    let ins = Instructor::new(t, cfg);
    let mut ac = AltoServerConfig::new(lo());
    ac.tokens = vec!["another-token".into(), TOKEN.into()];
    let a = AltoServer::start(ac, ins.clone()).expect("ALTO server");
    (ins, a)
}

/// A topology for the read side: three PIDs, nodes at addresses nobody needs to reach.
fn static_topology() -> Value {
    json!({
        "network_map": {
            "meta": {"vtag": {"resource-id": "my-network-map", "tag": "da65eca2eb7a10ce8b059740b0b2e3f8eb1d4785"}},
            "network-map": {
                "pid-a": {"ipv4": ["10.1.0.0/16"]},
                "pid-b": {"ipv4": ["10.2.0.0/16"], "ipv6": ["2001:db8:2::/48"]},
                "pid-c": {"ipv4": ["10.3.0.0/16", "192.0.2.0/24"]}
            }
        },
        "nodes": {
            "pid-a": [{"listen": "127.0.0.2:8080", "control": "127.0.0.2:8081"}],
            "pid-b": [{"listen": "127.0.0.3:8080", "control": "127.0.0.3:8081"}]
        },
        "channels": {"ch0": {"path_prefix": "/live/ch0/", "endpoints": ["127.0.0.1:18080"]}}
    })
}

/// One request on a fresh connection: status, headers (lowercase names), body.
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }
}

fn send(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    s.set_write_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if method == "POST" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    s.write_all(&bytes).expect("write");
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let mut hs = [httparse::EMPTY_HEADER; 32];
    let mut r = httparse::Response::new(&mut hs);
    let n = match r.parse(&buf) {
        Ok(httparse::Status::Complete(n)) => n,
        other => panic!("malformed response {other:?}: {:?}", String::from_utf8_lossy(&buf)),
    };
    let headers: Vec<(String, String)> =
        r.headers.iter().map(|h| (h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value).to_string())).collect();
    let status = r.code.expect("status");
    let body = buf[n..].to_vec();
    if let Some(cl) = headers.iter().find(|(n, _)| n == "content-length").filter(|_| method != "HEAD") {
        assert_eq!(cl.1.parse::<usize>().expect("length"), body.len(), "Content-Length matches");
    }
    Resp { status, headers, body }
}

fn post(addr: SocketAddr, path: &str, content_type: &str, token: Option<&str>, body: &[u8]) -> Resp {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut hs = vec![("Content-Type", content_type)];
    if let Some(a) = &auth {
        hs.push(("Authorization", a.as_str()));
    }
    send(addr, "POST", path, &hs, body)
}

// ---------------------------------------------------------------------------------------------
// RFC 7285 shapes, as a stock client checks them
// ---------------------------------------------------------------------------------------------

fn is_resource_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-:@_.".contains(&b))
}

/// RFC 7285 §10.3: 1-64 US-ASCII characters 0x21-0x7E.
fn is_tag(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

fn check_vtag(v: &Value) -> (String, String) {
    let obj = v.as_object().expect("vtag object");
    let keys: BTreeSet<&str> = obj.keys().map(String::as_str).collect();
    assert_eq!(keys, BTreeSet::from(["resource-id", "tag"]), "{v}");
    let (rid, tag) = (v["resource-id"].as_str().expect("resource-id"), v["tag"].as_str().expect("tag"));
    assert!(is_resource_id(rid) && is_tag(tag), "{v}");
    (rid.into(), tag.into())
}

fn check_cost_type(v: &Value) {
    let mode = v["cost-mode"].as_str().expect("cost-mode");
    assert!(mode == "numerical" || mode == "ordinal", "{v}");
    assert!(v["cost-metric"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
}

/// RFC 7285 §9.2: the directory, and every resource's `uri`/`media-type`/`accepts`/`uses`.
fn check_directory(d: &Value) {
    let meta = &d["meta"];
    let cost_types = meta["cost-types"].as_object().expect("meta.cost-types");
    for ct in cost_types.values() {
        check_cost_type(ct);
    }
    let resources = d["resources"].as_object().expect("resources is an object keyed by resource id");
    let default_map = meta["default-alto-network-map"].as_str().expect("default-alto-network-map");
    assert_eq!(resources[default_map]["media-type"], "application/alto-networkmap+json");
    for (rid, r) in resources {
        assert!(is_resource_id(rid), "{rid}");
        let uri = r["uri"].as_str().expect("uri");
        assert!(uri.starts_with("http://"), "{uri}");
        let mt = r["media-type"].as_str().expect("media-type");
        assert!(mt.starts_with("application/alto-") && mt.ends_with("+json"), "{mt}");
        if let Some(acc) = r.get("accepts") {
            assert!(acc.as_str().is_some_and(|a| a.starts_with("application/alto-") && a.ends_with("+json")), "{acc}");
        }
        for u in r.get("uses").and_then(Value::as_array).into_iter().flatten() {
            assert!(resources.contains_key(u.as_str().expect("uses id")), "uses {u} is not a resource");
        }
        if let Some(names) = r["capabilities"].get("cost-type-names") {
            for n in names.as_array().expect("cost-type-names") {
                assert!(cost_types.contains_key(n.as_str().expect("name")), "{n} not in meta.cost-types");
            }
        }
    }
}

/// RFC 7285 §11.2.1.6: PID → {ipv4: [...], ipv6: [...]}, with the vtag.
fn check_network_map(m: &Value) -> ((String, String), Vec<String>) {
    let vtag = check_vtag(&m["meta"]["vtag"]);
    let map = m["network-map"].as_object().expect("network-map");
    for (pid, e) in map {
        assert!(is_resource_id(pid), "{pid}");
        for (family, list) in e.as_object().expect("PID entry") {
            assert!(family == "ipv4" || family == "ipv6", "{family}");
            for p in list.as_array().expect("prefix list") {
                let net: ipnet::IpNet = p.as_str().expect("prefix").parse().expect("CIDR");
                assert_eq!(matches!(net, ipnet::IpNet::V4(_)), family == "ipv4");
            }
        }
    }
    (vtag, map.keys().cloned().collect())
}

/// RFC 7285 §11.2.3.6: dependent-vtags, cost-type, and a full PID × PID cost map.
fn check_cost_map(c: &Value, vtag: &(String, String), pids: &[String]) {
    let deps = c["meta"]["dependent-vtags"].as_array().expect("dependent-vtags");
    assert_eq!(deps.len(), 1);
    assert_eq!(check_vtag(&deps[0]), *vtag);
    check_cost_type(&c["meta"]["cost-type"]);
    let map = c["cost-map"].as_object().expect("cost-map");
    for src in pids {
        let row = map[src].as_object().expect("row");
        for dst in pids {
            assert!(row[dst].as_f64().is_some_and(|x| x >= 0.0), "{src} → {dst}");
        }
    }
}

fn check_error(r: &Resp, status: u16, code: &str) -> Value {
    assert_eq!(r.status, status, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("content-type"), Some("application/alto-error+json"));
    let v = r.json();
    assert_eq!(v["meta"]["code"], code, "{v}");
    v
}

/// GETs a resource through its directory `uri`, checking the media type.
fn get_resource(dir: &Value, rid: &str) -> Value {
    let r = &dir["resources"][rid];
    let uri = r["uri"].as_str().expect("uri");
    let rest = uri.strip_prefix("http://").expect("http");
    let slash = rest.find('/').expect("path");
    let addr: SocketAddr = rest[..slash].parse().expect("host:port");
    let mt = r["media-type"].as_str().expect("media type");
    let resp = send(addr, "GET", &rest[slash..], &[("Accept", &format!("{mt},application/alto-error+json"))], b"");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-type"), Some(mt));
    resp.json()
}

#[test]
fn read_side_documents_have_rfc7285_shapes() {
    let (ins, alto) = alto_server(&static_topology(), InstructorConfig::default());
    let at = alto.local_addr();
    let r = send(at, "GET", "/alto", &[("Accept", "application/alto-directory+json,application/alto-error+json")], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/alto-directory+json"));
    let dir = r.json();
    check_directory(&dir);
    let net_id = dir["meta"]["default-alto-network-map"].as_str().expect("id").to_string();
    assert_eq!(net_id, "my-network-map", "the topology's resource id is kept");
    let by_type = |mt: &str| -> String {
        let rs = dir["resources"].as_object().expect("resources");
        rs.iter().find(|(_, r)| r["media-type"] == mt).map(|(k, _)| k.clone()).unwrap_or_else(|| panic!("no {mt} resource"))
    };
    let cost_id = by_type("application/alto-costmap+json");
    let ecs_id = by_type("application/alto-endpointcost+json");
    assert_eq!(dir["resources"][&ecs_id]["accepts"], "application/alto-endpointcostparams+json");
    assert_eq!(dir["resources"][&cost_id]["uses"], json!([net_id]));
    // The LISTO extension: two resources with their own media types.
    let sel = by_type("application/alto-listo-selection+json");
    let not = by_type("application/alto-listo-notification+json");
    assert_eq!(dir["resources"][&sel]["accepts"], "application/alto-listo-selectionparams+json");
    assert_eq!(dir["resources"][&not]["accepts"], "application/alto-listo-notificationparams+json");

    let nm = get_resource(&dir, &net_id);
    let (vtag, pids) = check_network_map(&nm);
    assert_eq!(vtag.0, net_id);
    assert_eq!(pids, ["default", "pid-a", "pid-b", "pid-c"]);
    assert_eq!(nm["network-map"]["pid-c"], json!({"ipv4": ["10.3.0.0/16", "192.0.2.0/24"]}));
    assert_eq!(nm["network-map"]["default"], json!({"ipv4": ["0.0.0.0/0"], "ipv6": ["::/0"]}));
    let cm = get_resource(&dir, &cost_id);
    check_cost_map(&cm, &vtag, &pids);
    assert_eq!(cm["meta"]["cost-type"], json!({"cost-mode": "numerical", "cost-metric": "routingcost"}));
    assert_eq!(cm["cost-map"]["pid-a"]["pid-a"], 1);
    assert_eq!(cm["cost-map"]["pid-a"]["pid-b"], 10);
    assert_eq!(cm["cost-map"]["pid-a"]["default"], 100);

    // HEAD: the head of GET, no body.
    let h = send(at, "HEAD", "/alto/networkmap", &[], b"");
    assert_eq!((h.status, h.header("content-type")), (200, Some("application/alto-networkmap+json")));
    assert!(h.body.is_empty());

    // Endpoint cost service.
    let ecs = "/alto/endpointcost";
    let ecs_mt = "application/alto-endpointcostparams+json";
    let q = json!({"cost-type": {"cost-mode": "numerical", "cost-metric": "routingcost"},
                   "endpoints": {"srcs": ["ipv4:10.1.0.7"], "dsts": ["ipv4:10.1.200.1", "ipv6:2001:db8:2::9", "ipv4:198.51.100.1"]}});
    let r = post(at, ecs, ecs_mt, None, q.to_string().as_bytes());
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/alto-endpointcost+json"));
    let v = r.json();
    assert_eq!(v["meta"]["cost-type"], q["cost-type"]);
    assert_eq!(v["endpoint-cost-map"], json!({"ipv4:10.1.0.7": {"ipv4:10.1.200.1": 1, "ipv6:2001:db8:2::9": 10, "ipv4:198.51.100.1": 100}}));
    // Without srcs: the client's address (127.0.0.1, the default PID).
    let r = post(at, ecs, ecs_mt, None, br#"{"cost-type": {"cost-mode": "ordinal", "cost-metric": "routingcost"}, "endpoints": {"dsts": ["ipv4:10.1.0.1", "ipv4:127.0.0.9"]}}"#);
    assert_eq!(r.json()["endpoint-cost-map"], json!({"ipv4:127.0.0.1": {"ipv4:10.1.0.1": 2, "ipv4:127.0.0.9": 1}}));

    // Bad requests: RFC 7285 error bodies.
    let e = check_error(&post(at, ecs, ecs_mt, None, b"{\"cost-type\": "), 400, "E_SYNTAX");
    assert!(e["meta"]["syntax-error"].is_string());
    let e = check_error(&post(at, ecs, ecs_mt, None, br#"{"cost-type": {"cost-mode": "numerical", "cost-metric": "routingcost"}}"#), 400, "E_MISSING_FIELD");
    assert_eq!(e["meta"]["field"], "endpoints");
    let e = check_error(&post(at, ecs, ecs_mt, None, br#"{"cost-type": "routingcost", "endpoints": {"dsts": ["ipv4:10.1.0.1"]}}"#), 400, "E_INVALID_FIELD_TYPE");
    assert_eq!(e["meta"]["field"], "cost-type");
    let e = check_error(
        &post(at, ecs, ecs_mt, None, br#"{"cost-type": {"cost-mode": "numerical", "cost-metric": "routingcost"}, "endpoints": {"dsts": ["ipv4:10.1.0.300"]}}"#),
        400,
        "E_INVALID_FIELD_VALUE",
    );
    assert_eq!((e["meta"]["field"].as_str(), e["meta"]["value"].as_str()), (Some("endpoints/dsts"), Some("ipv4:10.1.0.300")));
    check_error(&post(at, ecs, "application/json", None, q.to_string().as_bytes()), 415, "E_MEDIA_TYPE");
    check_error(&send(at, "GET", ecs, &[], b""), 405, "E_METHOD_NOT_ALLOWED");
    let r = send(at, "DELETE", "/alto/networkmap", &[], b"");
    check_error(&r, 405, "E_METHOD_NOT_ALLOWED");
    assert!(r.header("allow").is_some());
    check_error(&send(at, "GET", "/alto/nope", &[], b""), 404, "E_NOT_FOUND");
    check_error(&send(at, "GET", "/alto/networkmap", &[("Accept", "text/html")], b""), 406, "E_NOT_ACCEPTABLE");
    check_error(&post(at, ecs, ecs_mt, None, &vec![b' '; 100 * 1024]), 413, "E_TOO_LARGE");

    // A reload that changes the network map changes its tag, and the cost map follows.
    let mut moved = static_topology();
    moved["network_map"]["network-map"]["pid-c"] = json!({"ipv4": ["10.4.0.0/16"]});
    ins.set_topology(Topology::parse(moved.to_string().as_bytes(), None).expect("valid"));
    let (vtag2, _) = check_network_map(&get_resource(&dir, &net_id));
    assert_ne!(vtag2.1, vtag.1, "new content, new tag");
    check_cost_map(&get_resource(&dir, &cost_id), &vtag2, &pids);
    // Same content again: the first tag again.
    ins.set_topology(Topology::parse(static_topology().to_string().as_bytes(), None).expect("valid"));
    assert_eq!(check_network_map(&get_resource(&dir, &net_id)).0, vtag);
    let s = alto.stats();
    assert!(s.documents >= 6 && s.endpoint_costs == 2 && s.errors >= 10, "{s:?}");
    assert_eq!(ins.stats().posts, 0, "the read side instructs nobody");
    alto.shutdown();
    ins.stop();
}

// ---------------------------------------------------------------------------------------------
// LISTO selection and notification: tokens, bodies, dedup, pinning
// ---------------------------------------------------------------------------------------------

const SEL: &str = "/alto/listo/selection";
const SEL_MT: &str = "application/alto-listo-selectionparams+json";
const NOT: &str = "/alto/listo/notification";
const NOT_MT: &str = "application/alto-listo-notificationparams+json";

/// One node for 10.1/16; channel ch0's topology endpoint is dead (only the controller's choice
/// can work).
fn one_node_topology(a: &TestNode, dead: SocketAddr) -> Value {
    json!({
        "network_map": {"meta": {}, "network-map": {"pid-a": {"ipv4": ["10.1.0.0/16"]}, "pid-x": {"ipv4": ["10.9.0.0/16"]}}},
        "nodes": {"pid-a": [{"listen": a.viewers.to_string(), "control": a.control.to_string()}]},
        "channels": {"ch0": {"path_prefix": "/live/ch0/", "endpoints": [dead.to_string()]}}
    })
}

#[test]
fn listo_resources_need_a_token_and_a_valid_body_and_refusals_change_nothing() {
    let origin = origin(2);
    let a = TestNode::start();
    let (ins, alto) = alto_server(&one_node_topology(&a, dead_addr()), InstructorConfig::default());
    let at = alto.local_addr();
    let playlist = media_path(0, 0);
    let good = json!({"channel": "ch0", "listo-node": a.viewers.to_string(), "cdn-endpoint": origin.local_addr().to_string(), "playlist": playlist});
    let good = good.to_string();

    // No token, a wrong one (same length, other length, empty), another scheme: 401, nothing done.
    let same_len: String = TOKEN.chars().rev().collect();
    for token in [None, Some(same_len.as_str()), Some("c0ntr0ller"), Some("c0ntr0ller-t0ken-and-more"), Some("")] {
        for (path, mt, body) in [(NOT, NOT_MT, good.as_bytes()), (SEL, SEL_MT, &br#"{"endpoint": "ipv4:10.1.0.1", "channel": "ch0"}"#[..])] {
            let r = post(at, path, mt, token, body);
            check_error(&r, 401, "E_UNAUTHORIZED");
            assert!(r.header("www-authenticate").is_some_and(|w| w.starts_with("Bearer")), "{:?}", r.headers);
        }
    }
    let r = send(at, "POST", NOT, &[("Content-Type", NOT_MT), ("Authorization", &format!("Basic {TOKEN}"))], good.as_bytes());
    check_error(&r, 401, "E_UNAUTHORIZED");
    // With the token but a malformed or invalid body: the right ALTO error, nothing done.
    let bad: Vec<(&[u8], &str, Option<&str>)> = vec![
        (b"{\"channel\": \"ch0\"", "E_SYNTAX", None),
        (b"[1, 2]", "E_SYNTAX", None),
        (br#"{"listo-node": "127.0.0.1:1", "cdn-endpoint": "127.0.0.1:2"}"#, "E_MISSING_FIELD", Some("channel")),
        (br#"{"channel": "ch0", "cdn-endpoint": "127.0.0.1:2"}"#, "E_MISSING_FIELD", Some("listo-node")),
        (br#"{"channel": 7, "listo-node": "127.0.0.1:1", "cdn-endpoint": "127.0.0.1:2"}"#, "E_INVALID_FIELD_TYPE", Some("channel")),
        (br#"{"channel": "ch0", "listo-node": "127.0.0.1:1", "cdn-endpoint": "127.0.0.1:2"}"#, "E_INVALID_FIELD_VALUE", Some("listo-node")),
        (br#"{"channel": "new", "listo-node": "LISTO", "cdn-endpoint": "127.0.0.1:2"}"#, "E_INVALID_FIELD_VALUE", Some("listo-node")),
    ];
    for (body, code, field) in &bad {
        let e = check_error(&post(at, NOT, NOT_MT, Some(TOKEN), body), 400, code);
        if let Some(f) = field {
            assert_eq!(e["meta"]["field"], *f, "{e}");
        }
    }
    let node = a.viewers.to_string();
    for (body, field) in [
        (json!({"channel": "ch0", "listo-node": node, "cdn-endpoint": "nowhere"}), "cdn-endpoint"),
        (json!({"channel": "ch0", "listo-node": node, "cdn-endpoint": "127.0.0.1:80", "playlist": "/live/ch1/index.m3u8"}), "playlist"),
        (json!({"channel": "ch0", "listo-node": node, "cdn-endpoint": "127.0.0.1:80", "playlist": "/live/ch0/a\r\nX: y"}), "playlist"),
        (json!({"channel": "bad name", "listo-node": node, "cdn-endpoint": "127.0.0.1:80"}), "channel"),
    ] {
        let e = check_error(&post(at, NOT, NOT_MT, Some(TOKEN), body.to_string().as_bytes()), 400, "E_INVALID_FIELD_VALUE");
        assert_eq!(e["meta"]["field"], field);
    }
    let e = check_error(&post(at, NOT, NOT_MT, Some(TOKEN), br#"{"channel": "news", "listo-node": "x", "cdn-endpoint": "127.0.0.1:80"}"#), 400, "E_INVALID_FIELD_VALUE");
    assert_eq!(e["meta"]["field"], "listo-node");
    check_error(&post(at, NOT, "application/json", Some(TOKEN), good.as_bytes()), 415, "E_MEDIA_TYPE");
    check_error(&post(at, SEL, SEL_MT, Some(TOKEN), br#"{"endpoint": "10.1.0.1", "channel": "ch0"}"#), 400, "E_INVALID_FIELD_VALUE");
    thread::sleep(Duration::from_millis(200));
    assert!(a.channels().is_empty(), "no refused request instructed the node");
    assert_eq!(ins.stats().posts, 0);
    assert_eq!(origin.counts().requests(), 0);
    assert!(alto.stats().unauthorized >= 11);

    // Selection with the token: the node of the viewer's subnet, or "none".
    let r = post(at, SEL, SEL_MT, Some(TOKEN), br#"{"endpoint": "ipv4:10.1.77.1", "channel": "ch0"}"#);
    assert_eq!((r.status, r.header("content-type")), (200, Some("application/alto-listo-selection+json")));
    let v = r.json();
    assert_eq!(v["selection"]["listo-node"], a.viewers.to_string());
    assert_eq!(v["selection"]["url"], format!("http://{}", a.viewers));
    check_vtag(&v["meta"]["dependent-vtags"][0]);
    for who in ["ipv4:10.9.0.1", "ipv4:192.0.2.1", "ipv6:2001:db8::1"] {
        let r = post(at, SEL, SEL_MT, Some(TOKEN), json!({"endpoint": who, "channel": "ch0"}).to_string().as_bytes());
        assert_eq!(r.json()["selection"]["listo-node"], "none", "{who}");
    }

    // The notification instructs the node with the controller's endpoint and the playlist.
    let r = post(at, NOT, NOT_MT, Some(TOKEN), good.as_bytes());
    assert_eq!((r.status, r.header("content-type")), (200, Some("application/alto-listo-notification+json")));
    let v = r.json();
    assert_eq!(v["notification"]["status"], "ready", "{v}");
    let ch = a.channel("ch0").expect("instructed when the answer arrives");
    assert_eq!(ch["endpoints"], json!([origin.local_addr().to_string()]));
    assert_eq!(ch["prefetch"], json!([playlist]));
    wait_for("the node's playlist prefetch", Duration::from_secs(2), || origin.counts().path(&playlist) == 1);
    // Deduplicated per (node, channel, endpoint).
    for _ in 0..5 {
        assert_eq!(post(at, NOT, NOT_MT, Some(TOKEN), good.as_bytes()).json()["notification"]["status"], "ready");
    }
    assert_eq!(ins.stats().posts, 1);
    // Another endpoint for the same node and channel: a new instruction.
    let other = origin2_addr();
    let body = json!({"channel": "ch0", "listo-node": a.viewers.to_string(), "cdn-endpoint": other.local_addr().to_string()});
    assert_eq!(post(at, NOT, NOT_MT, Some(TOKEN), body.to_string().as_bytes()).json()["notification"]["status"], "ready");
    assert_eq!(ins.stats().posts, 2);
    assert_eq!(a.channel("ch0").expect("ch0")["endpoints"], json!([other.local_addr().to_string()]));
    // A channel the topology does not list, with its path prefix.
    let body = json!({"channel": "news", "path-prefix": "/live/ch1/", "listo-node": a.viewers.to_string(),
                      "cdn-endpoint": origin.local_addr().to_string(), "playlist": media_path(1, 0)});
    assert_eq!(post(at, NOT, NOT_MT, Some(TOKEN), body.to_string().as_bytes()).json()["notification"]["status"], "ready");
    assert_eq!(a.channel("news").expect("news")["path_prefix"], "/live/ch1/");
    let s = alto.stats();
    assert_eq!((s.selections_node, s.selections_none, s.notifications), (1, 3, 8), "{s:?}");
    alto.shutdown();
    ins.stop();
}

fn origin2_addr() -> OriginServer {
    origin(2)
}

#[test]
fn notified_instructions_are_renewed_as_notified() {
    let origin = origin(2);
    let a = TestNode::start();
    let (ins, alto) = alto_server(&one_node_topology(&a, dead_addr()), InstructorConfig { ttl_s: 2, ..InstructorConfig::default() });
    let body = json!({"channel": "ch0", "listo-node": a.viewers.to_string(), "cdn-endpoint": origin.local_addr().to_string()});
    let r = post(alto.local_addr(), NOT, NOT_MT, Some(TOKEN), body.to_string().as_bytes());
    assert_eq!(r.json()["notification"]["status"], "ready");
    assert_eq!(a.channel("ch0").expect("ch0")["ttl_s"], 2);
    // Past the TTL: renewed (not expired), and with the controller's endpoint, not the
    // topology's (dead) one.
    thread::sleep(Duration::from_millis(2700));
    assert!(ins.stats().renewals >= 1, "{:?}", ins.stats());
    let ch = a.channel("ch0").expect("renewed before it expired");
    assert_eq!(ch["endpoints"], json!([origin.local_addr().to_string()]));
    assert_eq!(ins.stats().post_failures, 0);
    alto.shutdown();
    ins.stop();
}

// ---------------------------------------------------------------------------------------------
// Figure 3 end to end
// ---------------------------------------------------------------------------------------------

/// Viewer → stand-in CDN controller → ALTO selection → notification + 302 → node (already
/// instructed with the controller's endpoint, its playlist fetched) → one origin request per
/// segment for 100 viewers in two subnets behind a regional node.
#[test]
fn figure3_flow_end_to_end_one_origin_request_per_segment() {
    const VIEWERS: usize = 100;
    let origin = origin(1);
    let regional = TestNode::start();
    let (a, b) = (TestNode::start(), TestNode::start());
    // The topology's own endpoint for ch0 is dead: only the controller's choice can serve.
    let topo = json!({
        "network_map": {"meta": {"vtag": {"resource-id": "fig3-map", "tag": "1"}}, "network-map": {
            "pid-a": {"ipv4": ["10.1.0.0/16"]},
            "pid-b": {"ipv4": ["10.2.0.0/16"]},
            "pid-r": {"ipv4": ["10.200.0.0/16"]}
        }},
        "nodes": {
            "pid-a": [{"listen": a.viewers.to_string(), "control": a.control.to_string()}],
            "pid-b": [{"listen": b.viewers.to_string(), "control": b.control.to_string()}],
            "pid-r": [{"listen": regional.viewers.to_string(), "control": regional.control.to_string()}]
        },
        "channels": {"ch0": {"path_prefix": "/live/ch0/", "endpoints": [dead_addr().to_string()]}},
        "parents": {a.viewers.to_string(): regional.viewers.to_string(), b.viewers.to_string(): regional.viewers.to_string()}
    });
    let (ins, alto) = alto_server(&topo, InstructorConfig::default());
    let controller = Controller::start(ControllerConfig {
        listen: lo(),
        alto: format!("http://{}/alto", alto.local_addr()),
        token: TOKEN.into(),
        endpoints: vec![origin.local_addr()],
        channels: vec![("ch0".into(), "/live/ch0/".into())],
        trusted_proxies: vec!["127.0.0.1/32".parse().expect("net")],
        timeout: Duration::from_secs(5),
    })
    .expect("controller starts");
    let c = controller.local_addr();
    let playlist = media_path(0, 0);

    // The first viewer of subnet A.
    let t = Instant::now();
    let r = http_request(c, "GET", &playlist, &[("X-Forwarded-For", "10.1.2.3")]).expect("controller");
    let first_302 = t.elapsed();
    let (to, path) = location(&r);
    assert_eq!((to, path.as_str()), (a.viewers, playlist.as_str()), "steered by subnet");
    // When the 302 is in the viewer's hands the node knows the channel (from the regional node,
    // which has the controller's endpoint) and has started fetching the playlist.
    let ch = a.channel("ch0").expect("node A instructed before the 302 arrived");
    assert_eq!(ch["endpoints"], json!([regional.viewers.to_string()]));
    assert_eq!(ch["prefetch"], json!([playlist]));
    let rc = regional.channel("ch0").expect("regional node instructed");
    assert_eq!(rc["endpoints"], json!([origin.local_addr().to_string()]), "the controller's CDN endpoint");
    wait_for("the prefetch to reach the origin", Duration::from_secs(2), || origin.counts().path(&playlist) == 1);
    let follow = http_request(to, "GET", &path, &[]).expect("follow-up");
    assert_eq!(follow.status, 200);
    assert!(follow.body.starts_with(b"#EXTM3U"));
    assert_eq!(origin.counts().path(&playlist), 1, "the viewer got the prefetched copy");
    assert!(b.channels().is_empty(), "node B not involved yet");

    // 100 viewers, half per subnet, all at once.
    let started = Instant::now();
    let handles: Vec<_> = (0..VIEWERS)
        .map(|v| {
            let playlist = playlist.clone();
            thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || {
                    let subnet = v % 2;
                    let client = format!("10.{}.{}.{}", subnet + 1, v / 200, v % 200 + 1);
                    let r = http_request(c, "GET", &playlist, &[("X-Forwarded-For", client.as_str())]).expect("controller answers");
                    let (node, path) = location(&r);
                    (subnet, node, run_player(PlayerConfig::new(node, path, Duration::from_secs(4))))
                })
                .expect("spawn viewer")
        })
        .collect();
    let mut segments = 0;
    for h in handles {
        let (subnet, node, report) = h.join().expect("viewer thread");
        assert_eq!(node, if subnet == 0 { a.viewers } else { b.viewers }, "steered to its subnet's node");
        assert_eq!(report.errors, 0, "{report:?}");
        assert!(report.segments >= 2, "{report:?}");
        segments += report.segments;
    }
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(15), "took {elapsed:?}");
    assert_eq!(b.channel("ch0").expect("node B instructed")["endpoints"], json!([regional.viewers.to_string()]));
    let counts = origin.counts();
    let seg_paths: Vec<(&String, &u64)> = counts.per_path.iter().filter(|(p, _)| p.ends_with(".ts")).collect();
    assert!(seg_paths.len() >= 3, "{}", counts.to_json());
    for (p, n) in &seg_paths {
        assert_eq!(**n, 1, "origin served {p} {n} times: {}", counts.to_json());
    }
    assert_eq!(counts.segment_requests, seg_paths.len() as u64);
    let st = controller.stats();
    assert_eq!(st.to_node.load(Ordering::Relaxed), VIEWERS as u64 + 1);
    assert_eq!(st.to_cdn.load(Ordering::Relaxed), 0);
    let is = ins.stats();
    assert_eq!(is.post_failures, 0);
    assert_eq!(is.posts, 3, "regional, A and B, once each: {is:?}");
    let s = alto.stats();
    assert_eq!(s.selections_node, VIEWERS as u64 + 1);
    assert!(s.notifications >= 2, "{s:?}");
    eprintln!(
        "figure 3: first 302 in {first_302:?}; {VIEWERS} viewers got {segments} segments in {elapsed:?}; origin: {} segment requests for {} distinct, {} playlist requests; {} instructions, {} notifications ({} with the 302 waiting)",
        counts.segment_requests,
        seg_paths.len(),
        counts.playlist_requests,
        is.posts,
        st.notifications.load(Ordering::Relaxed),
        st.waited.load(Ordering::Relaxed)
    );
    drop(controller);
    alto.shutdown();
    ins.stop();
}

/// Viewers outside every subnet with a node are sent by the controller to its CDN endpoint.
#[test]
fn figure3_viewer_without_a_node_goes_to_the_cdn() {
    let origin = origin(2);
    let a = TestNode::start();
    let (ins, alto) = alto_server(&one_node_topology(&a, dead_addr()), InstructorConfig::default());
    let controller = Controller::start(ControllerConfig {
        listen: lo(),
        alto: format!("http://{}/alto", alto.local_addr()),
        token: TOKEN.into(),
        endpoints: vec![origin.local_addr()],
        channels: vec![("ch0".into(), "/live/ch0/".into())],
        trusted_proxies: vec!["127.0.0.1/32".parse().expect("net")],
        timeout: Duration::from_secs(5),
    })
    .expect("controller");
    let r = http_request(controller.local_addr(), "GET", &media_path(0, 0), &[("X-Forwarded-For", "192.0.2.1")]).expect("answer");
    assert_eq!(location(&r).0, origin.local_addr());
    let r = http_request(controller.local_addr(), "GET", "/vod/x.m3u8", &[]).expect("answer");
    assert_eq!(r.status, 404);
    assert!(a.channels().is_empty());
    assert_eq!(ins.stats().posts, 0);
    // A controller with a wrong token is refused by the ALTO server: its viewers go to the CDN.
    let wrong = Controller::start(ControllerConfig {
        listen: lo(),
        alto: format!("http://{}/alto", alto.local_addr()),
        token: "wrong-token".into(),
        endpoints: vec![origin.local_addr()],
        channels: vec![("ch0".into(), "/live/ch0/".into())],
        trusted_proxies: vec!["127.0.0.1/32".parse().expect("net")],
        timeout: Duration::from_secs(5),
    })
    .expect("controller");
    let r = http_request(wrong.local_addr(), "GET", &media_path(0, 0), &[("X-Forwarded-For", "10.1.0.1")]).expect("answer");
    assert_eq!(location(&r).0, origin.local_addr());
    assert!(a.channels().is_empty());
    assert!(alto.stats().unauthorized >= 1);
    drop((controller, wrong));
    alto.shutdown();
    ins.stop();
}

// ---------------------------------------------------------------------------------------------
// The CLI
// ---------------------------------------------------------------------------------------------

const LISTO: &str = env!("CARGO_BIN_EXE_listo");

/// A child killed (by its own pid) if the test leaves it running.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

#[test]
fn cli_instructor_alto_serves_refuses_and_stops() {
    use std::io::BufRead;
    let dir = std::env::temp_dir().join(format!("listo-alto-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("topology.json");
    std::fs::write(&file, static_topology().to_string()).expect("write");
    let f = file.to_str().expect("utf-8 path");
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, format!("# controllers\n{TOKEN}\n\nsecond-token\n")).expect("write");
    // Usage errors.
    let o = std::process::Command::new(LISTO).args(["instructor", "--topology", f]).output().expect("run");
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--listen ADDR is required"));
    let o = std::process::Command::new(LISTO).args(["instructor", "--listen", "127.0.0.1:0", "--topology", f, "--client-token", "x"]).output().expect("run");
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("need --alto"));
    let o = std::process::Command::new(LISTO).args(["instructor", "--alto", "127.0.0.1:0", "--topology", f, "--client-token", "a b"]).output().expect("run");
    assert_eq!(o.status.code(), Some(2));

    let mut c = std::process::Command::new(LISTO)
        .args(["instructor", "--alto", "127.0.0.1:0", "--topology", f, "--client-token-file", tokens.to_str().expect("path")])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn listo");
    let err = c.stderr.take().expect("stderr");
    let child = Child(c);
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        for line in io::BufReader::new(err).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let line_with = |needle: &str| -> String {
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            match rx.recv_timeout(end.saturating_duration_since(Instant::now())) {
                Ok(l) if l.contains(needle) => return l,
                Ok(_) => {}
                Err(_) => panic!("no stderr line containing '{needle}'"),
            }
        }
    };
    let line = line_with("ALTO server on ");
    let at: SocketAddr = line.split("ALTO server on ").nth(1).and_then(|s| s.split(' ').next()).expect("addr").parse().expect("address");
    let r = send(at, "GET", "/alto", &[], b"");
    assert_eq!(r.status, 200);
    check_directory(&r.json());
    let sel = br#"{"endpoint": "ipv4:10.2.0.1", "channel": "ch0"}"#;
    assert_eq!(post(at, SEL, SEL_MT, Some("second-token"), sel).json()["selection"]["listo-node"], "127.0.0.3:8080");
    check_error(&post(at, SEL, SEL_MT, Some("# controllers"), sel), 401, "E_UNAUTHORIZED");
    // SAFETY: kill(2) on the pid of a child this test spawned and has not reaped.
    assert_eq!(unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) }, 0);
    let l = line_with("stopped");
    assert!(l.contains("1 selections") && l.contains("1 unauthorized"), "{l}");
    let mut child = child;
    let end = Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Ok(Some(s)) = child.0.try_wait() {
            break s.code();
        }
        assert!(Instant::now() < end, "listo did not stop");
        thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(code, Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}
