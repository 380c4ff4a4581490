//! Steering viewers (issue 6): the topology (ALTO maps, validation, longest-prefix match against
//! a brute-force scan), the HTTP mediator on real loopback sockets in front of real nodes
//! (`Driver`) and the synthetic origin — 302 by client subnet, the node instructed and its
//! playlist fetched before the viewer's follow-up (claim 9), header-injection attempts refused —
//! and a two-level hierarchy whose origin sees exactly one request per distinct segment.
//! Every socket has a timeout and every wait a bound.
#![cfg(all(feature = "driver", feature = "instructor"))]

mod live;

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use listo::instructor::{HttpMediator, HttpMediatorConfig, Instructor, InstructorConfig, PrefixTable, Route, Topology};
use listo::origin::media_path;
use listo::player::{http_request, run_player, HttpResponse, PlayerConfig};
use proptest::prelude::*;
use serde_json::{json, Value};

use live::{lo, location, origin, wait_for, TestNode};

/// The heavy hierarchy test runs alone (two cores).
static EXCLUSIVE: Mutex<()> = Mutex::new(());

fn exclusive() -> MutexGuard<'static, ()> {
    EXCLUSIVE.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------------
// Longest-prefix match
// ---------------------------------------------------------------------------------------------

fn brute(prefixes: &BTreeMap<IpNet, usize>, ip: IpAddr) -> Option<(&IpNet, &usize)> {
    prefixes.iter().filter(|(p, _)| p.contains(&ip)).max_by_key(|(p, _)| p.prefix_len())
}

fn v4_net() -> impl Strategy<Value = IpNet> {
    // Few distinct high bits, so prefixes nest and overlap often.
    (0u32..4, any::<u32>(), 0u8..=32).prop_map(|(hi, lo, len)| {
        let addr = (hi << 30) | (lo >> 2);
        IpNet::V4(Ipv4Net::new(addr.into(), len).expect("len").trunc())
    })
}

fn v6_net() -> impl Strategy<Value = IpNet> {
    (0u128..4, any::<u128>(), 0u8..=128).prop_map(|(hi, lo, len)| {
        let addr = (hi << 126) | (lo >> 2);
        IpNet::V6(Ipv6Net::new(addr.into(), len).expect("len").trunc())
    })
}

fn v4_addr() -> impl Strategy<Value = IpAddr> {
    (0u32..4, any::<u32>()).prop_map(|(hi, lo)| IpAddr::from(std::net::Ipv4Addr::from((hi << 30) | (lo >> 2))))
}

fn v6_addr() -> impl Strategy<Value = IpAddr> {
    (0u128..4, any::<u128>()).prop_map(|(hi, lo)| IpAddr::from(std::net::Ipv6Addr::from((hi << 126) | (lo >> 2))))
}

fn check_lpm(nets: Vec<IpNet>, addrs: Vec<IpAddr>) -> Result<(), TestCaseError> {
    let mut table = PrefixTable::new();
    let mut model = BTreeMap::new();
    for (i, n) in nets.iter().enumerate() {
        table.insert(*n, i);
        model.insert(*n, i);
    }
    prop_assert_eq!(table.len(), model.len());
    for ip in addrs {
        let got = table.lookup(ip).map(|(p, v)| (p, *v));
        let want = brute(&model, ip).map(|(p, v)| (*p, *v));
        prop_assert_eq!(got, want, "lookup {}", ip);
    }
    Ok(())
}

/// Addresses inside `net` sharing its first `len` bits (random low bits).
fn inside(net: &IpNet, len: u8, seed: u128) -> IpAddr {
    match net.addr() {
        IpAddr::V4(a) => {
            let keep = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) };
            IpAddr::from(std::net::Ipv4Addr::from((u32::from(a) & keep) | (seed as u32 & !keep)))
        }
        IpAddr::V6(a) => {
            let keep = if len == 0 { 0 } else { u128::MAX << (128 - u32::from(len)) };
            IpAddr::from(std::net::Ipv6Addr::from((u128::from(a) & keep) | (seed & !keep)))
        }
    }
}

fn check_scope(nets: Vec<IpNet>, source: IpNet, seeds: Vec<u128>) -> Result<(), TestCaseError> {
    let mut table = PrefixTable::new();
    let mut model = BTreeMap::new();
    for (i, n) in nets.iter().enumerate() {
        table.insert(*n, i);
        model.insert(*n, i);
    }
    let matched = table.lookup_net(&source).map(|(p, _)| p);
    let want = model.iter().filter(|(p, _)| p.contains(&source)).max_by_key(|(p, _)| p.prefix_len()).map(|(p, _)| *p);
    prop_assert_eq!(matched, want);
    let m_len = matched.map_or(0, |p| p.prefix_len());
    let scope = table.scope(&source);
    prop_assert!(scope >= m_len && scope <= source.max_prefix_len());
    // A stored prefix longer than the source contains the source's own address: no answer
    // holds for the whole source; the scope says "ask with the full address".
    if brute(&model, source.addr()).map_or(0, |(p, _)| p.prefix_len()) > m_len {
        prop_assert_eq!(scope, source.max_prefix_len());
        return Ok(());
    }
    // Sound: every address sharing the first `scope` bits has the same longest match.
    for s in seeds {
        let y = inside(&source, scope, s);
        let got = brute(&model, y).map(|(p, _)| *p);
        prop_assert_eq!(got, matched, "scope {} of {} wrong at {}", scope, source, y);
    }
    // Minimal: one bit shorter, some longer prefix overlaps.
    if scope > m_len {
        let wider = IpNet::new(source.addr(), scope - 1).expect("len").trunc();
        let overlapping = model.keys().any(|p| p.prefix_len() > m_len && (wider.contains(p) || p.contains(&wider)));
        prop_assert!(overlapping, "scope {} of {} is not minimal", scope, source);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn lpm_v4_matches_brute_force(nets in prop::collection::vec(v4_net(), 0..80), addrs in prop::collection::vec(v4_addr(), 1..64)) {
        check_lpm(nets, addrs)?;
    }

    #[test]
    fn lpm_v6_matches_brute_force(nets in prop::collection::vec(v6_net(), 0..80), addrs in prop::collection::vec(v6_addr(), 1..64)) {
        check_lpm(nets, addrs)?;
    }

    #[test]
    fn lpm_mixed_families(n4 in prop::collection::vec(v4_net(), 0..30), n6 in prop::collection::vec(v6_net(), 0..30),
                          a4 in prop::collection::vec(v4_addr(), 1..20), a6 in prop::collection::vec(v6_addr(), 1..20)) {
        let mut nets = n4; nets.extend(n6);
        let mut addrs = a4; addrs.extend(a6);
        check_lpm(nets, addrs)?;
    }

    #[test]
    fn ecs_scope_is_sound_and_minimal_v4(nets in prop::collection::vec(v4_net(), 0..40), source in v4_net(),
                                          seeds in prop::collection::vec(any::<u128>(), 16)) {
        check_scope(nets, source, seeds)?;
    }

    #[test]
    fn ecs_scope_is_sound_and_minimal_v6(nets in prop::collection::vec(v6_net(), 0..40), source in v6_net(),
                                          seeds in prop::collection::vec(any::<u128>(), 16)) {
        check_scope(nets, source, seeds)?;
    }
}

#[test]
fn ipv4_mapped_ipv6_clients_are_looked_up_as_ipv4() {
    let mut t = PrefixTable::new();
    t.insert("10.1.0.0/16".parse().expect("net"), 1);
    let mapped: IpAddr = "::ffff:10.1.2.3".parse().expect("ip");
    assert_eq!(t.lookup(mapped).map(|(p, v)| (p.to_string(), *v)), Some(("10.1.0.0/16".to_string(), 1)));
}

// ---------------------------------------------------------------------------------------------
// Topology: parsing, validation, choices
// ---------------------------------------------------------------------------------------------

fn base_topology() -> Value {
    json!({
        "network_map": {
            "meta": {"vtag": {"resource-id": "my-network-map", "tag": "da65eca2eb7a10ce8b059740b0b2e3f8eb1d4785"}},
            "network-map": {
                "pid-a": {"ipv4": ["10.1.0.0/16"]},
                "pid-b": {"ipv4": ["10.2.0.0/16"], "ipv6": ["2001:db8:2::/48"]},
                "pid-default": {"ipv4": ["0.0.0.0/0"]}
            }
        },
        "cost_map": {
            "meta": {
                "dependent-vtags": [{"resource-id": "my-network-map", "tag": "da65eca2eb7a10ce8b059740b0b2e3f8eb1d4785"}],
                "cost-type": {"cost-mode": "numerical", "cost-metric": "routingcost"}
            },
            "cost-map": {"pid-a": {"pid-cdn1": 5, "pid-cdn2": 1}, "pid-b": {"pid-cdn1": 1, "pid-cdn2": 9}}
        },
        "nodes": {
            "pid-a": [{"listen": "127.0.0.2:8080", "control": "127.0.0.2:8081"}],
            "pid-b": [{"listen": "127.0.0.3:8080", "control": "127.0.0.3:8081", "weight": 2}]
        },
        "channels": {
            "ch1": {"path_prefix": "/live/ch1/", "endpoints": [
                {"address": "127.0.0.1:18080", "pid": "pid-cdn1"},
                {"address": "127.0.0.1:18081", "pid": "pid-cdn2"}]},
            "ch2": {"path_prefix": "/live/ch2/", "endpoints": ["127.0.0.1:18080"], "host": "cdn.example"}
        }
    })
}

fn parse(v: &Value) -> Result<Topology, String> {
    Topology::parse(v.to_string().as_bytes(), None).map_err(|e| e.to_string())
}

fn sa(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

#[test]
fn topology_picks_pid_node_and_cheapest_endpoint() {
    let t = parse(&base_topology()).expect("valid");
    assert_eq!(t.pids(), ["pid-a", "pid-b", "pid-default"]);
    assert_eq!(t.vtag().map(|v| v.resource_id.as_str()), Some("my-network-map"));
    let ch1 = t.channel("ch1").expect("ch1").clone();
    assert_eq!(t.channel_for_path("/live/ch1/v0/index.m3u8").map(|c| c.name.as_str()), Some("ch1"));
    assert!(t.channel_for_path("/live/ch3/x").is_none());
    let client = |s: &str| IpNet::from(s.parse::<IpAddr>().expect("ip"));
    // pid-a: cdn2 is cheaper.
    match t.route(&client("10.1.2.3"), &ch1) {
        Route::Node { listen, steps } => {
            assert_eq!(listen, sa("127.0.0.2:8080"));
            assert_eq!(steps.len(), 1);
            assert_eq!(steps[0].control, sa("127.0.0.2:8081"));
            assert_eq!(steps[0].instruction.endpoints, vec![sa("127.0.0.1:18081"), sa("127.0.0.1:18080")]);
        }
        other => panic!("{other:?}"),
    }
    // pid-b (IPv6 client): cdn1 is cheaper.
    match t.route(&client("2001:db8:2::7"), &ch1) {
        Route::Node { listen, steps } => {
            assert_eq!(listen, sa("127.0.0.3:8080"));
            assert_eq!(steps[0].instruction.endpoints, vec![sa("127.0.0.1:18080"), sa("127.0.0.1:18081")]);
        }
        other => panic!("{other:?}"),
    }
    // The 0.0.0.0/0 PID has no node: the CDN, first endpoint (no cost row for pid-default).
    assert_eq!(t.route(&client("192.0.2.1"), &ch1), Route::Cdn { endpoint: sa("127.0.0.1:18080") });
    // No IPv6 default: an IPv6 client outside every PID goes to the CDN too.
    assert_eq!(t.route(&client("2001:db8:9::1"), &ch1), Route::Cdn { endpoint: sa("127.0.0.1:18080") });
    // The channel's Host rides along.
    let ch2 = t.channel("ch2").expect("ch2").clone();
    match t.route(&client("10.1.0.1"), &ch2) {
        Route::Node { steps, .. } => assert_eq!(steps[0].instruction.host.as_deref(), Some("cdn.example")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn weighted_rendezvous_spreads_channels_and_is_stable() {
    let mut v = base_topology();
    v["nodes"]["pid-a"] = json!([
        {"listen": "127.0.0.2:8080", "control": "127.0.0.2:8081", "weight": 1},
        {"listen": "127.0.0.4:8080", "control": "127.0.0.4:8081", "weight": 3}
    ]);
    let t = parse(&v).expect("valid");
    let mut count: BTreeMap<SocketAddr, u32> = BTreeMap::new();
    for i in 0..2000 {
        let n = t.node_in_pid("pid-a", &format!("channel{i}")).expect("node");
        assert_eq!(t.node_in_pid("pid-a", &format!("channel{i}")).map(|m| m.listen), Some(n.listen), "stable");
        *count.entry(n.listen).or_default() += 1;
    }
    let heavy = count[&sa("127.0.0.4:8080")];
    assert!((1300..1700).contains(&heavy), "weight 3 of 4 should get ~1500 of 2000, got {count:?}");
}

#[test]
fn topology_validation_names_the_fault() {
    type Mutation = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(Mutation, &str)> = vec![
        (Box::new(|v| v["network_map"]["network-map"]["pid-a"]["ipv4"] = json!(["10.1.0.0/33"])), "prefix '10.1.0.0/33'"),
        (Box::new(|v| v["network_map"]["network-map"]["pid-a"]["ipv4"] = json!(["10.1.0.0"])), "not a CIDR prefix"),
        (Box::new(|v| v["network_map"]["network-map"]["pid-a"]["ipv4"] = json!(["10.1.2.3/16"])), "did you mean 10.1.0.0/16"),
        (Box::new(|v| v["network_map"]["network-map"]["pid-a"]["ipv4"] = json!(["2001:db8::/32"])), "not an IPv4 CIDR"),
        (Box::new(|v| v["network_map"]["network-map"]["pid-a"]["ipv4"] = json!(["10.2.0.0/16"])), "in both PID"),
        (Box::new(|v| v["network_map"]["network-map"]["bad pid"] = json!({})), "not a valid ALTO PID"),
        (Box::new(|v| v["nodes"]["pid-x"] = json!([{"listen": "127.0.0.9:1", "control": "127.0.0.9:2"}])), "unknown PID 'pid-x'"),
        (Box::new(|v| v["nodes"]["pid-a"][0]["listen"] = json!("nowhere")), "nodes.pid-a[0].listen"),
        (Box::new(|v| v["nodes"]["pid-a"][0]["listen"] = json!("0.0.0.0:8080")), "not an address clients can reach"),
        (Box::new(|v| v["nodes"]["pid-a"][0]["wieght"] = json!(2)), "unknown key 'wieght'"),
        (Box::new(|v| v["nodes"]["pid-b"][0]["listen"] = json!("127.0.0.2:8080")), "listed twice"),
        (Box::new(|v| v["channels"]["ch1"]["path_prefix"] = json!("live/ch1/")), "path_prefix must start with '/'"),
        (Box::new(|v| v["channels"]["ch2"]["path_prefix"] = json!("/live/ch1/")), "already channel"),
        (Box::new(|v| v["channels"]["ch1"]["endpoints"] = json!([])), "non-empty array"),
        (Box::new(|v| v["channels"]["CH1"] = json!({"path_prefix": "/x/", "endpoints": ["127.0.0.1:1"]})), "only in case"),
        (Box::new(|v| v["cost_map"]["cost-map"]["pid-a"]["pid-cdn1"] = json!(-1)), "non-negative"),
        (Box::new(|v| v["cost_map"]["meta"]["dependent-vtags"][0]["tag"] = json!("old")), "computed for network map"),
        (Box::new(|v| v["parents"] = json!({"127.0.0.2:8080": "127.0.0.3:8080", "127.0.0.3:8080": "127.0.0.2:8080"})), "loop"),
        (Box::new(|v| v["parents"] = json!({"127.0.0.2:8080": "127.0.0.2:8080"})), "loop"),
        (Box::new(|v| v["parents"] = json!({"127.0.0.2:8080": "127.0.0.9:8080"})), "not a node's listen address"),
        (Box::new(|v| v["parent"] = json!({})), "unknown key 'parent'"),
    ];
    for (mutate, want) in cases {
        let mut v = base_topology();
        mutate(&mut v);
        match parse(&v) {
            Ok(_) => panic!("accepted a topology that should fail with '{want}': {v}"),
            Err(e) => assert!(e.contains(want), "error '{e}' should mention '{want}'"),
        }
    }
    assert!(parse(&json!({"nodes": {}})).unwrap_err().contains("missing 'network_map'"));
    assert!(Topology::parse(b"{not json", None).unwrap_err().to_string().contains("malformed JSON"));
}

#[test]
fn network_and_cost_maps_may_be_files_next_to_the_topology() {
    let dir = std::env::temp_dir().join(format!("listo-topo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let v = base_topology();
    std::fs::write(dir.join("netmap.json"), v["network_map"].to_string()).expect("write");
    std::fs::write(dir.join("costmap.json"), v["cost_map"].to_string()).expect("write");
    let mut top = v.clone();
    top["network_map"] = json!("netmap.json");
    top["cost_map"] = json!("costmap.json");
    std::fs::write(dir.join("topology.json"), top.to_string()).expect("write");
    let t = Topology::load(&dir.join("topology.json")).expect("loads");
    assert_eq!(t.pids().len(), 3);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn shipped_example_topology_is_valid() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/topology.json");
    let t = Topology::load(&path).expect("examples/topology.json is valid");
    assert!(!t.channels().is_empty() && !t.nodes().is_empty());
}

#[test]
fn hierarchy_routes_instruct_every_level_top_first() {
    let mut v = base_topology();
    v["network_map"]["network-map"]["pid-r"] = json!({"ipv4": ["10.9.0.0/16"]});
    v["nodes"]["pid-r"] = json!([{"listen": "127.0.0.5:8080", "control": "127.0.0.5:8081"}]);
    v["parents"] = json!({"127.0.0.2:8080": "127.0.0.5:8080", "127.0.0.3:8080": "127.0.0.5:8080"});
    let t = parse(&v).expect("valid");
    let ch1 = t.channel("ch1").expect("ch1").clone();
    let Route::Node { listen, steps } = t.route(&IpNet::from("10.1.7.7".parse::<IpAddr>().expect("ip")), &ch1) else { panic!() };
    assert_eq!(listen, sa("127.0.0.2:8080"));
    assert_eq!(steps.iter().map(|s| s.node).collect::<Vec<_>>(), vec![sa("127.0.0.5:8080"), sa("127.0.0.2:8080")]);
    assert_eq!(steps[0].instruction.endpoints, vec![sa("127.0.0.1:18080"), sa("127.0.0.1:18081")], "the top node gets the CDN");
    assert_eq!(steps[1].instruction.endpoints, vec![sa("127.0.0.5:8080")], "the leaf gets its parent");
    assert_eq!(t.parent_of(sa("127.0.0.3:8080")).map(|n| n.listen), Some(sa("127.0.0.5:8080")));
}

// ---------------------------------------------------------------------------------------------
// Real sockets: nodes, origin, mediator
// ---------------------------------------------------------------------------------------------


fn mediator(topo: Value, trusted: &[&str], cfg: InstructorConfig) -> (Arc<Instructor>, HttpMediator) {
    let t = Topology::parse(topo.to_string().as_bytes(), None).expect("valid topology");
    let ins = Instructor::new(t, cfg);
    let mut mc = HttpMediatorConfig::new(lo());
    mc.trusted_proxies = trusted.iter().map(|s| IpNet::from(s.parse::<IpAddr>().expect("ip"))).collect();
    let m = HttpMediator::start(mc, ins.clone()).expect("mediator");
    (ins, m)
}

/// A topology with one node in pid-a (10.1/16), one in pid-b (10.2/16), pid-c (10.3/16)
/// without nodes, and channels ch0/ch1 on the origin.
fn live_topology(origin: SocketAddr, a: &TestNode, b: &TestNode) -> Value {
    json!({
        "network_map": {"meta": {}, "network-map": {
            "pid-a": {"ipv4": ["10.1.0.0/16"]},
            "pid-b": {"ipv4": ["10.2.0.0/16"]},
            "pid-c": {"ipv4": ["10.3.0.0/16"]}
        }},
        "nodes": {
            "pid-a": [{"listen": a.viewers.to_string(), "control": a.control.to_string()}],
            "pid-b": [{"listen": b.viewers.to_string(), "control": b.control.to_string()}]
        },
        "channels": {
            "ch0": {"path_prefix": "/live/ch0/", "endpoints": [{"address": origin.to_string(), "pid": "pid-cdn"}]},
            "ch1": {"path_prefix": "/live/ch1/", "endpoints": [origin.to_string()]}
        }
    })
}

fn get_via(m: SocketAddr, path: &str, client: &str) -> HttpResponse {
    http_request(m, "GET", path, &[("X-Forwarded-For", client), ("Host", "live.example")]).expect("mediator answers")
}

#[test]
fn redirect_by_client_subnet_and_the_node_is_warm_before_the_viewer_arrives() {
    let origin = origin(2);
    let (a, b) = (TestNode::start(), TestNode::start());
    let (ins, m) = mediator(live_topology(origin.local_addr(), &a, &b), &["127.0.0.1"], InstructorConfig::default());
    let playlist = media_path(0, 0);

    assert_eq!(origin.counts().path(&playlist), 0);
    let r = get_via(m.local_addr(), &playlist, "198.51.100.7, 10.1.2.3");
    let (to, path) = location(&r);
    assert_eq!((to, path.as_str()), (a.viewers, playlist.as_str()), "client 10.1.2.3 is in pid-a");
    assert_eq!(r.header("cache-control"), Some("no-store"));
    // Claim 9: when the 302 is in the viewer's hands the node already knows the channel and
    // has asked the origin for the playlist; the follow-up is then served from that copy.
    let ch = a.channel("ch0").expect("node A was instructed before the 302 arrived");
    assert_eq!(ch["endpoints"], json!([origin.local_addr().to_string()]));
    assert_eq!(ch["ttl_s"], json!(60));
    assert_eq!(ch["prefetch"], json!([playlist]));
    wait_for("the node's playlist prefetch to reach the origin", Duration::from_secs(2), || origin.counts().path(&playlist) == 1);
    let follow = http_request(to, "GET", &path, &[]).expect("follow-up");
    assert_eq!(follow.status, 200);
    assert!(follow.body.starts_with(b"#EXTM3U"));
    assert_eq!(origin.counts().path(&playlist), 1, "the viewer's request was served from the prefetched copy");
    assert!(b.channels().is_empty(), "node B was not involved");

    // Same channel, same node, again: no second instruction.
    let posts = ins.stats().posts;
    let (to2, _) = location(&get_via(m.local_addr(), &playlist, "10.1.200.1"));
    assert_eq!(to2, a.viewers);
    assert_eq!(ins.stats().posts, posts, "deduplicated per (node, channel)");

    // pid-b → node B, query string kept verbatim.
    let (to, path) = location(&get_via(m.local_addr(), "/live/ch0/v1/index.m3u8?token=a%20b&x=1", "10.2.9.9"));
    assert_eq!((to, path.as_str()), (b.viewers, "/live/ch0/v1/index.m3u8?token=a%20b&x=1"));
    wait_for("node B instructed", Duration::from_secs(2), || b.channel("ch0").is_some());

    // A PID without nodes, and no PID at all: the CDN endpoint.
    assert_eq!(location(&get_via(m.local_addr(), &playlist, "10.3.0.1")).0, origin.local_addr());
    assert_eq!(location(&get_via(m.local_addr(), &playlist, "192.0.2.1")).0, origin.local_addr());
    // IPv6 clients too.
    assert_eq!(location(&get_via(m.local_addr(), &playlist, "[2001:db8::1]:4431")).0, origin.local_addr());
    // Unknown channel path → 404.
    let r = get_via(m.local_addr(), "/vod/movie.m3u8", "10.1.2.3");
    assert_eq!(r.status, 404);
    assert!(r.header("location").is_none());
    // HEAD works like GET; other methods are refused.
    let r = http_request(m.local_addr(), "HEAD", &playlist, &[("X-Forwarded-For", "10.1.2.3")]).expect("HEAD");
    assert_eq!(r.status, 302);
    let r = http_request(m.local_addr(), "DELETE", &playlist, &[]).expect("DELETE");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    let s = m.stats();
    assert!(s.to_node >= 3 && s.to_cdn >= 3 && s.not_found == 1, "{s:?}");
    m.shutdown();
    ins.stop();
}

#[test]
fn x_forwarded_for_is_believed_only_from_trusted_proxies() {
    let origin = origin(2);
    let (a, b) = (TestNode::start(), TestNode::start());
    let mut topo = live_topology(origin.local_addr(), &a, &b);
    topo["network_map"]["network-map"]["pid-lo"] = json!({"ipv4": ["127.0.0.0/8"]});
    topo["nodes"]["pid-lo"] = topo["nodes"]["pid-b"].clone();
    topo["nodes"].as_object_mut().expect("nodes").remove("pid-b");
    // The peer (127.0.0.1) is not trusted: X-Forwarded-For is ignored, the peer is the client.
    let (_ins, m) = mediator(topo, &["127.0.0.2"], InstructorConfig::default());
    let (to, _) = location(&get_via(m.local_addr(), &media_path(0, 0), "10.1.2.3"));
    assert_eq!(to, b.viewers, "a spoofed X-Forwarded-For from an untrusted peer must not steer");
}

#[test]
fn concurrent_viewers_of_a_new_channel_cause_one_instruction() {
    let origin = origin(2);
    let (a, b) = (TestNode::start(), TestNode::start());
    let (ins, m) = mediator(live_topology(origin.local_addr(), &a, &b), &["127.0.0.1"], InstructorConfig::default());
    let addr = m.local_addr();
    let playlist = media_path(1, 0);
    let handles: Vec<_> = (0..24)
        .map(|i| {
            let playlist = playlist.clone();
            thread::spawn(move || location(&get_via(addr, &playlist, &format!("10.1.{i}.1"))).0)
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().expect("viewer"), a.viewers);
    }
    assert_eq!(ins.stats().posts, 1, "24 viewers, one instruction");
    assert!(a.channel("ch1").is_some());
    wait_for("one playlist fetch", Duration::from_secs(2), || origin.counts().path(&playlist) == 1);
    assert_eq!(m.stats().unacknowledged, 0, "every 302 waited for the acknowledgement");
}

#[test]
fn a_node_that_cannot_be_instructed_is_not_used() {
    let origin = origin(2);
    let (a, b) = (TestNode::start(), TestNode::start());
    let mut topo = live_topology(origin.local_addr(), &a, &b);
    // A control port nobody listens on (the node's viewer port answers but refuses the POST).
    let dead = std::net::TcpListener::bind(lo()).expect("bind");
    let dead_addr = dead.local_addr().expect("addr");
    drop(dead);
    topo["nodes"]["pid-a"][0]["control"] = json!(dead_addr.to_string());
    let (ins, m) = mediator(topo, &["127.0.0.1"], InstructorConfig::default());
    let (to, _) = location(&get_via(m.local_addr(), &media_path(0, 0), "10.1.2.3"));
    assert_eq!(to, origin.local_addr(), "viewer sent to the CDN, not to a node that doesn't know the channel");
    assert_eq!(ins.stats().post_failures, 1);
    // Within the retry delay no new attempt is made.
    let (to, _) = location(&get_via(m.local_addr(), &media_path(0, 0), "10.1.2.4"));
    assert_eq!(to, origin.local_addr());
    assert_eq!(ins.stats().posts, 1);
}

/// Raw bytes in, the whole response out (the mediator closes after errors).
fn raw(m: SocketAddr, req: &[u8]) -> String {
    let mut s = TcpStream::connect(m).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    s.write_all(req).expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if out.windows(4).any(|w| w == b"\r\n\r\n") && !out.starts_with(b"HTTP/1.1 400") && !out.starts_with(b"HTTP/1.1 431") {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&out).to_string()
}

#[test]
fn header_injection_and_odd_targets_are_refused() {
    let origin = origin(2);
    let (a, b) = (TestNode::start(), TestNode::start());
    let (_ins, m) = mediator(live_topology(origin.local_addr(), &a, &b), &["127.0.0.1"], InstructorConfig::default());
    let addr = m.local_addr();
    let bad: Vec<&[u8]> = vec![
        b"GET /live/ch0/x\r\nSet-Cookie: a=b HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /live/ch0/x\rLocation: http://evil.example/ HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /live/ch0/x\nLocation:http://evil.example/ HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /live/ch0/a b HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /live/ch0/a\tb HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /live/ch0/a\x01b HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /live/ch0/a\x7fb HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /live/ch0/\xc3\xa9.m3u8 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /live/ch0/../ch1/index.m3u8 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /live/ch0/%2e%2e/ch1/index.m3u8 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /live/ch0/x\\y HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /live/ch0/x#frag HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET http://evil.example/live/ch0/index.m3u8 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET //evil.example/live/ch0/index.m3u8 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET * HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /live/ch0/index.m3u8 HTTP/1.1\r\nX-Forwarded-For: 10.1.2.3\r\nX-Forwarded-For: evil\r\n\r\n",
        b"GET /live/ch0/index.m3u8 HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
        b"GET /live/ch0/index.m3u8 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ];
    for req in bad {
        let resp = raw(addr, req);
        assert!(resp.starts_with("HTTP/1.1 400 "), "{:?} → {resp:?}", String::from_utf8_lossy(req));
        assert!(!resp.to_ascii_lowercase().contains("\r\nlocation:"), "no Location on a refusal: {resp:?}");
        assert!(!resp.contains("evil") && !resp.to_ascii_lowercase().contains("set-cookie"), "{resp:?}");
    }
    // Percent-encoded CR LF stays encoded; the Host header never reaches Location.
    let resp = raw(addr, b"GET /live/ch0/a%0d%0aSet-Cookie:%20x=1 HTTP/1.1\r\nHost: evil.example\r\nX-Forwarded-For: 10.1.0.1\r\nConnection: close\r\n\r\n");
    assert!(resp.starts_with("HTTP/1.1 302 Found\r\n"), "{resp:?}");
    let want = format!("\r\nLocation: http://{}/live/ch0/a%0d%0aSet-Cookie:%20x=1\r\n", a.viewers);
    assert!(resp.contains(&want), "{resp:?}");
    assert!(!resp.contains("evil"));
    assert_eq!(resp.matches("\r\n").count(), resp.split("\r\n\r\n").next().map_or(0, |h| h.matches("\r\n").count()) + 2);
    // A huge head → 431.
    let mut big = b"GET /live/ch0/index.m3u8 HTTP/1.1\r\nX-Pad: ".to_vec();
    big.extend_from_slice(&[b'a'; 20_000]);
    big.extend_from_slice(b"\r\n\r\n");
    let resp = raw(addr, &big);
    assert!(resp.starts_with("HTTP/1.1 431 "), "{resp:?}");
    // Keep-alive: two requests on one connection, bare-LF heads accepted.
    let resp = raw(addr, b"GET /live/ch0/index.m3u8 HTTP/1.1\nX-Forwarded-For: 10.2.0.1\n\nGET /nope HTTP/1.1\nConnection: close\n\n");
    assert!(resp.starts_with("HTTP/1.1 302 Found\r\n"), "{resp:?}");
}

#[test]
fn reload_swaps_the_topology_and_reinstructs() {
    let origin = origin(2);
    let (a, b) = (TestNode::start(), TestNode::start());
    let topo = live_topology(origin.local_addr(), &a, &b);
    let cfg = InstructorConfig { ttl_s: 2, ..InstructorConfig::default() };
    let (ins, m) = mediator(topo.clone(), &["127.0.0.1"], cfg);
    let (to, _) = location(&get_via(m.local_addr(), &media_path(0, 0), "10.1.2.3"));
    assert_eq!(to, a.viewers);
    // Renewals keep the 2 s instruction alive.
    thread::sleep(Duration::from_millis(2600));
    assert!(a.channel("ch0").is_some(), "renewed before it expired");
    assert!(ins.stats().renewals >= 1);
    // Move 10.1/16 to pid-b's node by a reload: new viewers go to B.
    let mut moved = topo.clone();
    moved["network_map"]["network-map"]["pid-a"] = json!({"ipv4": ["10.99.0.0/16"]});
    moved["network_map"]["network-map"]["pid-b"] = json!({"ipv4": ["10.1.0.0/16", "10.2.0.0/16"]});
    ins.set_topology(Topology::parse(moved.to_string().as_bytes(), None).expect("valid"));
    let (to, _) = location(&get_via(m.local_addr(), &media_path(0, 0), "10.1.2.3"));
    assert_eq!(to, b.viewers);
    // A changed endpoint is pushed to the node that has the channel, without a viewer.
    let mut ep = moved.clone();
    let second = "127.0.0.1:9".to_string();
    ep["channels"]["ch0"]["endpoints"] = json!([second]);
    ins.set_topology(Topology::parse(ep.to_string().as_bytes(), None).expect("valid"));
    wait_for("node B re-instructed with the new endpoint", Duration::from_secs(3), || {
        b.channel("ch0").is_some_and(|c| c["endpoints"] == json!([second]))
    });
    // Reloading from a file that fails validation keeps the running topology.
    let dir = std::env::temp_dir().join(format!("listo-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("topology.json");
    std::fs::write(&file, topo.to_string()).expect("write");
    let fins = Instructor::from_file(&file, InstructorConfig::default()).expect("loads");
    std::fs::write(&file, b"{\"network_map\": 1}").expect("write");
    assert!(fins.reload().is_err());
    assert_eq!(fins.topology().nodes().len(), 2);
    assert_eq!(fins.stats().reload_failures, 1);
    std::fs::write(&file, moved.to_string()).expect("write");
    assert!(fins.reload().is_ok());
    assert_eq!(fins.topology().pid_of("10.1.0.1".parse().expect("ip")).map(|(_, p)| p.to_string()), Some("pid-b".into()));
    fins.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// One regional node in front of the origin, four leaves behind it, 100 viewers per leaf
/// steered through the mediator by subnet: the origin serves each distinct segment once.
#[test]
fn two_level_hierarchy_origin_sees_one_request_per_segment() {
    let _x = exclusive();
    const LEAVES: usize = 4;
    const VIEWERS: usize = 100;
    let origin = origin(1);
    let regional = TestNode::start();
    let leaves: Vec<TestNode> = (0..LEAVES).map(|_| TestNode::start()).collect();
    let mut netmap = serde_json::Map::new();
    let mut nodes = serde_json::Map::new();
    let mut parents = serde_json::Map::new();
    netmap.insert("pid-regional".into(), json!({"ipv4": ["10.200.0.0/16"]}));
    nodes.insert("pid-regional".into(), json!([{"listen": regional.viewers.to_string(), "control": regional.control.to_string()}]));
    for (i, l) in leaves.iter().enumerate() {
        netmap.insert(format!("pid-leaf{i}"), json!({"ipv4": [format!("10.{}.0.0/16", i + 1)]}));
        nodes.insert(format!("pid-leaf{i}"), json!([{"listen": l.viewers.to_string(), "control": l.control.to_string()}]));
        parents.insert(l.viewers.to_string(), json!(regional.viewers.to_string()));
    }
    let topo = json!({
        "network_map": {"meta": {}, "network-map": netmap},
        "nodes": nodes,
        "channels": {"ch0": {"path_prefix": "/live/ch0/", "endpoints": [origin.local_addr().to_string()]}},
        "parents": parents
    });
    let (ins, m) = mediator(topo, &["127.0.0.1"], InstructorConfig::default());
    let maddr = m.local_addr();
    let playlist = media_path(0, 0);
    let started = Instant::now();
    let handles: Vec<_> = (0..LEAVES * VIEWERS)
        .map(|v| {
            let playlist = playlist.clone();
            thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || {
                    let leaf = v % LEAVES;
                    let client = format!("10.{}.{}.{}", leaf + 1, v / 250, v % 250 + 1);
                    let r = http_request(maddr, "GET", &playlist, &[("X-Forwarded-For", client.as_str())]).expect("mediator");
                    let (node, path) = location(&r);
                    (leaf, node, run_player(PlayerConfig::new(node, path, Duration::from_secs(5))))
                })
                .expect("spawn viewer")
        })
        .collect();
    let mut segments = 0;
    for h in handles {
        let (leaf, node, report) = h.join().expect("viewer thread");
        assert_eq!(node, leaves[leaf].viewers, "steered to its subnet's leaf");
        assert_eq!(report.errors, 0, "{report:?}");
        assert!(report.segments >= 2, "{report:?}");
        segments += report.segments;
    }
    assert!(started.elapsed() < Duration::from_secs(15), "took {:?}", started.elapsed());
    // Every level was instructed: the regional node toward the origin, each leaf toward it.
    let rc = regional.channel("ch0").expect("regional instructed");
    assert_eq!(rc["endpoints"], json!([origin.local_addr().to_string()]));
    for l in &leaves {
        let lc = l.channel("ch0").expect("leaf instructed");
        assert_eq!(lc["endpoints"], json!([regional.viewers.to_string()]));
    }
    let counts = origin.counts();
    let seg_paths: Vec<(&String, &u64)> = counts.per_path.iter().filter(|(p, _)| p.ends_with(".ts")).collect();
    assert!(seg_paths.len() >= 3, "{counts:?}");
    for (p, n) in &seg_paths {
        assert_eq!(**n, 1, "origin served {p} {n} times: {}", counts.to_json());
    }
    assert_eq!(counts.segment_requests, seg_paths.len() as u64);
    assert_eq!(ins.stats().post_failures, 0);
    eprintln!(
        "hierarchy: {} viewers got {segments} segments; origin: {} segment requests for {} distinct, {} playlist requests; {} instructions",
        LEAVES * VIEWERS,
        counts.segment_requests,
        seg_paths.len(),
        counts.playlist_requests,
        ins.stats().posts
    );
}

// ---------------------------------------------------------------------------------------------
// The CLI: `listo instructor` and `listo dns` as child processes
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

/// Starts `listo args…` and returns it with a receiver of its stderr lines.
fn spawn_listo(args: &[&str]) -> (Child, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead;
    let mut c = std::process::Command::new(LISTO)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn listo");
    let err = c.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        for line in io::BufReader::new(err).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (Child(c), rx)
}

fn line_with(rx: &std::sync::mpsc::Receiver<String>, needle: &str) -> String {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if l.contains(needle) => return l,
            Ok(_) => {}
            Err(_) => panic!("no stderr line containing '{needle}'"),
        }
    }
}

fn signal(c: &Child, sig: i32) {
    // SAFETY: kill(2) on the pid of a child this test spawned and has not reaped.
    assert_eq!(unsafe { libc::kill(c.0.id() as i32, sig) }, 0);
}

fn exit_code(mut c: Child) -> Option<i32> {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(s)) = c.0.try_wait() {
            return s.code();
        }
        assert!(Instant::now() < end, "listo did not stop");
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn cli_instructor_serves_reloads_on_sighup_and_stops_on_sigterm() {
    // Usage errors: exit 2, one line naming the problem.
    let o = std::process::Command::new(LISTO).args(["instructor", "--listen", "127.0.0.1:0"]).output().expect("run");
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--topology FILE is required"));
    let dir = std::env::temp_dir().join(format!("listo-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("topology.json");
    let mut bad = base_topology();
    bad["parents"] = json!({"127.0.0.2:8080": "127.0.0.3:8080", "127.0.0.3:8080": "127.0.0.2:8080"});
    std::fs::write(&file, bad.to_string()).expect("write");
    let f = file.to_str().expect("utf-8 path");
    let o = std::process::Command::new(LISTO).args(["instructor", "--listen", "127.0.0.1:0", "--topology", f]).output().expect("run");
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("loop"), "{}", String::from_utf8_lossy(&o.stderr));

    std::fs::write(&file, base_topology().to_string()).expect("write");
    let (child, rx) = spawn_listo(&["instructor", "--listen", "127.0.0.1:0", "--topology", f, "--trusted-proxy", "127.0.0.1"]);
    let line = line_with(&rx, "listo instructor on ");
    let at: SocketAddr = line["listo instructor on ".len()..].split(':').take(2).collect::<Vec<_>>().join(":").parse().expect("address");
    // 192.0.2.1 is in pid-default, which has no node: the CDN endpoint of ch1.
    assert_eq!(location(&get_via(at, "/live/ch1/index.m3u8", "192.0.2.1")).0, sa("127.0.0.1:18080"));
    // Reload: pid-default now has ch1's second endpoint as its cheapest.
    let mut t = base_topology();
    t["cost_map"]["cost-map"]["pid-default"] = json!({"pid-cdn2": 1});
    std::fs::write(&file, t.to_string()).expect("write");
    signal(&child, libc::SIGHUP);
    line_with(&rx, "topology reloaded");
    assert_eq!(location(&get_via(at, "/live/ch1/index.m3u8", "192.0.2.1")).0, sa("127.0.0.1:18081"));
    // A broken file is refused on SIGHUP; the running topology stays.
    std::fs::write(&file, bad.to_string()).expect("write");
    signal(&child, libc::SIGHUP);
    line_with(&rx, "reload refused");
    assert_eq!(location(&get_via(at, "/live/ch1/index.m3u8", "192.0.2.1")).0, sa("127.0.0.1:18081"));
    signal(&child, libc::SIGTERM);
    line_with(&rx, "stopped");
    assert_eq!(exit_code(child), Some(0));

    // `listo dns` on the same file.
    std::fs::write(&file, base_topology().to_string()).expect("write");
    let (child, rx) = spawn_listo(&["dns", "--listen", "127.0.0.1:0", "--zone", "live.example", "--topology", f]);
    let line = line_with(&rx, "listo dns on ");
    let at: SocketAddr = line["listo dns on ".len()..].split(' ').next().expect("addr").parse().expect("address");
    let sock = std::net::UdpSocket::bind(lo()).expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
    // A hand-built query for ch1.live.example A (id 0x4242, RD).
    let mut q = vec![0x42, 0x42, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for l in ["ch1", "live", "example"] {
        q.push(l.len() as u8);
        q.extend_from_slice(l.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    sock.send_to(&q, at).expect("send");
    let mut buf = [0u8; 512];
    let (n, _) = sock.recv_from(&mut buf).expect("answer");
    assert_eq!(&buf[..2], &[0x42, 0x42]);
    assert_eq!(buf[3] & 0x0f, 0, "NOERROR");
    // Source 127.0.0.1 is in pid-default (no node): ch1's first endpoint, 127.0.0.1.
    assert_eq!(&buf[n - 4..n], &[127, 0, 0, 1]);
    signal(&child, libc::SIGTERM);
    assert_eq!(exit_code(child), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}
