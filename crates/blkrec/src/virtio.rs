//! virtio-blk constants and the device configuration space.

use vhost::vhost_user::message::VhostUserVirtioFeatures;
use virtio_bindings::virtio_blk as vb;
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};

pub use vb::{
    VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_BARRIER,
    VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN,
    VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_WRITE_ZEROES, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
};

/// virtio-blk sectors are always 512 bytes, whatever `blk_size` says (virtio 1.2 §5.2.6).
pub const SECTOR: u64 = 512;
/// Length of `struct virtio_blk_outhdr` {le32 type; le32 ioprio; le64 sector} (§5.2.6).
pub const OUTHDR_LEN: usize = 16;
/// Length of `struct virtio_blk_discard_write_zeroes` {le64 sector; le32 num_sectors; le32 flags}.
pub const DWZ_SEG_LEN: usize = 16;
/// Length of the GET_ID string (`VIRTIO_BLK_ID_BYTES`, §5.2.6).
pub const ID_BYTES: usize = vb::VIRTIO_BLK_ID_BYTES as usize;
/// Largest data transfer we accept in one request; larger ones get IOERR. Linux never sends
/// more than `max_sectors_kb` (default 1280 KiB), so this only bounds what a hostile guest
/// can make us allocate.
pub const MAX_IO_BYTES: u64 = 64 << 20;
/// Discard / write-zeroes limits advertised in config space. Segment lengths must fit the log's
/// u32 byte length, hence < 4 GiB; one segment per request like QEMU's vhost-user-blk server.
pub const MAX_DWZ_SECTORS: u32 = (1 << 22) - 8;
/// Segments per discard / write-zeroes request.
pub const MAX_DWZ_SEG: u32 = 1;

/// Size of the config space we serve: `struct virtio_blk_config` up to and including the
/// secure-erase fields (72 bytes); QEMU asks for 60 (up to write_zeroes_may_unmap + pad).
pub const CONFIG_LEN: usize = 72;
/// Offset of the `wce` (writeback) byte in `struct virtio_blk_config` (§5.2.4).
pub const CONFIG_WCE_OFFSET: u32 = 32;

/// Feature bits offered to the driver.
pub fn device_features(read_only: bool) -> u64 {
    let mut f = (1u64 << VIRTIO_F_VERSION_1)
        | (1 << VIRTIO_RING_F_EVENT_IDX)
        | (1 << VIRTIO_RING_F_INDIRECT_DESC)
        | (1 << vb::VIRTIO_BLK_F_SEG_MAX)
        | (1 << vb::VIRTIO_BLK_F_BLK_SIZE)
        | (1 << vb::VIRTIO_BLK_F_FLUSH)
        | (1 << vb::VIRTIO_BLK_F_CONFIG_WCE)
        | (1 << vb::VIRTIO_BLK_F_MQ)
        | (1 << vb::VIRTIO_BLK_F_DISCARD)
        | (1 << vb::VIRTIO_BLK_F_WRITE_ZEROES)
        | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
    if read_only {
        f |= 1 << vb::VIRTIO_BLK_F_RO;
    }
    f
}

/// Whether feature `bit` is set in `features`.
pub fn has(features: u64, bit: u32) -> bool {
    features & (1u64 << bit) != 0
}

/// Values of the config space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlkConfig {
    /// Capacity in 512-byte sectors.
    pub capacity: u64,
    /// Max segments per request.
    pub seg_max: u32,
    /// Logical block size.
    pub blk_size: u32,
    /// Writeback (1) / writethrough (0).
    pub wce: u8,
    /// Number of request queues.
    pub num_queues: u16,
}

impl BlkConfig {
    /// Little-endian `struct virtio_blk_config` (virtio 1.2 §5.2.4), `CONFIG_LEN` bytes.
    pub fn to_bytes(self) -> [u8; CONFIG_LEN] {
        let mut c = [0u8; CONFIG_LEN];
        c[0..8].copy_from_slice(&self.capacity.to_le_bytes());
        // 8: size_max (VIRTIO_BLK_F_SIZE_MAX not offered) = 0
        c[12..16].copy_from_slice(&self.seg_max.to_le_bytes());
        // 16: geometry (not offered) = 0
        c[20..24].copy_from_slice(&self.blk_size.to_le_bytes());
        // 24: topology (not offered): physical_block_exp, alignment_offset, min_io_size, opt_io_size
        c[32] = self.wce;
        c[34..36].copy_from_slice(&self.num_queues.to_le_bytes());
        c[36..40].copy_from_slice(&MAX_DWZ_SECTORS.to_le_bytes());
        c[40..44].copy_from_slice(&MAX_DWZ_SEG.to_le_bytes());
        // discard_sector_alignment, in 512-byte sectors.
        c[44..48].copy_from_slice(&(self.blk_size / SECTOR as u32).max(1).to_le_bytes());
        c[48..52].copy_from_slice(&MAX_DWZ_SECTORS.to_le_bytes());
        c[52..56].copy_from_slice(&MAX_DWZ_SEG.to_le_bytes());
        // write_zeroes_may_unmap: WRITE_ZEROES with UNMAP punches a hole (§5.2.6.2).
        c[56] = 1;
        c
    }

    /// Parses the first fields of a config space read by a driver.
    pub fn from_bytes(b: &[u8]) -> Option<BlkConfig> {
        if b.len() < 36 {
            return None;
        }
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let mut cap = [0u8; 8];
        cap.copy_from_slice(&b[0..8]);
        Some(BlkConfig {
            capacity: u64::from_le_bytes(cap),
            seg_max: u32_at(12),
            blk_size: u32_at(20),
            wce: b[32],
            num_queues: u16::from_le_bytes([b[34], b[35]]),
        })
    }

    /// Exactly `size` bytes of the config space from `offset`, zero padded past its end.
    /// vhost-user GET_CONFIG replies must have exactly the requested size or QEMU fails.
    pub fn read(self, offset: u32, size: u32) -> Vec<u8> {
        let bytes = self.to_bytes();
        let mut out = vec![0u8; size as usize];
        let start = (offset as usize).min(CONFIG_LEN);
        let end = (offset as usize)
            .saturating_add(size as usize)
            .min(CONFIG_LEN);
        if start < end {
            out[..end - start].copy_from_slice(&bytes[start..end]);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_layout() {
        let c = BlkConfig {
            capacity: 2048,
            seg_max: 254,
            blk_size: 512,
            wce: 1,
            num_queues: 4,
        };
        let b = c.to_bytes();
        assert_eq!(BlkConfig::from_bytes(&b), Some(c));
        assert_eq!(c.read(0, 60).len(), 60);
        assert_eq!(c.read(32, 1), vec![1]);
        assert_eq!(c.read(70, 8), vec![0; 8]);
        assert_eq!(c.read(0x200, 4), vec![0; 4]);
        assert_eq!(&c.read(0, 8)[..], &2048u64.to_le_bytes());
    }
}
