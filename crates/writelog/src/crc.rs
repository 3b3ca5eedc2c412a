//! CRC32C of a concatenation from the CRCs of its parts.
//!
//! The writer checksums a record's body and data outside its lock and only folds in the
//! 16-byte stamp (sequence number, time) under it, so it needs `crc(a ++ b)` from `crc(a)`,
//! `crc(b)` and `len(b)`. `crc32c::crc32c_combine` (crate 0.6) does that with zlib's 2006
//! algorithm: a 32×32 GF(2) matrix squared once per bit of the length, about 10 µs per call,
//! which was 2-3% of blkrec's CPU on 1 MiB writes and paid again on every 4 KiB write. This
//! is zlib 1.2.12's replacement (crc32.c, `multmodp`/`x2nmodp`): multiply `crc(a)` by
//! x^(8·len(b)) mod P with a table of x^(2^k), one 32-step multiplication per set bit of
//! len(b).

/// The CRC32C polynomial, bit-reflected (Castagnoli, as in the `crc32c` crate).
const POLY: u32 = 0x82F6_3B78;

/// a(x)·b(x) mod P(x), reflected: bit 31 is the x^0 coefficient.
const fn multmodp(a: u32, mut b: u32) -> u32 {
    let mut m: u32 = 1 << 31;
    let mut p: u32 = 0;
    loop {
        if a & m != 0 {
            p ^= b;
            if a & (m - 1) == 0 {
                break;
            }
        }
        m >>= 1;
        b = if b & 1 != 0 { (b >> 1) ^ POLY } else { b >> 1 };
    }
    p
}

/// X8N[i] = x^(8·2^i) mod P(x) = x^(2^(i+3)): shifting by byte bit i of a u64 length.
/// One entry per bit, so no index wraps: zlib's 32-entry table with `k & 31` relies on
/// x^(2^32) = x mod CRC-32's polynomial; for Castagnoli's the period is 31, not 32.
const X8N: [u32; 64] = {
    let mut t = [0u32; 64];
    let mut p: u32 = 1 << 30; // x^1
    let mut k = 0;
    while k < 3 + 64 {
        if k >= 3 {
            t[k - 3] = p;
        }
        p = multmodp(p, p);
        k += 1;
    }
    t
};

/// x^(8·n) mod P(x).
fn x8nmodp(mut n: u64) -> u32 {
    let mut p: u32 = 1 << 31; // x^0
    let mut i = 0;
    while n != 0 {
        if n & 1 != 0 {
            p = multmodp(X8N[i], p);
        }
        n >>= 1;
        i += 1;
    }
    p
}

/// The CRC32C of `a ++ b`, given `crc_a = crc32c(a)`, `crc_b = crc32c(b)` and `len_b = b.len()`.
pub fn crc32c_concat(crc_a: u32, crc_b: u32, len_b: u64) -> u32 {
    // Shift a's CRC past len_b bytes (8·len_b bits); the init/final xors cancel out.
    multmodp(x8nmodp(len_b), crc_a) ^ crc_b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_crc_of_the_concatenation() {
        let bytes: Vec<u8> = (0..(1u32 << 20) + 37)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for (split, end) in [
            (0, 0),
            (0, 1),
            (5, 5),
            (16, 17),
            (16, 16 + 2048),
            (1000, 1000 + 4096),
            (16, bytes.len()),
            (bytes.len() - 1, bytes.len()),
        ] {
            let (a, b) = (&bytes[..split], &bytes[split..end]);
            let want = crc32c::crc32c(&bytes[..end]);
            let got = crc32c_concat(crc32c::crc32c(a), crc32c::crc32c(b), b.len() as u64);
            assert_eq!(got, want, "split {split}, end {end}");
            // And it agrees with the crate's own (slow) combine.
            assert_eq!(
                got,
                crc32c::crc32c_combine(crc32c::crc32c(a), crc32c::crc32c(b), b.len())
            );
        }
    }

    /// Lengths of 2^29 bytes (2^32 bits) and more, where a table that wraps after 32 entries
    /// goes wrong: compared with the crate's slow but period-free matrix combine.
    #[test]
    fn long_lengths_match_crc32c_combine() {
        let (ca, cb) = (0xDEAD_BEEF_u32, 0x1234_5678_u32);
        let mut lens: Vec<u64> = vec![
            (1 << 29) - 1,
            1 << 29,
            (1 << 29) + 1,
            1 << 30,
            1 << 31,
            (1 << 32) + 7,
            1 << 40,
            (1 << 40) + 12345,
            1 << 62,
            (1 << 63) + 3,
            u64::MAX,
        ];
        lens.extend((29..64).map(|b| (1u64 << b) | 0x5A5));
        for len in lens {
            let want = crc32c::crc32c_combine(ca, cb, usize::try_from(len).unwrap());
            assert_eq!(crc32c_concat(ca, cb, len), want, "len {len:#x}");
        }
    }

    /// Real data just over 2^29 bytes, streamed from a small buffer (no 512 MiB allocation).
    #[test]
    fn real_data_just_over_2_pow_29() {
        let a = b"record stamp 16B";
        let chunk: Vec<u8> = (0..65_536u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
            .collect();
        let tail = [0xA5u8; 3];
        let (mut crc_ab, mut crc_b) = (crc32c::crc32c(a), 0u32);
        for _ in 0..(1usize << 29) / chunk.len() {
            crc_ab = crc32c::crc32c_append(crc_ab, &chunk);
            crc_b = crc32c::crc32c_append(crc_b, &chunk);
        }
        crc_ab = crc32c::crc32c_append(crc_ab, &tail);
        crc_b = crc32c::crc32c_append(crc_b, &tail);
        let len_b = (1u64 << 29) + tail.len() as u64;
        assert_eq!(crc32c_concat(crc32c::crc32c(a), crc_b, len_b), crc_ab);
    }
}
