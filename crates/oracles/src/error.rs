//! Errors that stop an oracle as a whole (a problem with one file is a finding, not an error).

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum OracleError {
    #[error("cannot read the final image: {0}")]
    Image(#[from] ext4_reader::Error),
    #[error(
        "the image has {0}-byte blocks but tagged blocks are {TAG}; format the test disk with \
         `mkfs.ext4 -b 4096`",
        TAG = e4race_protocol::TAG_BLOCK_SIZE
    )]
    BlockSize(u32),
    #[error(
        "e2fsck not found in PATH, /usr/sbin or /sbin; install the Debian package e2fsprogs \
         (apt-get install e2fsprogs)"
    )]
    E2fsckMissing,
    #[error("cannot run {program}: {source}; check that it is executable")]
    Spawn {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("e2fsck was killed by a signal ({0}); rerun it by hand on the image to see why")]
    Killed(String),
}

pub type Result<T, E = OracleError> = std::result::Result<T, E>;
