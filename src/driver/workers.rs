//! One node per core: `N` drivers, each a mio loop on its own thread with its own `Node`, all
//! sharing one store (an object is fetched once for all of them) and the viewer ports
//! (`SO_REUSEPORT`: the kernel spreads new connections over the workers). Worker 0 owns the
//! control and admin ports: instructions it takes are applied on every worker, and its admin
//! answers add up every worker's counters.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use mio::net::TcpListener;

use super::{Driver, DriverConfig, DriverCounters, Listener, WorkerSetup};
use crate::store::shared::SharedStore;

/// Runs a node as `workers` worker threads (1: a single driver, as [`Driver::run`]) until
/// stopped by SIGINT/SIGTERM; returns the connection counters of all workers.
pub fn run_workers(cfg: DriverConfig, workers: usize) -> io::Result<DriverCounters> {
    let drivers = bind_workers(cfg, workers)?;
    run_all(drivers)
}

/// Binds every worker (worker 0 first, so a port 0 is chosen once and shared).
pub fn bind_workers(cfg: DriverConfig, workers: usize) -> io::Result<Vec<Driver>> {
    if workers <= 1 {
        return Ok(vec![Driver::bind(cfg)?]);
    }
    let setup = WorkerSetup { store: SharedStore::new(), epoch: Instant::now(), stop: Arc::new(AtomicBool::new(false)) };
    let first = Driver::bind(DriverConfig { worker: Some(setup.clone()), ..cfg.clone() })?;
    let listen = first.local_addrs(Listener::Viewers);
    let mut drivers = vec![first];
    for _ in 1..workers {
        drivers.push(Driver::bind(DriverConfig {
            listen: listen.clone(),
            control: None,
            admin: None,
            worker: Some(setup.clone()),
            ..cfg.clone()
        })?);
    }
    let (head, rest) = drivers.split_at_mut(1);
    for d in rest.iter_mut() {
        let (tx, rx) = crossbeam_channel::unbounded();
        d.inbox = Some(rx);
        head[0].followers.push((tx, d.stop.waker.clone()));
        // One event log and one "fresh counters, please" number for all workers.
        d.log = head[0].log.clone();
        d.stats_wanted = head[0].stats_wanted.clone();
        head[0].peer_stats.push(d.peer.clone());
    }
    Ok(drivers)
}

/// Runs bound workers (worker 0 on this thread) until they stop; sums their counters.
pub fn run_all(mut drivers: Vec<Driver>) -> io::Result<DriverCounters> {
    if drivers.is_empty() {
        return Ok(DriverCounters::default());
    }
    let first = drivers.remove(0);
    let threads: Vec<_> = drivers
        .into_iter()
        .enumerate()
        .map(|(i, d)| thread::Builder::new().name(format!("listo-worker-{}", i + 1)).spawn(move || d.run()))
        .collect::<Result<_, _>>()?;
    let mut total = first.run()?;
    for t in threads {
        if let Ok(Ok(c)) = t.join() {
            total.add(&c);
        }
    }
    Ok(total)
}

/// A non-blocking listener on `addr` with `SO_REUSEPORT` (and `SO_REUSEADDR`) set before `bind`.
pub(super) fn bind_reuse_port(addr: SocketAddr) -> io::Result<TcpListener> {
    use std::os::unix::io::FromRawFd;
    let domain = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    // SAFETY: plain socket(2); the fd is owned below or closed on every error path.
    let fd = unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh socket we own; from here it closes on drop.
    let std_listener = unsafe { std::net::TcpListener::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    for opt in [libc::SO_REUSEADDR, libc::SO_REUSEPORT] {
        // SAFETY: setsockopt with a valid c_int option value.
        let rc = unsafe {
            libc::setsockopt(fd, libc::SOL_SOCKET, opt, &one as *const libc::c_int as *const libc::c_void, std::mem::size_of::<libc::c_int>() as libc::socklen_t)
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    let (storage, len) = sockaddr(addr);
    // SAFETY: `storage` holds a valid sockaddr of `len` bytes for this address family.
    if unsafe { libc::bind(fd, &storage as *const libc::sockaddr_storage as *const libc::sockaddr, len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: listen(2) on the socket we own.
    if unsafe { libc::listen(fd, super::LISTEN_BACKLOG) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(TcpListener::from_std(std_listener))
}

fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: an all-zero sockaddr_storage is valid.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage.
            unsafe { std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in, sin) };
            (storage, std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t)
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr { s6_addr: a.ip().octets() },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage.
            unsafe { std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in6, sin6) };
            (storage, std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t)
        }
    }
}
