//! `control` (seed M3, LA/LC interfaces): instructions — "channel X under path prefix P is
//! served by CDN endpoint(s) Y" — their validation, and the table that routes a request path to
//! an instructed channel by longest prefix. Nothing outside this table is ever fetched.

use std::collections::HashMap;
use std::net::SocketAddr;

use crate::Error;

/// An instruction from the instructor / CDN controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// Channel name (unique per node).
    pub channel: String,
    /// Path prefix the channel's playlists and segments live under, e.g. `/live/ch1/`.
    pub path_prefix: String,
    /// CDN endpoints, the first primary; a failed fetch is retried once on the next.
    pub endpoints: Vec<SocketAddr>,
    /// `Host` sent upstream; defaults to the primary endpoint's address.
    pub host: Option<String>,
    /// Paths to fetch at once (claim 9: warm up while the viewer's redirect is in flight).
    pub prefetch: Vec<String>,
    /// Seconds after which the instruction expires unless renewed (instructed again).
    pub ttl_s: Option<u64>,
}

impl Instruction {
    /// An instruction with one endpoint and no Host override or prefetch.
    pub fn new(channel: &str, path_prefix: &str, endpoint: SocketAddr) -> Self {
        Instruction {
            channel: channel.to_string(),
            path_prefix: path_prefix.to_string(),
            endpoints: vec![endpoint],
            host: None,
            prefetch: Vec::new(),
            ttl_s: None,
        }
    }

    /// Checks the instruction on its own; the reason is given when refused.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |why: &str| Err(Error::InvalidInstruction(why.to_string()));
        if self.channel.is_empty() || self.channel.len() > 128 {
            return bad("channel name must be 1..=128 bytes");
        }
        if !self.channel.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
            return bad("channel name may hold only letters, digits, '-', '_' and '.'");
        }
        if !self.path_prefix.starts_with('/') {
            return bad("path_prefix must start with '/'");
        }
        if self.path_prefix.bytes().any(|b| b <= b' ' || b == 0x7f || b == b'?' || b == b'#') {
            return bad("path_prefix holds a space, control byte, '?' or '#'");
        }
        if self.path_prefix.split('/').any(|s| s == "." || s == "..") {
            return bad("path_prefix holds a dot segment");
        }
        if self.endpoints.is_empty() {
            return bad("at least one endpoint is needed");
        }
        if let Some(h) = &self.host {
            if h.is_empty() || h.bytes().any(|b| b <= b' ' || b == 0x7f || b == b'/') {
                return bad("host must be a bare host[:port]");
            }
        }
        for p in &self.prefetch {
            if !p.starts_with(&self.path_prefix) {
                return bad("prefetch paths must lie under path_prefix");
            }
            // They go upstream verbatim as request targets.
            if p.bytes().any(|b| b <= b' ' || b >= 0x7f || b == b'#') {
                return bad("prefetch path holds a space, control, non-ASCII byte or '#'");
            }
            let path = p.split('?').next().unwrap_or("").to_ascii_lowercase();
            if path.split('/').any(|s| s == "." || s == "..") || ["%2e", "%2f", "%5c", "\\"].iter().any(|x| path.contains(x)) {
                return bad("prefetch path holds a dot segment or an encoded dot or slash");
            }
        }
        Ok(())
    }

    /// The `Host` header value for upstream requests.
    pub fn host_header(&self) -> String {
        match &self.host {
            Some(h) => h.clone(),
            None => self.endpoints.first().map(|e| e.to_string()).unwrap_or_default(),
        }
    }
}

/// Parses the JSON form of an instruction (DESIGN §6, control port and C ABI):
/// `{"channel":"ch1","path_prefix":"/live/ch1/","endpoints":["127.0.0.1:18080"],
///   "host":"cdn.example","prefetch":["/live/ch1/index.m3u8"]}` — `host` and `prefetch` optional.
/// The error names the field at fault; the instruction is also validated.
pub fn parse_instruction_json(body: &[u8]) -> Result<Instruction, Error> {
    let bad = |why: String| Error::InvalidInstruction(why);
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| bad(format!("malformed JSON: {e}")))?;
    let obj = v.as_object().ok_or_else(|| bad("expected a JSON object".into()))?;
    let string = |k: &str| -> Result<String, Error> {
        obj.get(k)
            .ok_or_else(|| bad(format!("missing field '{k}'")))?
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| bad(format!("field '{k}' must be a string")))
    };
    let strings = |k: &str, required: bool| -> Result<Vec<String>, Error> {
        match obj.get(k) {
            None if !required => Ok(Vec::new()),
            None => Err(bad(format!("missing field '{k}'"))),
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .map(|x| x.as_str().map(str::to_string).ok_or_else(|| bad(format!("field '{k}' must hold strings"))))
                .collect(),
            Some(_) => Err(bad(format!("field '{k}' must be an array of strings"))),
        }
    };
    let endpoints = strings("endpoints", true)?
        .iter()
        .map(|e| parse_endpoint(e).ok_or_else(|| bad(format!("endpoint '{e}' is not HOST:PORT with an IP host"))))
        .collect::<Result<Vec<_>, _>>()?;
    let host = match obj.get("host") {
        None | Some(serde_json::Value::Null) => None,
        Some(_) => Some(string("host")?),
    };
    let ins = Instruction {
        channel: string("channel")?,
        path_prefix: string("path_prefix")?,
        endpoints,
        host,
        prefetch: strings("prefetch", false)?,
        ttl_s: match obj.get("ttl_s") {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => Some(v.as_u64().filter(|t| *t > 0).ok_or_else(|| bad("field 'ttl_s' must be a positive integer".into()))?),
        },
    };
    ins.validate()?;
    Ok(ins)
}

/// Parses `1.2.3.4:80` or `[::1]:80`.
pub fn parse_endpoint(s: &str) -> Option<SocketAddr> {
    s.trim().parse().ok()
}

/// The JSON form of an instruction (what `GET /v1/channels` lists).
pub fn instruction_json(ins: &Instruction) -> serde_json::Value {
    serde_json::json!({
        "channel": ins.channel,
        "path_prefix": ins.path_prefix,
        "endpoints": ins.endpoints.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
        "host": ins.host,
        "prefetch": ins.prefetch,
        "ttl_s": ins.ttl_s,
    })
}

/// An instructed channel as the node keeps it.
#[derive(Debug, Clone)]
pub struct Channel {
    /// Unique id for this instruction's life (store keys carry it, so a withdrawn and
    /// re-added channel never sees the old objects).
    pub id: u64,
    /// The instruction.
    pub instruction: Instruction,
    /// Precomputed `Host` header.
    pub host: String,
}

/// The instructed channels, routed by longest path prefix. Routing costs one hash lookup per
/// distinct prefix *length* (a handful), not a scan of the channels: the indexes are rebuilt on
/// the rare changes (instruct, withdraw).
#[derive(Debug, Default)]
pub struct ChannelTable {
    channels: Vec<Channel>,
    next_id: u64,
    by_prefix: HashMap<Box<str>, usize>,
    by_id: HashMap<u64, usize>,
    by_name: HashMap<Box<str>, usize>,
    /// Distinct prefix lengths, longest first.
    lengths: Vec<usize>,
}

impl ChannelTable {
    /// Adds or replaces (same name) a channel. Refuses a prefix equal to another channel's.
    /// Returns the channel id and, on replace, the previous id.
    pub fn upsert(&mut self, ins: Instruction) -> Result<(u64, Option<u64>), Error> {
        ins.validate()?;
        if let Some(other) =
            self.channels.iter().find(|c| c.instruction.channel != ins.channel && c.instruction.path_prefix == ins.path_prefix)
        {
            return Err(Error::InvalidInstruction(format!(
                "path_prefix {} is already channel {}",
                ins.path_prefix, other.instruction.channel
            )));
        }
        let host = ins.host_header();
        let result = match self.by_name.get(ins.channel.as_str()).and_then(|&i| self.channels.get_mut(i)) {
            // Same channel: keep its id (and its cache) when only endpoints/host change.
            Some(c) if c.instruction.path_prefix == ins.path_prefix => {
                c.instruction = ins;
                c.host = host;
                (c.id, None)
            }
            Some(c) => {
                let prev = c.id;
                self.next_id += 1;
                c.id = self.next_id;
                c.instruction = ins;
                c.host = host;
                (c.id, Some(prev))
            }
            None => {
                self.next_id += 1;
                let id = self.next_id;
                self.channels.push(Channel { id, instruction: ins, host });
                (id, None)
            }
        };
        self.reindex();
        Ok(result)
    }

    /// Removes a channel by name; returns it.
    pub fn remove(&mut self, name: &str) -> Option<Channel> {
        let i = *self.by_name.get(name)?;
        let c = self.channels.remove(i);
        self.reindex();
        Some(c)
    }

    fn reindex(&mut self) {
        self.by_prefix.clear();
        self.by_id.clear();
        self.by_name.clear();
        for (i, c) in self.channels.iter().enumerate() {
            self.by_prefix.insert(c.instruction.path_prefix.as_str().into(), i);
            self.by_id.insert(c.id, i);
            self.by_name.insert(c.instruction.channel.as_str().into(), i);
        }
        self.lengths = self.channels.iter().map(|c| c.instruction.path_prefix.len()).collect();
        self.lengths.sort_unstable_by(|a, b| b.cmp(a));
        self.lengths.dedup();
    }

    /// The channel whose prefix is the longest one starting `path`.
    pub fn route(&self, path: &str) -> Option<&Channel> {
        self.lengths
            .iter()
            .filter_map(|&n| path.get(..n))
            .find_map(|p| self.by_prefix.get(p))
            .and_then(|&i| self.channels.get(i))
    }

    /// The channel with this id.
    pub fn by_id(&self, id: u64) -> Option<&Channel> {
        self.by_id.get(&id).and_then(|&i| self.channels.get(i))
    }

    /// The channel with this name.
    pub fn by_name(&self, name: &str) -> Option<&Channel> {
        self.by_name.get(name).and_then(|&i| self.channels.get(i))
    }

    /// All channels.
    pub fn iter(&self) -> impl Iterator<Item = &Channel> {
        self.channels.iter()
    }

    /// Number of channels.
    pub fn len(&self) -> usize {
        self.channels.len()
    }

    /// True with no channels.
    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep() -> SocketAddr {
        "127.0.0.1:18080".parse().unwrap()
    }

    #[test]
    fn longest_prefix_wins() {
        let mut t = ChannelTable::default();
        t.upsert(Instruction::new("all", "/live/", ep())).unwrap();
        t.upsert(Instruction::new("ch1", "/live/ch1/", ep())).unwrap();
        assert_eq!(t.route("/live/ch1/a.ts").unwrap().instruction.channel, "ch1");
        assert_eq!(t.route("/live/ch2/a.ts").unwrap().instruction.channel, "all");
        assert!(t.route("/vod/a.ts").is_none(), "no channel, no fetch");
    }

    #[test]
    fn indexed_route_equals_a_scan_through_instruct_and_withdraw() {
        use proptest::prelude::*;
        let prefix = prop::sample::select(vec!["/a", "/a/", "/a/b", "/a/b/", "/ab/", "/b/", "/live/ch1", "/live/ch10/", "/é/"]);
        let op = (prefix, 0u8..4, any::<bool>());
        let path = prop::sample::select(vec!["/a", "/a/x.ts", "/a/b/c.ts", "/ab/x", "/b/", "/live/ch10/x.ts", "/live/ch1x", "/é/x", "/", "/c"]);
        proptest!(|(ops in prop::collection::vec(op, 1..20), paths in prop::collection::vec(path, 1..10))| {
            let mut t = ChannelTable::default();
            for (p, name, withdraw) in ops {
                let name = format!("c{name}");
                if withdraw {
                    t.remove(&name);
                } else {
                    let _ = t.upsert(Instruction::new(&name, p, ep()));
                }
            }
            for path in paths {
                let scan = t
                    .iter()
                    .filter(|c| path.starts_with(c.instruction.path_prefix.as_str()))
                    .max_by_key(|c| c.instruction.path_prefix.len())
                    .map(|c| c.id);
                prop_assert_eq!(t.route(path).map(|c| c.id), scan, "{}", path);
            }
            for c in t.iter() {
                prop_assert_eq!(t.by_id(c.id).map(|x| x.id), Some(c.id));
                prop_assert_eq!(t.by_name(&c.instruction.channel).map(|x| x.id), Some(c.id));
            }
        });
    }

    #[test]
    fn invalid_instructions_are_refused() {
        let mut t = ChannelTable::default();
        assert!(t.upsert(Instruction::new("x", "live/", ep())).is_err());
        assert!(t.upsert(Instruction::new("", "/live/", ep())).is_err());
        assert!(t.upsert(Instruction::new("a b", "/live/", ep())).is_err());
        assert!(t.upsert(Instruction::new("x", "/live/../", ep())).is_err());
        let mut no_ep = Instruction::new("x", "/live/", ep());
        no_ep.endpoints.clear();
        assert!(t.upsert(no_ep).is_err());
        t.upsert(Instruction::new("a", "/live/", ep())).unwrap();
        assert!(t.upsert(Instruction::new("b", "/live/", ep())).is_err(), "same prefix twice");
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn json_instructions() {
        let ins = parse_instruction_json(
            br#"{"channel":"ch1","path_prefix":"/live/ch1/","endpoints":["127.0.0.1:18080","[::1]:8080"],"host":"cdn.example","prefetch":["/live/ch1/index.m3u8"]}"#,
        )
        .unwrap();
        assert_eq!(ins.endpoints.len(), 2);
        assert_eq!(ins.host.as_deref(), Some("cdn.example"));
        assert_eq!(parse_instruction_json(&serde_json::to_vec(&instruction_json(&ins)).unwrap()).unwrap(), ins);
        for (body, why) in [
            (&b"{"[..], "malformed JSON"),
            (br#"[]"#, "object"),
            (br#"{"path_prefix":"/a/","endpoints":["127.0.0.1:1"]}"#, "'channel'"),
            (br#"{"channel":"a","path_prefix":"/a/","endpoints":["nohost"]}"#, "nohost"),
            (br#"{"channel":"a","path_prefix":"/a/","endpoints":"127.0.0.1:1"}"#, "array"),
            (br#"{"channel":"a","path_prefix":"a/","endpoints":["127.0.0.1:1"]}"#, "start with '/'"),
        ] {
            let e = parse_instruction_json(body).unwrap_err().to_string();
            assert!(e.contains(why), "{e} should mention {why}");
        }
    }

    #[test]
    fn replace_keeps_id_when_prefix_same() {
        let mut t = ChannelTable::default();
        let (id, _) = t.upsert(Instruction::new("a", "/live/", ep())).unwrap();
        let mut ins = Instruction::new("a", "/live/", "127.0.0.1:1".parse().unwrap());
        ins.host = Some("cdn.example".into());
        assert_eq!(t.upsert(ins).unwrap(), (id, None));
        assert_eq!(t.by_name("a").unwrap().host, "cdn.example");
    }
}
