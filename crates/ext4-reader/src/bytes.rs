//! Little-endian field access on byte slices that may be shorter than the field (a short slice
//! reads as zeros past its end instead of panicking; callers size their buffers from validated
//! geometry, so this only matters for hostile input).

pub(crate) fn le16(b: &[u8], off: usize) -> u16 {
    let mut a = [0u8; 2];
    if let Some(s) = off.checked_add(2).and_then(|end| b.get(off..end)) {
        a.copy_from_slice(s);
    }
    u16::from_le_bytes(a)
}

pub(crate) fn le32(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = off.checked_add(4).and_then(|end| b.get(off..end)) {
        a.copy_from_slice(s);
    }
    u32::from_le_bytes(a)
}

pub(crate) fn u8_at(b: &[u8], off: usize) -> u8 {
    b.get(off).copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_slices_read_as_zero() {
        assert_eq!(le32(&[1, 0, 0, 0], 0), 1);
        assert_eq!(le32(&[1, 0], 0), 0);
        assert_eq!(le16(&[0x34, 0x12], 0), 0x1234);
        assert_eq!(le16(&[], usize::MAX - 1), 0);
        assert_eq!(u8_at(&[7], 1), 0);
    }
}
