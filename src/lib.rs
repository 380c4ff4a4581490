//! # LISTO — live streaming optimizer
//!
//! A sans-IO library that makes an access node (DSLAM, OLT, edge router) fetch every playlist
//! and segment of a live channel **once** from the CDN endpoint and serve all its viewers from
//! that copy, streaming bytes to waiting viewers while they still arrive.
//!
//! Data flow (DESIGN §3): viewer bytes → [`user`] (HTTP/1.1 server side) → [`node`] routes the
//! path to an instructed channel ([`control`]) and an object in the [`store`] — hit, coalesce
//! onto the fetch in flight, or miss → [`upstream`] (HTTP/1.1 client toward the CDN endpoint)
//! → body chunks appended once and shared (`bytes::Bytes`) with every reader → viewers.
//! [`admin`] counts and reports; [`media`] knows HLS and DASH playlists.
//!
//! The host owns sockets and the clock: it feeds bytes and time in and drains output — after
//! any input: `poll_connect` and `poll_ready` (transmits), then `poll_timeout`, then
//! `poll_event`. Each [`Node`] method's docs say when to call it and what the host does next.
//! Complete hosts to copy from: `examples/embed_poll.rs` (a `poll(2)` loop over `std::net`
//! sockets, no mio), `examples/embed_threads.rs` (one node per worker thread, events logged on
//! another), `examples/control_client.rs` (the control and admin ports), `examples/c/` (C),
//! and the mio reference driver in `src/driver/`.
//!
//! ```
//! use listo::{Config, Instruction, Node, Transmit};
//! use std::io::IoSlice;
//!
//! let mut node = Node::new(Config::default());
//! let now = 0;
//! node.instruct(now, Instruction::new("ch1", "/live/ch1/", "127.0.0.1:18080".parse().unwrap())).unwrap();
//! let v = node.user_open(now, None);
//! node.user_recv(now, v, b"GET /live/ch1/index.m3u8 HTTP/1.1\r\nHost: node\r\n\r\n").unwrap();
//! // The node wants one upstream connection for the playlist.
//! let (u, addr) = node.poll_connect().unwrap();
//! assert_eq!(addr.port(), 18080);
//! node.upstream_connected(now, u).unwrap();
//! let req = match node.upstream_poll_transmit(u).unwrap() {
//!     listo::UpTransmit::Send(b) => b.to_vec(),
//!     other => panic!("{other:?}"),
//! };
//! node.upstream_sent(now, u, req.len()).unwrap();
//! node.upstream_recv(now, u, b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n#EXTM3U\n").unwrap();
//! // The viewer's response is ready: write it with writev.
//! let mut slices = [IoSlice::new(&[]); 16];
//! let Transmit::Send(n) = node.user_poll_transmit(v, &mut slices).unwrap() else { panic!() };
//! let written: usize = slices[..n].iter().map(|s| s.len()).sum();
//! node.user_sent(now, v, written).unwrap();
//! assert_eq!(node.stats().channels[0].upstream_requests, 1);
//! ```
#![deny(missing_docs)]

pub mod admin;
pub mod config;
pub mod control;
pub mod ffi;
#[cfg(feature = "driver")]
pub mod demo;
mod error;
#[cfg(feature = "driver")]
pub mod driver;
pub mod http;
mod idmap;
#[cfg(feature = "instructor")]
pub mod instructor;
pub mod media;
pub mod node;
#[cfg(feature = "driver")]
pub mod origin;
#[cfg(feature = "driver")]
pub mod player;
#[cfg(feature = "driver")]
pub mod player_ll;
pub mod sim;
pub mod store;
pub mod upstream;
pub mod user;

pub use admin::{
    ChannelStats, EndpointStats, Event, LatencyHistogram, RenditionStats, Severity, Stats, UpstreamErrorKind, UpstreamErrors,
    LATENCY_BOUNDS_MS,
};
pub use config::{Config, SECOND};
pub use control::Instruction;
pub use error::Error;
pub use node::{ConnId, Node, Transmit, UpTransmit, UpstreamId, ViewerId};
