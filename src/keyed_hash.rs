//! A 128-bit keyed hash for in-memory sets rebuilt from the spool at every
//! start (the suppression set, the idempotency claims): two SipHash-1-3
//! with keys drawn at start. The keys need not survive a restart, and a
//! client cannot choose inputs that collide; two of a million hashes
//! collide with a probability near 10^-27.

use std::hash::{BuildHasher, Hash, Hasher, RandomState};

/// The keyed hash of one input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hash128(pub [u64; 2]);

impl Hash for Hash128 {
    /// The first half is already a keyed hash: it is a table's hash as it
    /// is (with [`PassThrough`]). The second half is free for sharding.
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.0[0]);
    }
}

/// The hash function: its keys are drawn from the operating system's
/// random source when it is made.
pub struct Keyed128 {
    first: RandomState,
    second: RandomState,
}

impl Default for Keyed128 {
    fn default() -> Self {
        Keyed128::new()
    }
}

impl Keyed128 {
    pub fn new() -> Keyed128 {
        Keyed128 {
            first: RandomState::new(),
            second: RandomState::new(),
        }
    }

    pub fn hash(&self, bytes: &[u8]) -> Hash128 {
        let hash = |state: &RandomState| {
            let mut hasher = state.build_hasher();
            hasher.write(bytes);
            hasher.finish()
        };
        Hash128([hash(&self.first), hash(&self.second)])
    }
}

/// Passes a [`Hash128`]'s first half through as a table's hash.
#[derive(Default)]
pub struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used by `Hash128`; anything else still
        // hashes, if poorly.
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_inputs_hash_alike_and_keys_differ_per_instance() {
        let keyed = Keyed128::new();
        assert_eq!(keyed.hash(b"a"), keyed.hash(b"a"));
        assert_ne!(keyed.hash(b"a"), keyed.hash(b"b"));
        assert_ne!(keyed.hash(b"a").0[0], keyed.hash(b"a").0[1]);
        assert_ne!(Keyed128::new().hash(b"a"), keyed.hash(b"a"));
    }
}
