//! Message and envelope ids, as OpenSMTPD shapes them: a 32-bit msgid shown `%08x` and a
//! 64-bit evpid shown `%016x` whose upper 32 bits are the msgid, so an envelope id names
//! its message.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MsgId(pub u32);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EvpId(pub u64);

impl MsgId {
    /// A random non-zero msgid. Uniqueness in the spool is enforced by the caller with an
    /// exclusive create.
    pub fn random() -> MsgId {
        loop {
            let v = random_u64() as u32;
            if v != 0 {
                return MsgId(v);
            }
        }
    }

    /// A fresh envelope id under this message: random non-zero lower half.
    pub fn new_evpid(self) -> EvpId {
        loop {
            let low = random_u64() as u32;
            if low != 0 {
                return EvpId((u64::from(self.0) << 32) | u64::from(low));
            }
        }
    }
}

impl EvpId {
    pub fn msgid(self) -> MsgId {
        MsgId((self.0 >> 32) as u32)
    }
}

impl fmt::Display for MsgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

impl fmt::Display for EvpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl FromStr for MsgId {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 8 {
            // Reuse the std error type for a wrong length, via a parse that must fail.
            return u32::from_str_radix("", 16).map(MsgId);
        }
        u32::from_str_radix(s, 16).map(MsgId)
    }
}

impl FromStr for EvpId {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 16 {
            return u64::from_str_radix("", 16).map(EvpId);
        }
        u64::from_str_radix(s, 16).map(EvpId)
    }
}

/// Randomness without a dependency: std's `RandomState` is seeded from the OS once per
/// process and per-thread; mixing in a counter gives distinct values per call. Ids and
/// retry jitter need unpredictability against collisions, not cryptographic strength.
pub(crate) fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evpid_carries_its_msgid_in_the_upper_half() {
        let m = MsgId(0x1a2b3c4d);
        let e = m.new_evpid();
        assert_eq!(e.msgid(), m);
        assert!(e.to_string().starts_with("1a2b3c4d"));
        assert_eq!(e.to_string().len(), 16);
        assert_eq!(m.to_string(), "1a2b3c4d");
    }

    #[test]
    fn ids_parse_back_and_reject_wrong_lengths() {
        assert_eq!("0000abcd".parse::<MsgId>().unwrap(), MsgId(0xabcd));
        assert!("abcd".parse::<MsgId>().is_err());
        assert!("zzzzzzzz".parse::<MsgId>().is_err());
        let e: EvpId = "1a2b3c4d00000007".parse().unwrap();
        assert_eq!(e.0, 0x1a2b3c4d00000007);
        assert!("1a2b3c4d".parse::<EvpId>().is_err());
    }

    #[test]
    fn random_ids_differ() {
        let a: Vec<MsgId> = (0..100).map(|_| MsgId::random()).collect();
        let mut b = a.clone();
        b.sort();
        b.dedup();
        assert_eq!(a.len(), b.len());
    }
}
