//! The topology file (DESIGN §6): an ALTO network map and optional cost map (RFC 7285
//! §11.2.1, §11.2.3, pasted as an ALTO server serves them, or named by a path relative to the
//! topology file), the nodes of each PID, the channels and their CDN endpoints, and an optional
//! node hierarchy. Everything is checked at load; a refused file changes nothing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde_json::{Map, Value};

use super::hierarchy;
use super::lpm::PrefixTable;
use crate::Instruction;

/// Why a topology was refused (the message names the field and value at fault).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("topology: {0}")]
pub struct TopologyError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, TopologyError> {
    Err(TopologyError(msg.into()))
}

/// An ALTO version tag (RFC 7285 §10.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vtag {
    /// The ALTO resource id.
    pub resource_id: String,
    /// The version tag.
    pub tag: String,
}

/// A LISTO node of the topology.
#[derive(Debug, Clone, PartialEq)]
pub struct TopoNode {
    /// The PID whose clients this node serves.
    pub pid: String,
    /// Where viewers connect (what a 302 or a DNS answer points to).
    pub listen: SocketAddr,
    /// The node's control port (LA/LC): instructions are POSTed there.
    pub control: SocketAddr,
    /// Relative share of a PID's channels this node gets (default 1).
    pub weight: f64,
}

/// A CDN endpoint of a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CdnEndpoint {
    /// Its address.
    pub address: SocketAddr,
    /// Its PID in the cost map, if any.
    pub pid: Option<String>,
}

/// A channel of the topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopoChannel {
    /// Channel name.
    pub name: String,
    /// Path prefix of its playlists and segments.
    pub path_prefix: String,
    /// CDN endpoints in file order.
    pub endpoints: Vec<CdnEndpoint>,
    /// `Host` the nodes send upstream (default: the endpoint's address).
    pub host: Option<String>,
}

/// One instruction of a route: POST `instruction` to the node whose control port is `control`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The node's listen address (its identity in the topology).
    pub node: SocketAddr,
    /// The node's control port.
    pub control: SocketAddr,
    /// What the node is told (no prefetch, no TTL: the mediator adds those).
    pub instruction: Instruction,
}

/// Where a client of a channel goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// To a LISTO node; `steps` instruct every level, the top of the hierarchy first and the
    /// chosen node last.
    Node {
        /// The chosen node's listen address.
        listen: SocketAddr,
        /// Instructions, root first.
        steps: Vec<Step>,
    },
    /// Not redirected to a node: straight to the CDN endpoint.
    Cdn {
        /// The endpoint.
        endpoint: SocketAddr,
    },
    /// Neither: a channel without endpoints (only a hand-built [`TopoChannel`]; a loaded
    /// topology has none).
    Nowhere,
}

/// A loaded, checked topology. Immutable: a reload builds a new one and swaps it in.
#[derive(Debug, Clone)]
pub struct Topology {
    pids: Vec<String>,
    table: PrefixTable<usize>,
    costs: HashMap<String, HashMap<String, f64>>,
    nodes: Vec<TopoNode>,
    by_pid: HashMap<String, Vec<usize>>,
    by_listen: HashMap<SocketAddr, usize>,
    channels: Vec<TopoChannel>,
    parent: Vec<Option<usize>>,
    ancestors: Vec<Vec<usize>>,
    vtag: Option<Vtag>,
}

const TOP_KEYS: [&str; 5] = ["network_map", "cost_map", "nodes", "channels", "parents"];

impl Topology {
    /// Reads and checks a topology file.
    pub fn load(path: &Path) -> Result<Topology, TopologyError> {
        let bytes = std::fs::read(path).map_err(|e| TopologyError(format!("cannot read {}: {e}", path.display())))?;
        Self::parse(&bytes, path.parent())
    }

    /// Parses and checks a topology document; `network_map`/`cost_map` given as strings are
    /// file paths relative to `base` (or to the working directory).
    pub fn parse(json: &[u8], base: Option<&Path>) -> Result<Topology, TopologyError> {
        let v: Value = serde_json::from_slice(json).map_err(|e| TopologyError(format!("malformed JSON: {e}")))?;
        let top = v.as_object().ok_or_else(|| TopologyError("expected a JSON object".into()))?;
        for k in top.keys() {
            if !TOP_KEYS.contains(&k.as_str()) && !k.starts_with('_') {
                return err(format!("unknown key '{k}' (expected {})", TOP_KEYS.join(", ")));
            }
        }
        let network_map = document(top.get("network_map").ok_or_else(|| TopologyError("missing 'network_map'".into()))?, base, "network_map")?;
        let (pids, table, vtag) = parse_network_map(&network_map)?;
        let costs = match top.get("cost_map") {
            None | Some(Value::Null) => HashMap::new(),
            Some(c) => parse_cost_map(&document(c, base, "cost_map")?, vtag.as_ref())?,
        };
        let pid_set: HashSet<&str> = pids.iter().map(String::as_str).collect();
        let (nodes, by_pid, by_listen) = parse_nodes(top.get("nodes"), &pid_set)?;
        let channels = parse_channels(top.get("channels"))?;
        let parent = parse_parents(top.get("parents"), &by_listen, nodes.len())?;
        let names: Vec<String> = nodes.iter().map(|n| n.listen.to_string()).collect();
        let map: HashMap<usize, usize> = parent.iter().enumerate().filter_map(|(i, p)| p.map(|p| (i, p))).collect();
        let ancestors = hierarchy::ancestors(&map, &names).map_err(TopologyError)?;
        Ok(Topology { pids, table, costs, nodes, by_pid, by_listen, channels, parent, ancestors, vtag })
    }

    /// The network map's version tag, if it had one.
    pub fn vtag(&self) -> Option<&Vtag> {
        self.vtag.as_ref()
    }

    /// PID names of the network map, sorted.
    pub fn pids(&self) -> &[String] {
        &self.pids
    }

    /// The nodes, in file order (PIDs sorted).
    pub fn nodes(&self) -> &[TopoNode] {
        &self.nodes
    }

    /// The channels, sorted by name.
    pub fn channels(&self) -> &[TopoChannel] {
        &self.channels
    }

    /// A channel by name (ASCII case-insensitive, as DNS labels are).
    pub fn channel(&self, name: &str) -> Option<&TopoChannel> {
        self.channels.iter().find(|c| c.name.eq_ignore_ascii_case(name))
    }

    /// The node with this listen address.
    pub fn node(&self, listen: SocketAddr) -> Option<&TopoNode> {
        self.by_listen.get(&listen).map(|&i| &self.nodes[i])
    }

    /// The parent of a node (by listen address), if the hierarchy gives one.
    pub fn parent_of(&self, listen: SocketAddr) -> Option<&TopoNode> {
        let i = *self.by_listen.get(&listen)?;
        self.parent[i].map(|p| &self.nodes[p])
    }

    /// The channel whose path prefix is the longest prefix of `path`.
    pub fn channel_for_path(&self, path: &str) -> Option<&TopoChannel> {
        self.channels.iter().filter(|c| path.starts_with(&c.path_prefix)).max_by_key(|c| c.path_prefix.len())
    }

    /// Every prefix of the network map with its PID: IPv4 first, each family in lexicographic
    /// order (what an ALTO network map document lists, RFC 7285 §11.2.1).
    pub fn prefixes(&self) -> impl Iterator<Item = (IpNet, &str)> + '_ {
        self.table.iter().map(|(p, &i)| (p, self.pids[i].as_str()))
    }

    /// The PID of an address (longest-prefix match) and the prefix that matched.
    pub fn pid_of(&self, ip: std::net::IpAddr) -> Option<(IpNet, &str)> {
        self.table.lookup(ip).map(|(p, &i)| (p, self.pids[i].as_str()))
    }

    /// The PID of a client subnet (the longest prefix containing all of it).
    pub fn pid_of_net(&self, net: &IpNet) -> Option<(IpNet, &str)> {
        self.table.lookup_net(net).map(|(p, &i)| (p, self.pids[i].as_str()))
    }

    /// The ECS scope prefix length of an answer chosen for `source` (see [`PrefixTable::scope`]).
    pub fn scope(&self, source: &IpNet) -> u8 {
        self.table.scope(source)
    }

    /// The node for `key` (a channel name) among the nodes of `pid`: weighted rendezvous hashing,
    /// so every client of a PID watching one channel lands on the same node (one upstream copy)
    /// and channels spread over a PID's nodes by weight.
    pub fn node_in_pid(&self, pid: &str, key: &str) -> Option<&TopoNode> {
        let list = self.by_pid.get(pid)?;
        list.iter().map(|&i| &self.nodes[i]).max_by(|a, b| hrw(key, a).total_cmp(&hrw(key, b)))
    }

    /// The channel's CDN endpoints, cheapest first by the cost map from `pid` (endpoints without
    /// a cost keep file order after the priced ones); without a PID, file order.
    pub fn endpoints_from(&self, channel: &TopoChannel, pid: Option<&str>) -> Vec<SocketAddr> {
        let row = pid.and_then(|p| self.costs.get(p));
        let mut eps: Vec<(usize, f64, SocketAddr)> = channel
            .endpoints
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let cost = row.and_then(|r| e.pid.as_ref().and_then(|p| r.get(p))).copied().unwrap_or(f64::INFINITY);
                (i, cost, e.address)
            })
            .collect();
        eps.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
        eps.into_iter().map(|(_, _, a)| a).collect()
    }

    /// What a node is told for a channel: its parent as the only endpoint, or, at the top of
    /// the hierarchy, the CDN endpoints cheapest first from the node's PID.
    pub fn instruction_for(&self, node: &TopoNode, channel: &TopoChannel) -> Instruction {
        let endpoints = match self.parent_of(node.listen) {
            Some(p) => vec![p.listen],
            None => self.endpoints_from(channel, Some(&node.pid)),
        };
        Instruction {
            channel: channel.name.clone(),
            path_prefix: channel.path_prefix.clone(),
            endpoints,
            host: channel.host.clone(),
            prefetch: Vec::new(),
            ttl_s: None,
        }
    }

    /// Where a client (an address or an ECS subnet) of `channel` goes, and the instructions that
    /// make it work (every level of the hierarchy, top first).
    pub fn route(&self, client: &IpNet, channel: &TopoChannel) -> Route {
        let matched = self.pid_of_net(client);
        if let Some(node) = matched.and_then(|(_, pid)| self.node_in_pid(pid, &channel.name)) {
            let i = self.by_listen[&node.listen];
            let mut chain = vec![i];
            chain.extend(self.ancestors[i].iter().copied());
            let steps = chain
                .iter()
                .rev()
                .map(|&j| {
                    let n = &self.nodes[j];
                    Step { node: n.listen, control: n.control, instruction: self.instruction_for(n, channel) }
                })
                .collect();
            return Route::Node { listen: node.listen, steps };
        }
        let pid = matched.map(|(_, p)| p);
        match self.endpoints_from(channel, pid).first() {
            Some(&endpoint) => Route::Cdn { endpoint },
            None => Route::Nowhere,
        }
    }

    /// A few lines describing the topology (for logs).
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} PID(s), {} prefix(es), {} node(s), {} channel(s), {} parent link(s)",
            self.pids.len(),
            self.table.len(),
            self.nodes.len(),
            self.channels.len(),
            self.parent.iter().flatten().count()
        );
        if let Some(v) = &self.vtag {
            let _ = write!(s, ", network map {} tag {}", v.resource_id, v.tag);
        }
        s
    }
}

/// Weighted rendezvous score of `node` for `key`.
fn hrw(key: &str, node: &TopoNode) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes().chain([0xff]).chain(node.listen.to_string().bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // splitmix64 finaliser for well-spread bits.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64; // in (0, 1)
    node.weight / -u.ln()
}

/// A document given inline, or as a path to a JSON file.
fn document(v: &Value, base: Option<&Path>, what: &str) -> Result<Value, TopologyError> {
    match v {
        Value::Object(_) => Ok(v.clone()),
        Value::String(p) => {
            let path = match base {
                Some(b) if Path::new(p).is_relative() => b.join(p),
                _ => PathBuf::from(p),
            };
            let bytes = std::fs::read(&path).map_err(|e| TopologyError(format!("{what}: cannot read {}: {e}", path.display())))?;
            serde_json::from_slice(&bytes).map_err(|e| TopologyError(format!("{what}: {}: malformed JSON: {e}", path.display())))
        }
        _ => err(format!("{what} must be an ALTO document (object) or a file path")),
    }
}

/// RFC 7285 §10.1: a PID name is 1..=64 of US-ASCII alphanumerics, '-', ':', '@', '_', '.'.
fn valid_pid(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-:@_.".contains(&b))
}

fn parse_vtag(v: &Value, what: &str) -> Result<Vtag, TopologyError> {
    let field = |k: &str| -> Result<String, TopologyError> {
        v.get(k).and_then(Value::as_str).map(str::to_string).ok_or_else(|| TopologyError(format!("{what}: '{k}' must be a string")))
    };
    Ok(Vtag { resource_id: field("resource-id")?, tag: field("tag")? })
}

type NetworkMap = (Vec<String>, PrefixTable<usize>, Option<Vtag>);

fn parse_network_map(doc: &Value) -> Result<NetworkMap, TopologyError> {
    let vtag = match doc.get("meta").and_then(|m| m.get("vtag")) {
        None | Some(Value::Null) => None,
        Some(v) => Some(parse_vtag(v, "network_map.meta.vtag")?),
    };
    let map = doc
        .get("network-map")
        .and_then(Value::as_object)
        .ok_or_else(|| TopologyError("network_map: missing object 'network-map' (RFC 7285 §11.2.1.6)".into()))?;
    let mut names: Vec<&String> = map.keys().collect();
    names.sort();
    let pids: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let mut table = PrefixTable::new();
    for (i, pid) in pids.iter().enumerate() {
        if !valid_pid(pid) {
            return err(format!("network_map: PID '{pid}' is not a valid ALTO PID name (1-64 of A-Z a-z 0-9 - : @ _ .)"));
        }
        let entry = map[pid.as_str()].as_object().ok_or_else(|| TopologyError(format!("network_map: PID '{pid}' must be an object")))?;
        for (family, v6) in [("ipv4", false), ("ipv6", true)] {
            let Some(list) = entry.get(family) else { continue };
            let list = list.as_array().ok_or_else(|| TopologyError(format!("network_map: PID '{pid}': '{family}' must be an array")))?;
            for p in list {
                let s = p.as_str().ok_or_else(|| TopologyError(format!("network_map: PID '{pid}': '{family}' must hold strings")))?;
                let net = parse_cidr(s, v6).map_err(|why| TopologyError(format!("network_map: PID '{pid}': {family} prefix '{s}': {why}")))?;
                if let Some(&other) = table.get(&net) {
                    if other != i {
                        return err(format!("network_map: prefix {net} is in both PID '{}' and PID '{pid}'", pids[other]));
                    }
                }
                table.insert(net, i);
            }
        }
    }
    Ok((pids, table, vtag))
}

/// Parses `a.b.c.d/len` or `x::/len` of the given family, refusing host bits.
fn parse_cidr(s: &str, v6: bool) -> Result<IpNet, String> {
    if !s.contains('/') {
        return Err("not a CIDR prefix (ADDRESS/LENGTH)".into());
    }
    let net = if v6 {
        IpNet::V6(s.parse::<Ipv6Net>().map_err(|_| "not an IPv6 CIDR prefix".to_string())?)
    } else {
        IpNet::V4(s.parse::<Ipv4Net>().map_err(|_| "not an IPv4 CIDR prefix".to_string())?)
    };
    if net.trunc() != net {
        return Err(format!("host bits set (did you mean {}?)", net.trunc()));
    }
    Ok(net)
}

fn parse_cost_map(doc: &Value, net_vtag: Option<&Vtag>) -> Result<HashMap<String, HashMap<String, f64>>, TopologyError> {
    if let Some(meta) = doc.get("meta") {
        if let Some(mode) = meta.get("cost-type").and_then(|c| c.get("cost-mode")) {
            match mode.as_str() {
                Some("numerical") | Some("ordinal") => {}
                _ => return err(format!("cost_map: cost-mode {mode} is not \"numerical\" or \"ordinal\"")),
            }
        }
        if let (Some(deps), Some(nv)) = (meta.get("dependent-vtags"), net_vtag) {
            let deps = deps.as_array().ok_or_else(|| TopologyError("cost_map: meta.dependent-vtags must be an array".into()))?;
            for d in deps {
                let d = parse_vtag(d, "cost_map.meta.dependent-vtags")?;
                if d.resource_id == nv.resource_id && d.tag != nv.tag {
                    return err(format!(
                        "cost_map was computed for network map '{}' tag '{}' but the network map has tag '{}'",
                        d.resource_id, d.tag, nv.tag
                    ));
                }
            }
        }
    }
    let map = doc
        .get("cost-map")
        .and_then(Value::as_object)
        .ok_or_else(|| TopologyError("cost_map: missing object 'cost-map' (RFC 7285 §11.2.3.6)".into()))?;
    let mut out = HashMap::new();
    for (src, row) in map {
        if !valid_pid(src) {
            return err(format!("cost_map: '{src}' is not a valid PID name"));
        }
        let row = row.as_object().ok_or_else(|| TopologyError(format!("cost_map: row '{src}' must be an object")))?;
        let mut r = HashMap::new();
        for (dst, c) in row {
            if !valid_pid(dst) {
                return err(format!("cost_map: '{dst}' is not a valid PID name"));
            }
            let c = c.as_f64().filter(|c| c.is_finite() && *c >= 0.0).ok_or_else(|| {
                TopologyError(format!("cost_map: cost {src} → {dst} must be a non-negative number"))
            })?;
            r.insert(dst.clone(), c);
        }
        out.insert(src.clone(), r);
    }
    Ok(out)
}

fn check_keys(obj: &Map<String, Value>, allowed: &[&str], what: &str) -> Result<(), TopologyError> {
    for k in obj.keys() {
        if !allowed.contains(&k.as_str()) {
            return err(format!("{what}: unknown key '{k}' (expected {})", allowed.join(", ")));
        }
    }
    Ok(())
}

fn socket(v: Option<&Value>, what: &str) -> Result<SocketAddr, TopologyError> {
    let s = v.and_then(Value::as_str).ok_or_else(|| TopologyError(format!("{what} must be a string like \"127.0.0.2:8080\"")))?;
    s.trim().parse().map_err(|_| TopologyError(format!("{what}: '{s}' is not IP:PORT (IPv6 as [addr]:port)")))
}

type Nodes = (Vec<TopoNode>, HashMap<String, Vec<usize>>, HashMap<SocketAddr, usize>);

fn parse_nodes(v: Option<&Value>, pids: &HashSet<&str>) -> Result<Nodes, TopologyError> {
    let map = v.and_then(Value::as_object).ok_or_else(|| TopologyError("'nodes' must be an object PID → [node]".into()))?;
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort();
    let (mut nodes, mut by_pid, mut by_listen) = (Vec::new(), HashMap::new(), HashMap::new());
    let mut controls = HashSet::new();
    for pid in keys {
        if !pids.contains(pid.as_str()) {
            return err(format!("nodes: unknown PID '{pid}' (not in the network map)"));
        }
        let list = map[pid].as_array().ok_or_else(|| TopologyError(format!("nodes: '{pid}' must be an array of nodes")))?;
        for (k, n) in list.iter().enumerate() {
            let what = format!("nodes.{pid}[{k}]");
            let obj = n.as_object().ok_or_else(|| TopologyError(format!("{what} must be an object")))?;
            check_keys(obj, &["listen", "control", "weight"], &what)?;
            let listen = socket(obj.get("listen"), &format!("{what}.listen"))?;
            let control = socket(obj.get("control"), &format!("{what}.control"))?;
            for (a, f) in [(listen, "listen"), (control, "control")] {
                if a.ip().is_unspecified() || a.port() == 0 {
                    return err(format!("{what}.{f}: {a} is not an address clients can reach (unspecified IP or port 0)"));
                }
            }
            let weight = match obj.get("weight") {
                None => 1.0,
                Some(w) => w
                    .as_f64()
                    .filter(|w| w.is_finite() && *w > 0.0)
                    .ok_or_else(|| TopologyError(format!("{what}.weight must be a positive number")))?,
            };
            if by_listen.contains_key(&listen) {
                return err(format!("{what}.listen: {listen} is listed twice"));
            }
            if !controls.insert(control) {
                return err(format!("{what}.control: {control} is listed twice"));
            }
            by_listen.insert(listen, nodes.len());
            by_pid.entry(pid.clone()).or_insert_with(Vec::new).push(nodes.len());
            nodes.push(TopoNode { pid: pid.clone(), listen, control, weight });
        }
    }
    Ok((nodes, by_pid, by_listen))
}

fn parse_channels(v: Option<&Value>) -> Result<Vec<TopoChannel>, TopologyError> {
    let map = v.and_then(Value::as_object).ok_or_else(|| TopologyError("'channels' must be an object name → channel".into()))?;
    let mut out: BTreeMap<String, TopoChannel> = BTreeMap::new();
    for (name, c) in map {
        let what = format!("channels.{name}");
        let obj = c.as_object().ok_or_else(|| TopologyError(format!("{what} must be an object")))?;
        check_keys(obj, &["path_prefix", "endpoints", "host"], &what)?;
        let path_prefix = obj
            .get("path_prefix")
            .and_then(Value::as_str)
            .ok_or_else(|| TopologyError(format!("{what}.path_prefix must be a string")))?
            .to_string();
        let list = obj
            .get("endpoints")
            .and_then(Value::as_array)
            .filter(|a| !a.is_empty())
            .ok_or_else(|| TopologyError(format!("{what}.endpoints must be a non-empty array")))?;
        let mut endpoints = Vec::new();
        for (k, e) in list.iter().enumerate() {
            let ew = format!("{what}.endpoints[{k}]");
            let ep = match e {
                Value::String(_) => CdnEndpoint { address: socket(Some(e), &ew)?, pid: None },
                Value::Object(o) => {
                    check_keys(o, &["address", "pid"], &ew)?;
                    let pid = match o.get("pid") {
                        None | Some(Value::Null) => None,
                        Some(p) => {
                            let p = p.as_str().filter(|p| valid_pid(p)).ok_or_else(|| TopologyError(format!("{ew}.pid must be a PID name")))?;
                            Some(p.to_string())
                        }
                    };
                    CdnEndpoint { address: socket(o.get("address"), &format!("{ew}.address"))?, pid }
                }
                _ => return err(format!("{ew} must be {{\"address\": \"IP:PORT\", \"pid\": \"...\"}}")),
            };
            if ep.address.ip().is_unspecified() || ep.address.port() == 0 {
                return err(format!("{ew}: {} is not a reachable address", ep.address));
            }
            endpoints.push(ep);
        }
        let host = match obj.get("host") {
            None | Some(Value::Null) => None,
            Some(h) => Some(h.as_str().ok_or_else(|| TopologyError(format!("{what}.host must be a string")))?.to_string()),
        };
        let ins = Instruction {
            channel: name.clone(),
            path_prefix: path_prefix.clone(),
            endpoints: endpoints.iter().map(|e| e.address).collect(),
            host: host.clone(),
            prefetch: Vec::new(),
            ttl_s: None,
        };
        ins.validate().map_err(|e| TopologyError(format!("{what}: {e}")))?;
        if let Some(other) = out.values().find(|o| o.name.eq_ignore_ascii_case(name)) {
            return err(format!("{what}: the name differs from channel '{}' only in case (DNS labels can't tell them apart)", other.name));
        }
        if let Some(other) = out.values().find(|o| o.path_prefix == path_prefix) {
            return err(format!("{what}: path_prefix {path_prefix} is already channel '{}'", other.name));
        }
        out.insert(name.clone(), TopoChannel { name: name.clone(), path_prefix, endpoints, host });
    }
    Ok(out.into_values().collect())
}

fn parse_parents(v: Option<&Value>, by_listen: &HashMap<SocketAddr, usize>, n: usize) -> Result<Vec<Option<usize>>, TopologyError> {
    let mut parent = vec![None; n];
    let map = match v {
        None | Some(Value::Null) => return Ok(parent),
        Some(Value::Object(m)) => m,
        Some(_) => return err("'parents' must be an object child listen → parent listen"),
    };
    for (child, p) in map {
        let c = socket(Some(&Value::String(child.clone())), &format!("parents key '{child}'"))?;
        let p = socket(Some(p), &format!("parents.{child}"))?;
        let ci = *by_listen.get(&c).ok_or_else(|| TopologyError(format!("parents: {c} is not a node's listen address")))?;
        let pi = *by_listen.get(&p).ok_or_else(|| TopologyError(format!("parents.{child}: {p} is not a node's listen address")))?;
        if ci == pi {
            return err(format!("parents: loop {c} → {c}"));
        }
        parent[ci] = Some(pi);
    }
    Ok(parent)
}
