//! The self-describing block tag.
//!
//! Every 4 KiB block a workload writes carries a [`BlockTag`] in its first bytes, a
//! deterministic filler derived from the tag, and a checksum over everything before it in its
//! last 8 bytes. Reading a block back therefore tells, on its own, whether it holds exactly
//! the data some writer stored (and which writer, file, block, round and generation), a torn
//! or foreign block, or nothing at all.
//!
//! Layout (little endian), `TAG_BLOCK_SIZE` = 4096 bytes:
//! ```text
//!   0  magic      u64  b"E4RACEtg"
//!   8  run_id     u64
//!  16  file_id    u32
//!  20  round      u32
//!  24  lblk       u64  logical block number in the file (4 KiB units)
//!  32  generation u32  0 for a hole fill, then +1 per overwrite
//!  36  reserved   u32  0
//!  40  filler     ...  splitmix64 stream seeded from the fields above
//! 4088 checksum   u64  xxh3-64 of bytes 0..4088
//! ```

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

/// Size of one tagged block: the ext4 block size the scenarios use (`mkfs.ext4 -b 4096`).
pub const TAG_BLOCK_SIZE: usize = 4096;
/// The magic at offset 0 of every tagged block.
pub const TAG_MAGIC: [u8; 8] = *b"E4RACEtg";
const HEADER_LEN: usize = 40;
const CSUM_OFF: usize = TAG_BLOCK_SIZE - 8;

/// What a tagged block claims about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BlockTag {
    pub run_id: u64,
    pub file_id: u32,
    pub round: u32,
    pub lblk: u64,
    pub generation: u32,
}

/// How a 4 KiB block read back from an image relates to the tag format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockContent {
    /// Every byte is zero: a hole, an unwritten extent, or a block that was never written.
    Zeros,
    /// A complete, checksummed tag.
    Tagged(BlockTag),
    /// Starts with the magic but the checksum or the filler does not match: a torn or mixed
    /// block.
    Corrupt,
    /// Anything else.
    Foreign,
}

impl BlockTag {
    /// Writes the full 4 KiB block for this tag into `out`.
    pub fn encode(&self, out: &mut [u8; TAG_BLOCK_SIZE]) {
        out[0..8].copy_from_slice(&TAG_MAGIC);
        out[8..16].copy_from_slice(&self.run_id.to_le_bytes());
        out[16..20].copy_from_slice(&self.file_id.to_le_bytes());
        out[20..24].copy_from_slice(&self.round.to_le_bytes());
        out[24..32].copy_from_slice(&self.lblk.to_le_bytes());
        out[32..36].copy_from_slice(&self.generation.to_le_bytes());
        out[36..40].copy_from_slice(&0u32.to_le_bytes());
        fill(self.filler_seed(), &mut out[HEADER_LEN..CSUM_OFF]);
        let csum = xxh3_64(&out[..CSUM_OFF]);
        out[CSUM_OFF..].copy_from_slice(&csum.to_le_bytes());
    }

    /// The encoded block as a new buffer.
    pub fn to_block(&self) -> Box<[u8; TAG_BLOCK_SIZE]> {
        let mut b = Box::new([0u8; TAG_BLOCK_SIZE]);
        self.encode(&mut b);
        b
    }

    fn filler_seed(&self) -> u64 {
        self.run_id
            ^ (u64::from(self.file_id) << 32)
            ^ u64::from(self.round).rotate_left(17)
            ^ self.lblk.rotate_left(29)
            ^ u64::from(self.generation).rotate_left(47)
    }

    /// Classifies a block read back from disk. Blocks shorter than 4 KiB are `Foreign`.
    pub fn decode(block: &[u8]) -> BlockContent {
        if block.len() != TAG_BLOCK_SIZE {
            return BlockContent::Foreign;
        }
        if block.iter().all(|&b| b == 0) {
            return BlockContent::Zeros;
        }
        if block[0..8] != TAG_MAGIC {
            return BlockContent::Foreign;
        }
        let le64 = |o: usize| u64::from_le_bytes(block[o..o + 8].try_into().unwrap_or([0; 8]));
        let le32 = |o: usize| u32::from_le_bytes(block[o..o + 4].try_into().unwrap_or([0; 4]));
        if xxh3_64(&block[..CSUM_OFF]) != le64(CSUM_OFF) {
            return BlockContent::Corrupt;
        }
        let tag = BlockTag {
            run_id: le64(8),
            file_id: le32(16),
            round: le32(20),
            lblk: le64(24),
            generation: le32(32),
        };
        // The checksum alone would accept a block whose header was rewritten consistently;
        // the filler ties the body to the header as well.
        let mut expect = [0u8; CSUM_OFF - HEADER_LEN];
        fill(tag.filler_seed(), &mut expect);
        if block[HEADER_LEN..CSUM_OFF] != expect[..] {
            return BlockContent::Corrupt;
        }
        BlockContent::Tagged(tag)
    }
}

/// splitmix64, written out because it is six lines and must be identical on both sides.
fn fill(mut state: u64, out: &mut [u8]) {
    for chunk in out.chunks_mut(8) {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag() -> BlockTag {
        BlockTag {
            run_id: 0xdead_beef_0001,
            file_id: 3,
            round: 7,
            lblk: 4097,
            generation: 1,
        }
    }

    #[test]
    fn round_trip() {
        let b = tag().to_block();
        assert_eq!(BlockTag::decode(&b[..]), BlockContent::Tagged(tag()));
    }

    #[test]
    fn zeros_and_foreign() {
        assert_eq!(BlockTag::decode(&[0u8; 4096]), BlockContent::Zeros);
        assert_eq!(BlockTag::decode(&[1u8; 4096]), BlockContent::Foreign);
        assert_eq!(BlockTag::decode(&[0u8; 512]), BlockContent::Foreign);
    }

    #[test]
    fn any_flipped_byte_is_detected() {
        let good = tag().to_block();
        for off in [0usize, 9, 17, 25, 33, 40, 2000, 4087, 4095] {
            let mut b = good.clone();
            b[off] ^= 0x40;
            let got = BlockTag::decode(&b[..]);
            assert!(
                matches!(got, BlockContent::Corrupt | BlockContent::Foreign),
                "flip at {off} gave {got:?}"
            );
        }
    }

    #[test]
    fn torn_block_is_corrupt() {
        // First half from one tag, second half from another: what a torn 4 KiB write leaves.
        let a = tag().to_block();
        let mut other = tag();
        other.generation = 2;
        let b = other.to_block();
        let mut torn = a.clone();
        torn[2048..].copy_from_slice(&b[2048..]);
        assert_eq!(BlockTag::decode(&torn[..]), BlockContent::Corrupt);
    }

    #[test]
    fn distinct_tags_give_distinct_blocks() {
        let mut t2 = tag();
        t2.lblk += 1;
        assert_ne!(tag().to_block()[..], t2.to_block()[..]);
    }
}
