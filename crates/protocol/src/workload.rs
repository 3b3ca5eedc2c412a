//! Parameters and results of the race workloads, shared by the agent that runs them and the
//! host oracles that judge them.

use serde::{Deserialize, Serialize};

/// Which call converts the file from indirect to extent mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum MigrateDriver {
    /// `ioctl(fd, EXT4_IOC_MIGRATE)` directly.
    #[default]
    Ioctl,
    /// The real `chattr +e FILE`, which does the same through e2fsprogs.
    Chattr,
}

/// Which way a migrate-mmap file is converted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum MigrateDirection {
    /// Indirect → extents: EXT4_IOC_MIGRATE (ext4_ext_migrate()), or `chattr +e`.
    #[default]
    ToExtents,
    /// Extents → indirect: FS_IOC_SETFLAGS without EXT4_EXTENTS_FL (ext4_ind_migrate()), or
    /// `chattr -e`. ext4_ind_migrate() converts only a file with at most one extent that
    /// ends below block 12 (EXT4_NDIR_BLOCKS), so these files are 12 blocks: a leading hole,
    /// one prefilled run, holes after it.
    ToIndirect,
    /// Both in one run: even files go to extents, odd files to indirect.
    Both,
}

impl MigrateDirection {
    /// The direction file `file_id` is converted in.
    pub fn for_file(self, file_id: u32) -> MigrateDirection {
        match self {
            MigrateDirection::Both if file_id % 2 == 1 => MigrateDirection::ToIndirect,
            MigrateDirection::Both => MigrateDirection::ToExtents,
            d => d,
        }
    }
}

/// ext4's direct block pointers in i_data (fs/ext4/ext4.h EXT4_NDIR_BLOCKS): the most a file
/// converted by ext4_ind_migrate() may span.
pub const EXT4_NDIR_BLOCKS: u64 = 12;

/// Which 4 KiB blocks of a fresh file start as holes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum HolePattern {
    /// Even blocks are written with pwrite, odd blocks are holes (docs/facts.md §5).
    #[default]
    Alternate,
    /// Each block is a hole with probability 1/2, drawn from the seed.
    Random,
    /// Only the first block is written: the file is one big hole.
    Sparse,
}

impl HolePattern {
    /// Whether `lblk` starts as a hole. `mix` is the per-file random stream (only `Random`
    /// uses it), so host and guest agree given the seed.
    pub fn is_hole(self, lblk: u64, mix: u64) -> bool {
        match self {
            HolePattern::Alternate => lblk % 2 == 1,
            HolePattern::Sparse => lblk != 0,
            HolePattern::Random => {
                lblk != 0 && splitmix(mix ^ lblk.wrapping_mul(0x9E37_79B9_7F4A_7C15)) & 1 == 1
            }
        }
    }
}

/// Parameters of one migrate-mmap boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrateMmapParams {
    #[serde(flatten)]
    pub shape: RaceShape,
    pub hole_pattern: HolePattern,
    pub driver: MigrateDriver,
    /// While each migration runs, a thread calls syncfs(2) every this many ms, so jbd2
    /// commits in the middle of it (0: only the kernel's own commits).
    #[serde(default)]
    pub commit_ms: u32,
    #[serde(default)]
    pub direction: MigrateDirection,
}

/// What every race workload (migrate-mmap, defrag-mmap) shares: where it works, the tags'
/// run id and seed, and how many files, writers and rounds it races.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaceShape {
    /// The mounted file system to work in.
    pub dir: String,
    pub run_id: u64,
    pub seed: u64,
    /// Files raced at once per round (each with its own writers and remapping thread).
    pub files: u32,
    /// Size of each file in 4 KiB blocks.
    pub file_blocks: u64,
    /// mmap writer threads per file.
    pub writers: u32,
    pub rounds: u32,
    /// Stop starting new rounds after this many seconds (0: no limit).
    pub duration_s: u32,
}

/// What one race workload (migrate-mmap, defrag-mmap) did in one boot, for the host's
/// oracles: its rounds, each with its files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaceResult {
    pub rounds: Vec<RoundRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundRecord {
    pub round: u32,
    pub files: Vec<FileRecord>,
}

/// One file of one round: what was written, when, what the remapping calls said, and the
/// inode afterwards.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    pub file_id: u32,
    /// Path relative to the file system's root, e.g. `r3/f1`.
    pub path: String,
    pub ino: u64,
    /// Blocks written with pwrite before the race (generation 0), all acknowledged by fsync.
    pub prefilled: Vec<u64>,
    /// Hole blocks stored through the mapping, in the order they were stored.
    pub hole_lblks: Vec<u64>,
    /// CLOCK_MONOTONIC nanoseconds of each store in `hole_lblks` (same index). The store is
    /// the first touch of a hole page, so it is when the page fault allocated the block.
    pub hole_t_ns: Vec<u64>,
    /// Whether msync + fsync after the race succeeded: if so, every tag above is
    /// acknowledged and must be on disk.
    pub synced: bool,
    /// The EXT4_IOC_MIGRATE call (migrate-mmap); `None` where the scenario does not migrate.
    /// (`migrate` in workload.json files written before the rename.)
    #[serde(default, alias = "migrate")]
    pub migration: Option<MigrateCall>,
    /// The inode once the race is over.
    #[serde(default)]
    pub after: InodeAfter,
    /// Disagreements between what the ioctl returned and the inode's state afterwards.
    pub postconditions: Vec<PostconditionFailure>,
    /// Blocks that held data and were overwritten through the mapping with generation 1
    /// (defrag-mmap); their acknowledged generation is 1.
    #[serde(default)]
    pub overwrites: Vec<u64>,
    /// CLOCK_MONOTONIC ns of each overwrite (same index).
    #[serde(default)]
    pub overwrite_t_ns: Vec<u64>,
    /// EXT4_IOC_MOVE_EXT calls (or e4defrag runs) on this file (defrag-mmap).
    #[serde(default)]
    pub moves: Vec<MoveCall>,
    /// FIEMAP extent count before the race (defrag-mmap: how fragmented the file was).
    #[serde(default)]
    pub extents_before: u32,
    /// Hole blocks that were fallocated (unwritten extents) before the race (defrag-mmap
    /// `prealloc`); the writers' stores initialise them.
    #[serde(default)]
    pub unwritten_lblks: Vec<u64>,
}

/// One EXT4_IOC_MOVE_EXT call (`struct move_extent`, fs/ext4/ext4.h), or one e4defrag run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveCall {
    pub start_ns: u64,
    pub end_ns: u64,
    pub orig_start: u64,
    pub donor_start: u64,
    pub len: u64,
    /// What the kernel wrote back in `moved_len`.
    pub moved_len: u64,
    /// 0, or the positive errno (or e4defrag's exit status).
    pub error: i32,
    /// True when this is a whole e4defrag run rather than one ioctl.
    #[serde(default)]
    pub e4defrag: bool,
}

/// Which remapping the defrag workload drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum DefragDriver {
    /// EXT4_IOC_MOVE_EXT directly, range by range, with a fallocated donor (like e4defrag).
    #[default]
    MoveExt,
    /// The real `e4defrag FILE`.
    E4defrag,
}

/// Parameters of one defrag-mmap boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefragMmapParams {
    #[serde(flatten)]
    pub shape: RaceShape,
    /// Blocks per EXT4_IOC_MOVE_EXT call.
    pub move_blocks: u64,
    pub driver: DefragDriver,
    /// Half of the holes (by the seed) are fallocated before the race: unwritten extents that
    /// the writers initialise while MOVE_EXT takes its no-copy path for unwritten ranges
    /// (move_extent_per_page(), `if (unwritten)`).
    #[serde(default)]
    pub prealloc: bool,
    /// While moves run, a flusher starts writeback of the file every this many ms
    /// (sync_file_range), so stored pages reach the disk and unwritten extents are converted
    /// mid-move; 0 leaves writeback to the kernel.
    #[serde(default)]
    pub flush_ms: u32,
    /// Writers store in ascending order, each store held back until the MOVE_EXT call in
    /// progress covers its block, so stores land in the range being moved.
    #[serde(default)]
    pub aim: bool,
}

/// One migration call and its window on CLOCK_MONOTONIC.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrateCall {
    pub start_ns: u64,
    pub end_ns: u64,
    /// 0 on success, else the positive errno (or the exit status of chattr).
    pub error: i32,
    /// What ioctl(2) itself returned when it did not fail (0 expected).
    #[serde(default)]
    pub return_value: i64,
    /// FS_IOC_GETFLAGS before the call (after it: [`InodeAfter::flags`]).
    pub flags_before: u32,
    /// Which way the call converts (to extents for records written before directions).
    #[serde(default)]
    pub direction: MigrateDirection,
}

/// The inode once the race is over (after the migration, or after the last move).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InodeAfter {
    /// FS_IOC_GETFLAGS.
    pub flags: u32,
    /// FIEMAP extent count.
    pub extents: u32,
    /// Whether the file read back as written.
    pub content_ok: bool,
}

/// A check of the inode against the return code that failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostconditionFailure {
    pub check: String,
    pub detail: String,
}

impl FileRecord {
    /// Every block this file must hold once synced (generation 0 unless overwritten).
    pub fn acknowledged(&self) -> impl Iterator<Item = u64> + '_ {
        self.prefilled.iter().chain(self.hole_lblks.iter()).copied()
    }

    /// Every acknowledged block with the tag generation it must hold: 1 for overwritten
    /// blocks, 0 for the rest.
    pub fn acknowledged_generations(&self) -> std::collections::BTreeMap<u64, u32> {
        let mut m: std::collections::BTreeMap<u64, u32> =
            self.acknowledged().map(|l| (l, 0)).collect();
        for &l in &self.overwrites {
            m.insert(l, 1);
        }
        m
    }

    /// How many stores (hole fills and overwrites) landed inside a move window.
    pub fn writes_in_move_windows(&self) -> usize {
        self.hole_t_ns
            .iter()
            .chain(self.overwrite_t_ns.iter())
            .filter(|&&t| self.moves.iter().any(|m| t >= m.start_ns && t <= m.end_ns))
            .count()
    }

    /// Stores (hole fills and overwrites) whose block was inside the range of the
    /// MOVE_EXT call running at that moment, and of those, the ones into a fallocated
    /// (unwritten) block: the narrow race move_extent_per_page() guards with the folio lock
    /// and its unwritten re-check.
    pub fn stores_in_covering_move(&self) -> (usize, usize) {
        let unwritten: std::collections::BTreeSet<u64> =
            self.unwritten_lblks.iter().copied().collect();
        let stores = self
            .hole_lblks
            .iter()
            .zip(&self.hole_t_ns)
            .chain(self.overwrites.iter().zip(&self.overwrite_t_ns));
        let mut covered = (0, 0);
        for (&lblk, &t) in stores {
            let inside = self.moves.iter().any(|m| {
                t >= m.start_ns
                    && t <= m.end_ns
                    && lblk >= m.orig_start
                    && lblk < m.orig_start.saturating_add(m.len)
            });
            if inside {
                covered.0 += 1;
                covered.1 += usize::from(unwritten.contains(&lblk));
            }
        }
        covered
    }

    /// How many hole stores landed inside the migration window (0 without a migration).
    pub fn writes_in_window(&self) -> usize {
        let Some(m) = &self.migration else {
            return 0;
        };
        self.hole_t_ns
            .iter()
            .filter(|&&t| t >= m.start_ns && t <= m.end_ns)
            .count()
    }
}

/// splitmix64's output function, shared so the host can recompute the agent's choices.
pub fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alternate_pattern_holes_are_odd() {
        let holes: Vec<u64> = (0..6)
            .filter(|&b| HolePattern::Alternate.is_hole(b, 0))
            .collect();
        assert_eq!(holes, vec![1, 3, 5]);
    }

    #[test]
    fn random_pattern_is_reproducible_and_mixed() {
        let a: Vec<bool> = (0..256)
            .map(|b| HolePattern::Random.is_hole(b, 42))
            .collect();
        let b: Vec<bool> = (0..256)
            .map(|b| HolePattern::Random.is_hole(b, 42))
            .collect();
        assert_eq!(a, b);
        let n = a.iter().filter(|&&h| h).count();
        assert!((64..192).contains(&n), "{n} holes of 256");
        assert!(!a[0], "block 0 is always data");
    }

    #[test]
    fn window_counts_only_inside() {
        let f = FileRecord {
            file_id: 0,
            path: "r0/f0".into(),
            ino: 12,
            prefilled: vec![0],
            hole_lblks: vec![1, 3, 5],
            hole_t_ns: vec![5, 10, 30],
            synced: true,
            migration: Some(MigrateCall {
                start_ns: 10,
                end_ns: 20,
                error: 0,
                return_value: 0,
                flags_before: 0,
                ..Default::default()
            }),
            after: InodeAfter {
                flags: 0x80000,
                extents: 1,
                content_ok: true,
            },
            postconditions: vec![],
            overwrites: vec![0],
            overwrite_t_ns: vec![12],
            moves: vec![MoveCall {
                start_ns: 11,
                end_ns: 40,
                ..Default::default()
            }],
            extents_before: 0,
            unwritten_lblks: Vec::new(),
        };
        assert_eq!(f.writes_in_window(), 1);
        assert_eq!(f.writes_in_move_windows(), 2);
        assert_eq!(f.acknowledged_generations().get(&0), Some(&1));
        assert_eq!(f.acknowledged_generations().get(&3), Some(&0));
        assert_eq!(f.acknowledged().collect::<Vec<_>>(), vec![0, 1, 3, 5]);
    }

    #[test]
    fn covering_move_needs_both_the_time_and_the_range() {
        let mv = |start_ns, end_ns, orig_start, len| MoveCall {
            start_ns,
            end_ns,
            orig_start,
            donor_start: orig_start,
            len,
            ..Default::default()
        };
        let f = FileRecord {
            // lblk 8 at t=15: inside move [0,16) running 10..20 -> covered, unwritten.
            // lblk 20 at t=15: at that time only [0,16) runs -> not covered.
            // lblk 17 at t=25: move [16,32) runs 21..30 -> covered, written.
            hole_lblks: vec![8, 20],
            hole_t_ns: vec![15, 15],
            overwrites: vec![17],
            overwrite_t_ns: vec![25],
            moves: vec![mv(10, 20, 0, 16), mv(21, 30, 16, 16)],
            unwritten_lblks: vec![8, 9, 20],
            ..Default::default()
        };
        assert_eq!(f.stores_in_covering_move(), (2, 1));
    }
}
