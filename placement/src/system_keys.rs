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

/// Where the store registry lives: one key per store, [`store_key`].
pub const STORES_PREFIX: &[u8] = b"\xFF\xFFplacement/stores/";

/// The key of store `store_id`'s registry record: [`STORES_PREFIX`] and the
/// id in 8 big-endian bytes, so the registry scans in id order.
pub fn store_key(store_id: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(STORES_PREFIX.len() + 8);
    key.extend_from_slice(STORES_PREFIX);
    key.extend_from_slice(&store_id.to_be_bytes());
    key
}

/// The store id a registry key names, or `None` for any other key.
pub fn store_id_of_key(key: &[u8]) -> Option<u64> {
    let id: [u8; 8] = key.strip_prefix(STORES_PREFIX)?.try_into().ok()?;
    Some(u64::from_be_bytes(id))
}

/// `[start, end)` holding exactly the registry's keys.
pub fn stores_range() -> (Vec<u8>, Vec<u8>) {
    let mut end = STORES_PREFIX.to_vec();
    // The prefix ends in '/', so bumping its last byte cannot overflow.
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    (STORES_PREFIX.to_vec(), end)
}

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
    fn store_keys_are_system_keys_in_id_order_inside_the_registry_range() {
        let (start, end) = stores_range();
        let keys: Vec<Vec<u8>> = [1u64, 2, 255, 256, u64::MAX].map(store_key).to_vec();
        assert!(keys.windows(2).all(|pair| pair[0] < pair[1]));
        for (key, id) in keys.iter().zip([1u64, 2, 255, 256, u64::MAX]) {
            assert!(is_system_key(key));
            assert!(start.as_slice() <= key.as_slice() && key.as_slice() < end.as_slice());
            assert_eq!(store_id_of_key(key), Some(id));
        }
        assert!(!(start.as_slice() <= TSO_WINDOW_KEY && TSO_WINDOW_KEY < end.as_slice()));
        assert_eq!(store_id_of_key(TSO_WINDOW_KEY), None);
        assert_eq!(
            store_id_of_key(&store_key(7)[..STORES_PREFIX.len() + 7]),
            None
        );
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
