//! The reserved system keyspace: every key starting with [`SYSTEM_KEY_PREFIX`]
//! (`0xFF 0xFF`) belongs to the cluster itself — the placement driver keeps
//! its durable state there, replicated by the same region Raft groups as user
//! data. Users may neither read nor write it (the client API refuses such
//! keys and clamps scans before it); a fresh cluster gives it a region of its
//! own, so placement traffic never shares a Raft group with user load.
//!
//! Guarantee: [`is_system_key`] holds for exactly the keys at or above
//! [`SYSTEM_KEY_PREFIX`], so `[SYSTEM_KEY_PREFIX, unbounded)` is the whole
//! system keyspace and `["", SYSTEM_KEY_PREFIX)` the whole user keyspace.

/// The first two bytes of every system key; also the first system key, and
/// the boundary between the user and system regions of a fresh cluster.
pub const SYSTEM_KEY_PREFIX: [u8; 2] = [0xFF, 0xFF];

/// Where the timestamp oracle's window lives (see `tso_window`).
pub const TSO_WINDOW_KEY: &[u8] = b"\xFF\xFFplacement/tso_window";

/// Whether `key` lies in the reserved system keyspace.
pub fn is_system_key(key: &[u8]) -> bool {
    key.starts_with(&SYSTEM_KEY_PREFIX)
}

/// `[start, end)` cut at the system keyspace: the user part of the range, or
/// `None` when it holds no user key.
pub fn clamp_to_user_keys<'a>(start: &'a [u8], end: &'a [u8]) -> Option<(&'a [u8], &'a [u8])> {
    let end = if end.is_empty() || end > &SYSTEM_KEY_PREFIX[..] {
        &SYSTEM_KEY_PREFIX[..]
    } else {
        end
    };
    (start < end).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_keys_are_exactly_those_at_or_above_the_prefix() {
        assert!(is_system_key(TSO_WINDOW_KEY));
        assert!(is_system_key(&SYSTEM_KEY_PREFIX));
        assert!(is_system_key(b"\xFF\xFF\xFF"));
        assert!(!is_system_key(b"\xFF"));
        assert!(!is_system_key(b"\xFF\xFE\xFF\xFF"));
        assert!(!is_system_key(b""));
        assert!(!is_system_key(b"zzz"));
        // Every key below the prefix is a user key, every key above a system key.
        assert!(b"\xFF\xFE\xFF\xFF".as_slice() < &SYSTEM_KEY_PREFIX[..]);
    }

    #[test]
    fn clamping_keeps_the_user_part_only() {
        assert_eq!(
            clamp_to_user_keys(b"a", b""),
            Some((&b"a"[..], &SYSTEM_KEY_PREFIX[..]))
        );
        assert_eq!(clamp_to_user_keys(b"a", b"m"), Some((&b"a"[..], &b"m"[..])));
        assert_eq!(
            clamp_to_user_keys(b"", b"\xFF\xFF\x00"),
            Some((&b""[..], &SYSTEM_KEY_PREFIX[..]))
        );
        assert_eq!(clamp_to_user_keys(b"\xFF\xFF", b""), None);
        assert_eq!(clamp_to_user_keys(b"\xFF\xFFa", b"\xFF\xFFz"), None);
    }
}
