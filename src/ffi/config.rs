//! Configuration, node creation and destruction, version and error strings.

use std::collections::BTreeSet;
use std::os::raw::{c_char, c_int};
use std::sync::Mutex;

use super::{c_str, check_size, code_int, ffi, listo_err, listo_node, Fail, Handle, LISTO_CLOSE, LISTO_DONE, LISTO_OK};
use crate::{Config, Node};

/// Node configuration. Allocate it yourself (stack or heap), fill it with `listo_config_init`,
/// change the fields you want, pass it to `listo_node_new`. Durations are nanoseconds.
///
/// `size` must stay `sizeof(listo_config)` as set by `listo_config_init`. Fields are only ever
/// appended, and `size` tells a later library version which of them the caller's struct has;
/// a `size` below this version's struct is refused.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct listo_config {
    /// `sizeof(listo_config)`, set by `listo_config_init`.
    pub size: usize,
    /// Body bytes the cache tries to keep at most (objects being read are never evicted).
    pub memory_budget: u64,
    /// Most instructed channels; over it an instruction fails with `LISTO_ERR_TOO_MANY_CHANNELS`.
    pub max_channels: usize,
    /// Largest viewer request head in bytes; beyond it the viewer gets 431.
    pub max_head_bytes: usize,
    /// Most header fields in a viewer request; beyond it the viewer gets 431.
    pub max_headers: usize,
    /// Longest request target in bytes; beyond it the viewer gets 414.
    pub max_uri_bytes: usize,
    /// Pipelined requests parsed ahead per viewer connection (at least 1).
    pub max_pipeline: usize,
    /// A request head must be complete this long after its first byte, else 408.
    pub head_timeout_ns: u64,
    /// An idle viewer connection is closed after this long.
    pub idle_timeout_ns: u64,
    /// Upstream connections per CDN endpoint (at least 1).
    pub upstream_pool_size: usize,
    /// Upstream connect timeout (then 504, or a retry on the next endpoint).
    pub connect_timeout_ns: u64,
    /// Time from an upstream request to its first response byte.
    pub first_byte_timeout_ns: u64,
    /// Longest silence inside an upstream body.
    pub body_idle_timeout_ns: u64,
    /// An idle pooled upstream connection is closed after this long.
    pub pool_idle_timeout_ns: u64,
    /// Playlist freshness when neither `max-age` nor a target duration is known.
    pub playlist_default_ttl_ns: u64,
    /// Segment freshness when upstream gives no `max-age`.
    pub segment_ttl_ns: u64,
    /// How long a segment stays cached after it left the latest playlist.
    pub window_grace_ns: u64,
    /// How long a 404/410 from upstream is remembered.
    pub negative_ttl_ns: u64,
    /// Events kept for `listo_node_poll_event` before the oldest are dropped (at least 1).
    pub event_queue: usize,
    /// Output bytes a viewer may have queued before it is disconnected as too slow.
    pub max_viewer_backlog: u64,
    /// `Access-Control-Allow-Origin` value ("*" or an origin) added to responses whose upstream
    /// sent none, or NULL to pass upstream CORS headers through unchanged. A NUL-terminated
    /// string read during `listo_node_new` only (the node keeps a copy).
    pub cors_origin: *const c_char,
    /// Non-zero: large completed objects live in memory-backed files (memfd, one descriptor
    /// each, at most 1024 open), so the host can `sendfile(2)` them (`listo_slice_file`).
    /// 0 (the default): the library opens no descriptors of its own.
    pub file_backed_objects: c_int,
}

impl listo_config {
    pub(crate) fn from_config(c: &Config) -> Self {
        listo_config {
            size: std::mem::size_of::<listo_config>(),
            memory_budget: c.memory_budget,
            max_channels: c.max_channels,
            max_head_bytes: c.max_head_bytes,
            max_headers: c.max_headers,
            max_uri_bytes: c.max_uri_bytes,
            max_pipeline: c.max_pipeline,
            head_timeout_ns: c.head_timeout,
            idle_timeout_ns: c.idle_timeout,
            upstream_pool_size: c.upstream_pool_size,
            connect_timeout_ns: c.connect_timeout,
            first_byte_timeout_ns: c.first_byte_timeout,
            body_idle_timeout_ns: c.body_idle_timeout,
            pool_idle_timeout_ns: c.pool_idle_timeout,
            playlist_default_ttl_ns: c.playlist_default_ttl,
            segment_ttl_ns: c.segment_ttl,
            window_grace_ns: c.window_grace,
            negative_ttl_ns: c.negative_ttl,
            event_queue: c.event_queue,
            max_viewer_backlog: c.max_viewer_backlog,
            // A default config has none; a C string cannot borrow from `c`.
            cors_origin: std::ptr::null(),
            file_backed_objects: c_int::from(c.file_backed_objects),
        }
    }

    /// # Safety
    /// `cors_origin` is NULL or a NUL-terminated string.
    #[allow(clippy::needless_update)]
    pub(crate) unsafe fn to_config(self) -> Result<Config, Fail> {
        for (v, name) in [
            (self.max_head_bytes, "max_head_bytes"),
            (self.max_headers, "max_headers"),
            (self.max_uri_bytes, "max_uri_bytes"),
            (self.max_pipeline, "max_pipeline"),
            (self.upstream_pool_size, "upstream_pool_size"),
            (self.event_queue, "event_queue"),
        ] {
            if v == 0 {
                return Err(Fail::invalid(format!("config.{name} must be at least 1")));
            }
        }
        Ok(Config {
            memory_budget: self.memory_budget,
            max_channels: self.max_channels,
            max_head_bytes: self.max_head_bytes,
            max_headers: self.max_headers,
            max_uri_bytes: self.max_uri_bytes,
            max_pipeline: self.max_pipeline,
            head_timeout: self.head_timeout_ns,
            idle_timeout: self.idle_timeout_ns,
            upstream_pool_size: self.upstream_pool_size,
            connect_timeout: self.connect_timeout_ns,
            first_byte_timeout: self.first_byte_timeout_ns,
            body_idle_timeout: self.body_idle_timeout_ns,
            pool_idle_timeout: self.pool_idle_timeout_ns,
            playlist_default_ttl: self.playlist_default_ttl_ns,
            segment_ttl: self.segment_ttl_ns,
            window_grace: self.window_grace_ns,
            negative_ttl: self.negative_ttl_ns,
            event_queue: self.event_queue,
            max_viewer_backlog: self.max_viewer_backlog,
            cors_origin: if self.cors_origin.is_null() {
                None
            } else {
                Some(c_str(self.cors_origin, "cors_origin")?.to_string())
            },
            file_backed_objects: self.file_backed_objects != 0,
            // Fields added to `Config` later keep their defaults until exposed here.
            ..Config::default()
        })
    }
}

/// Nodes alive, by address: lets `listo_node_free` ignore a pointer it does not know (a second
/// free of the same node, or a stray pointer) instead of freeing garbage.
static LIVE: Mutex<BTreeSet<usize>> = Mutex::new(BTreeSet::new());

fn live() -> std::sync::MutexGuard<'static, BTreeSet<usize>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Fills `*config` with the defaults (suited to an access node) and sets `config->size`.
/// Returns `LISTO_OK`, or `LISTO_ERR_NULL` if `config` is NULL. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn listo_config_init(config: *mut listo_config) -> c_int {
    ffi!(code_int, {
        if config.is_null() {
            return Err(Fail::null("config"));
        }
        std::ptr::write_unaligned(config, listo_config::from_config(&Config::default()));
        Ok(LISTO_OK)
    })
}

/// Creates a node with no channels. `config` is read during the call only (the caller keeps
/// ownership). Returns NULL if `config` is NULL, its `size` was not set by `listo_config_init`,
/// a count field that must be at least 1 is 0, or on an internal failure.
///
/// The returned node belongs to the caller: free it exactly once with `listo_node_free`.
#[no_mangle]
pub unsafe extern "C" fn listo_node_new(config: *const listo_config) -> *mut listo_node {
    ffi!(|_| std::ptr::null_mut(), {
        if config.is_null() {
            return Err(Fail::null("config"));
        }
        check_size(config, "listo_config")?;
        let cfg = std::ptr::read_unaligned(config).to_config()?;
        let handle = Box::new(Handle { node: Node::new(cfg), poisoned: false, last_error: String::new() });
        let p = Box::into_raw(handle);
        live().insert(p as usize);
        Ok(p as *mut listo_node)
    })
}

/// Frees a node and everything it owns (cached objects, connection state; it never owned the
/// host's sockets). Slices it handed out become invalid. `node` may be NULL (no-op). A pointer
/// that is not a live node — e.g. the same node freed twice — is ignored, but set your pointer
/// to NULL after the call anyway: a freed address can be reused by a later `listo_node_new`.
#[no_mangle]
pub unsafe extern "C" fn listo_node_free(node: *mut listo_node) {
    ffi!(|_| (), {
        if node.is_null() || !live().remove(&(node as usize)) {
            return Ok(());
        }
        drop(Box::from_raw(node as *mut Handle));
        Ok(())
    })
}

/// The library version, e.g. "0.1.0": a static NUL-terminated string (never NULL, never free
/// it). Thread-safe. Compare with the header's `LISTO_VERSION_MAJOR/MINOR/PATCH`.
#[no_mangle]
pub extern "C" fn listo_version() -> *const c_char {
    ffi!(|_| c"".as_ptr(), { Ok(concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr() as *const c_char) })
}

/// A static English description of any return code (`LISTO_OK`, a count, `LISTO_DONE`,
/// `LISTO_CLOSE`, a `LISTO_ERR_*`, or any other integer). Never NULL; never free it.
/// Thread-safe.
#[no_mangle]
pub extern "C" fn listo_strerror(code: c_int) -> *const c_char {
    ffi!(|_| c"unknown error code".as_ptr(), { Ok(strerror(code).as_ptr() as *const c_char) })
}

pub(crate) fn strerror(code: c_int) -> &'static str {
    const ERRS: [(listo_err, &str); 8] = [
        (listo_err::Null, "a required pointer argument was NULL\0"),
        (listo_err::Invalid, "invalid argument\0"),
        (listo_err::UnknownId, "unknown connection id\0"),
        (listo_err::BufferTooSmall, "buffer too small\0"),
        (listo_err::UnknownChannel, "unknown channel\0"),
        (listo_err::TooManyChannels, "too many channels\0"),
        (listo_err::InvalidState, "call does not fit the connection's state\0"),
        (listo_err::Panic, "internal panic: the node is poisoned, free it\0"),
    ];
    match code {
        LISTO_OK => "success\0",
        c if c > 0 => "success (a count)\0",
        LISTO_DONE => "done: nothing more to do now\0",
        LISTO_CLOSE => "close: the node wants this connection closed\0",
        c => ERRS.iter().find(|(e, _)| *e as c_int == c).map_or("unknown error code\0", |(_, s)| s),
    }
}
