//! What the tagged-file baselines (fsync-only, msync-only) share: the options that shape
//! their files, and the agent's parameters built from them and the plan.

use e4race_agent::tagged::TaggedFilesParams;

use crate::scenarios::session::MOUNT_POINT;
use crate::scenarios::{ScenarioPlan, Seeding};

/// How many tagged files, how big, and the seed of the write order.
#[derive(Debug, Clone, clap::Args, serde::Serialize)]
pub struct TaggedFilesArgs {
    /// Files to write.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub files: u32,
    /// 4 KiB blocks per file.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=(1 << 18)))]
    pub blocks: u64,
    /// Seed of the write order; random when not given.
    #[arg(long)]
    pub seed: Option<u64>,
}

impl TaggedFilesArgs {
    /// The options as words of the reproduce command, with the run's `seed` fixed.
    pub fn argv(&self, seed: Option<u64>) -> Vec<String> {
        let mut v = vec![
            "--files".into(),
            self.files.to_string(),
            "--blocks".into(),
            self.blocks.to_string(),
        ];
        if let Some(s) = seed {
            v.extend(["--seed".into(), s.to_string()]);
        }
        v
    }

    /// Every option off its default (see `Scenario::off_default_argv`).
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn off_default_argv() -> Vec<String> {
        ["--files", "3", "--blocks", "9", "--seed", "5"]
            .map(String::from)
            .to_vec()
    }

    pub fn seeding(&self) -> Seeding {
        Seeding::of(self.seed)
    }

    /// Twice the data plus room for metadata and the journal, at least 128 MiB.
    pub fn disk_mib(&self) -> u64 {
        let data = (u64::from(self.files) * self.blocks * 4096) >> 20;
        128.max(data * 2 + 64)
    }

    /// The agent's parameters for `plan` (its seed and run id), on the test disk.
    pub fn params(&self, plan: &ScenarioPlan) -> TaggedFilesParams {
        let (seed, run_id) = plan.seed_and_run_id();
        TaggedFilesParams {
            dir: MOUNT_POINT.into(),
            run_id,
            seed,
            files: self.files,
            file_blocks: self.blocks,
        }
    }
}
