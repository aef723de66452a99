//! Roaring bitmaps ⇄ bytes in the portable Roaring format (what CRoaring, Java and Go read).
//! Run containers are chosen where they are smaller (`optimize`) before serialising.

use roaring::RoaringBitmap;

/// Serialise in the portable format.
pub fn to_bytes(bm: &RoaringBitmap) -> Vec<u8> {
    let mut bm = bm.clone();
    bm.optimize();
    let mut out = Vec::with_capacity(bm.serialized_size());
    bm.serialize_into(&mut out)
        .expect("writing to a Vec cannot fail");
    out
}

/// Parse portable Roaring bytes; `None` when they are not a valid bitmap.
pub fn from_bytes(bytes: &[u8]) -> Option<RoaringBitmap> {
    RoaringBitmap::deserialize_from(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects_garbage() {
        let bm: RoaringBitmap = (0..100_000)
            .step_by(3)
            .chain(1_000_000..1_100_000)
            .collect();
        let bytes = to_bytes(&bm);
        assert_eq!(from_bytes(&bytes).unwrap(), bm);
        // Runs compress: 100k consecutive ids take a few bytes, not 12 KB.
        let run: RoaringBitmap = (0..100_000).collect();
        assert!(to_bytes(&run).len() < 64);
        assert!(from_bytes(b"not a bitmap").is_none());
        assert_eq!(
            from_bytes(&to_bytes(&RoaringBitmap::new())).unwrap().len(),
            0
        );
    }

    #[test]
    fn a_ten_million_member_bitmap_is_small() {
        // Dense ordinals: a 10M-member segment out of 20M users, every other user.
        let bm: RoaringBitmap = (0..20_000_000u32).step_by(2).collect();
        let n = to_bytes(&bm).len();
        assert!(n < 3_000_000, "{n} bytes");
    }
}
