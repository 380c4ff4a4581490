//! Viewer accounting: viewers are sessions (client address + User-Agent), not connections.

use std::net::SocketAddr;

use listo::{Config, ConnId, Instruction, Node, UpTransmit, SECOND};

const MS: u64 = 1_000_000;

/// Drives one request through a node whose upstream answers every GET with a small 200.
fn request(node: &mut Node, now: u64, peer: SocketAddr, ua: &str, path: &str) {
    let v = node.user_open(now, Some(peer));
    let req = format!("GET {path} HTTP/1.1\r\nHost: node\r\nUser-Agent: {ua}\r\nConnection: close\r\n\r\n");
    node.user_recv(now, v, req.as_bytes()).unwrap();
    for _ in 0..100 {
        let mut progressed = false;
        while let Some((u, _)) = node.poll_connect() {
            node.upstream_connected(now, u).unwrap();
            progressed = true;
        }
        while let Some(c) = node.poll_ready() {
            progressed = true;
            match c {
                ConnId::Upstream(u) => match node.upstream_poll_transmit(u).unwrap() {
                    UpTransmit::Send(b) => {
                        let n = b.len();
                        node.upstream_sent(now, u, n).unwrap();
                        node.upstream_recv(now, u, b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nCache-Control: max-age=60\r\n\r\nabc").unwrap();
                    }
                    UpTransmit::Close => node.upstream_closed(now, u).unwrap(),
                    UpTransmit::Wait => {}
                },
                ConnId::Viewer(v) => {
                    let mut slices = [std::io::IoSlice::new(&[]); 16];
                    match node.user_poll_transmit(v, &mut slices).unwrap() {
                        listo::Transmit::Send(n) => {
                            let total = slices[..n].iter().map(|s| s.len()).sum();
                            node.user_sent(now, v, total).unwrap();
                        }
                        listo::Transmit::Close => node.user_close(now, v).unwrap(),
                        listo::Transmit::Wait => {}
                    }
                }
            }
        }
        if !progressed {
            break;
        }
    }
}

#[test]
fn viewers_are_players_not_connections() {
    let cfg = Config { prefetch: false, ..Config::default() };
    let mut node = Node::new(cfg);
    node.instruct(0, Instruction::new("ch1", "/live/ch1/", "127.0.0.1:18080".parse().unwrap())).unwrap();
    // 5 players, each opening a new connection (new source port) for every segment.
    let mut now = 0;
    for step in 0..20u64 {
        now = step * 500 * MS;
        for p in 0..5u16 {
            let peer: SocketAddr = format!("10.0.0.{}:{}", p + 1, 40000 + step as u16).parse().unwrap();
            request(&mut node, now, peer, "ExamplePlayer/1.0", &format!("/live/ch1/seg_{step}.ts"));
        }
        node.handle_timeout(now);
    }
    // Two players behind one NAT address with different user agents are two viewers.
    let nat: SocketAddr = "10.0.0.99:5000".parse().unwrap();
    request(&mut node, now, nat, "PlayerA", "/live/ch1/seg_19.ts");
    request(&mut node, now, nat, "PlayerB", "/live/ch1/seg_19.ts");
    node.handle_timeout(now + SECOND);
    let s = &node.stats().channels[0];
    assert_eq!(s.viewers, 7, "5 players + 2 behind one address, after {} connections", 5 * 20 + 2);
    assert_eq!(s.peak_viewers, 7);
    assert!(s.viewer_seconds >= 5 * 9, "about 5 viewers for 10 s: {}", s.viewer_seconds);
    assert_eq!(s.renditions.len(), 1, "all segments in one directory: {:?}", s.renditions);
    assert_eq!((s.renditions[0].viewers, s.renditions[0].peak_viewers), (7, 7), "per rendition too");
    // Nobody asks for a while: viewers drop to 0, the peak stays.
    node.handle_timeout(now + 30 * SECOND);
    let s = &node.stats().channels[0];
    assert_eq!(s.viewers, 0);
    assert_eq!(s.peak_viewers, 7);
}
