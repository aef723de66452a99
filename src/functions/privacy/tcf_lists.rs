//! Membership tests over decoded id lists (ids are 1-based; anything out of range is absent).

pub(crate) fn in_u8(list: &[u8], n: i64) -> bool {
    u8::try_from(n).is_ok_and(|n| list.contains(&n))
}

pub(crate) fn in_u16(list: &[u16], n: i64) -> bool {
    u16::try_from(n).is_ok_and(|n| list.binary_search(&n).is_ok())
}
