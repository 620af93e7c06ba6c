//! [`SlotIo`]: where an object's bytes are, as the engine's `ObjectFile`
//! reads and writes them. A backend file is one; so is an object still
//! arriving from a store (`s3::Arriving`), whose reads wait for the bytes.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};

/// Where an object's bytes (header and slots, FORMAT.md §1) are kept, as
/// [`ObjectFile`] reads and writes them: positional reads and writes, the
/// length, durability, and a hint before sequential reads. A backend file
/// (the mount's and every staged write) is one, with the same calls as
/// before the trait, monomorphised; a store's object, as it arrives, is
/// another (docs/design/s3-backend.md §1.2).
pub trait SlotIo: Send + Sync {
    fn read_slots(&self, buf: &mut [u8], off: u64) -> io::Result<usize>;
    fn write_slots(&self, buf: &[u8], off: u64) -> io::Result<()>;
    fn truncate_to(&self, len: u64) -> io::Result<()>;
    /// The current length, and the identity (device, inode or their like)
    /// that keeps its chunks apart from other objects' in the chunk cache.
    fn len_and_ident(&self) -> io::Result<(u64, (u64, u64))>;
    /// fsync, or fdatasync when `data_only`.
    fn sync_slots(&self, data_only: bool) -> io::Result<()>;
    /// `[off, off + len)` is about to be read; only a hint.
    fn will_need(&self, _off: u64, _len: u64) {}
}

impl SlotIo for File {
    fn read_slots(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        FileExt::read_at(self, buf, off)
    }

    fn write_slots(&self, buf: &[u8], off: u64) -> io::Result<()> {
        FileExt::write_all_at(self, buf, off)
    }

    fn truncate_to(&self, len: u64) -> io::Result<()> {
        File::set_len(self, len)
    }

    fn len_and_ident(&self) -> io::Result<(u64, (u64, u64))> {
        let m = self.metadata()?;
        Ok((m.len(), (m.dev(), m.ino())))
    }

    fn sync_slots(&self, data_only: bool) -> io::Result<()> {
        if data_only {
            self.sync_data()
        } else {
            self.sync_all()
        }
    }

    fn will_need(&self, off: u64, len: u64) {
        // SAFETY: posix_fadvise on a descriptor we hold; a failure only
        // means the reads wait for the disk.
        let _ = unsafe {
            libc::posix_fadvise(
                self.as_raw_fd(),
                off as libc::off_t,
                len as libc::off_t,
                libc::POSIX_FADV_WILLNEED,
            )
        };
    }
}

/// A boxed one (what `Backend::fetch` hands out).
impl SlotIo for Box<dyn SlotIo> {
    fn read_slots(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        (**self).read_slots(buf, off)
    }
    fn write_slots(&self, buf: &[u8], off: u64) -> io::Result<()> {
        (**self).write_slots(buf, off)
    }
    fn truncate_to(&self, len: u64) -> io::Result<()> {
        (**self).truncate_to(len)
    }
    fn len_and_ident(&self) -> io::Result<(u64, (u64, u64))> {
        (**self).len_and_ident()
    }
    fn sync_slots(&self, data_only: bool) -> io::Result<()> {
        (**self).sync_slots(data_only)
    }
    fn will_need(&self, off: u64, len: u64) {
        (**self).will_need(off, len)
    }
}
