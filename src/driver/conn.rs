//! The driver's sockets: viewers, upstreams, API connections, and their read/write paths.

use std::io::{self, IoSlice, Read, Write};
use std::net::SocketAddr;

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Token};

use super::api::ApiConn;
use super::Driver;
use crate::{Transmit, UpTransmit, UpstreamId, ViewerId};

/// What a listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// Viewers (the node's HTTP port).
    Viewers,
    /// The control port (LA/LC).
    Control,
    /// The admin port (LR).
    Admin,
}

/// A viewer socket.
pub(super) struct ViewerSock {
    stream: TcpStream,
    id: ViewerId,
    /// The last write would block: wait for a writable event.
    blocked: bool,
    /// Bytes are queued in the node for it (so a drain waits for it).
    pending: bool,
    /// Reading stopped because its responses wait for the socket (backpressure); resumed once
    /// they are written.
    read_paused: bool,
}

impl ViewerSock {
    /// Output waits for the socket.
    pub(super) fn busy(&self) -> bool {
        self.pending
    }

    /// The node's id for it.
    pub(super) fn id(&self) -> ViewerId {
        self.id
    }
}

/// An upstream socket.
pub(super) struct UpSock {
    stream: TcpStream,
    id: UpstreamId,
    connected: bool,
}

/// One registered thing.
pub(super) enum Entry {
    Listener(Listener, TcpListener),
    Viewer(ViewerSock),
    Upstream(UpSock),
    Api(ApiConn),
}

const READ_CHUNK: usize = 64 * 1024;

impl Driver {
    pub(super) fn event(&mut self, token: mio::Token, readable: bool, writable: bool) {
        match self.entries.get(&token) {
            Some(Entry::Listener(kind, _)) => {
                let kind = *kind;
                self.accept(token, kind);
            }
            Some(Entry::Viewer(_)) => {
                if readable {
                    self.read_viewer(token);
                }
                if writable {
                    if let Some(Entry::Viewer(v)) = self.entries.get_mut(&token) {
                        v.blocked = false;
                    }
                    self.flush_viewer(token);
                    // Its responses left: read its next requests (edge-triggered, so whatever
                    // waits in the socket would give no new event).
                    if let Some(Entry::Viewer(v)) = self.entries.get_mut(&token) {
                        if v.read_paused && !v.blocked {
                            v.read_paused = false;
                            self.again.push((token, true, false));
                        }
                    }
                }
            }
            Some(Entry::Upstream(_)) => {
                if writable {
                    self.upstream_writable(token);
                }
                if readable {
                    self.read_upstream(token);
                }
            }
            Some(Entry::Api(_)) => self.api_event(token, readable, writable),
            None => {}
        }
    }

    fn accept(&mut self, token: Token, kind: Listener) {
        for i in 0..=1024 {
            if i == 1024 {
                self.again.push((token, true, false));
                return;
            }
            let Some(Entry::Listener(_, l)) = self.entries.get(&token) else { return };
            let (mut stream, peer) = match l.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted) => continue,
                Err(_) => {
                    // Out of file descriptors (EMFILE/ENFILE) or memory: the waiting connections
                    // stay in the listen backlog, and with edge-triggered readiness nothing would
                    // wake this listener for them again until yet another connection arrives, so
                    // retry shortly (not at once: that would spin while the table stays full).
                    self.retry_accept(token);
                    return;
                }
            };
            let _ = stream.set_nodelay(true);
            if kind == Listener::Viewers {
                super::send::limit_unsent(&stream);
            }
            let t = self.token();
            let interest = Interest::READABLE | Interest::WRITABLE;
            if self.poll.registry().register(&mut stream, t, interest).is_err() {
                continue;
            }
            match kind {
                Listener::Viewers => {
                    self.counters.accepted += 1;
                    let id = self.node.user_open(self.now(), Some(peer));
                    self.viewers.insert(id.0, t);
                    self.entries.insert(t, Entry::Viewer(ViewerSock { stream, id, blocked: false, pending: false, read_paused: false }));
                }
                Listener::Control | Listener::Admin => {
                    self.entries.insert(t, Entry::Api(ApiConn::new(stream, kind)));
                }
            }
        }
    }

    fn read_viewer(&mut self, token: Token) {
        let mut buf = [0u8; READ_CHUNK];
        for i in 0..=64 {
            if i == 64 {
                self.again.push((token, true, false));
                return;
            }
            let Some(Entry::Viewer(v)) = self.entries.get_mut(&token) else { return };
            if v.blocked {
                // Backpressure: the answers to what it already sent wait for its socket, so its
                // next requests stay in the kernel's buffers (and then in the client's) instead
                // of the node's. A viewer that pipelines without reading stalls itself, and the
                // node's idle timer drops it; the node never holds more than one read of input
                // and the responses to it.
                v.read_paused = true;
                return;
            }
            let id = v.id;
            match v.stream.read(&mut buf) {
                Ok(0) => {
                    self.drop_viewer(token);
                    return;
                }
                Ok(n) => {
                    let now = self.now();
                    let _ = self.node.user_recv(now, id, &buf[..n]);
                    // Write the answers before reading more: whether they leave decides whether
                    // to go on reading (above).
                    self.flush_viewer(token);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.drop_viewer(token);
                    return;
                }
            }
        }
    }

    /// Writes what the node has for this viewer (vectored, from the shared buffers) until it
    /// is drained or the socket would block.
    pub(super) fn flush_viewer(&mut self, token: Token) {
        for i in 0..=1024 {
            if i == 1024 {
                self.again.push((token, false, true));
                return;
            }
            let Some(Entry::Viewer(v)) = self.entries.get_mut(&token) else { return };
            if v.blocked {
                v.pending = true;
                return;
            }
            let id = v.id;
            let mut slices = [IoSlice::new(&[]); 64];
            let written = match self.node.user_poll_transmit(id, &mut slices) {
                Ok(Transmit::Send(n)) => match super::send::send_pieces(&mut v.stream, &slices[..n]) {
                    Ok((k, blocked)) => {
                        v.blocked = blocked;
                        Ok(k)
                    }
                    Err(e) => Err(e),
                },
                Ok(Transmit::Close) => {
                    self.counters.closed_by_node += 1;
                    self.drop_viewer(token);
                    return;
                }
                Ok(Transmit::Wait) => {
                    v.pending = false;
                    return;
                }
                Err(_) => {
                    self.drop_viewer(token);
                    return;
                }
            };
            match written {
                Ok(k) => {
                    let now = self.now();
                    let _ = self.node.user_sent(now, id, k);
                }
                Err(_) => {
                    self.drop_viewer(token);
                    return;
                }
            }
        }
    }

    pub(super) fn drop_viewer(&mut self, token: Token) {
        if let Some(Entry::Viewer(mut v)) = self.entries.remove(&token) {
            let _ = self.poll.registry().deregister(&mut v.stream);
            self.viewers.remove(&v.id.0);
            let now = self.now();
            let _ = self.node.user_close(now, v.id);
        }
    }

    pub(super) fn connect(&mut self, u: UpstreamId, addr: SocketAddr) {
        let now = self.now();
        let mut stream = match TcpStream::connect(addr) {
            Ok(s) => s,
            Err(_) => {
                self.counters.connect_errors += 1;
                let _ = self.node.upstream_closed(now, u);
                return;
            }
        };
        let t = self.token();
        if self.poll.registry().register(&mut stream, t, Interest::READABLE | Interest::WRITABLE).is_err() {
            let _ = self.node.upstream_closed(now, u);
            return;
        }
        let _ = stream.set_nodelay(true);
        self.upstreams.insert(u.0, t);
        self.entries.insert(t, Entry::Upstream(UpSock { stream, id: u, connected: false }));
    }

    fn upstream_writable(&mut self, token: Token) {
        let Some(Entry::Upstream(s)) = self.entries.get_mut(&token) else { return };
        if !s.connected {
            // A non-blocking connect finished: success if there is a peer and no error.
            let ok = matches!(s.stream.take_error(), Ok(None)) && s.stream.peer_addr().is_ok();
            let id = s.id;
            if !ok {
                self.counters.connect_errors += 1;
                self.drop_upstream(token);
                return;
            }
            s.connected = true;
            let now = self.now();
            let _ = self.node.upstream_connected(now, id);
        }
        self.flush_upstream(token);
    }

    pub(super) fn flush_upstream(&mut self, token: Token) {
        for i in 0..=64 {
            if i == 64 {
                self.again.push((token, false, true));
                return;
            }
            let Some(Entry::Upstream(s)) = self.entries.get_mut(&token) else { return };
            if !s.connected {
                return;
            }
            let id = s.id;
            let r = match self.node.upstream_poll_transmit(id) {
                Ok(UpTransmit::Send(b)) => match s.stream.write(b) {
                    Ok(k) => Some(k),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => Some(0),
                    Err(_) => None,
                },
                Ok(UpTransmit::Close) | Err(_) => None,
                Ok(UpTransmit::Wait) => return,
            };
            match r {
                Some(k) => {
                    let now = self.now();
                    let _ = self.node.upstream_sent(now, id, k);
                }
                None => {
                    self.drop_upstream(token);
                    return;
                }
            }
        }
    }

    fn read_upstream(&mut self, token: Token) {
        // One reused buffer; each read is copied once into a right-sized shared buffer (a
        // 64 KiB allocation kept alive by a 1.4 KiB read would inflate the store many times).
        let mut buf = vec![0u8; READ_CHUNK];
        for i in 0..=64 {
            if i == 64 {
                self.again.push((token, true, false));
                return;
            }
            let Some(Entry::Upstream(s)) = self.entries.get_mut(&token) else { return };
            if !s.connected {
                return;
            }
            let id = s.id;
            match s.stream.read(&mut buf) {
                Ok(0) => {
                    self.drop_upstream(token);
                    return;
                }
                Ok(n) => {
                    let now = self.now();
                    let _ = self.node.upstream_recv(now, id, &buf[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.drop_upstream(token);
                    return;
                }
            }
        }
    }

    pub(super) fn drop_upstream(&mut self, token: Token) {
        if let Some(Entry::Upstream(mut s)) = self.entries.remove(&token) {
            let _ = self.poll.registry().deregister(&mut s.stream);
            self.upstreams.remove(&s.id.0);
            let now = self.now();
            let _ = self.node.upstream_closed(now, s.id);
        }
    }
}
