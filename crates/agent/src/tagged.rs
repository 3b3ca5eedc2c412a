//! What the tagged-file workloads (fsync-only, msync-only) share: their parameters, the
//! seeded order of their writes and the tag of each block.

use e4race_protocol::{splitmix, BlockTag};
use serde::{Deserialize, Serialize};

/// `files` files of `file_blocks` tagged blocks each, under `dir`, written in an order drawn
/// from `seed`; every tag carries `run_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaggedFilesParams {
    pub dir: String,
    pub run_id: u64,
    pub seed: u64,
    pub files: u32,
    pub file_blocks: u64,
}

impl TaggedFilesParams {
    /// The blocks of file `file_id` in the seeded order its writes go in, so allocation
    /// does not just follow the file.
    pub fn order(&self, file_id: u32) -> Vec<u64> {
        let mut order: Vec<u64> = (0..self.file_blocks).collect();
        seeded_shuffle(&mut order, splitmix(self.seed ^ u64::from(file_id)));
        order
    }

    /// The tag block `lblk` of file `file_id` must hold (round 0, generation 0).
    pub fn tag(&self, file_id: u32, lblk: u64) -> BlockTag {
        BlockTag {
            run_id: self.run_id,
            file_id,
            round: 0,
            lblk,
            generation: 0,
        }
    }
}

/// Fisher-Yates with splitmix steps from `state`: the same state gives the same order.
pub fn seeded_shuffle<T>(items: &mut [T], mut state: u64) {
    for i in (1..items.len()).rev() {
        state = splitmix(state);
        items.swap(i, (state % (i as u64 + 1)) as usize);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_order_is_a_seeded_permutation() {
        let p = TaggedFilesParams {
            dir: "/mnt".into(),
            run_id: 1,
            seed: 9,
            files: 2,
            file_blocks: 64,
        };
        let a = p.order(0);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..64).collect::<Vec<_>>());
        assert_eq!(a, p.order(0));
        assert_ne!(a, p.order(1));
        assert_ne!(a, sorted);
    }
}
