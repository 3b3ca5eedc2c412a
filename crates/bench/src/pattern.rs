//! Self-describing block contents, so every read (during a workload, in the verify pass and
//! on the final image file) can be checked against what was last written.
//!
//! Each 4 KiB block holds a 16-byte header (`lba`, `gen ^ MAGIC`, little endian) and 4080
//! bytes taken from a random pool at an offset derived from (`lba`, `gen`). Generation 0 is
//! the content the image is created with; every write request gets a fresh generation.

use std::io::{Read, Write};
use std::path::Path;

/// Block size of the pattern and of the small workloads.
pub const BLOCK: usize = 4096;
const HDR: usize = 16;
const MAGIC: u64 = 0xE4CE_BE4C_0000_0000;
const POOL: usize = 64 * 1024;
/// `gens` value for a block whose content is unknown (a write to it failed).
pub const UNKNOWN: u64 = u64::MAX;

/// splitmix64: small, fast, good enough for picking offsets.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// Next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-ish value in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// The random pool blocks are cut from.
#[derive(Debug, Clone)]
pub struct Pattern {
    pool: Vec<u8>,
}

impl Pattern {
    /// A pool derived from `seed`.
    pub fn new(seed: u64) -> Self {
        let mut rng = Rng::new(seed ^ 0x5EED);
        let mut pool = Vec::with_capacity(POOL + BLOCK);
        while pool.len() < POOL + BLOCK {
            pool.extend_from_slice(&rng.next_u64().to_le_bytes());
        }
        Pattern { pool }
    }

    fn body(&self, lba: u64, gen: u64) -> &[u8] {
        let mut r = Rng::new(lba.wrapping_mul(0x1000_0000_01B3) ^ gen);
        let off = (r.below((POOL / 8) as u64) * 8) as usize;
        &self.pool[off..off + BLOCK - HDR]
    }

    /// Writes block `lba` generation `gen` into `out` (exactly [`BLOCK`] bytes).
    pub fn fill(&self, lba: u64, gen: u64, out: &mut [u8]) {
        out[0..8].copy_from_slice(&lba.to_le_bytes());
        out[8..16].copy_from_slice(&(gen ^ MAGIC).to_le_bytes());
        out[HDR..BLOCK].copy_from_slice(self.body(lba, gen));
    }

    /// Whether `data` ([`BLOCK`] bytes) is block `lba` generation `gen`. [`UNKNOWN`] matches
    /// anything.
    pub fn check(&self, lba: u64, gen: u64, data: &[u8]) -> bool {
        if gen == UNKNOWN {
            return true;
        }
        data.len() == BLOCK
            && data[0..8] == lba.to_le_bytes()
            && data[8..16] == (gen ^ MAGIC).to_le_bytes()
            && data[HDR..] == *self.body(lba, gen)
    }

    /// Creates `path` with `blocks` blocks of generation 0, fully written (no holes, no
    /// unwritten extents) and fsync'ed, so no backend pays for allocation during the run.
    pub fn create_image(&self, path: &Path, blocks: u64) -> std::io::Result<()> {
        let mut f = std::fs::File::create(path)?;
        let chunk_blocks = 256u64;
        let mut buf = vec![0u8; chunk_blocks as usize * BLOCK];
        let mut lba = 0;
        while lba < blocks {
            let n = chunk_blocks.min(blocks - lba);
            for i in 0..n {
                let at = i as usize * BLOCK;
                self.fill(lba + i, 0, &mut buf[at..at + BLOCK]);
            }
            f.write_all(&buf[..n as usize * BLOCK])?;
            lba += n;
        }
        f.sync_all()
    }

    /// Checks every block of the image file at `path` against `gens`; returns the number of
    /// blocks checked and the LBAs that differ.
    pub fn check_image(&self, path: &Path, gens: &[u64]) -> std::io::Result<(u64, Vec<u64>)> {
        let mut f = std::fs::File::open(path)?;
        let mut buf = vec![0u8; 256 * BLOCK];
        let mut bad = Vec::new();
        let mut lba = 0u64;
        while (lba as usize) < gens.len() {
            let n = 256.min(gens.len() - lba as usize);
            f.read_exact(&mut buf[..n * BLOCK])?;
            for i in 0..n {
                let b = lba + i as u64;
                if !self.check(b, gens[b as usize], &buf[i * BLOCK..(i + 1) * BLOCK]) {
                    bad.push(b);
                }
            }
            lba += n as u64;
        }
        Ok((lba, bad))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_check_roundtrip() {
        let p = Pattern::new(1);
        let mut b = vec![0u8; BLOCK];
        p.fill(7, 3, &mut b);
        assert!(p.check(7, 3, &b));
        assert!(!p.check(7, 4, &b));
        assert!(!p.check(8, 3, &b));
        assert!(p.check(8, UNKNOWN, &b));
        b[100] ^= 1;
        assert!(!p.check(7, 3, &b));
    }

    #[test]
    fn image_roundtrip() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let img = dir.path().join("i.img");
        let p = Pattern::new(9);
        p.create_image(&img, 300)?;
        assert_eq!(std::fs::metadata(&img)?.len(), 300 * BLOCK as u64);
        let mut gens = vec![0u64; 300];
        assert_eq!(p.check_image(&img, &gens)?, (300, vec![]));
        gens[299] = 5;
        assert_eq!(p.check_image(&img, &gens)?, (300, vec![299]));
        Ok(())
    }
}
