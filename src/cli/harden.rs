//! Process hardening done first thing in `main`, before any thread starts:
//! no core dumps (they would hold key material), and the passphrase taken
//! out of the environment so that /proc/PID/environ and child processes
//! never show it.

use std::sync::Mutex;

use zeroize::{Zeroize, Zeroizing};

/// The environment variable a passphrase may come in.
pub const PASSPHRASE_ENV: &str = "SSEFS_PASSPHRASE";

/// `$SSEFS_PASSPHRASE` as it was at start, once `scrub_env` has taken it.
static PASSPHRASE: Mutex<Option<Zeroizing<String>>> = Mutex::new(None);

/// Makes the process non-dumpable: no core file, no ptrace attach by the
/// same user, /proc/PID/mem and environ readable by root only.
pub fn no_core_dumps() {
    // SAFETY: PR_SET_DUMPABLE takes an integer and touches no memory of ours.
    let r = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    if r != 0 {
        // Only reachable on a kernel without prctl; nothing to fall back to.
        eprintln!(
            "ssefs: warning: prctl(PR_SET_DUMPABLE, 0) failed: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Takes `$SSEFS_PASSPHRASE` out of the environment and wipes its bytes
/// where the kernel shows them (/proc/PID/environ reads the process's
/// original environment block, which unsetenv alone leaves as it was).
/// Must run while the process has a single thread: it edits the C
/// environment, which other threads could be reading.
pub fn scrub_env() {
    let Some(value) = std::env::var_os(PASSPHRASE_ENV) else {
        return;
    };
    let value = Zeroizing::new(value.to_string_lossy().into_owned());
    // The environment entry ("NAME=value", NUL-terminated) before removal.
    let entry = find_env_entry(PASSPHRASE_ENV.as_bytes());
    // Edition 2021: remove_var is safe to call, but it races with any other
    // thread reading the environment; main calls this before starting one.
    std::env::remove_var(PASSPHRASE_ENV);
    if let Some((ptr, len)) = entry {
        // SAFETY: ptr..ptr+len is the C string the environment pointed at,
        // in the process's own writable memory (the initial stack block or
        // a setenv allocation glibc never frees); no pointer to it is left
        // in `environ` after the removal above.
        unsafe { std::slice::from_raw_parts_mut(ptr, len) }.zeroize();
    }
    *PASSPHRASE.lock().unwrap_or_else(|e| e.into_inner()) = Some(value);
}

/// The passphrase `scrub_env` took, if any (the process keeps it: the
/// background mount passes it on to its daemon).
pub fn passphrase_from_env() -> Option<Zeroizing<String>> {
    if let Some(p) = PASSPHRASE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
    {
        return Some(p.clone());
    }
    // Library callers that did not go through `main` still see it.
    std::env::var(PASSPHRASE_ENV).ok().map(Zeroizing::new)
}

/// The address and length of the environment entry `name=...`.
fn find_env_entry(name: &[u8]) -> Option<(*mut u8, usize)> {
    extern "C" {
        static mut environ: *mut *mut libc::c_char;
    }
    // SAFETY: single-threaded (see scrub_env); environ is a NULL-terminated
    // array of NUL-terminated strings maintained by libc.
    unsafe {
        let mut p = environ;
        if p.is_null() {
            return None;
        }
        while !(*p).is_null() {
            let s = std::ffi::CStr::from_ptr(*p).to_bytes();
            if s.len() > name.len() && s.starts_with(name) && s[name.len()] == b'=' {
                return Some(((*p).cast::<u8>(), s.len()));
            }
            p = p.add(1);
        }
    }
    None
}
