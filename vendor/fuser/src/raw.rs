//! ssefs patch (see VENDOR.md): dispatch requests that came over a transport
//! of the caller's own — FUSE over io_uring — to a `Filesystem`, with the
//! replies going back through a sender the caller provides.
//!
//! The session's own loop keeps reading `/dev/fuse` (INIT, FORGET,
//! INTERRUPT and, until the other transport is up, everything else); a
//! `RawDispatcher` runs the same dispatch code for requests handed to it.

use std::io;
use std::io::IoSlice;
use std::mem::size_of;
use std::sync::Arc;

use crate::Filesystem;
use crate::ReplyEmpty;
use crate::ll::Operation;
use crate::ll::fuse_abi as abi;
use crate::ll::fuse_abi::fuse_opcode;
use crate::request::RequestWithSender;
use crate::session::SessionEventLoop;

/// Takes the replies to requests given to [`RawDispatcher::dispatch`].
pub trait RawReplySender: std::fmt::Debug + Send + Sync + 'static {
    /// Sends one reply: a `fuse_out_header` followed by its body, as the
    /// slices would be written to `/dev/fuse` with `writev`. The first slice
    /// starts with the header (fuser never splits it).
    fn send(&self, data: &[IoSlice<'_>]) -> io::Result<()>;
}

/// Dispatches raw requests to its own instance of the filesystem, with the
/// session's access control (allow_other / allow_root) and device channel
/// (for notifications and backing files).
pub struct RawDispatcher<FS: Filesystem> {
    pub(crate) se: SessionEventLoop<FS>,
}

impl<FS: Filesystem> std::fmt::Debug for RawDispatcher<FS> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawDispatcher").finish_non_exhaustive()
    }
}

impl<FS: Filesystem> RawDispatcher<FS> {
    /// Dispatches one request: `fuse_in_header`, the opcode's argument
    /// struct, then its variable part, contiguous and 8-byte aligned, as a
    /// `read` of `/dev/fuse` returns it. The reply goes to `sender`, from
    /// whichever thread the filesystem replies on.
    ///
    /// # Errors
    /// The request could not be parsed or is misaligned (nothing was
    /// replied then).
    pub fn dispatch(&self, request: &[u8], sender: Arc<dyn RawReplySender>) -> io::Result<()> {
        if request.as_ptr().align_offset(8) != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "request buffer not 8-byte aligned",
            ));
        }
        let Some(req) = RequestWithSender::with_external(self.se.ch.sender(), sender, request)
        else {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "invalid request"));
        };
        if let Ok(Operation::Destroy(_)) = req.request.operation() {
            // The session's own loop ends on DESTROY; here there is nothing
            // to end, only the reply the kernel waits for.
            req.reply::<ReplyEmpty>().ok();
        } else {
            req.dispatch(&self.se);
        }
        Ok(())
    }
}

impl<FS: Filesystem> Drop for RawDispatcher<FS> {
    fn drop(&mut self) {
        // `destroy` belongs to the session's instance, called once when the
        // session ends; this instance is only dropped.
        if let Some(holder) = Arc::get_mut(&mut self.se.filesystem) {
            drop(holder.fs.take());
        }
    }
}

/// The size of the fixed argument struct that precedes the variable part of
/// a request with this opcode: what FUSE over io_uring puts in the header's
/// `op_in` area, apart from the payload. 0 for opcodes whose arguments are
/// only names or data (and for unknown ones). Mirrors what `ll::request`
/// parses first for each opcode, so a request put together as `header +
/// op_in[..size] + payload` parses as one read from `/dev/fuse` would.
pub fn ring_op_in_size(opcode: u32) -> usize {
    let Ok(op) = fuse_opcode::try_from(opcode) else {
        return 0;
    };
    match op {
        fuse_opcode::FUSE_FORGET => size_of::<abi::fuse_forget_in>(),
        fuse_opcode::FUSE_GETATTR => size_of::<abi::fuse_getattr_in>(),
        fuse_opcode::FUSE_SETATTR => size_of::<abi::fuse_setattr_in>(),
        fuse_opcode::FUSE_MKNOD => size_of::<abi::fuse_mknod_in>(),
        fuse_opcode::FUSE_MKDIR => size_of::<abi::fuse_mkdir_in>(),
        fuse_opcode::FUSE_RENAME => size_of::<abi::fuse_rename_in>(),
        fuse_opcode::FUSE_LINK => size_of::<abi::fuse_link_in>(),
        fuse_opcode::FUSE_OPEN | fuse_opcode::FUSE_OPENDIR => size_of::<abi::fuse_open_in>(),
        fuse_opcode::FUSE_READ | fuse_opcode::FUSE_READDIR | fuse_opcode::FUSE_READDIRPLUS => {
            size_of::<abi::fuse_read_in>()
        }
        fuse_opcode::FUSE_WRITE => size_of::<abi::fuse_write_in>(),
        fuse_opcode::FUSE_RELEASE | fuse_opcode::FUSE_RELEASEDIR => {
            size_of::<abi::fuse_release_in>()
        }
        fuse_opcode::FUSE_FSYNC | fuse_opcode::FUSE_FSYNCDIR => size_of::<abi::fuse_fsync_in>(),
        fuse_opcode::FUSE_SETXATTR => size_of::<abi::fuse_setxattr_in>(),
        fuse_opcode::FUSE_GETXATTR | fuse_opcode::FUSE_LISTXATTR => {
            size_of::<abi::fuse_getxattr_in>()
        }
        fuse_opcode::FUSE_FLUSH => size_of::<abi::fuse_flush_in>(),
        fuse_opcode::FUSE_INIT => size_of::<abi::fuse_init_in>(),
        fuse_opcode::FUSE_GETLK | fuse_opcode::FUSE_SETLK | fuse_opcode::FUSE_SETLKW => {
            size_of::<abi::fuse_lk_in>()
        }
        fuse_opcode::FUSE_ACCESS => size_of::<abi::fuse_access_in>(),
        fuse_opcode::FUSE_CREATE => size_of::<abi::fuse_create_in>(),
        fuse_opcode::FUSE_INTERRUPT => size_of::<abi::fuse_interrupt_in>(),
        fuse_opcode::FUSE_BMAP => size_of::<abi::fuse_bmap_in>(),
        fuse_opcode::FUSE_IOCTL => size_of::<abi::fuse_ioctl_in>(),
        fuse_opcode::FUSE_POLL => size_of::<abi::fuse_poll_in>(),
        fuse_opcode::FUSE_BATCH_FORGET => size_of::<abi::fuse_batch_forget_in>(),
        fuse_opcode::FUSE_FALLOCATE => size_of::<abi::fuse_fallocate_in>(),
        fuse_opcode::FUSE_RENAME2 => size_of::<abi::fuse_rename2_in>(),
        fuse_opcode::FUSE_LSEEK => size_of::<abi::fuse_lseek_in>(),
        fuse_opcode::FUSE_COPY_FILE_RANGE => size_of::<abi::fuse_copy_file_range_in>(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::ring_op_in_size;

    #[test]
    fn op_in_sizes_match_the_kernel_structs() {
        // Sizes of the structs in include/uapi/linux/fuse.h (7.45).
        for (op, size) in [
            (1, 0),   // LOOKUP: name only
            (3, 16),  // GETATTR
            (4, 88),  // SETATTR
            (5, 0),   // READLINK
            (6, 0),   // SYMLINK
            (9, 8),   // MKDIR
            (10, 0),  // UNLINK
            (14, 8),  // OPEN
            (15, 40), // READ
            (16, 40), // WRITE
            (17, 0),  // STATFS
            (18, 24), // RELEASE
            (21, 8),  // SETXATTR without FUSE_SETXATTR_EXT
            (22, 8),  // GETXATTR
            (24, 0),  // REMOVEXATTR
            (25, 24), // FLUSH
            (35, 16), // CREATE
            (44, 40), // READDIRPLUS
            (45, 16), // RENAME2
            (47, 56), // COPY_FILE_RANGE
            (9999, 0),
        ] {
            assert_eq!(ring_op_in_size(op), size, "opcode {op}");
        }
    }
}
