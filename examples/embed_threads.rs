//! `embed_threads`: the multi-core shape — one [`Node`] per worker thread, each
//! running `embed_poll`'s loop ([`Host`]) on its own listening socket. All workers bind the same
//! port with `SO_REUSEPORT`, so the kernel spreads new viewer connections across them (Linux
//! balances by connection hash; other systems may hand every connection to one worker). One
//! logger thread drains every node's events through `Node::event_receiver` — crossbeam
//! receivers, waited on together with `crossbeam_channel::Select` — so workers never block on
//! logging.
//!
//! A `Node` is single-threaded and `Send`: build it anywhere, move it into its worker, and
//! call it only from there. The workers share one store
//! ([`SharedStore`](listo::store::shared::SharedStore), joined with `Node::join_shared`): the
//! first worker to miss an object fetches it, the others wait and are woken through a pipe their
//! `poll` watches (`Host::share`), then call `Node::handle_shared` — so an object costs one
//! upstream request whatever the number of workers. All nodes use one clock (`now` values
//! comparable across threads).
//!
//! ```sh
//! cargo run -- origin --listen 127.0.0.1:18080 &
//! cargo run --example embed_threads -- --workers 4 --listen 127.0.0.1:8080 --channel ch0=/live/ch0/@127.0.0.1:18080
//! ```
//!
//! Flags as `embed_poll` (`--listen`, `--channel`, `--requests N` counted across workers,
//! `--seconds S`) plus `--workers N` (default 2). Prints `listening on ADDR` first, one summary
//! line per worker and a total last.

#[allow(dead_code)] // the host loop and helpers of embed_poll; its own `main` is unused here
#[path = "embed_poll.rs"]
mod embed_poll;

use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::io::{AsRawFd, FromRawFd, IntoRawFd};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Select};
use embed_poll::{requests, run_until, sockaddr, summary, tcp_socket, Args, Host};
use listo::store::shared::SharedStore;
use listo::{Config, Event, Node, Stats};

/// A listener on `addr` that other sockets of this process may bind too (`SO_REUSEPORT`).
/// std's `TcpListener::bind` cannot set options before `bind`, so this takes the long way.
fn reuseport_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let fd = tcp_socket(&addr)?.into_raw_fd();
    // SAFETY: `fd` is a fresh socket we own; from here the listener owns (and closes) it.
    let listener = unsafe { TcpListener::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    for opt in [libc::SO_REUSEADDR, libc::SO_REUSEPORT] {
        // SAFETY: `one` is a c_int of the size passed.
        let rc = unsafe {
            libc::setsockopt(fd, libc::SOL_SOCKET, opt, (&one as *const libc::c_int).cast(), std::mem::size_of::<libc::c_int>() as libc::socklen_t)
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    let (sa, len) = sockaddr(&addr);
    // SAFETY: `sa` holds a valid sockaddr of `len` bytes.
    if unsafe { libc::bind(fd, (&sa as *const libc::sockaddr_storage).cast(), len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: listen(2) on a socket we own; a deep backlog absorbs a channel zap.
    if unsafe { libc::listen(listener.as_raw_fd(), 1024) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(listener)
}

/// Logs every worker's events until all nodes are gone (their senders dropped).
fn logger(receivers: Vec<Receiver<Event>>) {
    let mut select = Select::new();
    for r in &receivers {
        select.recv(r);
    }
    let mut open = receivers.len();
    while open > 0 {
        let op = select.select();
        let i = op.index();
        match op.recv(&receivers[i]) {
            Ok(e) => eprintln!("worker {i}: event {} {:?}", e.kind(), e.fields()),
            Err(_) => {
                select.remove(i);
                open -= 1;
            }
        }
    }
}

fn main() -> ExitCode {
    let args = match Args::parse(std::env::args().skip(1), true) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("embed_threads: {e}\nusage: embed_threads [--workers N] [--listen ADDR] [--channel NAME=PREFIX@IP:PORT]... [--requests N] [--seconds S]");
            return ExitCode::from(2);
        }
    };
    // The first bind settles the port (port 0 picks one); the other workers join it.
    let mut listeners = Vec::new();
    let mut addr = args.listen;
    for _ in 0..args.workers {
        match reuseport_listener(addr) {
            Ok(l) => {
                addr = l.local_addr().expect("bound address");
                listeners.push(l);
            }
            Err(e) => {
                eprintln!("embed_threads: cannot listen on {addr}: {e} (pick another --listen, or port 0)");
                return ExitCode::from(2);
            }
        }
    }
    // One node per worker, each instructed the same way; its event receiver goes to the logger.
    let mut nodes = Vec::new();
    let mut receivers = Vec::new();
    for _ in 0..args.workers {
        let mut node = Node::new(Config::default());
        receivers.push(node.event_receiver());
        for ins in &args.channels {
            if let Err(e) = node.instruct(0, ins.clone()) {
                eprintln!("embed_threads: {e}");
                return ExitCode::from(2);
            }
        }
        nodes.push(node);
    }
    let logger = thread::spawn(move || logger(receivers));

    let stop = Arc::new(AtomicBool::new(false));
    let answered: Arc<Vec<AtomicU64>> = Arc::new((0..args.workers).map(|_| AtomicU64::new(0)).collect());
    // One store for all workers (single-flight across them) and one clock.
    let store = SharedStore::new();
    let epoch = Instant::now();
    let mut workers = Vec::new();
    for (i, (node, listener)) in nodes.into_iter().zip(listeners).enumerate() {
        let (stop, answered, store) = (stop.clone(), answered.clone(), store.clone());
        workers.push(thread::spawn(move || -> io::Result<Stats> {
            let mut host = Host::new(node, listener)?;
            host.share(&store, epoch)?;
            host.log_events = false; // the logger thread has them
            run_until(&mut host, |h| {
                answered[i].store(requests(&h.node.stats()), Ordering::Relaxed);
                // Answer everything this worker started before it stops.
                stop.load(Ordering::Relaxed) && !h.busy()
            })?;
            Ok(host.node.stats())
        }));
    }
    println!("listening on {addr} with {} workers", args.workers);
    let _ = io::stdout().flush();

    // The main thread only decides when to stop.
    let deadline = args.seconds.map(|s| Instant::now() + Duration::from_secs(s));
    loop {
        let total: u64 = answered.iter().map(|a| a.load(Ordering::Relaxed)).sum();
        if args.requests.is_some_and(|n| total >= n) || deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    let mut failed = false;
    let mut totals = Vec::new();
    for (i, w) in workers.into_iter().enumerate() {
        match w.join() {
            Ok(Ok(stats)) => {
                println!("worker {i}: {}", summary(&stats));
                totals.push(stats);
            }
            Ok(Err(e)) => {
                eprintln!("embed_threads: worker {i}: poll failed: {e}");
                failed = true;
            }
            Err(_) => {
                eprintln!("embed_threads: worker {i} panicked");
                failed = true;
            }
        }
    }
    let _ = logger.join(); // ends once every node (and so every sender) is dropped
    let sum = |f: fn(&Stats) -> u64| totals.iter().map(f).sum::<u64>();
    println!(
        "total: requests {}, upstream requests {} ({} workers: each fetches an object at most once)",
        sum(requests),
        sum(|s| s.channels.iter().map(|c| c.upstream_requests).sum()),
        args.workers
    );
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
