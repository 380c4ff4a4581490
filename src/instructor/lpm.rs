//! Longest-prefix match over IPv4 and IPv6 with `prefix-trie` (a multi-bit TreeBitMap trie:
//! lookups cost O(prefix width), not O(entries)), plus the EDNS Client Subnet scope computation.

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use prefix_trie::PrefixMap;

/// A table of IPv4 and IPv6 prefixes, each mapped to a value, answered by longest-prefix match.
#[derive(Clone)]
pub struct PrefixTable<T> {
    v4: PrefixMap<Ipv4Net, T>,
    v6: PrefixMap<Ipv6Net, T>,
}

impl<T> Default for PrefixTable<T> {
    fn default() -> Self {
        PrefixTable { v4: PrefixMap::new(), v6: PrefixMap::new() }
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for PrefixTable<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.v4.iter().map(|(p, v)| (IpNet::V4(p), v))).entries(self.v6.iter().map(|(p, v)| (IpNet::V6(p), v))).finish()
    }
}

/// The canonical form of an address: an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

impl<T> PrefixTable<T> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of prefixes.
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// True when no prefix is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Inserts (host bits are cleared); returns the value previously stored for that prefix.
    pub fn insert(&mut self, net: IpNet, value: T) -> Option<T> {
        match net.trunc() {
            IpNet::V4(n) => self.v4.insert(n, value),
            IpNet::V6(n) => self.v6.insert(n, value),
        }
    }

    /// The value stored for exactly this prefix.
    pub fn get(&self, net: &IpNet) -> Option<&T> {
        match net.trunc() {
            IpNet::V4(n) => self.v4.get(&n),
            IpNet::V6(n) => self.v6.get(&n),
        }
    }

    /// Longest stored prefix containing `ip` (IPv4-mapped IPv6 addresses are looked up as IPv4).
    pub fn lookup(&self, ip: IpAddr) -> Option<(IpNet, &T)> {
        match canonical(ip) {
            IpAddr::V4(a) => self.lookup_net(&IpNet::V4(Ipv4Net::from(a))),
            IpAddr::V6(a) => self.lookup_net(&IpNet::V6(Ipv6Net::from(a))),
        }
    }

    /// Longest stored prefix containing all of `net` (at most as long as `net`).
    pub fn lookup_net(&self, net: &IpNet) -> Option<(IpNet, &T)> {
        match net.trunc() {
            IpNet::V4(n) => self.v4.get_lpm(&n).map(|(p, v)| (IpNet::V4(p), v)),
            IpNet::V6(n) => self.v6.get_lpm(&n).map(|(p, v)| (IpNet::V6(p), v)),
        }
    }

    /// Every stored prefix, IPv4 first, each family in lexicographic order.
    pub fn iter(&self) -> impl Iterator<Item = (IpNet, &T)> + '_ {
        self.v4.iter().map(|(p, v)| (IpNet::V4(p), v)).chain(self.v6.iter().map(|(p, v)| (IpNet::V6(p), v)))
    }

    /// True when a stored prefix lies inside `net` (equal included) and is longer than `than`.
    fn has_longer_inside(&self, net: &IpNet, than: u8) -> bool {
        match net.trunc() {
            IpNet::V4(n) => self.v4.children(&n).any(|(p, _)| p.prefix_len() > than),
            IpNet::V6(n) => self.v6.children(&n).any(|(p, _)| p.prefix_len() > than),
        }
    }

    /// The EDNS Client Subnet scope (RFC 7871 §7.2.1) of the answer chosen for `source`: the
    /// shortest prefix length `L` (at least the matched prefix's length, 0 with no match) such
    /// that every address sharing `source`'s first `L` bits has the same longest match. Resolvers
    /// may then cache the answer for that whole prefix and for no more.
    pub fn scope(&self, source: &IpNet) -> u8 {
        let source = source.trunc();
        let matched = self.lookup_net(&source).map_or(0, |(p, _)| p.prefix_len());
        let max = source.max_prefix_len();
        // `clean(L)`: no stored prefix longer than the match overlaps source/L. A prefix longer
        // than the match that overlaps source/L either lies inside it or contains it (then it is
        // longer than the source, since the match is the longest one within the source).
        let clean = |len: u8| -> bool {
            let Ok(net) = IpNet::new(source.addr(), len) else { return true };
            let net = net.trunc();
            if self.has_longer_inside(&net, matched) {
                return false;
            }
            self.lookup_net(&net).map_or(0, |(p, _)| p.prefix_len()) <= matched
        };
        // Monotone in L (a longer L is a smaller set): binary search the first clean length.
        let (mut lo, mut hi) = (matched, max);
        if clean(lo) {
            return lo;
        }
        if !clean(hi) {
            return max;
        }
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if clean(mid) {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        hi
    }
}
