//! The C ABI (DESIGN §5): the whole node API of §4 as `extern "C"` functions, from which
//! cbindgen generates `include/listo.h` (`cbindgen.toml`; the `c_abi` test fails on drift).
//!
//! Conventions, all written into the header through the doc comments:
//! - `listo_node` is an opaque handle (a `Box<Handle>` behind a zero-sized struct type);
//!   ids are `uint64_t`, never 0, never reused.
//! - Functions return `int` or `int64_t`: `>= 0` success or a count, `LISTO_DONE` / `LISTO_CLOSE`
//!   (negative, not errors), or a negative `LISTO_ERR_*` code (`listo_err`).
//! - Every function checks its pointers for NULL, takes raw pointers only (never `&mut T`: a
//!   NULL from C would be undefined behaviour) and runs inside `ffi!`, the one panic boundary.
//!   A panic poisons the node: every later call on it returns `LISTO_ERR_PANIC`.
//! - Structs that C allocates start with a `size` field, so fields can be appended later.
//!
//! Submodules: `config` (config, node new/free, version, strerror), `control` (instructions,
//! wall clock), `viewer` and `upstream` (connections), `conn` (slices, readiness, timers),
//! `admin` (events, stats, last error), `sockaddr` (the host's socket addresses).

//! The exported functions are `unsafe`: their safety contract is the pointer and threading rules
//! in their doc comments (the header's), which C callers read.
#![allow(non_camel_case_types, clippy::missing_safety_doc)]

// The header lists functions in this order (the blank lines keep rustfmt from sorting).
mod config;

mod control;

mod viewer;

mod upstream;

mod conn;

mod admin;

mod sockaddr;

mod shared;

#[cfg(test)]
mod tests;

pub use admin::*;
pub use config::*;
pub use conn::*;
pub use control::*;
pub use upstream::*;
pub use shared::*;
pub use viewer::*;

use std::ops::{Deref, DerefMut};
use std::os::raw::{c_char, c_int};

use crate::{Error, Node};

/// Success.
pub const LISTO_OK: c_int = 0;
/// Not an error: nothing (more) to do now — no bytes to write, no connection to open, no
/// event, no ready connection.
pub const LISTO_DONE: c_int = -1;
/// Not an error: the node wants this connection closed. Close the socket, then report it with
/// `listo_node_viewer_close` / `listo_node_upstream_closed`.
pub const LISTO_CLOSE: c_int = -2;

/// Error codes: negative, explicit, never reused. `listo_strerror` describes each.
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum listo_err {
    /// A required pointer argument was NULL.
    Null = -10,
    /// An argument is invalid: bad UTF-8, malformed JSON, a refused instruction, a struct whose
    /// `size` field was not set. `listo_node_last_error` tells why.
    Invalid = -11,
    /// The viewer or upstream id is not (or no longer) known to the node.
    UnknownId = -12,
    /// A caller buffer is too small for the result (nothing was consumed).
    BufferTooSmall = -13,
    /// No instructed channel has this name.
    UnknownChannel = -14,
    /// The node already has its configured maximum number of channels.
    TooManyChannels = -15,
    /// The call does not fit the connection's state (e.g. `upstream_connected` twice).
    InvalidState = -16,
    /// The library panicked (a bug in LISTO). The node is poisoned: every later call on it
    /// returns this code; free it with `listo_node_free`.
    Panic = -17,
}

/// A failure inside an exported function: the code, and for `listo_node_last_error` a message.
#[derive(Debug)]
pub(crate) struct Fail {
    pub code: listo_err,
    pub msg: String,
}

impl Fail {
    pub fn new(code: listo_err, msg: impl Into<String>) -> Self {
        Fail { code, msg: msg.into() }
    }
    pub fn null(what: &str) -> Self {
        Fail::new(listo_err::Null, format!("{what} is NULL"))
    }
    pub fn invalid(msg: impl Into<String>) -> Self {
        Fail::new(listo_err::Invalid, msg)
    }
}

impl From<Error> for Fail {
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::UnknownConnection => listo_err::UnknownId,
            Error::InvalidInstruction(_) => listo_err::Invalid,
            Error::UnknownChannel(_) => listo_err::UnknownChannel,
            Error::TooManyChannels(_) => listo_err::TooManyChannels,
            Error::InvalidState(_) => listo_err::InvalidState,
        };
        Fail::new(code, e.to_string())
    }
}

/// The one panic boundary. `$body` is a block evaluating to `Result<R, Fail>`; `$on_err` maps
/// an error code to the function's return value (the code itself, NULL, 0, ...). A panic
/// becomes `listo_err::Panic` (and poisons the node through [`NodeRef`]'s drop).
macro_rules! ffi {
    ($on_err:expr, $body:block) => {{
        #[allow(clippy::redundant_closure_call)]
        let r = ::std::panic::catch_unwind(::std::panic::AssertUnwindSafe(
            || -> ::std::result::Result<_, $crate::ffi::Fail> { $body },
        ));
        match r {
            Ok(Ok(v)) => v,
            Ok(Err(fail)) => ($on_err)(fail.code),
            Err(_) => ($on_err)($crate::ffi::listo_err::Panic),
        }
    }};
}
pub(crate) use ffi;

/// Maps an error code to an `int` return value.
pub(crate) fn code_int(e: listo_err) -> c_int {
    e as c_int
}

/// Maps an error code to an `int64_t` return value.
pub(crate) fn code_i64(e: listo_err) -> i64 {
    e as i64
}

/// An opaque LISTO node: all state of one cache node (channels, cache, connections, timers).
///
/// Create it with `listo_node_new`, free it with `listo_node_free`. The node owns everything
/// it allocates; pointers it hands out (zero-copy slices) stay valid only until the next call
/// that takes this node.
///
/// Threading: a node is single-threaded. It may be moved to another thread, but it must never
/// be used by two threads at once; serialize calls on one node yourself. Different nodes are
/// independent. `listo_version`, `listo_strerror` and `listo_config_init` are thread-safe.
///
/// Time: calls that need it take `now_ns`, the host's monotonic clock in nanoseconds (e.g.
/// `CLOCK_MONOTONIC`); the node never reads a clock. After any call that fed input, drain
/// output in this order: `listo_node_poll_connect`, `listo_node_poll_ready` + the matching
/// `*_poll_transmit*`, then `listo_node_timeout_ns`, then `listo_node_poll_event`.
///
/// Return values: `>= 0` is success (`LISTO_OK`) or a count; `LISTO_DONE` and `LISTO_CLOSE`
/// are negative but not errors; any other negative value is a `listo_err` code.
pub struct listo_node {
    _private: [u8; 0],
}

/// What a `listo_node *` points to.
pub(crate) struct Handle {
    pub node: Node,
    pub poisoned: bool,
    pub last_error: String,
}

/// Borrowed access to a handle during one call; poisons the handle if the call panics.
pub(crate) struct NodeRef<'a>(&'a mut Handle);

impl Deref for NodeRef<'_> {
    type Target = Handle;
    fn deref(&self) -> &Handle {
        self.0
    }
}

impl DerefMut for NodeRef<'_> {
    fn deref_mut(&mut self) -> &mut Handle {
        self.0
    }
}

impl Drop for NodeRef<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.poisoned = true;
            self.0.last_error = "internal panic: the node is poisoned".to_string();
        }
    }
}

impl NodeRef<'_> {
    /// Records the message of a failed call for `listo_node_last_error` and passes it on.
    pub fn check<T>(&mut self, r: Result<T, impl Into<Fail>>) -> Result<T, Fail> {
        r.map_err(|e| {
            let f = e.into();
            self.0.last_error.clone_from(&f.msg);
            f
        })
    }
}

/// The handle behind `node`, for a call that may change it.
///
/// # Safety
/// `node` is NULL or a pointer from `listo_node_new` not yet freed, used by this thread only.
pub(crate) unsafe fn node_mut<'a>(node: *mut listo_node) -> Result<NodeRef<'a>, Fail> {
    let h = (node as *mut Handle).as_mut().ok_or_else(|| Fail::null("node"))?;
    if h.poisoned {
        return Err(Fail::new(listo_err::Panic, "node is poisoned by an earlier panic"));
    }
    Ok(NodeRef(h))
}

/// The handle behind `node`, for a call that only reads it.
///
/// # Safety
/// As [`node_mut`].
pub(crate) unsafe fn node_ref<'a>(node: *const listo_node) -> Result<&'a Handle, Fail> {
    let h = (node as *const Handle).as_ref().ok_or_else(|| Fail::null("node"))?;
    if h.poisoned {
        return Err(Fail::new(listo_err::Panic, "node is poisoned by an earlier panic"));
    }
    Ok(h)
}

/// A NUL-terminated UTF-8 string argument.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that outlives `'a`.
pub(crate) unsafe fn c_str<'a>(p: *const c_char, what: &str) -> Result<&'a str, Fail> {
    if p.is_null() {
        return Err(Fail::null(what));
    }
    std::ffi::CStr::from_ptr(p).to_str().map_err(|_| Fail::invalid(format!("{what} is not UTF-8")))
}

/// A `(ptr, len)` byte argument; `ptr` may be NULL only when `len` is 0.
///
/// # Safety
/// `p` is NULL or points to `len` readable bytes that outlive `'a`.
pub(crate) unsafe fn c_bytes<'a>(p: *const u8, len: usize, what: &str) -> Result<&'a [u8], Fail> {
    if len == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(Fail::null(what));
    }
    if len > isize::MAX as usize {
        return Err(Fail::invalid(format!("{what}: length too large")));
    }
    Ok(std::slice::from_raw_parts(p, len))
}

/// Reads the leading `size` field of a caller struct and checks it covers this version's struct.
///
/// # Safety
/// `p` is non-NULL and points to at least a `size_t`.
pub(crate) unsafe fn check_size<T>(p: *const T, what: &str) -> Result<(), Fail> {
    let size = std::ptr::read_unaligned(p as *const usize);
    if size < std::mem::size_of::<T>() {
        return Err(Fail::invalid(format!(
            "{what}.size is {size}, expected sizeof({what}) = {} (set it before the call)",
            std::mem::size_of::<T>()
        )));
    }
    Ok(())
}

/// Copies `s` into a fixed C char array: truncated at a UTF-8 boundary, always NUL-terminated.
/// Returns true when truncated.
pub(crate) fn fill_chars(dst: &mut [c_char], s: &str) -> bool {
    let Some(room) = dst.len().checked_sub(1) else { return !s.is_empty() };
    let mut n = s.len().min(room);
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    for (d, b) in dst.iter_mut().zip(&s.as_bytes()[..n]) {
        *d = *b as c_char;
    }
    dst[n] = 0;
    n < s.len()
}
