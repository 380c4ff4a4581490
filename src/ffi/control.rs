//! Instructions (struct and JSON forms), withdrawal, and the wall-clock hint.

use std::os::raw::{c_char, c_int};

use super::{c_bytes, c_str, check_size, code_int, ffi, node_mut, Fail, LISTO_OK};
use crate::control::{parse_endpoint, parse_instruction_json};
use crate::Instruction;

/// Longest `endpoints` / `prefetch` array accepted (a guard against garbage lengths).
const MAX_LIST: usize = 4096;

/// An instruction in C form: "channel `channel`, whose playlists and segments live under
/// `path_prefix`, is served by CDN endpoint(s) `endpoints`".
///
/// Every pointer is borrowed for the duration of `listo_node_instruct` only: the node copies
/// what it keeps. Strings are NUL-terminated UTF-8. Set `size` to `sizeof(listo_instruction)`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct listo_instruction {
    /// `sizeof(listo_instruction)`.
    pub size: usize,
    /// Channel name, unique per node: 1 to 128 of `[A-Za-z0-9._-]`.
    pub channel: *const c_char,
    /// Path prefix, e.g. "/live/ch1/": must start with '/'.
    pub path_prefix: *const c_char,
    /// `endpoints_len` strings "IP:PORT" (`"192.0.2.1:80"`, `"[2001:db8::1]:80"`); the first is the
    /// primary, a failed fetch is retried once on the next. At least one.
    pub endpoints: *const *const c_char,
    /// Number of strings in `endpoints`.
    pub endpoints_len: usize,
    /// `Host` header sent upstream, or NULL for the primary endpoint's "IP:PORT".
    pub host: *const c_char,
    /// `prefetch_len` paths (under `path_prefix`) to fetch at once, or NULL when 0.
    pub prefetch: *const *const c_char,
    /// Number of strings in `prefetch`.
    pub prefetch_len: usize,
}

/// An array of C strings.
unsafe fn c_strs(p: *const *const c_char, len: usize, what: &str) -> Result<Vec<String>, Fail> {
    if len == 0 {
        return Ok(Vec::new());
    }
    if p.is_null() {
        return Err(Fail::null(what));
    }
    if len > MAX_LIST {
        return Err(Fail::invalid(format!("{what}_len is over {MAX_LIST}")));
    }
    std::slice::from_raw_parts(p, len).iter().map(|s| c_str(*s, what).map(str::to_string)).collect()
}

unsafe fn read_instruction(ins: *const listo_instruction) -> Result<Instruction, Fail> {
    if ins.is_null() {
        return Err(Fail::null("instruction"));
    }
    check_size(ins, "listo_instruction")?;
    let c = std::ptr::read_unaligned(ins);
    let endpoints = c_strs(c.endpoints, c.endpoints_len, "endpoints")?
        .iter()
        .map(|e| parse_endpoint(e).ok_or_else(|| Fail::invalid(format!("endpoint '{e}' is not IP:PORT"))))
        .collect::<Result<Vec<_>, _>>()?;
    let host = if c.host.is_null() { None } else { Some(c_str(c.host, "host")?.to_string()) };
    Ok(Instruction {
        channel: c_str(c.channel, "channel")?.to_string(),
        path_prefix: c_str(c.path_prefix, "path_prefix")?.to_string(),
        endpoints,
        host,
        prefetch: c_strs(c.prefetch, c.prefetch_len, "prefetch")?,
        // An expiring instruction is given in the JSON form (`"ttl_s"`).
        ttl_s: None,
    })
}

/// Adds a channel, or replaces the one with the same name (a replaced channel keeps its cache
/// when its prefix is unchanged). `prefetch` paths start fetching at once, so drain
/// `listo_node_poll_connect` afterwards. `ins` and everything it points to is only read
/// during the call.
///
/// Returns `LISTO_OK`; `LISTO_ERR_NULL`; `LISTO_ERR_INVALID` for a refused instruction
/// (nothing changed; `listo_node_last_error` says why); `LISTO_ERR_TOO_MANY_CHANNELS`.
#[no_mangle]
pub unsafe extern "C" fn listo_node_instruct(
    node: *mut super::listo_node,
    now_ns: u64,
    ins: *const listo_instruction,
) -> c_int {
    ffi!(code_int, {
        let mut h = node_mut(node)?;
        let ins = h.check(read_instruction(ins))?;
        let r = h.node.instruct(now_ns, ins);
        h.check(r)?;
        Ok(LISTO_OK)
    })
}

/// As `listo_node_instruct`, from the JSON form of the control port (`json`: `len` bytes, no
/// NUL needed, read during the call only):
/// `{"channel":"ch1","path_prefix":"/live/ch1/","endpoints":["192.0.2.1:80"],
///   "host":"cdn.example","prefetch":["/live/ch1/index.m3u8"]}` (`host`, `prefetch` optional).
///
/// Returns `LISTO_OK`; `LISTO_ERR_NULL`; `LISTO_ERR_INVALID` for malformed JSON or a refused
/// instruction (`listo_node_last_error` names the field); `LISTO_ERR_TOO_MANY_CHANNELS`.
#[no_mangle]
pub unsafe extern "C" fn listo_node_instruct_json(
    node: *mut super::listo_node,
    now_ns: u64,
    json: *const u8,
    len: usize,
) -> c_int {
    ffi!(code_int, {
        let mut h = node_mut(node)?;
        let body = h.check(c_bytes(json, len, "json"))?;
        let ins = h.check(parse_instruction_json(body))?;
        let r = h.node.instruct(now_ns, ins);
        h.check(r)?;
        Ok(LISTO_OK)
    })
}

/// Withdraws the channel named `channel` (NUL-terminated, read during the call): new requests
/// for it get 404, responses in flight finish. Returns `LISTO_OK`, `LISTO_ERR_NULL`,
/// `LISTO_ERR_INVALID` (not UTF-8) or `LISTO_ERR_UNKNOWN_CHANNEL`.
#[no_mangle]
pub unsafe extern "C" fn listo_node_withdraw(
    node: *mut super::listo_node,
    now_ns: u64,
    channel: *const c_char,
) -> c_int {
    ffi!(code_int, {
        let mut h = node_mut(node)?;
        let name = h.check(c_str(channel, "channel"))?;
        let r = h.node.withdraw(now_ns, name);
        h.check(r)?;
        Ok(LISTO_OK)
    })
}

/// Tells the node that monotonic time `now_ns` is `unix_ns` nanoseconds since 1970 on the wall
/// clock (for HTTP `Date` headers). Call it once at start and now and then (e.g. every
/// minute). Returns `LISTO_OK` or `LISTO_ERR_NULL`.
#[no_mangle]
pub unsafe extern "C" fn listo_node_set_wall_clock(node: *mut super::listo_node, now_ns: u64, unix_ns: u64) -> c_int {
    ffi!(code_int, {
        let mut h = node_mut(node)?;
        h.node.set_wall_clock(now_ns, unix_ns);
        Ok(LISTO_OK)
    })
}
