//! Socket addresses as the host's own `struct sockaddr_in` / `sockaddr_in6`, so it can pass
//! what `accept` gave and hand what `poll_connect` gives straight to `socket` + `connect`.

use std::net::SocketAddr;
use std::os::raw::c_void;

#[cfg(unix)]
pub(super) unsafe fn read_sockaddr(p: *const c_void, len: usize) -> Option<SocketAddr> {
    use std::mem::size_of;
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
    if p.is_null() || len < size_of::<libc::sockaddr>() {
        return None;
    }
    let sa: libc::sockaddr = std::ptr::read_unaligned(p as *const libc::sockaddr);
    match i32::from(sa.sa_family) {
        libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
            let s: libc::sockaddr_in = std::ptr::read_unaligned(p as *const libc::sockaddr_in);
            let ip = Ipv4Addr::from(s.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(s.sin_port))))
        }
        libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
            let s: libc::sockaddr_in6 = std::ptr::read_unaligned(p as *const libc::sockaddr_in6);
            let ip = Ipv6Addr::from(s.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(ip, u16::from_be(s.sin6_port), s.sin6_flowinfo, s.sin6_scope_id)))
        }
        _ => None,
    }
}

#[cfg(not(unix))]
pub(super) unsafe fn read_sockaddr(_p: *const c_void, _len: usize) -> Option<SocketAddr> {
    None
}

/// Room a native socket address needs in the host's buffer.
#[cfg(unix)]
pub(super) const SOCKADDR_MAX: usize = std::mem::size_of::<libc::sockaddr_in6>();
#[cfg(not(unix))]
pub(super) const SOCKADDR_MAX: usize = 0;

/// Writes `addr` as a native `sockaddr_in` / `sockaddr_in6` into `out`; returns its length.
#[cfg(unix)]
pub(super) unsafe fn write_sockaddr(addr: SocketAddr, out: *mut c_void) -> usize {
    use std::mem::size_of;
    // SAFETY (zeroed): plain C structs of integers, for which all-zero is valid.
    match addr {
        SocketAddr::V4(a) => {
            let mut s: libc::sockaddr_in = std::mem::zeroed();
            s.sin_family = libc::AF_INET as libc::sa_family_t;
            s.sin_port = a.port().to_be();
            s.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
            #[cfg(any(
                target_os = "macos",
                target_os = "ios",
                target_os = "freebsd",
                target_os = "openbsd",
                target_os = "netbsd",
                target_os = "dragonfly"
            ))]
            {
                s.sin_len = size_of::<libc::sockaddr_in>() as u8;
            }
            std::ptr::write_unaligned(out as *mut libc::sockaddr_in, s);
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let mut s: libc::sockaddr_in6 = std::mem::zeroed();
            s.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            s.sin6_port = a.port().to_be();
            s.sin6_addr.s6_addr = a.ip().octets();
            s.sin6_flowinfo = a.flowinfo();
            s.sin6_scope_id = a.scope_id();
            #[cfg(any(
                target_os = "macos",
                target_os = "ios",
                target_os = "freebsd",
                target_os = "openbsd",
                target_os = "netbsd",
                target_os = "dragonfly"
            ))]
            {
                s.sin6_len = size_of::<libc::sockaddr_in6>() as u8;
            }
            std::ptr::write_unaligned(out as *mut libc::sockaddr_in6, s);
            size_of::<libc::sockaddr_in6>()
        }
    }
}

#[cfg(not(unix))]
pub(super) unsafe fn write_sockaddr(_addr: SocketAddr, _out: *mut c_void) -> usize {
    0
}
