//! A hash map for the node's own sequential `u64` ids (viewers, upstreams, objects). The ids
//! are allocated by the node, never chosen by a peer, so a multiply-shift hash is safe and far
//! cheaper than SipHash on the per-viewer hot path.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Hashes one `u64` by a Fibonacci multiply (other input is folded in byte by byte).
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// A map keyed by node-allocated ids.
pub type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;
