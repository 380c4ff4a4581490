//! The DNS mediator (`listo dns`): authoritative for one live zone over UDP and TCP, with the
//! wire format of `hickory-proto`.
//!
//! * `A`/`AAAA` for the zone and every name under it (a wildcard zone: no name under it is
//!   NXDOMAIN) → the chosen node's IP (from its `listen` address), chosen by the EDNS Client
//!   Subnet (RFC 7871) when the query has one, else by the query's source address (the
//!   recursive resolver's, the seed's iterative case). A client in no PID with nodes gets the
//!   CDN endpoint's address. The node is chosen for the channel named by the label just under
//!   the zone (`ch1.live.example` → channel `ch1`; any other name → the first channel by name),
//!   and that node (and its parents) are instructed at once, without prefetch.
//! * ECS is echoed with the SCOPE PREFIX-LENGTH for which the answer holds (see
//!   [`super::PrefixTable::scope`]); ECS address bits beyond the source prefix → FORMERR.
//! * `SOA` and `NS` at the apex (minimal: `ns1.{zone}`, `hostmaster.{zone}`); other types, and
//!   an address family the answer doesn't have → NODATA with the SOA; names outside the zone →
//!   REFUSED; opcodes other than QUERY → NOTIMP; EDNS version > 0 → BADVERS.
//! * TTL short (default 5 s), also the SOA minimum (negative caching). UDP answers larger than
//!   the client's payload size (512 without EDNS) are truncated (TC) so the client retries on TCP.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::rdata::{A, AAAA, NS, SOA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use ipnet::IpNet;

use super::lpm::canonical;
use super::{Instructor, Route, Topology};

/// Payload size advertised in our EDNS responses (the DNS flag day 2020 value).
const OUR_PAYLOAD: u16 = 1232;

/// How the DNS mediator runs.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// UDP and TCP address (port 0: one free port, the same for both).
    pub listen: SocketAddr,
    /// The zone, e.g. `liveott.cdn.example`.
    pub zone: String,
    /// TTL of every answer and the SOA minimum, in seconds.
    pub ttl: u32,
    /// Most TCP connections served at once.
    pub max_tcp_connections: usize,
    /// Instruct the chosen node when the name names a channel.
    pub instruct: bool,
}

impl DnsConfig {
    /// Authoritative for `zone` on `listen`, TTL 5 s, instructing nodes.
    pub fn new(listen: SocketAddr, zone: &str) -> Self {
        DnsConfig { listen, zone: zone.to_string(), ttl: 5, max_tcp_connections: 256, instruct: true }
    }
}

/// What the DNS mediator answered so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsStats {
    /// Queries over UDP.
    pub udp_queries: u64,
    /// Queries over TCP.
    pub tcp_queries: u64,
    /// Answers carrying a node's address.
    pub to_node: u64,
    /// Answers carrying a CDN endpoint's address.
    pub to_cdn: u64,
    /// Queries with an ECS option used for the choice.
    pub ecs: u64,
    /// REFUSED (outside the zone, or not class IN).
    pub refused: u64,
    /// FORMERR, NOTIMP and BADVERS answers.
    pub errors: u64,
}

#[derive(Debug, Default)]
struct Counters {
    udp_queries: AtomicU64,
    tcp_queries: AtomicU64,
    to_node: AtomicU64,
    to_cdn: AtomicU64,
    ecs: AtomicU64,
    refused: AtomicU64,
    errors: AtomicU64,
}

struct Ctx {
    instructor: Arc<Instructor>,
    cfg: DnsConfig,
    zone: Name,
    serial: u32,
    counters: Counters,
    stop: AtomicBool,
    tcp_open: AtomicUsize,
}

/// A running DNS mediator.
pub struct DnsServer {
    local: SocketAddr,
    ctx: Arc<Ctx>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for DnsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsServer").field("local", &self.local).field("zone", &self.ctx.zone.to_ascii()).finish_non_exhaustive()
    }
}

/// Parses a zone name (a trailing dot is optional).
pub fn parse_zone(zone: &str) -> io::Result<Name> {
    let bad = |why: String| io::Error::new(io::ErrorKind::InvalidInput, format!("zone '{zone}': {why}"));
    let z = zone.trim_end_matches('.');
    if z.is_empty() {
        return Err(bad("empty".into()));
    }
    let mut name = Name::from_ascii(z).map_err(|e| bad(e.to_string()))?;
    name.set_fqdn(true);
    Ok(name.to_lowercase())
}

impl DnsServer {
    /// Binds UDP and TCP on the same address and starts serving in background threads.
    pub fn start(cfg: DnsConfig, instructor: Arc<Instructor>) -> io::Result<DnsServer> {
        let zone = parse_zone(&cfg.zone)?;
        let (udp, tcp) = bind_pair(cfg.listen)?;
        let local = udp.local_addr()?;
        udp.set_read_timeout(Some(Duration::from_millis(200)))?;
        let serial = SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| d.as_secs() as u32);
        let ctx = Arc::new(Ctx {
            instructor,
            cfg,
            zone,
            serial,
            counters: Counters::default(),
            stop: AtomicBool::new(false),
            tcp_open: AtomicUsize::new(0),
        });
        let mut threads = Vec::new();
        threads.push(std::thread::Builder::new().name("listo-dns-udp".into()).spawn({
            let ctx = ctx.clone();
            move || udp_loop(udp, ctx)
        })?);
        threads.push(std::thread::Builder::new().name("listo-dns-tcp".into()).spawn({
            let ctx = ctx.clone();
            move || tcp_loop(tcp, ctx)
        })?);
        Ok(DnsServer { local, ctx, threads })
    }

    /// The bound address (UDP and TCP).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Counters so far.
    pub fn stats(&self) -> DnsStats {
        let c = &self.ctx.counters;
        DnsStats {
            udp_queries: c.udp_queries.load(Ordering::Relaxed),
            tcp_queries: c.tcp_queries.load(Ordering::Relaxed),
            to_node: c.to_node.load(Ordering::Relaxed),
            to_cdn: c.to_cdn.load(Ordering::Relaxed),
            ecs: c.ecs.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
        }
    }

    /// The wire answer to a wire query from `source` (`None`: no answer is due), as over TCP.
    pub fn answer(&self, query: &[u8], source: IpAddr) -> Option<Vec<u8>> {
        respond(&self.ctx, query, source, None)
    }

    /// Stops both listeners.
    pub fn shutdown(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        self.ctx.stop.store(true, Ordering::SeqCst);
        let mut wake = self.local;
        if wake.ip().is_unspecified() {
            wake.set_ip(if wake.is_ipv4() { IpAddr::from([127, 0, 0, 1]) } else { IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]) });
        }
        let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.stop_inner();
        }
    }
}

/// UDP and TCP on one address; with port 0, a port free for both.
fn bind_pair(addr: SocketAddr) -> io::Result<(UdpSocket, TcpListener)> {
    let ctx = |e: io::Error, what: &str| io::Error::new(e.kind(), format!("cannot listen on {addr} ({what}): {e}"));
    for _ in 0..16 {
        let udp = UdpSocket::bind(addr).map_err(|e| ctx(e, "udp"))?;
        match TcpListener::bind(udp.local_addr()?) {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if addr.port() == 0 && e.kind() == io::ErrorKind::AddrInUse => continue,
            Err(e) => return Err(ctx(e, "tcp")),
        }
    }
    Err(io::Error::new(io::ErrorKind::AddrInUse, format!("cannot find a port free for UDP and TCP on {addr}")))
}

fn udp_loop(sock: UdpSocket, ctx: Arc<Ctx>) {
    let mut buf = [0u8; 4096];
    while !ctx.stop.load(Ordering::SeqCst) {
        let (n, src) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            Err(_) => continue,
        };
        ctx.counters.udp_queries.fetch_add(1, Ordering::Relaxed);
        if let Some(out) = respond(&ctx, &buf[..n], src.ip(), Some(())) {
            let _ = sock.send_to(&out, src);
        }
    }
}

fn tcp_loop(listener: TcpListener, ctx: Arc<Ctx>) {
    loop {
        let accepted = listener.accept();
        if ctx.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok((stream, peer)) = accepted else {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        if ctx.tcp_open.fetch_add(1, Ordering::SeqCst) >= ctx.cfg.max_tcp_connections {
            ctx.tcp_open.fetch_sub(1, Ordering::SeqCst);
            continue;
        }
        let c = ctx.clone();
        let spawned = std::thread::Builder::new().name("listo-dns-conn".into()).spawn(move || {
            tcp_conn(stream, peer.ip(), &c);
            c.tcp_open.fetch_sub(1, Ordering::SeqCst);
        });
        if spawned.is_err() {
            ctx.tcp_open.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Length-prefixed messages (RFC 1035 §4.2.2, RFC 7766), several per connection.
fn tcp_conn(mut s: TcpStream, peer: IpAddr, ctx: &Ctx) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(10)));
    for _ in 0..1000 {
        let mut len = [0u8; 2];
        if s.read_exact(&mut len).is_err() {
            break;
        }
        let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
        if s.read_exact(&mut msg).is_err() {
            break;
        }
        ctx.counters.tcp_queries.fetch_add(1, Ordering::Relaxed);
        let Some(out) = respond(ctx, &msg, peer, None) else { break };
        let Ok(n) = u16::try_from(out.len()) else { break };
        let mut framed = n.to_be_bytes().to_vec();
        framed.extend_from_slice(&out);
        if s.write_all(&framed).is_err() || ctx.stop.load(Ordering::SeqCst) {
            break;
        }
    }
    let _ = s.shutdown(Shutdown::Both);
}

/// A header-only error answer for a message we could not parse (id and opcode from its header).
fn header_error(query: &[u8], rcode: ResponseCode) -> Option<Vec<u8>> {
    if query.len() < 12 || query[2] & 0x80 != 0 {
        return None; // too short to answer, or itself a response
    }
    let mut out = vec![0u8; 12];
    out[..2].copy_from_slice(&query[..2]);
    out[2] = 0x80 | (query[2] & 0x79); // QR, opcode and RD copied
    out[3] = rcode.low() & 0x0f;
    Some(out)
}

/// Answers one query; `udp` set means the answer must fit the client's UDP payload size.
fn respond(ctx: &Ctx, query: &[u8], source: IpAddr, udp: Option<()>) -> Option<Vec<u8>> {
    let req = match Message::from_vec(query) {
        Ok(m) => m,
        Err(_) => {
            ctx.counters.errors.fetch_add(1, Ordering::Relaxed);
            return header_error(query, ResponseCode::FormErr);
        }
    };
    if req.metadata.message_type != MessageType::Query {
        return None;
    }
    let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
    resp.metadata.recursion_desired = req.metadata.recursion_desired;
    resp.metadata.checking_disabled = req.metadata.checking_disabled;
    resp.queries = req.queries.clone();
    let ecs_in = req.edns.as_ref().and_then(|e| match e.option(EdnsCode::Subnet) {
        Some(EdnsOption::Subnet(s)) => Some(*s),
        _ => None,
    });
    let mut ecs_scope: Option<u8> = None;
    let rcode = build(ctx, &req, &mut resp, source, ecs_in, &mut ecs_scope);
    resp.metadata.response_code = rcode;
    if matches!(rcode, ResponseCode::FormErr | ResponseCode::NotImp | ResponseCode::BADVERS) {
        ctx.counters.errors.fetch_add(1, Ordering::Relaxed);
    } else if rcode == ResponseCode::Refused {
        ctx.counters.refused.fetch_add(1, Ordering::Relaxed);
    }
    if req.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(OUR_PAYLOAD);
        edns.set_version(0);
        if let (Some(ecs), Some(scope)) = (ecs_in, ecs_scope) {
            let mut echo = ecs;
            echo.set_scope_prefix(scope);
            edns.options_mut().insert(EdnsOption::Subnet(echo));
        }
        resp.edns = Some(edns);
    }
    let mut out = resp.to_vec().ok()?;
    if udp.is_some() && out.len() > usize::from(req.max_payload()) {
        resp.answers.clear();
        resp.authorities.clear();
        resp.additionals.clear();
        resp.metadata.truncation = true;
        out = resp.to_vec().ok()?;
    }
    Some(out)
}

/// Fills the answer sections; returns the response code. `ecs_scope` is set when an ECS option
/// is to be echoed (with that scope).
fn build(ctx: &Ctx, req: &Message, resp: &mut Message, source: IpAddr, ecs: Option<ClientSubnet>, ecs_scope: &mut Option<u8>) -> ResponseCode {
    if req.metadata.op_code != OpCode::Query {
        return ResponseCode::NotImp;
    }
    if let Some(e) = &req.edns {
        if e.version() > 0 {
            return ResponseCode::BADVERS;
        }
    }
    let [q] = req.queries.as_slice() else { return ResponseCode::FormErr };
    // The client: ECS (checked), or the source address.
    let client: IpNet = match ecs {
        Some(s) => {
            let Ok(net) = IpNet::new(s.addr(), s.source_prefix()) else { return ResponseCode::FormErr };
            if net.trunc().addr() != net.addr() {
                return ResponseCode::FormErr; // RFC 7871 §6: address bits beyond the source prefix
            }
            *ecs_scope = Some(0);
            net
        }
        None => IpNet::from(canonical(source)),
    };
    let qname = q.name.to_lowercase();
    let mut fqdn = qname.clone();
    fqdn.set_fqdn(true);
    if q.query_class != DNSClass::IN || !ctx.zone.zone_of(&fqdn) {
        *ecs_scope = None;
        return ResponseCode::Refused;
    }
    resp.metadata.authoritative = true;
    let ttl = ctx.cfg.ttl;
    let apex = fqdn == ctx.zone;
    let topo = ctx.instructor.topology();
    match q.query_type {
        RecordType::SOA if apex => resp.answers.push(soa(ctx)),
        RecordType::NS if apex => resp.answers.push(Record::from_rdata(ctx.zone.clone(), ttl, RData::NS(NS(ns_name(ctx))))),
        RecordType::A | RecordType::AAAA | RecordType::ANY => {
            if let Some((ip, scope)) = address_for(ctx, &topo, &fqdn, &client, ecs.is_some()) {
                if ecs.is_some() {
                    ctx.counters.ecs.fetch_add(1, Ordering::Relaxed);
                    *ecs_scope = Some(scope);
                }
                let rdata = match ip {
                    IpAddr::V4(v4) if q.query_type != RecordType::AAAA => Some(RData::A(A(v4))),
                    IpAddr::V6(v6) if q.query_type != RecordType::A => Some(RData::AAAA(AAAA(v6))),
                    _ => None,
                };
                if let Some(r) = rdata {
                    resp.answers.push(Record::from_rdata(q.name.clone(), ttl, r));
                }
            }
        }
        _ => {}
    }
    if resp.answers.is_empty() {
        resp.authorities.push(soa(ctx)); // NODATA: the SOA for negative caching (RFC 2308)
    }
    ResponseCode::NoError
}

fn ns_name(ctx: &Ctx) -> Name {
    Name::from_ascii("ns1").and_then(|n| n.append_domain(&ctx.zone)).unwrap_or_else(|_| ctx.zone.clone())
}

fn soa(ctx: &Ctx) -> Record {
    let rname = Name::from_ascii("hostmaster").and_then(|n| n.append_domain(&ctx.zone)).unwrap_or_else(|_| ctx.zone.clone());
    let ttl = ctx.cfg.ttl;
    let data = SOA::new(ns_name(ctx), rname, ctx.serial, 3600, 600, 86400, ttl);
    Record::from_rdata(ctx.zone.clone(), ttl, RData::SOA(data))
}

/// The address to answer for `fqdn` and the client, with its ECS scope; instructs the node.
fn address_for(ctx: &Ctx, topo: &Topology, fqdn: &Name, client: &IpNet, by_ecs: bool) -> Option<(IpAddr, u8)> {
    // The label just under the zone names the channel, if it is one.
    let labels: Vec<&[u8]> = fqdn.iter().collect();
    let under = labels.len().checked_sub(usize::from(ctx.zone.num_labels()) + 1).and_then(|i| labels.get(i));
    let named = under.and_then(|l| std::str::from_utf8(l).ok()).and_then(|l| topo.channel(l));
    let channel = named.or_else(|| topo.channels().first())?;
    // ECS /0 means "no client information": answer as for an unknown client, scope 0.
    let route = topo.route(client, channel);
    let scope = if !by_ecs || client.prefix_len() == 0 { 0 } else { topo.scope(client) };
    match route {
        Route::Node { listen, steps } => {
            if ctx.cfg.instruct && named.is_some() {
                // Not waited for: the resolver, then the viewer's connection, take longer.
                let _ = ctx.instructor.instruct(&steps, None, Duration::ZERO);
            }
            ctx.counters.to_node.fetch_add(1, Ordering::Relaxed);
            Some((listen.ip(), scope))
        }
        Route::Cdn { endpoint } => {
            ctx.counters.to_cdn.fetch_add(1, Ordering::Relaxed);
            Some((endpoint.ip(), scope))
        }
        Route::Nowhere => None,
    }
}
