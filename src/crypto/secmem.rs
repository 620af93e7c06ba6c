//! Memory for keys that live as long as the process (the root key): a
//! mapping of its own, excluded from core dumps (MADV_DONTDUMP) and locked
//! out of swap (mlock) where RLIMIT_MEMLOCK allows. PR_SET_DUMPABLE 0
//! already stops ordinary core dumps; MADV_DONTDUMP still holds when
//! `fs.suid_dumpable = 2` dumps non-dumpable processes for root anyway.

use std::ptr::NonNull;

use zeroize::Zeroize;

/// Bytes in an anonymous mapping of their own; zeroed and unmapped on drop.
pub(crate) struct LockedBuf {
    ptr: NonNull<u8>,
    len: usize,
    map_len: usize,
    locked: bool,
}

// SAFETY: the mapping is owned exclusively by this value (like a Box<[u8]>);
// shared access is read-only.
unsafe impl Send for LockedBuf {}
// SAFETY: as above; `&LockedBuf` only hands out `&[u8]`.
unsafe impl Sync for LockedBuf {}

impl LockedBuf {
    /// A copy of `bytes` in its own mapping, or `None` if the kernel
    /// refuses the mapping (the caller keeps the heap copy then).
    pub(crate) fn new(bytes: &[u8]) -> Option<LockedBuf> {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .ok()
            .filter(|p| *p > 0)?;
        let map_len = bytes.len().max(1).div_ceil(page) * page;
        // SAFETY: a fresh private anonymous mapping; no existing memory is
        // touched.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return None;
        }
        let ptr = NonNull::new(raw.cast::<u8>())?;
        // SAFETY: [raw, raw + map_len) is the mapping made above. Both calls
        // are advisory here: a failure leaves an ordinary private page.
        let locked = unsafe {
            libc::madvise(raw, map_len, libc::MADV_DONTDUMP);
            libc::mlock(raw, map_len) == 0
        };
        // SAFETY: the mapping is map_len >= bytes.len() writable bytes and
        // does not overlap `bytes`.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), ptr.as_ptr(), bytes.len()) };
        Some(LockedBuf {
            ptr,
            len: bytes.len(),
            map_len,
            locked,
        })
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr is valid for len initialised bytes until drop.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// Whether mlock succeeded (tests; RLIMIT_MEMLOCK may forbid it).
    #[cfg(test)]
    pub(crate) fn is_locked(&self) -> bool {
        self.locked
    }
}

impl Drop for LockedBuf {
    fn drop(&mut self) {
        // SAFETY: ptr is valid for map_len writable bytes until munmap.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.map_len) }.zeroize();
        // SAFETY: unlocking and unmapping the mapping made in `new`, which
        // nothing references any more.
        unsafe {
            if self.locked {
                libc::munlock(self.ptr.as_ptr().cast(), self.map_len);
            }
            libc::munmap(self.ptr.as_ptr().cast(), self.map_len);
        }
    }
}

/// Whether the page holding `p` is marked MADV_DONTDUMP, from
/// /proc/self/smaps ("dd" in VmFlags). For tests.
#[cfg(test)]
pub(crate) fn is_dontdump(p: *const u8) -> bool {
    let addr = p as usize;
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return false;
    };
    let mut inside = false;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((lo, hi)) = first.split_once('-') {
            if let (Ok(lo), Ok(hi)) = (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
            {
                inside = lo <= addr && addr < hi;
                continue;
            }
        }
        if inside {
            if let Some(flags) = line.strip_prefix("VmFlags:") {
                return flags.split_whitespace().any(|f| f == "dd");
            }
        }
    }
    false
}
