//! The small blocking HTTP/1.1 server both HTTP faces of the instructor run on: the 302
//! mediator ([`super::HttpMediator`]) and the ALTO server ([`super::AltoServer`]). A thread
//! accepts; each connection gets a thread that reads a head (and, for services that take
//! bodies, a `Content-Length` body), asks the service for a [`Reply`] and writes it, keep-alive
//! until the client or the reply says close. Every read and write has a timeout; heads, bodies,
//! requests per connection and open connections are bounded.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Longest request head accepted.
pub(crate) const MAX_HEAD: usize = 16 * 1024;
/// Requests served on one keep-alive connection before it is closed.
const MAX_REQUESTS_PER_CONN: usize = 1000;

/// One answer: status, header lines (names and values already safe), body, and whether to
/// close the connection after it. `Content-Length` and `Connection` are added when written.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
    pub close: bool,
}

/// What a server serves.
pub(crate) trait Service: Send + Sync + 'static {
    /// Largest request body read (0: bodies are not read; the service refuses them itself).
    fn max_body(&self) -> usize {
        0
    }
    /// Answers one request: its head bytes (through the blank line), its body, the TCP peer.
    fn handle(&self, head: &[u8], body: &[u8], peer: SocketAddr) -> Reply;
    /// The reply for a request the server refused before the service saw it (431 head too
    /// large, 413 body too large, 411 no length, 400 bad framing); it is sent and the
    /// connection closed.
    fn refuse(&self, status: u16, why: &str) -> Reply;
    /// Counts an accepted connection.
    fn connection(&self) {}
}

/// How a server runs.
#[derive(Debug, Clone)]
pub(crate) struct ServerConfig {
    pub listen: SocketAddr,
    pub max_connections: usize,
    pub io_timeout: Duration,
    pub name: &'static str,
}

/// A running server (stops on [`Server::shutdown`] or drop).
pub(crate) struct Server {
    local: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds and starts serving in background threads.
    pub(crate) fn start<S: Service>(cfg: ServerConfig, svc: Arc<S>) -> io::Result<Server> {
        let listener = TcpListener::bind(cfg.listen).map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {}: {e}", cfg.listen)))?;
        let local = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new().name(cfg.name.into()).spawn({
            let stop = stop.clone();
            move || accept_loop(listener, cfg, svc, stop)
        })?;
        Ok(Server { local, stop, thread: Some(thread) })
    }

    /// The bound address.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Stops accepting (connections in progress finish their current request).
    pub(crate) fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept.
        let mut wake = self.local;
        if wake.ip().is_unspecified() {
            wake.set_ip(if wake.is_ipv4() { IpAddr::from([127, 0, 0, 1]) } else { IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]) });
        }
        let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.shutdown();
        }
    }
}

fn accept_loop<S: Service>(listener: TcpListener, cfg: ServerConfig, svc: Arc<S>, stop: Arc<AtomicBool>) {
    let open = Arc::new(AtomicUsize::new(0));
    loop {
        let accepted = listener.accept();
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        svc.connection();
        if open.fetch_add(1, Ordering::SeqCst) >= cfg.max_connections {
            open.fetch_sub(1, Ordering::SeqCst);
            drop(stream);
            continue;
        }
        let (svc, open2, stop2, timeout) = (svc.clone(), open.clone(), stop.clone(), cfg.io_timeout);
        let spawned = std::thread::Builder::new().name(format!("{}-conn", cfg.name)).spawn(move || {
            serve(stream, peer, &*svc, timeout, &stop2);
            open2.fetch_sub(1, Ordering::SeqCst);
        });
        if spawned.is_err() {
            open.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// How a request's body is framed (only looked at for services that read bodies).
enum Framing {
    /// A body of this many bytes; `true`: the client waits for `100 Continue` first.
    Length(usize, bool),
    Refuse(u16, &'static str),
}

fn framing(head: &[u8], max_body: usize) -> Framing {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    if !matches!(req.parse(head), Ok(httparse::Status::Complete(_))) {
        // The service answers the malformed head itself (no body is read).
        return Framing::Length(0, false);
    }
    let mut length: Option<usize> = None;
    let mut expect = false;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("expect") && h.value.eq_ignore_ascii_case(b"100-continue") {
            expect = req.version == Some(1);
        }
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Framing::Refuse(411, "send the body with Content-Length (no transfer coding)");
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value).ok().map(str::trim).filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()));
            let Some(n) = n.and_then(|s| s.parse::<usize>().ok()) else { return Framing::Refuse(400, "malformed Content-Length") };
            if length.is_some_and(|l| l != n) {
                return Framing::Refuse(400, "conflicting Content-Length headers");
            }
            length = Some(n);
        }
    }
    match length {
        Some(n) if n > max_body => Framing::Refuse(413, "request body too large"),
        Some(n) => Framing::Length(n, expect),
        None => Framing::Length(0, false),
    }
}

fn serve<S: Service>(mut stream: TcpStream, peer: SocketAddr, svc: &S, timeout: Duration, stop: &AtomicBool) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    let mut buf: Vec<u8> = Vec::with_capacity(2048);
    let mut chunk = [0u8; 4096];
    let max_body = svc.max_body();
    for _ in 0..MAX_REQUESTS_PER_CONN {
        // Read until a complete head is buffered.
        let head_end = loop {
            if let Some(i) = find_head_end(&buf) {
                break (i <= MAX_HEAD).then_some(i);
            }
            if buf.len() > MAX_HEAD {
                break None;
            }
            match stream.read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            }
        };
        let (reply, head, consumed) = match head_end {
            None => (svc.refuse(431, "request head too large"), false, buf.len()),
            Some(end) if max_body == 0 => (svc.handle(&buf[..end], &[], peer), true, end),
            Some(end) => match framing(&buf[..end], max_body) {
                Framing::Refuse(status, why) => (svc.refuse(status, why), true, buf.len()),
                Framing::Length(n, expect) => {
                    if expect && buf.len() < end + n && stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").is_err() {
                        return;
                    }
                    // Read the whole body (bounded by max_body and the read timeout).
                    while buf.len() < end + n {
                        match stream.read(&mut chunk) {
                            Ok(0) => return,
                            Ok(k) => buf.extend_from_slice(&chunk[..k]),
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                            Err(_) => return,
                        }
                    }
                    (svc.handle(&buf[..end], &buf[end..end + n], peer), true, end + n)
                }
            },
        };
        let is_head = head && buf.starts_with(b"HEAD ");
        buf.drain(..consumed.min(buf.len()));
        if write_reply(&mut stream, &reply, is_head).is_err() || reply.close {
            let _ = stream.shutdown(Shutdown::Write);
            // Drain what the peer still sends (bounded) so closing with unread bytes does not
            // reset the connection before the peer has read the answer.
            let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
            let mut drained = 0usize;
            while drained < 1 << 20 {
                match stream.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => drained += n,
                }
            }
            return;
        }
        if stop.load(Ordering::SeqCst) {
            return;
        }
    }
}

/// End of the head: after CRLF CRLF (or LF LF, which httparse also accepts).
pub(crate) fn find_head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn write_reply(stream: &mut TcpStream, r: &Reply, head_only: bool) -> io::Result<()> {
    let mut out = format!("HTTP/1.1 {} {}\r\n", r.status, crate::http::reason_phrase(r.status)).into_bytes();
    for (name, value) in &r.headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("Content-Length: {}\r\n", r.body.len()).as_bytes());
    out.extend_from_slice(if r.close { b"Connection: close\r\n\r\n" } else { b"Connection: keep-alive\r\n\r\n" });
    if !head_only {
        out.extend_from_slice(&r.body);
    }
    stream.write_all(&out)
}

/// Whether the client asked to close after this request (HTTP/1.0 without keep-alive, or
/// `Connection: close`).
pub(crate) fn client_wants_close(version: u8, headers: &[httparse::Header<'_>]) -> bool {
    let mut close = version == 0;
    for h in headers.iter().filter(|h| h.name.eq_ignore_ascii_case("connection")) {
        let v = String::from_utf8_lossy(h.value).to_ascii_lowercase();
        if v.split(',').any(|t| t.trim() == "close") {
            close = true;
        } else if v.split(',').any(|t| t.trim() == "keep-alive") {
            close = false;
        }
    }
    close
}
