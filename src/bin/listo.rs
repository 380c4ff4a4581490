//! The `listo` command line (DESIGN §6): `demo`, `node`, `origin`, `simulate`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Instant;

use listo::sim::{self, SimConfig};

const USAGE: &str = "usage:
  listo demo [--viewers N] [--seconds S] [--channels C] [--svg FILE] [--ll] [--workers N]
      Origin + node + N viewers in one process on loopback, real sockets; the node runs
      --workers loops sharing one store (default: one per core, as listo node).
      --ll: an LL-HLS origin (1 s segments, ~333 ms parts) and low-latency players (blocking
      reloads, each part fetched once listed); the JSON adds part_ttfb_p50_ms/p99, parts,
      part_delay_p50_ms/p99 (published → received), upstream_part_requests, distinct_parts.
  listo node --listen ADDR [--control ADDR|PORT [--control-token TOKEN | --control-token-file FILE]]
             [--admin ADDR] [--channel NAME=PREFIX@HOST:PORT[,HOST:PORT]]... [--memory-mib N]
             [--cors ORIGIN|*] [--syslog HOST:PORT] [--workers N] [--sendfile on|off]
      A LISTO node. Viewers connect to --listen; channels come from --channel
      and from the control port (a bare PORT binds it to 127.0.0.1; any other address needs a
      token, which requests then carry as Authorization: Bearer TOKEN). Events go to stderr as
      RFC 5424 lines, or to --syslog (UDP). --workers N (default: the number of cores) runs N
      nodes on the same ports (SO_REUSEPORT) sharing one store: an object is still fetched
      once and streamed to every worker's viewers as it arrives; the admin port adds up all
      workers' counters. --sendfile off copies every body with writev (by default completed
      objects of 64 KiB or more live in memfds and leave by sendfile, without a copy).
  listo origin --listen ADDR [--channels N] [--segment-secs S] [--latency-ms MS] [--rate-mbps R]
               [--verbose 1] [--ll [--part-ms MS]] [--stall-after-ms MS]
      A synthetic live HLS origin (a CDN stand-in). --ll adds low-latency HLS (EXT-X-PART parts
      of --part-ms, default 333, at .../seg_K.part_I.ts; CAN-BLOCK-RELOAD: _HLS_msn/_HLS_part
      reloads held until the part exists, 503 after 3 target durations; the preload-hinted part
      streamed chunked as it is produced) and live DASH (/live/chN/manifest.mpd, type dynamic,
      $Number$ video and SegmentTimeline $Time$ audio, real fMP4, 404 until available).
      --stall-after-ms freezes the stream that long after start (a stalled encoder).
  listo instructor --listen ADDR --topology FILE [--trusted-proxy IP[/LEN]]... [--ttl S]
                   [--ack-wait-ms MS] [--verbose 1]
                   [--alto ADDR [--client-token TOKEN]... [--client-token-file FILE] [--alto-url URL]]
      HTTP mediator + instructor: 302s a viewer's GET to the node chosen for its address (or the
      last X-Forwarded-For hop from a trusted proxy) and instructs that node. SIGHUP reloads.
      --alto also serves ALTO (RFC 7285) at http://ADDR/alto for a third-party CDN controller:
      network map, cost map, endpoint cost, and the LISTO selection and notification resources
      (bearer token of --client-token / --client-token-file, one a line). With --alto,
      --listen is optional.
  listo dns --listen ADDR --zone NAME --topology FILE [--ttl S]
      Authoritative DNS (UDP and TCP) for NAME: A/AAAA with the chosen node's IP, by EDNS
      Client Subnet when present, else the query's source. SIGHUP reloads the topology.
  listo simulate [--viewers N] [--seconds S] [--channels C] [--seed X] [--no-prefetch]
      A whole network in virtual time. The last line printed is one JSON object.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let rest = &args[1..];
    // A node (and the demo, which holds both ends of every viewer connection) needs a descriptor
    // per connection: lift the soft limit (often 1024) to the hard one.
    #[cfg(feature = "driver")]
    if matches!(cmd.as_str(), "node" | "demo") {
        let _ = listo::driver::raise_fd_limit();
    }
    if rest.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let result = match cmd.as_str() {
        "simulate" => simulate(rest),
        #[cfg(feature = "driver")]
        "node" => cli_driver::node(rest),
        #[cfg(feature = "driver")]
        "origin" => cli_driver::origin(rest),
        #[cfg(feature = "driver")]
        "demo" => cli_driver::demo(rest),
        #[cfg(all(feature = "driver", feature = "instructor"))]
        "instructor" => instructor(rest),
        #[cfg(all(feature = "driver", feature = "instructor"))]
        "dns" => dns(rest),
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        other => Err(format!("unknown command '{other}' (try --help)")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("listo: {e}");
            ExitCode::from(2)
        }
    }
}

/// Parses `--flag value` pairs into (flag, value).
fn flag_pairs(args: &[String]) -> Result<Vec<(&str, &str)>, String> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if !flag.starts_with("--") {
            return Err(format!("unexpected argument '{flag}' (flags look like --name value; see listo --help)"));
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value, or is not a flag of this command (see listo --help)"))?;
        out.push((flag.as_str(), value.as_str()));
    }
    Ok(out)
}

fn number<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String> {
    v.parse().map_err(|_| format!("{flag}: '{v}' is not a valid number"))
}

fn addr(flag: &str, v: &str) -> Result<SocketAddr, String> {
    v.parse().map_err(|_| format!("{flag}: '{v}' is not an address like 127.0.0.1:8080 or [::1]:8080"))
}

/// `listo instructor`: the HTTP mediator and instructor until SIGINT/SIGTERM (SIGHUP reloads).
#[cfg(all(feature = "driver", feature = "instructor"))]
fn instructor(args: &[String]) -> Result<(), String> {
    use listo::instructor::{
        install_sighup_handler, AltoServer, AltoServerConfig, HttpMediator, HttpMediatorConfig, Instructor, InstructorConfig,
    };
    let (mut listen, mut topology, mut trusted) = (None, None, Vec::new());
    let (mut alto, mut tokens, mut alto_url) = (None, Vec::new(), None);
    let mut icfg = InstructorConfig::default();
    let check_token = |flag: &str, t: &str| -> Result<String, String> {
        let ok = !t.is_empty() && t.len() <= 512 && t.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b));
        if ok {
            Ok(t.to_string())
        } else {
            Err(format!("{flag}: a token is 1-512 of letters, digits and - . _ ~ + / = (RFC 6750 b64token)"))
        }
    };
    for (flag, v) in flag_pairs(args)? {
        match flag {
            "--listen" => listen = Some(addr(flag, v)?),
            "--alto" => alto = Some(addr(flag, v)?),
            "--client-token" => tokens.push(check_token(flag, v)?),
            "--client-token-file" => {
                let text = std::fs::read_to_string(v).map_err(|e| format!("{flag}: cannot read {v}: {e}"))?;
                for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
                    tokens.push(check_token(flag, line)?);
                }
            }
            "--alto-url" => {
                let ok = v.starts_with("http://") || v.starts_with("https://");
                if !ok || v.bytes().any(|b| b <= b' ' || b >= 0x7f || b == b'"') {
                    return Err(format!("{flag}: '{v}' is not an http(s) URL"));
                }
                alto_url = Some(v.to_string());
            }
            "--topology" => topology = Some(std::path::PathBuf::from(v)),
            "--trusted-proxy" => {
                let net = match v.parse::<std::net::IpAddr>() {
                    Ok(ip) => ipnet::IpNet::from(ip),
                    Err(_) => v.parse().map_err(|_| format!("{flag}: '{v}' is not an IP address or prefix"))?,
                };
                trusted.push(net);
            }
            "--ttl" => icfg.ttl_s = number(flag, v)?,
            "--ack-wait-ms" => icfg.ack_wait = std::time::Duration::from_millis(number(flag, v)?),
            "--verbose" => icfg.verbose = v == "1" || v == "true",
            _ => return Err(format!("unknown flag {flag} (see listo --help)")),
        }
    }
    if listen.is_none() && alto.is_none() {
        return Err("--listen ADDR is required (or --alto ADDR for an ALTO server alone)".into());
    }
    if alto.is_none() && (!tokens.is_empty() || alto_url.is_some()) {
        return Err("--client-token, --client-token-file and --alto-url need --alto ADDR".into());
    }
    let topology = topology.ok_or("--topology FILE is required")?;
    let verbose = icfg.verbose;
    let ins = Instructor::from_file(&topology, icfg).map_err(|e| format!("{}: {e}", topology.display()))?;
    let summary = ins.topology().summary();
    let m = match listen {
        Some(listen) => {
            let mut cfg = HttpMediatorConfig::new(listen);
            cfg.trusted_proxies = trusted;
            cfg.verbose = verbose;
            Some(HttpMediator::start(cfg, ins.clone()).map_err(|e| e.to_string())?)
        }
        None => None,
    };
    let a = match alto {
        Some(at) => {
            if tokens.is_empty() {
                eprintln!("listo instructor: no --client-token: the ALTO selection and notification resources refuse every request");
            }
            let mut cfg = AltoServerConfig::new(at);
            cfg.tokens = tokens;
            cfg.public_url = alto_url;
            cfg.verbose = verbose;
            Some(AltoServer::start(cfg, ins.clone()).map_err(|e| e.to_string())?)
        }
        None => None,
    };
    listo::driver::install_signal_handlers();
    install_sighup_handler();
    if let Some(m) = &m {
        eprintln!("listo instructor on {}: {summary}", m.local_addr());
    }
    if let Some(a) = &a {
        eprintln!("listo instructor: ALTO server on {} (directory http://{}/alto): {summary}", a.local_addr(), a.local_addr());
    }
    while !listo::driver::signalled() {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let mut line = String::from("listo instructor: stopped;");
    if let Some(m) = m {
        let s = m.stats();
        line.push_str(&format!(" {} to nodes, {} to the CDN,", s.to_node, s.to_cdn));
        m.shutdown();
    }
    if let Some(a) = a {
        let s = a.stats();
        line.push_str(&format!(" {} selections, {} notifications, {} unauthorized,", s.selections_node + s.selections_none, s.notifications, s.unauthorized));
        a.shutdown();
    }
    eprintln!("{line} {} instructions", ins.stats().posts);
    ins.stop();
    Ok(())
}

/// `listo dns`: the DNS mediator until SIGINT/SIGTERM (SIGHUP reloads the topology).
#[cfg(all(feature = "driver", feature = "instructor"))]
fn dns(args: &[String]) -> Result<(), String> {
    use listo::instructor::{install_sighup_handler, DnsConfig, DnsServer, Instructor, InstructorConfig};
    let (mut listen, mut zone, mut topology, mut ttl) = (None, None, None, None);
    for (flag, v) in flag_pairs(args)? {
        match flag {
            "--listen" => listen = Some(addr(flag, v)?),
            "--zone" => zone = Some(v.to_string()),
            "--topology" => topology = Some(std::path::PathBuf::from(v)),
            "--ttl" => ttl = Some(number::<u32>(flag, v)?),
            _ => return Err(format!("unknown flag {flag} (see listo --help)")),
        }
    }
    let listen = listen.ok_or("--listen ADDR is required")?;
    let zone = zone.ok_or("--zone NAME is required")?;
    let topology = topology.ok_or("--topology FILE is required")?;
    let ins = Instructor::from_file(&topology, InstructorConfig::default()).map_err(|e| format!("{}: {e}", topology.display()))?;
    let mut cfg = DnsConfig::new(listen, &zone);
    if let Some(t) = ttl {
        cfg.ttl = t;
    }
    let server = DnsServer::start(cfg, ins.clone()).map_err(|e| e.to_string())?;
    listo::driver::install_signal_handlers();
    install_sighup_handler();
    eprintln!("listo dns on {} (udp+tcp) for {zone}: {}", server.local_addr(), ins.topology().summary());
    while !listo::driver::signalled() {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let s = server.stats();
    eprintln!("listo dns: stopped; {} udp + {} tcp queries, {} to nodes, {} to the CDN", s.udp_queries, s.tcp_queries, s.to_node, s.to_cdn);
    server.shutdown();
    ins.stop();
    Ok(())
}

fn simulate(args: &[String]) -> Result<(), String> {
    let mut cfg = SimConfig { viewers: 1000, seconds: 120, channels: 2, ..SimConfig::default() };
    let no_prefetch = args.iter().any(|a| a == "--no-prefetch");
    cfg.node.prefetch = !no_prefetch;
    let args: Vec<String> = args.iter().filter(|a| *a != "--no-prefetch").cloned().collect();
    for (flag, v) in flag_pairs(&args)? {
        match flag {
            "--viewers" => cfg.viewers = number(flag, v)?,
            "--seconds" => cfg.seconds = number(flag, v)?,
            "--channels" => cfg.channels = number(flag, v)?,
            "--seed" => cfg.seed = number(flag, v)?,
            _ => return Err(format!("unknown flag {flag} (see listo --help)")),
        }
    }
    if cfg.channels == 0 || cfg.seconds == 0 {
        return Err("--channels and --seconds must be at least 1".into());
    }
    println!(
        "simulating {} viewers on {} channel(s) for {} virtual seconds (seed {})...",
        cfg.viewers, cfg.channels, cfg.seconds, cfg.seed
    );
    let t = Instant::now();
    let mut report = sim::run(&cfg);
    report.wall_ms = t.elapsed().as_millis() as u64;
    println!(
        "upstream: {} segment requests for {} distinct segments, {} playlist requests, {:.1} MB",
        report.upstream_segment_requests,
        report.distinct_segments,
        report.upstream_playlist_requests,
        report.upstream_bytes as f64 / 1e6
    );
    println!(
        "downstream: {:.1} MB to viewers, saving ratio {:.4}, stalls {}, hit ratio {:.4} (prefetch {})",
        report.downstream_bytes as f64 / 1e6,
        report.saving_ratio,
        report.stalls,
        report.hit_ratio,
        if report.prefetch { "on" } else { "off" }
    );
    println!("{}", report.to_json());
    Ok(())
}

#[cfg(feature = "driver")]
mod cli_driver {
    use super::{addr, flag_pairs, number};
    use listo::driver::{install_signal_handlers, DriverConfig, Listener};
    use listo::Instruction;

    /// Parses `NAME=PREFIX@HOST:PORT[,HOST:PORT]`.
    pub fn parse_channel(spec: &str) -> Result<Instruction, String> {
        let bad = |why: &str| format!("--channel '{spec}': {why} (expected NAME=PREFIX@HOST:PORT[,HOST:PORT])");
        let (name, rest) = spec.split_once('=').ok_or_else(|| bad("missing '='"))?;
        let (prefix, eps) = rest.rsplit_once('@').ok_or_else(|| bad("missing '@'"))?;
        let endpoints = eps
            .split(',')
            .map(|e| e.trim().parse().map_err(|_| bad(&format!("'{e}' is not HOST:PORT with an IP host"))))
            .collect::<Result<Vec<_>, _>>()?;
        let ins = Instruction {
            channel: name.to_string(),
            path_prefix: prefix.to_string(),
            endpoints,
            host: None,
            prefetch: Vec::new(),
            ttl_s: None,
        };
        ins.validate().map_err(|e| bad(&e.to_string()))?;
        Ok(ins)
    }

    pub fn node(args: &[String]) -> Result<(), String> {
        let mut cfg = DriverConfig::default();
        // One worker per core unless asked.
        let mut workers = std::thread::available_parallelism().map_or(1, |n| n.get()).min(256);
        for (flag, v) in flag_pairs(args)? {
            match flag {
                "--workers" => {
                    workers = number::<usize>(flag, v)?;
                    if !(1..=256).contains(&workers) {
                        return Err(format!("--workers: {workers} is not between 1 and 256"));
                    }
                }
                "--listen" => cfg.listen.push(addr(flag, v)?),
                // A bare port binds the control port to loopback.
                "--control" => cfg.control = Some(v.parse::<u16>().map(|p| std::net::SocketAddr::from(([127, 0, 0, 1], p))).or_else(|_| addr(flag, v))?),
                "--control-token" => cfg.control_token = Some(v.to_string()),
                "--control-token-file" => {
                    let t = std::fs::read_to_string(v).map_err(|e| format!("--control-token-file: cannot read {v}: {e}"))?;
                    cfg.control_token = Some(t.trim().to_string());
                }
                "--admin" => cfg.admin = Some(addr(flag, v)?),
                "--channel" => cfg.instructions.push(parse_channel(v)?),
                "--memory-mib" => cfg.node.memory_budget = number::<u64>(flag, v)?.saturating_mul(1 << 20),
                "--sendfile" => {
                    cfg.no_sendfile = match v {
                        "on" => false,
                        "off" => true,
                        _ => return Err(format!("--sendfile: {v:?} is not on or off")),
                    }
                }
                "--syslog" => cfg.events = listo::driver::EventSink::Udp(addr(flag, v)?),
                "--cors" => {
                    if v.is_empty() || v.bytes().any(|b| b <= b' ' || b == 0x7f) {
                        return Err(format!("--cors: '{v}' is not an origin or '*'"));
                    }
                    cfg.node.cors_origin = Some(v.to_string());
                }
                _ => return Err(format!("unknown flag {flag} (see listo --help)")),
            }
        }
        if cfg.listen.is_empty() {
            return Err("--listen ADDR is required".into());
        }
        if cfg.control_token.as_deref().is_some_and(|t| t.is_empty() || t.bytes().any(|b| b <= b' ' || b == 0x7f)) {
            return Err("--control-token: the token must be non-empty printable text without spaces".into());
        }
        // Anyone who reaches the control port can point the node at any endpoint: off loopback
        // it must ask for a token.
        if cfg.control.is_some_and(|a| !a.ip().is_loopback()) && cfg.control_token.is_none() {
            return Err("--control on a non-loopback address needs --control-token TOKEN (or --control-token-file FILE)".into());
        }
        if cfg.events == listo::driver::EventSink::None {
            cfg.events = listo::driver::EventSink::Stderr;
        }
        let drivers = listo::driver::bind_workers(cfg.clone(), workers).map_err(|e| e.to_string())?;
        install_signal_handlers();
        let Some(driver) = drivers.first() else { return Err("no worker".into()) };
        // The bound addresses (a port 0 in a flag shows the port actually chosen).
        eprintln!(
            "listo node: viewers on {}{}{}; {} channel(s); {} worker(s)",
            driver.local_addrs(Listener::Viewers).iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", "),
            driver.local_addr(Listener::Control).map(|a| format!(", control on {a}")).unwrap_or_default(),
            driver.local_addr(Listener::Admin).map(|a| format!(", admin on {a}")).unwrap_or_default(),
            cfg.instructions.len(),
            drivers.len()
        );
        let counters = listo::driver::run_all(drivers).map_err(|e| e.to_string())?;
        eprintln!("listo node: stopped ({} connections served)", counters.accepted);
        Ok(())
    }

    pub fn origin(args: &[String]) -> Result<(), String> {
        let mut listen = None;
        let mut cfg = listo::origin::OriginConfig::default();
        // `--ll` takes no value (`--ll 1` works too).
        let mut rest = Vec::with_capacity(args.len());
        let mut it = args.iter().peekable();
        while let Some(a) = it.next() {
            if a == "--ll" {
                cfg.ll = true;
                if it.peek().is_some_and(|v| *v == "1" || *v == "true") {
                    it.next();
                }
            } else {
                rest.push(a.clone());
            }
        }
        let mut part_ms = None;
        for (flag, v) in flag_pairs(&rest)? {
            match flag {
                "--listen" => listen = Some(addr(flag, v)?),
                "--channels" => cfg.channels = number(flag, v)?,
                "--segment-secs" => cfg.segment_secs = number(flag, v)?,
                "--latency-ms" => cfg.latency_ms = number(flag, v)?,
                "--rate-mbps" => cfg.rate_mbps = Some(number(flag, v)?),
                "--verbose" => cfg.verbose = v == "1" || v == "true",
                "--part-ms" => part_ms = Some(number::<u64>(flag, v)?),
                "--stall-after-ms" => cfg.stall_after_ms = Some(number(flag, v)?),
                _ => return Err(format!("unknown flag {flag} (see listo --help)")),
            }
        }
        let listen = listen.ok_or("--listen ADDR is required")?;
        if cfg.channels == 0 {
            return Err("--channels must be at least 1".into());
        }
        if let Some(p) = part_ms {
            if !cfg.ll {
                return Err("--part-ms needs --ll".into());
            }
            if p == 0 || p > cfg.segment_ms() {
                return Err(format!("--part-ms must be between 1 and the segment duration ({} ms)", cfg.segment_ms()));
            }
            cfg.part_ms = p;
        }
        let server = listo::origin::OriginServer::start(listen, cfg.clone()).map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        install_signal_handlers();
        eprintln!(
            "listo origin on {}: {} channel(s), renditions {:?} kbit/s, {} s segments; e.g. http://{}{}",
            server.local_addr(),
            cfg.channels,
            cfg.renditions_kbps,
            cfg.segment_secs,
            server.local_addr(),
            listo::origin::master_path(0)
        );
        if cfg.ll {
            eprintln!(
                "listo origin: low latency: {} parts of ~{} ms per segment, blocking reloads; DASH at http://{}{}",
                cfg.parts_per_segment(),
                cfg.part_target_ms(),
                server.local_addr(),
                listo::origin::dash::mpd_path(0)
            );
        }
        while !listo::driver::signalled() {
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        eprintln!("listo origin: stopped; {}", server.counts().to_json());
        server.shutdown();
        Ok(())
    }

    pub fn demo(args: &[String]) -> Result<(), String> {
        let mut cfg = listo::demo::DemoConfig::default();
        let mut rest = Vec::with_capacity(args.len());
        let mut it = args.iter().peekable();
        while let Some(a) = it.next() {
            if a == "--ll" {
                cfg.ll = true;
                if it.peek().is_some_and(|v| *v == "1" || *v == "true") {
                    it.next();
                }
            } else {
                rest.push(a.clone());
            }
        }
        for (flag, v) in flag_pairs(&rest)? {
            match flag {
                "--viewers" => cfg.viewers = number(flag, v)?,
                "--seconds" => cfg.seconds = number(flag, v)?,
                "--channels" => cfg.channels = number(flag, v)?,
                "--svg" => cfg.svg = Some(v.into()),
                "--workers" => {
                    cfg.workers = number(flag, v)?;
                    if !(1..=256).contains(&cfg.workers) {
                        return Err(format!("--workers: {} is not between 1 and 256", cfg.workers));
                    }
                }
                _ => return Err(format!("unknown flag {flag} (see listo --help)")),
            }
        }
        if cfg.viewers == 0 || cfg.seconds == 0 || cfg.channels == 0 {
            return Err("--viewers, --seconds and --channels must be at least 1".into());
        }
        let mut out = std::io::stdout();
        listo::demo::run(&cfg, &mut out).map_err(|e| e.to_string())?;
        Ok(())
    }
}
