//! ALTO documents (RFC 7285) built from the topology, and the LISTO extension of the AC
//! interface (seed figures 3 and 5): pure functions over a [`Topology`] snapshot, served by
//! [`super::AltoServer`].
//!
//! **Read side (standard ALTO).**
//! * Network map (`application/alto-networkmap+json`, §11.2.1): the topology's PIDs with their
//!   prefixes as given, plus a default PID (`default`, or `default-N` if that name is taken)
//!   holding `0.0.0.0/0` and `::/0` for the families the topology does not already cover, so
//!   every address has a PID. `meta.vtag` = the topology's network map `resource-id` (when it is
//!   a valid resource id; else `listo-network-map`) and a tag that is a 128-bit FNV-1a hash of
//!   the served `network-map` object: it changes exactly when the map does.
//! * Cost map (`application/alto-costmap+json`, §11.2.3), cost type `num-routing` =
//!   `routingcost`/`numerical`, over every pair of served PIDs, derived from the topology:
//!   [`COST_SAME_PID`] within a PID (a viewer and the LISTO node serving its PID),
//!   [`COST_OTHER_PID`] between two of the operator's PIDs, [`COST_DEFAULT_PID`] to or from the
//!   default PID (outside every subnet the operator listed). `meta.dependent-vtags` names the
//!   network map's vtag. (The topology's own `cost_map` ranks CDN endpoints by PIDs outside
//!   the network map; it stays internal to the instructor.)
//! * Endpoint cost service (`application/alto-endpointcostparams+json` in,
//!   `application/alto-endpointcost+json` out, §11.5.1): typed addresses (`ipv4:…`, `ipv6:…`)
//!   mapped to PIDs by longest-prefix match, costs as in the cost map; `num-routing` and
//!   `ord-routing` (ranks, 1 the cheapest, equal costs equal ranks); `constraints` (`lt`, `le`,
//!   `gt`, `ge`, `eq` against the reported value); missing `srcs` means the client's address.
//! * Information resource directory (`application/alto-directory+json`, §9): the above plus
//!   the two LISTO resources, with `uri`, `media-type`, `accepts`, `capabilities`, `uses`.
//! * Errors (`application/alto-error+json`, §8.5): `{"meta":{"code":…,"field":…,"value":…}}`,
//!   HTTP 400 with `E_SYNTAX`, `E_MISSING_FIELD`, `E_INVALID_FIELD_TYPE`,
//!   `E_INVALID_FIELD_VALUE`; HTTP-level refusals carry LISTO extension codes
//!   ([`AltoError::code`]), 401 `E_UNAUTHORIZED` among them.
//!
//! **LISTO extension (AC interface)**, both behind a bearer token:
//! * selection (`application/alto-listo-selectionparams+json` →
//!   `application/alto-listo-selection+json`): `{"endpoint":"ipv4:10.1.2.3","channel":"ch0"}`
//!   → `{"meta":{"dependent-vtags":[…]},"selection":{"endpoint":…,"channel":…,"pid":…,
//!   "listo-node":"127.0.0.2:8080","url":"http://127.0.0.2:8080"}}`, or `"listo-node":"none"`
//!   (no `url`): the controller serves that viewer itself.
//! * notification (`application/alto-listo-notificationparams+json` →
//!   `application/alto-listo-notification+json`): `{"channel":"ch0","listo-node":…,
//!   "cdn-endpoint":"203.0.113.5:80","playlist":"/live/ch0/index.m3u8"}` (plus `path-prefix`
//!   for a channel the topology does not list, and an optional `host`) → the node (and every
//!   level above it, top first) is instructed with that endpoint and the playlist as prefetch;
//!   the answer says `"status":"ready"|"pending"|"failed"`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use serde_json::{json, Map, Value};

use super::lpm::{canonical, PrefixTable};
use super::mediator_http::check_target;
use super::topology::{Step, Topology};
use crate::Instruction;

/// Media type of the information resource directory.
pub const MT_DIRECTORY: &str = "application/alto-directory+json";
/// Media type of a network map.
pub const MT_NETWORK_MAP: &str = "application/alto-networkmap+json";
/// Media type of a cost map.
pub const MT_COST_MAP: &str = "application/alto-costmap+json";
/// Media type of an endpoint cost response.
pub const MT_ENDPOINT_COST: &str = "application/alto-endpointcost+json";
/// Media type of an endpoint cost request.
pub const MT_ENDPOINT_COST_PARAMS: &str = "application/alto-endpointcostparams+json";
/// Media type of an ALTO error response.
pub const MT_ERROR: &str = "application/alto-error+json";
/// Media type of a LISTO selection answer.
pub const MT_SELECTION: &str = "application/alto-listo-selection+json";
/// Media type of a LISTO selection request.
pub const MT_SELECTION_PARAMS: &str = "application/alto-listo-selectionparams+json";
/// Media type of a LISTO notification answer.
pub const MT_NOTIFICATION: &str = "application/alto-listo-notification+json";
/// Media type of a LISTO notification request.
pub const MT_NOTIFICATION_PARAMS: &str = "application/alto-listo-notificationparams+json";

/// Resource id of the cost map.
pub const RID_COST_MAP: &str = "costmap-num-routing";
/// Resource id of the endpoint cost service.
pub const RID_ENDPOINT_COST: &str = "endpoint-cost";
/// Resource id of the LISTO selection service.
pub const RID_SELECTION: &str = "listo-selection";
/// Resource id of the LISTO notification service.
pub const RID_NOTIFICATION: &str = "listo-notification";
/// Network map resource id when the topology's network map has none (or an invalid one).
pub const RID_NETWORK_MAP_DEFAULT: &str = "listo-network-map";

/// Path of the directory.
pub const PATH_DIRECTORY: &str = "/alto";
/// Path of the network map.
pub const PATH_NETWORK_MAP: &str = "/alto/networkmap";
/// Path of the cost map.
pub const PATH_COST_MAP: &str = "/alto/costmap/num-routing";
/// Path of the endpoint cost service.
pub const PATH_ENDPOINT_COST: &str = "/alto/endpointcost";
/// Path of the LISTO selection service.
pub const PATH_SELECTION: &str = "/alto/listo/selection";
/// Path of the LISTO notification service.
pub const PATH_NOTIFICATION: &str = "/alto/listo/notification";

/// `routingcost` within one PID.
pub const COST_SAME_PID: u64 = 1;
/// `routingcost` between two PIDs of the operator's network map.
pub const COST_OTHER_PID: u64 = 10;
/// `routingcost` to or from the default PID.
pub const COST_DEFAULT_PID: u64 = 100;

/// Most (source, destination) pairs one endpoint cost request may ask for.
pub const MAX_ENDPOINT_PAIRS: usize = 65_536;

/// An ALTO error (RFC 7285 §8.5): HTTP status, code, and the field and value at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AltoError {
    /// HTTP status.
    pub status: u16,
    /// `E_SYNTAX`, `E_MISSING_FIELD`, `E_INVALID_FIELD_TYPE`, `E_INVALID_FIELD_VALUE` (RFC 7285,
    /// status 400) or a LISTO extension code for HTTP-level refusals: `E_UNAUTHORIZED` (401),
    /// `E_NOT_FOUND` (404), `E_METHOD_NOT_ALLOWED` (405), `E_NOT_ACCEPTABLE` (406),
    /// `E_LENGTH_REQUIRED` (411), `E_TOO_LARGE` (413, 431), `E_MEDIA_TYPE` (415).
    pub code: &'static str,
    /// The JSON field at fault (`/`-separated path), if any.
    pub field: Option<String>,
    /// The offending value, if any (at most 200 bytes of it).
    pub value: Option<String>,
    /// For `E_SYNTAX`: what was wrong (RFC 7285 `syntax-error`).
    pub syntax_error: Option<String>,
}

impl AltoError {
    fn new(status: u16, code: &'static str) -> AltoError {
        AltoError { status, code, field: None, value: None, syntax_error: None }
    }

    /// `E_SYNTAX` (400) with a description.
    pub fn syntax(why: impl Into<String>) -> AltoError {
        AltoError { syntax_error: Some(why.into()), ..AltoError::new(400, "E_SYNTAX") }
    }

    /// `E_MISSING_FIELD` (400).
    pub fn missing(field: &str) -> AltoError {
        AltoError { field: Some(field.into()), ..AltoError::new(400, "E_MISSING_FIELD") }
    }

    /// `E_INVALID_FIELD_TYPE` (400).
    pub fn field_type(field: &str) -> AltoError {
        AltoError { field: Some(field.into()), ..AltoError::new(400, "E_INVALID_FIELD_TYPE") }
    }

    /// `E_INVALID_FIELD_VALUE` (400) naming the value.
    pub fn field_value(field: &str, value: &str) -> AltoError {
        let mut v = value.to_string();
        if v.len() > 200 {
            let mut cut = 200;
            while !v.is_char_boundary(cut) {
                cut -= 1;
            }
            v.truncate(cut);
        }
        AltoError { field: Some(field.into()), value: Some(v), ..AltoError::new(400, "E_INVALID_FIELD_VALUE") }
    }

    /// An HTTP-level refusal with a LISTO extension code (see [`AltoError::code`]).
    pub fn http(status: u16) -> AltoError {
        let code = match status {
            401 => "E_UNAUTHORIZED",
            404 => "E_NOT_FOUND",
            405 => "E_METHOD_NOT_ALLOWED",
            406 => "E_NOT_ACCEPTABLE",
            411 => "E_LENGTH_REQUIRED",
            413 | 431 => "E_TOO_LARGE",
            415 => "E_MEDIA_TYPE",
            400 => "E_SYNTAX",
            _ => "E_SERVER",
        };
        AltoError::new(status, code)
    }

    /// The `application/alto-error+json` body.
    pub fn body(&self) -> Value {
        let mut meta = Map::new();
        meta.insert("code".into(), json!(self.code));
        if let Some(f) = &self.field {
            meta.insert("field".into(), json!(f));
        }
        if let Some(v) = &self.value {
            meta.insert("value".into(), json!(v));
        }
        if let Some(s) = &self.syntax_error {
            meta.insert("syntax-error".into(), json!(s));
        }
        json!({ "meta": meta })
    }
}

/// RFC 7285 §10.2: a resource id is 1..=64 of US-ASCII alphanumerics, '-', ':', '@', '_', '.'.
pub fn valid_resource_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-:@_.".contains(&b))
}

/// 128-bit FNV-1a of `bytes`, as 32 lowercase hex digits (a valid vtag tag, RFC 7285 §10.3).
pub fn content_tag(bytes: &[u8]) -> String {
    let mut h: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    for &b in bytes {
        h ^= u128::from(b);
        h = h.wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b);
    }
    format!("{h:032x}")
}

/// `ipv4:a.b.c.d` or `ipv6:x::y` (RFC 7285 §10.4.1) → the address.
pub fn parse_typed_address(s: &str) -> Option<IpAddr> {
    let (kind, addr) = s.split_once(':')?;
    match kind {
        "ipv4" => addr.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4),
        "ipv6" => addr.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6),
        _ => None,
    }
}

/// The typed address of `ip` (`ipv4:…` / `ipv6:…`).
pub fn typed_address(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => format!("ipv4:{a}"),
        IpAddr::V6(a) => format!("ipv6:{a}"),
    }
}

pub use crate::http::constant_time_eq;

/// True when `presented` equals one of `tokens`; every token is compared (no early exit).
pub fn token_allowed(tokens: &[String], presented: &[u8]) -> bool {
    let mut ok = false;
    for t in tokens {
        ok |= constant_time_eq(t.as_bytes(), presented);
    }
    ok
}

/// What an `Authorization` header value holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bearer<'a> {
    /// No `Authorization` header.
    Missing,
    /// A header that is not `Bearer <token>` (or more than one header).
    Malformed,
    /// The token.
    Token(&'a [u8]),
}

/// The bearer token (RFC 6750 §2.1) of a request's headers.
pub fn bearer_token<'a>(headers: &[httparse::Header<'a>]) -> Bearer<'a> {
    let mut found = headers.iter().filter(|h| h.name.eq_ignore_ascii_case("authorization"));
    let Some(h) = found.next() else { return Bearer::Missing };
    if found.next().is_some() {
        return Bearer::Malformed;
    }
    let v = h.value;
    if v.len() < 7 || !v[..6].eq_ignore_ascii_case(b"bearer") || v[6] != b' ' {
        return Bearer::Malformed;
    }
    let t = &v[7..];
    let start = t.iter().position(|&b| b != b' ').unwrap_or(t.len());
    let end = t.iter().rposition(|&b| b != b' ').map_or(start, |e| e + 1);
    let t = &t[start..end.max(start)];
    let b64token = |b: u8| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b);
    if t.is_empty() || !t.iter().all(|&b| b64token(b)) {
        return Bearer::Malformed;
    }
    Bearer::Token(t)
}

/// The ALTO view of one topology snapshot: the served PIDs (the topology's and the default
/// one), their prefixes, the documents and the network map's vtag.
#[derive(Debug, Clone)]
pub struct AltoMaps {
    network_map_id: String,
    tag: String,
    pids: Vec<String>,
    default_pid: Option<usize>,
    table: PrefixTable<usize>,
    network_map: Value,
    cost_map: Value,
}

impl AltoMaps {
    /// Builds the documents of `topo`.
    pub fn new(topo: &Topology) -> AltoMaps {
        let reserved = [RID_COST_MAP, RID_ENDPOINT_COST, RID_SELECTION, RID_NOTIFICATION];
        let network_map_id = topo
            .vtag()
            .map(|v| v.resource_id.clone())
            .filter(|r| valid_resource_id(r) && !reserved.contains(&r.as_str()))
            .unwrap_or_else(|| RID_NETWORK_MAP_DEFAULT.to_string());
        let mut pids: Vec<String> = topo.pids().to_vec();
        let mut table = PrefixTable::new();
        let mut by_pid: BTreeMap<usize, (Vec<String>, Vec<String>)> = BTreeMap::new();
        for (net, pid) in topo.prefixes() {
            let Some(i) = pids.iter().position(|p| p == pid) else { continue };
            table.insert(net, i);
            let e = by_pid.entry(i).or_default();
            match net {
                IpNet::V4(_) => e.0.push(net.to_string()),
                IpNet::V6(_) => e.1.push(net.to_string()),
            }
        }
        let v4_all: IpNet = IpNet::V4(ipnet::Ipv4Net::default());
        let v6_all: IpNet = IpNet::V6(ipnet::Ipv6Net::default());
        let need_v4 = table.get(&v4_all).is_none();
        let need_v6 = table.get(&v6_all).is_none();
        let mut default_pid = None;
        if need_v4 || need_v6 {
            let mut name = "default".to_string();
            let mut k = 1;
            while pids.contains(&name) {
                name = format!("default-{k}");
                k += 1;
            }
            let i = pids.len();
            pids.push(name);
            let e = by_pid.entry(i).or_default();
            if need_v4 {
                table.insert(v4_all, i);
                e.0.push(v4_all.to_string());
            }
            if need_v6 {
                table.insert(v6_all, i);
                e.1.push(v6_all.to_string());
            }
            default_pid = Some(i);
        }
        let mut map = Map::new();
        for (i, pid) in pids.iter().enumerate() {
            let mut entry = Map::new();
            if let Some((v4, v6)) = by_pid.get(&i) {
                if !v4.is_empty() {
                    entry.insert("ipv4".into(), json!(v4));
                }
                if !v6.is_empty() {
                    entry.insert("ipv6".into(), json!(v6));
                }
            }
            map.insert(pid.clone(), Value::Object(entry));
        }
        let map = Value::Object(map);
        let tag = content_tag(map.to_string().as_bytes());
        let vtag = json!({"resource-id": network_map_id, "tag": tag});
        let network_map = json!({"meta": {"vtag": vtag}, "network-map": map});
        let mut me = AltoMaps { network_map_id, tag, pids, default_pid, table, network_map, cost_map: Value::Null };
        let mut rows = Map::new();
        for (s, src) in me.pids.iter().enumerate() {
            let mut row = Map::new();
            for (d, dst) in me.pids.iter().enumerate() {
                row.insert(dst.clone(), json!(me.cost(s, d)));
            }
            rows.insert(src.clone(), Value::Object(row));
        }
        me.cost_map = json!({
            "meta": {"dependent-vtags": [me.vtag()], "cost-type": {"cost-mode": "numerical", "cost-metric": "routingcost"}},
            "cost-map": rows
        });
        me
    }

    /// The network map's resource id.
    pub fn network_map_id(&self) -> &str {
        &self.network_map_id
    }

    /// The network map's vtag `{"resource-id":…,"tag":…}`.
    pub fn vtag(&self) -> Value {
        json!({"resource-id": self.network_map_id, "tag": self.tag})
    }

    /// The served PIDs (the topology's, then the default PID if one was added).
    pub fn pids(&self) -> &[String] {
        &self.pids
    }

    /// The network map document.
    pub fn network_map(&self) -> &Value {
        &self.network_map
    }

    /// The cost map document (`num-routing`).
    pub fn cost_map(&self) -> &Value {
        &self.cost_map
    }

    /// The served PID of an address (longest-prefix match; the default PID catches the rest).
    pub fn pid_of(&self, ip: IpAddr) -> Option<&str> {
        self.table.lookup(canonical(ip)).map(|(_, &i)| self.pids[i].as_str())
    }

    fn pid_index(&self, ip: IpAddr) -> Option<usize> {
        self.table.lookup(canonical(ip)).map(|(_, &i)| i)
    }

    /// `routingcost` between two served PIDs by index (see the module docs).
    fn cost(&self, src: usize, dst: usize) -> u64 {
        if src == dst {
            COST_SAME_PID
        } else if self.default_pid == Some(src) || self.default_pid == Some(dst) {
            COST_DEFAULT_PID
        } else {
            COST_OTHER_PID
        }
    }

    /// The information resource directory; `base` is the server's URL (`http://host:port`).
    pub fn directory(&self, base: &str) -> Value {
        let uri = |p: &str| format!("{base}{p}");
        let net = &self.network_map_id;
        let mut resources = Map::new();
        resources.insert(net.clone(), json!({"uri": uri(PATH_NETWORK_MAP), "media-type": MT_NETWORK_MAP}));
        resources.insert(
            RID_COST_MAP.into(),
            json!({"uri": uri(PATH_COST_MAP), "media-type": MT_COST_MAP,
                   "capabilities": {"cost-type-names": ["num-routing"]}, "uses": [net]}),
        );
        resources.insert(
            RID_ENDPOINT_COST.into(),
            json!({"uri": uri(PATH_ENDPOINT_COST), "media-type": MT_ENDPOINT_COST, "accepts": MT_ENDPOINT_COST_PARAMS,
                   "capabilities": {"cost-constraints": true, "cost-type-names": ["num-routing", "ord-routing"]}, "uses": [net]}),
        );
        resources.insert(
            RID_SELECTION.into(),
            json!({"uri": uri(PATH_SELECTION), "media-type": MT_SELECTION, "accepts": MT_SELECTION_PARAMS, "uses": [net]}),
        );
        resources.insert(
            RID_NOTIFICATION.into(),
            json!({"uri": uri(PATH_NOTIFICATION), "media-type": MT_NOTIFICATION, "accepts": MT_NOTIFICATION_PARAMS, "uses": [net]}),
        );
        json!({
            "meta": {
                "cost-types": {
                    "num-routing": {"cost-mode": "numerical", "cost-metric": "routingcost",
                                    "description": "1 within a PID, 10 between the operator's PIDs, 100 to or from the default PID"},
                    "ord-routing": {"cost-mode": "ordinal", "cost-metric": "routingcost",
                                    "description": "rank by routingcost, 1 the cheapest"}
                },
                "default-alto-network-map": net
            },
            "resources": resources
        })
    }

    /// Answers an endpoint cost request (RFC 7285 §11.5.1); `client` stands in for missing
    /// `srcs`.
    pub fn endpoint_cost(&self, body: &[u8], client: IpAddr) -> Result<Value, AltoError> {
        let req = parse_object(body)?;
        let ct = req.get("cost-type").ok_or_else(|| AltoError::missing("cost-type"))?;
        let ct = ct.as_object().ok_or_else(|| AltoError::field_type("cost-type"))?;
        let metric = string_field(ct, "cost-metric", "cost-type/cost-metric")?;
        let mode = string_field(ct, "cost-mode", "cost-type/cost-mode")?;
        if metric != "routingcost" {
            return Err(AltoError::field_value("cost-type/cost-metric", metric));
        }
        let ordinal = match mode {
            "numerical" => false,
            "ordinal" => true,
            other => return Err(AltoError::field_value("cost-type/cost-mode", other)),
        };
        let constraints = match req.get("constraints") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(list)) => {
                let mut out = Vec::new();
                for c in list {
                    let s = c.as_str().ok_or_else(|| AltoError::field_type("constraints"))?;
                    out.push(parse_constraint(s).ok_or_else(|| AltoError::field_value("constraints", s))?);
                }
                out
            }
            Some(_) => return Err(AltoError::field_type("constraints")),
        };
        let eps = req.get("endpoints").ok_or_else(|| AltoError::missing("endpoints"))?;
        let eps = eps.as_object().ok_or_else(|| AltoError::field_type("endpoints"))?;
        let addresses = |key: &str, field: &str| -> Result<Vec<(String, usize)>, AltoError> {
            let Some(v) = eps.get(key) else { return Ok(Vec::new()) };
            let list = v.as_array().ok_or_else(|| AltoError::field_type(field))?;
            let mut out = Vec::with_capacity(list.len());
            for a in list {
                let s = a.as_str().ok_or_else(|| AltoError::field_type(field))?;
                let ip = parse_typed_address(s).ok_or_else(|| AltoError::field_value(field, s))?;
                let pid = self.pid_index(ip).ok_or_else(|| AltoError::field_value(field, s))?;
                out.push((s.to_string(), pid));
            }
            Ok(out)
        };
        let mut srcs = addresses("srcs", "endpoints/srcs")?;
        let dsts = addresses("dsts", "endpoints/dsts")?;
        if !eps.contains_key("dsts") {
            return Err(AltoError::missing("endpoints/dsts"));
        }
        if dsts.is_empty() {
            return Err(AltoError::field_value("endpoints/dsts", "[]"));
        }
        if srcs.is_empty() {
            let ip = canonical(client);
            let pid = self.pid_index(ip).ok_or_else(|| AltoError::missing("endpoints/srcs"))?;
            srcs.push((typed_address(ip), pid));
        }
        if srcs.len().saturating_mul(dsts.len()) > MAX_ENDPOINT_PAIRS {
            return Err(AltoError::field_value("endpoints", &format!("{} pairs (at most {MAX_ENDPOINT_PAIRS})", srcs.len() * dsts.len())));
        }
        let mut map = Map::new();
        for (s, sp) in &srcs {
            let costs: Vec<u64> = dsts.iter().map(|(_, dp)| self.cost(*sp, *dp)).collect();
            let mut row = Map::new();
            for (k, (d, _)) in dsts.iter().enumerate() {
                let value = if ordinal { 1 + costs.iter().filter(|&&c| c < costs[k]).count() as u64 } else { costs[k] };
                if constraints.iter().all(|(op, bound)| op.holds(value as f64, *bound)) {
                    row.insert(d.clone(), json!(value));
                }
            }
            map.insert(s.clone(), Value::Object(row));
        }
        Ok(json!({
            "meta": {"cost-type": {"cost-mode": if ordinal { "ordinal" } else { "numerical" }, "cost-metric": "routingcost"}},
            "endpoint-cost-map": map
        }))
    }
}

/// A constraint operator (RFC 7285 §11.3.2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
}

impl Op {
    fn holds(self, v: f64, bound: f64) -> bool {
        match self {
            Op::Lt => v < bound,
            Op::Le => v <= bound,
            Op::Gt => v > bound,
            Op::Ge => v >= bound,
            Op::Eq => v == bound,
        }
    }
}

fn parse_constraint(s: &str) -> Option<(Op, f64)> {
    let mut it = s.split_whitespace();
    let op = match it.next()? {
        "lt" => Op::Lt,
        "le" => Op::Le,
        "gt" => Op::Gt,
        "ge" => Op::Ge,
        "eq" => Op::Eq,
        _ => return None,
    };
    let v: f64 = it.next()?.parse().ok().filter(|v: &f64| v.is_finite())?;
    it.next().is_none().then_some((op, v))
}

fn parse_object(body: &[u8]) -> Result<Map<String, Value>, AltoError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| AltoError::syntax(format!("malformed JSON: {e}")))?;
    match v {
        Value::Object(m) => Ok(m),
        _ => Err(AltoError::syntax("the request body must be a JSON object")),
    }
}

fn string_field<'a>(obj: &'a Map<String, Value>, key: &str, field: &str) -> Result<&'a str, AltoError> {
    obj.get(key).ok_or_else(|| AltoError::missing(field))?.as_str().ok_or_else(|| AltoError::field_type(field))
}

fn optional_string<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, AltoError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(AltoError::field_type(key)),
    }
}

/// A channel name as the nodes accept it (1..=128 of letters, digits, '-', '_', '.').
fn valid_channel(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// `IP:PORT`, or `http://IP:PORT` with an optional trailing `/`.
fn parse_socket(s: &str) -> Option<SocketAddr> {
    let bare = s.strip_prefix("http://").map(|r| r.strip_suffix('/').unwrap_or(r)).unwrap_or(s);
    bare.parse::<SocketAddr>().ok().filter(|a| !a.ip().is_unspecified() && a.port() != 0)
}

/// Answers a LISTO selection request: the node for `endpoint` and `channel`, or `"none"`.
pub fn selection(topo: &Topology, maps: &AltoMaps, body: &[u8]) -> Result<Value, AltoError> {
    let req = parse_object(body)?;
    let endpoint = string_field(&req, "endpoint", "endpoint")?;
    let ip = parse_typed_address(endpoint).ok_or_else(|| AltoError::field_value("endpoint", endpoint))?;
    let channel = string_field(&req, "channel", "channel")?;
    if !valid_channel(channel) {
        return Err(AltoError::field_value("channel", channel));
    }
    let name = topo.channel(channel).map_or(channel, |c| c.name.as_str());
    let ip = canonical(ip);
    let node = topo.pid_of(ip).and_then(|(_, pid)| topo.node_in_pid(pid, name));
    let mut sel = Map::new();
    sel.insert("endpoint".into(), json!(endpoint));
    sel.insert("channel".into(), json!(name));
    sel.insert("pid".into(), json!(maps.pid_of(ip)));
    match node {
        Some(n) => {
            sel.insert("listo-node".into(), json!(n.listen.to_string()));
            sel.insert("url".into(), json!(format!("http://{}", n.listen)));
        }
        None => {
            sel.insert("listo-node".into(), json!("none"));
        }
    }
    Ok(json!({"meta": {"dependent-vtags": [maps.vtag()]}, "selection": sel}))
}

/// A checked LISTO notification: what to instruct.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// The channel (the topology's spelling when it lists it).
    pub channel: String,
    /// The chosen node's listen address.
    pub node: SocketAddr,
    /// The CDN endpoint the controller chose.
    pub cdn_endpoint: SocketAddr,
    /// The playlist to prefetch on the chosen node, if the request named one.
    pub prefetch: Option<String>,
    /// The instructions, top of the hierarchy first (it gets the CDN endpoint), the chosen
    /// node last.
    pub steps: Vec<Step>,
}

/// Checks a LISTO notification request against the topology (nothing is instructed here).
pub fn parse_notification(topo: &Topology, body: &[u8]) -> Result<Notification, AltoError> {
    let req = parse_object(body)?;
    let channel = string_field(&req, "channel", "channel")?;
    if !valid_channel(channel) {
        return Err(AltoError::field_value("channel", channel));
    }
    let node_s = string_field(&req, "listo-node", "listo-node")?;
    let node = parse_socket(node_s).and_then(|a| topo.node(a)).ok_or_else(|| AltoError::field_value("listo-node", node_s))?.clone();
    let ep_s = string_field(&req, "cdn-endpoint", "cdn-endpoint")?;
    let cdn_endpoint = parse_socket(ep_s).ok_or_else(|| AltoError::field_value("cdn-endpoint", ep_s))?;
    let given_prefix = optional_string(&req, "path-prefix")?;
    let host = optional_string(&req, "host")?;
    let known = topo.channel(channel);
    let (name, path_prefix) = match (known, given_prefix) {
        (Some(c), Some(p)) if p != c.path_prefix => return Err(AltoError::field_value("path-prefix", p)),
        (Some(c), _) => (c.name.clone(), c.path_prefix.clone()),
        (None, Some(p)) => (channel.to_string(), p.to_string()),
        (None, None) => return Err(AltoError::missing("path-prefix")),
    };
    let host = host.map(str::to_string).or_else(|| known.and_then(|c| c.host.clone()));
    let prefetch = match optional_string(&req, "playlist")? {
        None => None,
        Some(p) => {
            let (path, _) = check_target(p).map_err(|_| AltoError::field_value("playlist", p))?;
            if !p.starts_with(&path_prefix) {
                return Err(AltoError::field_value("playlist", p));
            }
            crate::media::is_playlist_path(path).then(|| p.to_string())
        }
    };
    // The chosen node and its ancestors, nearest first (loops were refused at load).
    let mut chain = vec![node.clone()];
    while let Some(parent) = topo.parent_of(chain[chain.len() - 1].listen) {
        if chain.len() > topo.nodes().len() {
            break;
        }
        chain.push(parent.clone());
    }
    let mut steps = Vec::with_capacity(chain.len());
    for (k, n) in chain.iter().enumerate().rev() {
        let endpoints = if k + 1 == chain.len() { vec![cdn_endpoint] } else { vec![chain[k + 1].listen] };
        let instruction =
            Instruction { channel: name.clone(), path_prefix: path_prefix.clone(), endpoints, host: host.clone(), prefetch: Vec::new(), ttl_s: None };
        if let Err(e) = instruction.validate() {
            let (field, value) = match e.to_string() {
                s if s.contains("host") => ("host", host.clone().unwrap_or_default()),
                _ => ("path-prefix", path_prefix.clone()),
            };
            return Err(AltoError::field_value(field, &value));
        }
        steps.push(Step { node: n.listen, control: n.control, instruction });
    }
    if let Some(p) = &prefetch {
        let last = steps.len() - 1;
        let mut probe = steps[last].instruction.clone();
        probe.prefetch = vec![p.clone()];
        if probe.validate().is_err() {
            return Err(AltoError::field_value("playlist", p));
        }
    }
    Ok(Notification { channel: name, node: node.listen, cdn_endpoint, prefetch, steps })
}

/// The answer to a notification: what was instructed and how it went (`"ready"`: the node
/// acknowledged, now or earlier; `"pending"`: still in flight; `"failed"`: serve the viewer
/// from the CDN, with `reason`).
pub fn notification_answer(maps: &AltoMaps, n: &Notification, status: &str, reason: Option<&str>) -> Value {
    let mut body = Map::new();
    body.insert("channel".into(), json!(n.channel));
    body.insert("listo-node".into(), json!(n.node.to_string()));
    body.insert("cdn-endpoint".into(), json!(n.cdn_endpoint.to_string()));
    body.insert("prefetch".into(), json!(n.prefetch.iter().collect::<Vec<_>>()));
    body.insert("levels".into(), json!(n.steps.len()));
    body.insert("status".into(), json!(status));
    if let Some(r) = reason {
        body.insert("reason".into(), json!(r));
    }
    json!({"meta": {"dependent-vtags": [maps.vtag()]}, "notification": body})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topo() -> Topology {
        let v = json!({
            "network_map": {"meta": {"vtag": {"resource-id": "my-map", "tag": "1"}}, "network-map": {
                "pid-a": {"ipv4": ["10.1.0.0/16"]},
                "pid-b": {"ipv4": ["10.2.0.0/16"], "ipv6": ["2001:db8:2::/48"]},
                "pid-r": {"ipv4": ["10.9.0.0/16"]}
            }},
            "nodes": {
                "pid-a": [{"listen": "127.0.0.2:8080", "control": "127.0.0.2:8081"}],
                "pid-r": [{"listen": "127.0.0.5:8080", "control": "127.0.0.5:8081"}]
            },
            "channels": {"ch0": {"path_prefix": "/live/ch0/", "endpoints": ["127.0.0.1:9"], "host": "cdn.example"}},
            "parents": {"127.0.0.2:8080": "127.0.0.5:8080"}
        });
        Topology::parse(v.to_string().as_bytes(), None).expect("valid")
    }

    #[test]
    fn network_map_adds_a_default_pid_and_a_content_vtag() {
        let t = topo();
        let m = AltoMaps::new(&t);
        assert_eq!(m.pids(), ["pid-a", "pid-b", "pid-r", "default"]);
        let nm = m.network_map();
        assert_eq!(nm["meta"]["vtag"]["resource-id"], "my-map");
        let tag = nm["meta"]["vtag"]["tag"].as_str().expect("tag");
        assert_eq!(tag.len(), 32);
        assert!(tag.bytes().all(|b| (0x21..=0x7e).contains(&b)));
        assert_eq!(nm["network-map"]["default"], json!({"ipv4": ["0.0.0.0/0"], "ipv6": ["::/0"]}));
        assert_eq!(nm["network-map"]["pid-b"], json!({"ipv4": ["10.2.0.0/16"], "ipv6": ["2001:db8:2::/48"]}));
        assert_eq!(m.pid_of("192.0.2.1".parse().expect("ip")), Some("default"));
        assert_eq!(m.pid_of("::ffff:10.1.0.1".parse().expect("ip")), Some("pid-a"));
        // Same content, same tag; different content, different tag.
        assert_eq!(AltoMaps::new(&topo()).vtag(), m.vtag());
        let cm = m.cost_map();
        assert_eq!(cm["meta"]["dependent-vtags"], json!([m.vtag()]));
        assert_eq!(cm["meta"]["cost-type"], json!({"cost-mode": "numerical", "cost-metric": "routingcost"}));
        assert_eq!(cm["cost-map"]["pid-a"]["pid-a"], 1);
        assert_eq!(cm["cost-map"]["pid-a"]["pid-b"], 10);
        assert_eq!(cm["cost-map"]["default"]["pid-a"], 100);
    }

    #[test]
    fn endpoint_costs_and_errors() {
        let m = AltoMaps::new(&topo());
        let client: IpAddr = "10.2.0.9".parse().expect("ip");
        let ok = |b: Value| m.endpoint_cost(b.to_string().as_bytes(), client).expect("answer");
        let r = ok(json!({"cost-type": {"cost-mode": "numerical", "cost-metric": "routingcost"},
                          "endpoints": {"srcs": ["ipv4:10.1.0.1"], "dsts": ["ipv4:10.1.9.9", "ipv4:10.2.0.1", "ipv6:2001:db8::1"]}}));
        assert_eq!(r["endpoint-cost-map"]["ipv4:10.1.0.1"], json!({"ipv4:10.1.9.9": 1, "ipv4:10.2.0.1": 10, "ipv6:2001:db8::1": 100}));
        // Ordinal: ranks (equal costs share one), srcs missing → the client's address.
        let r = ok(json!({"cost-type": {"cost-mode": "ordinal", "cost-metric": "routingcost"},
                          "endpoints": {"dsts": ["ipv4:10.1.9.9", "ipv4:10.2.0.1", "ipv4:10.2.0.2"]}}));
        assert_eq!(r["endpoint-cost-map"]["ipv4:10.2.0.9"], json!({"ipv4:10.1.9.9": 3, "ipv4:10.2.0.1": 1, "ipv4:10.2.0.2": 1}));
        assert_eq!(r["meta"]["cost-type"], json!({"cost-mode": "ordinal", "cost-metric": "routingcost"}));
        let r = ok(json!({"cost-type": {"cost-mode": "numerical", "cost-metric": "routingcost"}, "constraints": ["lt 10"],
                          "endpoints": {"dsts": ["ipv4:10.1.9.9", "ipv4:10.2.0.1"]}}));
        assert_eq!(r["endpoint-cost-map"]["ipv4:10.2.0.9"], json!({"ipv4:10.2.0.1": 1}));
        let e = m.endpoint_cost(br#"{"cost-type": {"cost-mode": "numerical", "cost-metric": "routingcost"}, "constraints": ["lt ten"], "endpoints": {"dsts": ["ipv4:1.2.3.4"]}}"#, client);
        assert_eq!(e.expect_err("bad constraint").field.as_deref(), Some("constraints"));
        let err = |b: &[u8]| m.endpoint_cost(b, client).expect_err("refused");
        assert_eq!(err(b"{nope").code, "E_SYNTAX");
        assert_eq!(err(b"[]").code, "E_SYNTAX");
        assert_eq!(err(br#"{"endpoints": {"dsts": []}}"#).field.as_deref(), Some("cost-type"));
        let e = err(br#"{"cost-type": {"cost-mode": "numerical", "cost-metric": "hopcount"}, "endpoints": {"dsts": ["ipv4:1.2.3.4"]}}"#);
        assert_eq!((e.code, e.value.as_deref()), ("E_INVALID_FIELD_VALUE", Some("hopcount")));
        let e = err(br#"{"cost-type": {"cost-mode": "numerical", "cost-metric": "routingcost"}, "endpoints": {"dsts": ["1.2.3.4"]}}"#);
        assert_eq!((e.code, e.field.as_deref()), ("E_INVALID_FIELD_VALUE", Some("endpoints/dsts")));
        let e = err(br#"{"cost-type": {"cost-mode": "numerical", "cost-metric": "routingcost"}, "endpoints": {"dsts": "ipv4:1.2.3.4"}}"#);
        assert_eq!(e.code, "E_INVALID_FIELD_TYPE");
        let e = err(br#"{"cost-type": {"cost-mode": "numerical", "cost-metric": "routingcost"}, "endpoints": {"srcs": []}}"#);
        assert_eq!((e.code, e.field.as_deref()), ("E_MISSING_FIELD", Some("endpoints/dsts")));
        let e = err(br#"{"cost-type": {"cost-mode": "numerical"}, "endpoints": {"dsts": ["ipv4:1.2.3.4"]}}"#);
        assert_eq!((e.code, e.field.as_deref()), ("E_MISSING_FIELD", Some("cost-type/cost-metric")));
        assert_eq!(e.body(), json!({"meta": {"code": "E_MISSING_FIELD", "field": "cost-type/cost-metric"}}));
    }

    #[test]
    fn selection_and_notification() {
        let t = topo();
        let m = AltoMaps::new(&t);
        let s = selection(&t, &m, br#"{"endpoint": "ipv4:10.1.3.4", "channel": "ch0"}"#).expect("answer");
        assert_eq!(s["selection"]["listo-node"], "127.0.0.2:8080");
        assert_eq!(s["selection"]["url"], "http://127.0.0.2:8080");
        assert_eq!(s["selection"]["pid"], "pid-a");
        assert_eq!(s["meta"]["dependent-vtags"], json!([m.vtag()]));
        let s = selection(&t, &m, br#"{"endpoint": "ipv4:10.2.3.4", "channel": "other"}"#).expect("answer");
        assert_eq!(s["selection"]["listo-node"], "none");
        assert!(s["selection"].get("url").is_none());
        assert_eq!(selection(&t, &m, br#"{"channel": "ch0"}"#).expect_err("missing").code, "E_MISSING_FIELD");
        assert_eq!(selection(&t, &m, br#"{"endpoint": "10.1.3.4", "channel": "ch0"}"#).expect_err("bad").code, "E_INVALID_FIELD_VALUE");
        assert_eq!(selection(&t, &m, br#"{"endpoint": "ipv4:10.1.3.4", "channel": "a b"}"#).expect_err("bad").code, "E_INVALID_FIELD_VALUE");

        let n = parse_notification(
            &t,
            br#"{"channel": "ch0", "listo-node": "http://127.0.0.2:8080/", "cdn-endpoint": "192.0.2.80:80", "playlist": "/live/ch0/v0/index.m3u8?x=1"}"#,
        )
        .expect("valid");
        assert_eq!(n.node, "127.0.0.2:8080".parse().expect("addr"));
        assert_eq!(n.prefetch.as_deref(), Some("/live/ch0/v0/index.m3u8?x=1"));
        assert_eq!(n.steps.len(), 2, "the parent first");
        assert_eq!(n.steps[0].node, "127.0.0.5:8080".parse().expect("addr"));
        assert_eq!(n.steps[0].instruction.endpoints, vec!["192.0.2.80:80".parse().expect("addr")]);
        assert_eq!(n.steps[1].instruction.endpoints, vec!["127.0.0.5:8080".parse().expect("addr")]);
        assert_eq!(n.steps[1].instruction.host.as_deref(), Some("cdn.example"));
        let a = notification_answer(&m, &n, "ready", None);
        assert_eq!(a["notification"]["status"], "ready");
        assert_eq!(a["notification"]["prefetch"], json!(["/live/ch0/v0/index.m3u8?x=1"]));
        // A channel the topology does not list needs its path prefix.
        let body = br#"{"channel": "news", "listo-node": "127.0.0.5:8080", "cdn-endpoint": "192.0.2.80:80"}"#;
        assert_eq!(parse_notification(&t, body).expect_err("no prefix").field.as_deref(), Some("path-prefix"));
        let n = parse_notification(&t, br#"{"channel": "news", "listo-node": "127.0.0.5:8080", "cdn-endpoint": "192.0.2.80:80", "path-prefix": "/news/"}"#)
            .expect("valid");
        assert_eq!(n.steps.len(), 1);
        for (bad, field) in [
            (&br#"{"channel": "ch0", "listo-node": "127.0.0.9:8080", "cdn-endpoint": "192.0.2.80:80"}"#[..], "listo-node"),
            (br#"{"channel": "ch0", "listo-node": "127.0.0.2:8080", "cdn-endpoint": "0.0.0.0:80"}"#, "cdn-endpoint"),
            (br#"{"channel": "ch0", "listo-node": "127.0.0.2:8080", "cdn-endpoint": "192.0.2.80:80", "playlist": "/live/ch1/x.m3u8"}"#, "playlist"),
            (br#"{"channel": "ch0", "listo-node": "127.0.0.2:8080", "cdn-endpoint": "192.0.2.80:80", "playlist": "/live/ch0/../x.m3u8"}"#, "playlist"),
            (br#"{"channel": "ch0", "listo-node": "127.0.0.2:8080", "cdn-endpoint": "192.0.2.80:80", "path-prefix": "/other/"}"#, "path-prefix"),
            (br#"{"channel": "x", "listo-node": "127.0.0.2:8080", "cdn-endpoint": "192.0.2.80:80", "path-prefix": "/a b/"}"#, "path-prefix"),
            (br#"{"channel": "ch0", "listo-node": "127.0.0.2:8080", "cdn-endpoint": "192.0.2.80:80", "host": "a/b"}"#, "host"),
        ] {
            let e = parse_notification(&t, bad).expect_err("refused");
            assert_eq!((e.code, e.field.as_deref()), ("E_INVALID_FIELD_VALUE", Some(field)), "{}", String::from_utf8_lossy(bad));
        }
        let e = parse_notification(&t, br#"{"channel": "ch0", "listo-node": 5, "cdn-endpoint": "192.0.2.80:80"}"#).expect_err("type");
        assert_eq!(e.code, "E_INVALID_FIELD_TYPE");
    }

    #[test]
    fn tokens() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
        let list = vec!["one".to_string(), "two".to_string()];
        assert!(token_allowed(&list, b"two"));
        assert!(!token_allowed(&list, b"three"));
        assert!(!token_allowed(&[], b""));
        let h = |v: &'static [u8]| vec![httparse::Header { name: "Authorization", value: v }];
        assert_eq!(bearer_token(&h(b"Bearer abc.DEF-1")), Bearer::Token(b"abc.DEF-1"));
        assert_eq!(bearer_token(&h(b"bearer  abc ")), Bearer::Token(b"abc"));
        assert_eq!(bearer_token(&h(b"Basic YWJj")), Bearer::Malformed);
        assert_eq!(bearer_token(&h(b"Bearer ")), Bearer::Malformed);
        assert_eq!(bearer_token(&h(b"Bearer a b")), Bearer::Malformed);
        assert_eq!(bearer_token(&[]), Bearer::Missing);
        assert_eq!(parse_typed_address("ipv6:2001:db8::1"), Some("2001:db8::1".parse().expect("ip")));
        assert_eq!(parse_typed_address("ipv4:2001:db8::1"), None);
        assert_eq!(typed_address("10.0.0.1".parse().expect("ip")), "ipv4:10.0.0.1");
    }
}
