//! How full the filesystem holding the spool is (`statvfs`), for the disk gauges.

use std::path::Path;

/// Space on the filesystem holding a spool directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskUsage {
    /// Size of the filesystem, in bytes.
    pub total_bytes: u64,
    /// Bytes an unprivileged writer can still use.
    pub free_bytes: u64,
}

impl DiskUsage {
    /// Asks the filesystem holding `dir`; `None` when it cannot be asked.
    pub fn of(dir: &Path) -> Option<Self> {
        let stat = rustix::fs::statvfs(dir).ok()?;
        let block = stat.f_frsize.max(1);
        Some(Self {
            total_bytes: stat.f_blocks.saturating_mul(block),
            free_bytes: stat.f_bavail.saturating_mul(block),
        })
    }

    /// The share of the filesystem in use, from 0 to 1 (blocks reserved for root count as
    /// used: the spool cannot write them).
    pub fn used_ratio(&self) -> f64 {
        if self.total_bytes == 0 {
            return 0.0;
        }
        let used = self.total_bytes.saturating_sub(self.free_bytes);
        used as f64 / self.total_bytes as f64
    }
}
