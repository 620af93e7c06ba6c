//! FUSE over io_uring (`-o io_uring`): the kernel hands requests to
//! per-CPU rings instead of `read(/dev/fuse)`, and the reply and the fetch
//! of the next request are one `io_uring_enter` (COMMIT_AND_FETCH). On this
//! kind of machine (a VM, 2 cores) it cuts a round trip to a third
//! (bench/results/2026-12-03-fuse-io-uring.md).
//!
//! Kernel ABI (Linux 6.14+, fs/fuse/dev_uring.c, include/uapi/linux/fuse.h):
//! one queue per possible CPU; each entry is a 288-byte header (`in_out`:
//! `fuse_in_header` in, `fuse_out_header` out; `op_in`: the opcode's fixed
//! argument struct; `fuse_uring_ent_in_out`: commit id and payload size)
//! and a payload buffer of at least the connection's largest request or
//! reply, handed over with IORING_OP_URING_CMD on `/dev/fuse` (REGISTER
//! once, COMMIT_AND_FETCH for every reply). The kernel uses the rings only
//! once every queue has an entry; INIT, FORGET, INTERRUPT and notifications
//! stay on `/dev/fuse`, so fuser's own reader threads keep running beside
//! these.
//!
//! Each queue is served by a few threads pinned to its CPU, each owning
//! its own ring with one entry and running the handlers inline (ssefs's
//! handlers are synchronous), which keeps the caller's wake-up on its own
//! CPU: that is where the gain comes from. One entry per thread, because
//! the kernel hands a request to any available entry of the queue: an
//! entry whose thread is busy in a handler (waiting for the disk, say)
//! would hold the request until that handler ends, so with several entries
//! per thread one slow request stalls the others from that CPU (measured:
//! 4K random reads fell to a tenth). With one, an entry is available
//! exactly when its thread is idle, as a classic reader thread is.
//! Requests are dispatched through fuser's own parser and dispatcher (the
//! vendored patch, vendor/fuser/VENDOR.md), so both transports call the
//! same `Filesystem` code.
//!
//! Memory: CPUs x threads per CPU x (payload + 4 KiB) of anonymous
//! memory, touched (resident) only as entries are used; the kernel reuses
//! the most recently committed entry first, so a queue that never sees
//! concurrent requests keeps one entry resident. Here (2 CPUs, 2 threads
//! each, 1 MiB payload) 4 MiB at most. (The 137 MiB peak once measured
//! over io_uring, 50 more than classic, was glibc's two arenas each
//! holding most of the chunk cache, not these; see
//! `limit_malloc_growth` in `fuse`.)

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use fuser::{Filesystem, RawDispatcher, RawReplySender, Session};
use io_uring::{cqueue, opcode, squeue, types, IoUring};

/// Entries per ring (per thread); see the module's comment for why one.
const DEPTH: usize = 1;

/// `struct fuse_uring_req_header`: `in_out[128]`, `op_in[128]`, then
/// `struct fuse_uring_ent_in_out`.
const HEADER_SIZE: usize = 288;
const OP_IN: usize = 128;
const ENT_IN_OUT: usize = 256;
/// Offsets in `fuse_uring_ent_in_out`.
const COMMIT_ID: usize = ENT_IN_OUT + 8;
const PAYLOAD_SZ: usize = ENT_IN_OUT + 16;
/// `sizeof(struct fuse_in_header)`, `sizeof(struct fuse_out_header)`.
const IN_HEADER: usize = 40;
const OUT_HEADER: usize = 16;
/// Each entry's memory: one page holding the kernel's header at its start
/// and, at its end, the request put back together for fuser (header and
/// `op_in` copied right before the payload, so the payload itself is never
/// copied); then the payload.
const PREFIX: usize = 4096;

/// `FUSE_IO_URING_CMD_REGISTER`, `FUSE_IO_URING_CMD_COMMIT_AND_FETCH`.
const CMD_REGISTER: u32 = 1;
const CMD_COMMIT_AND_FETCH: u32 = 2;
/// user_data of the poll on the stop eventfd; entries use their index.
const STOP: u64 = u64::MAX;

/// Opcodes the kernel never answers (they go over /dev/fuse anyway).
const FUSE_FORGET: u32 = 2;
const FUSE_BATCH_FORGET: u32 = 42;

const SYSFS_ENABLE: &str = "/sys/module/fuse/parameters/enable_uring";

/// Whether the `fuse` module lets daemons use io_uring, as far as sysfs
/// tells (no file: a kernel without it).
pub fn kernel_enabled() -> bool {
    std::fs::read_to_string(SYSFS_ENABLE).is_ok_and(|s| s.trim() == "Y")
}

/// The kernel's queue count: `num_possible_cpus()`, from the possible mask.
fn possible_cpus() -> usize {
    let from_sysfs = std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .ok()
        .and_then(|s| count_cpu_list(s.trim()));
    from_sysfs.unwrap_or_else(|| {
        // SAFETY: sysconf only reads system information (what glibc's
        // get_nprocs_conf returns).
        let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) };
        usize::try_from(n).unwrap_or(1)
    })
}

/// Counts the CPUs of a list such as `0-3,8-11`.
fn count_cpu_list(s: &str) -> Option<usize> {
    let mut n = 0;
    for part in s.split(',') {
        n += match part.split_once('-') {
            Some((a, b)) => {
                b.parse::<usize>()
                    .ok()?
                    .checked_sub(a.parse::<usize>().ok()?)?
                    + 1
            }
            None => {
                part.parse::<usize>().ok()?;
                1
            }
        };
    }
    (n > 0).then_some(n)
}

/// Anonymous memory, unmapped on drop.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    fn new(len: usize) -> io::Result<Mapping> {
        // SAFETY: a fresh private anonymous mapping; no existing memory is
        // touched. NORESERVE: pages are only committed when touched.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        NonNull::new(p.cast::<u8>())
            .map(|ptr| Mapping { ptr, len })
            .ok_or_else(|| io::Error::other("mmap returned null"))
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: ptr/len are exactly what mmap returned; nothing refers to
        // the memory any more (the ring that lent it to the kernel is
        // dropped first, see Queue's field order).
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// Where a reply goes: the entry's header and payload. Shared with fuser
/// (as the reply sender) only while the entry is armed.
#[derive(Debug)]
struct Slot {
    state: Mutex<SlotState>,
    replied: Condvar,
}

#[derive(Debug)]
struct SlotState {
    /// Set while a request is being served; `send` writes nothing when
    /// clear, so a sender that outlived its request cannot touch memory
    /// the entry no longer owns.
    armed: bool,
    done: bool,
    /// The reply body may go straight into the payload: the request has no
    /// payload of its own that fuser might still be reading.
    direct: bool,
    /// The reply body when not direct, copied into the payload after the
    /// request's borrow has ended.
    staged: Vec<u8>,
    body_len: usize,
    header: *mut u8,
    payload: *mut u8,
    payload_cap: usize,
}

// SAFETY: the raw pointers point into the queue's Mapping, which outlives
// every write through them: writes happen only under the mutex while
// `armed`, and the queue disarms every slot (under the mutex) before its
// mapping is dropped.
unsafe impl Send for SlotState {}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, SlotState> {
        // A panic in another holder leaves the state consistent enough:
        // at worst one reply is lost, as fuser would lose it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn arm(&self, direct: bool) {
        let mut st = self.lock();
        st.armed = true;
        st.done = false;
        st.direct = direct;
        st.staged.clear();
        st.body_len = 0;
    }

    /// Writes the out header for `unique` with `error` (negative errno) and
    /// no body.
    fn fail(&self, unique: u64, error: i32) {
        let mut hdr = [0u8; OUT_HEADER];
        hdr[0..4].copy_from_slice(&(OUT_HEADER as u32).to_ne_bytes());
        hdr[4..8].copy_from_slice(&error.to_ne_bytes());
        hdr[8..16].copy_from_slice(&unique.to_ne_bytes());
        let _ = self.send(&[IoSlice::new(&hdr)]);
    }

    /// Waits for the reply, puts a staged body into the payload, disarms;
    /// returns the body's length.
    fn finish(&self) -> usize {
        let mut st = self.lock();
        while !st.done {
            st = self.replied.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        if !st.direct && !st.staged.is_empty() {
            // SAFETY: armed, so payload is valid for payload_cap bytes, and
            // send checked staged.len() <= payload_cap; the request's borrow
            // of the payload ended when dispatch returned.
            unsafe {
                std::ptr::copy_nonoverlapping(st.staged.as_ptr(), st.payload, st.staged.len());
            }
        }
        st.armed = false;
        st.body_len
    }

    fn disarm(&self) {
        self.lock().armed = false;
    }
}

impl RawReplySender for Slot {
    fn send(&self, data: &[IoSlice<'_>]) -> io::Result<()> {
        let mut st = self.lock();
        if !st.armed || st.done {
            return Err(io::Error::other("reply to a request no longer pending"));
        }
        let total: usize = data.iter().map(|s| s.len()).sum();
        let body = total.saturating_sub(OUT_HEADER);
        if total < OUT_HEADER || body > st.payload_cap {
            // Cannot happen with the kernel's own limits (the payload is
            // sized to its largest request and reply); answer EIO rather
            // than write past the buffer.
            tracing::error!(
                total,
                cap = st.payload_cap,
                "io_uring reply does not fit the entry"
            );
            let mut hdr = [0u8; OUT_HEADER];
            copy_gather(data, 0, &mut hdr);
            hdr[4..8].copy_from_slice(&(-libc::EIO).to_ne_bytes());
            // SAFETY: armed: header is valid for HEADER_SIZE bytes and not
            // part of any request fuser holds (the request was copied out).
            unsafe { std::ptr::copy_nonoverlapping(hdr.as_ptr(), st.header, OUT_HEADER) };
            st.body_len = 0;
        } else {
            let mut hdr = [0u8; OUT_HEADER];
            copy_gather(data, 0, &mut hdr);
            // SAFETY: as above.
            unsafe { std::ptr::copy_nonoverlapping(hdr.as_ptr(), st.header, OUT_HEADER) };
            if st.direct {
                // SAFETY: armed, body <= payload_cap; direct means the
                // request has no payload bytes, so fuser holds no borrow of
                // the payload (its request ends where the payload starts).
                let dst = unsafe { std::slice::from_raw_parts_mut(st.payload, body) };
                copy_gather(data, OUT_HEADER, dst);
            } else {
                let mut staged = std::mem::take(&mut st.staged);
                staged.resize(body, 0);
                copy_gather(data, OUT_HEADER, &mut staged);
                st.staged = staged;
            }
            st.body_len = body;
        }
        st.done = true;
        drop(st);
        self.replied.notify_one();
        Ok(())
    }
}

/// Copies `dst.len()` bytes of the concatenation of `src`, from `skip` on.
fn copy_gather(src: &[IoSlice<'_>], mut skip: usize, dst: &mut [u8]) {
    let mut at = 0;
    for s in src {
        if at == dst.len() {
            break;
        }
        if skip >= s.len() {
            skip -= s.len();
            continue;
        }
        let part = &s[skip..];
        skip = 0;
        let n = part.len().min(dst.len() - at);
        dst[at..at + n].copy_from_slice(&part[..n]);
        at += n;
    }
}

/// One thread's part of a CPU's queue: its ring and its entry's memory.
struct Queue {
    qid: u16,
    // Field order matters: the ring (which has lent the buffers to the
    // kernel) is dropped before the mapping.
    ring: IoUring<squeue::Entry128, cqueue::Entry>,
    slots: Vec<Arc<Slot>>,
    /// Header and payload iovec of each entry, read by the kernel at
    /// REGISTER.
    iovecs: Box<[[libc::iovec; 2]]>,
    payload: usize,
    map: Mapping,
}

// SAFETY: the iovecs' raw pointers point into `map`, owned by the same
// struct; a Queue is used by one thread at a time (built on the mounting
// thread, then moved to its own).
unsafe impl Send for Queue {}

impl Queue {
    fn stride(&self) -> usize {
        PREFIX + self.payload
    }

    fn entry_base(&self, i: usize) -> *mut u8 {
        // SAFETY: i < DEPTH, so the offset stays inside the mapping.
        unsafe { self.map.ptr.as_ptr().add(i * self.stride()) }
    }

    fn new(qid: u16, payload: usize) -> io::Result<Queue> {
        // COOP_TASKRUN: the kernel's task work (copying a request into an
        // entry) runs when this thread enters the kernel anyway, not by
        // interrupting it.
        let ring = IoUring::<squeue::Entry128, cqueue::Entry>::builder()
            .setup_coop_taskrun()
            .build((DEPTH as u32 + 1).next_power_of_two())?;
        let stride = PREFIX + payload;
        let map = Mapping::new(stride * DEPTH)?;
        let mut slots = Vec::with_capacity(DEPTH);
        let mut iovecs = Vec::with_capacity(DEPTH);
        for i in 0..DEPTH {
            // SAFETY: within the mapping (i < DEPTH).
            let base = unsafe { map.ptr.as_ptr().add(i * stride) };
            // SAFETY: PREFIX < stride.
            let payload_ptr = unsafe { base.add(PREFIX) };
            iovecs.push([
                libc::iovec {
                    iov_base: base.cast(),
                    iov_len: HEADER_SIZE,
                },
                libc::iovec {
                    iov_base: payload_ptr.cast(),
                    iov_len: payload,
                },
            ]);
            slots.push(Arc::new(Slot {
                state: Mutex::new(SlotState {
                    armed: false,
                    done: false,
                    direct: false,
                    staged: Vec::new(),
                    body_len: 0,
                    header: base,
                    payload: payload_ptr,
                    payload_cap: payload,
                }),
                replied: Condvar::new(),
            }));
        }
        Ok(Queue {
            qid,
            ring,
            slots,
            iovecs: iovecs.into_boxed_slice(),
            payload,
            map,
        })
    }

    fn cmd(&self, commit_id: u64) -> [u8; 80] {
        // struct fuse_uring_cmd_req { u64 flags; u64 commit_id; u16 qid; u8 pad[6]; }
        let mut c = [0u8; 80];
        c[8..16].copy_from_slice(&commit_id.to_ne_bytes());
        c[16..18].copy_from_slice(&self.qid.to_ne_bytes());
        c
    }

    fn push(&mut self, sqe: squeue::Entry128) -> io::Result<()> {
        // SAFETY: every buffer an entry points to (iovecs, the mapping, the
        // eventfd's counter) lives as long as the ring.
        if unsafe { self.ring.submission().push(&sqe) }.is_err() {
            // The SQ holds DEPTH + 1 entries, as many as can ever be
            // outstanding; submit and retry once all the same.
            self.ring.submit()?;
            // SAFETY: as above.
            unsafe { self.ring.submission().push(&sqe) }
                .map_err(|_| io::Error::other("io_uring submission queue full"))?;
        }
        Ok(())
    }

    fn register(&mut self, i: usize) -> io::Result<()> {
        let sqe = opcode::UringCmd80::new(types::Fixed(0), CMD_REGISTER)
            .cmd(self.cmd(0))
            .addr(Some(self.iovecs[i].as_ptr() as u64))
            .build()
            .user_data(i as u64);
        // The iovec count goes in sqe->len, which UringCmd80 does not set.
        self.push(with_len(sqe, 2))
    }

    fn commit(&mut self, i: usize, commit_id: u64) -> io::Result<()> {
        let sqe = opcode::UringCmd80::new(types::Fixed(0), CMD_COMMIT_AND_FETCH)
            .cmd(self.cmd(commit_id))
            .build()
            .user_data(i as u64);
        self.push(sqe)
    }
}

/// Sets `sqe->len` (offset 24 of the SQE), which io-uring's UringCmd80
/// builder has no setter for; FUSE's REGISTER takes the iovec count there.
fn with_len(sqe: squeue::Entry128, len: u32) -> squeue::Entry128 {
    // SAFETY: Entry128 is repr(C): a 64-byte io_uring_sqe followed by 64
    // bytes of command; `len` is the u32 at offset 24 of the SQE. The copy
    // is plain bytes with no invalid values.
    unsafe {
        let mut raw: [u8; 128] = std::mem::transmute(sqe);
        raw[24..28].copy_from_slice(&len.to_ne_bytes());
        std::mem::transmute::<[u8; 128], squeue::Entry128>(raw)
    }
}

/// Rings and buffers made before the mount, so that a machine where
/// io_uring cannot be used (seccomp, `kernel.io_uring_disabled`) falls back
/// before the kernel is told to expect rings: once FUSE_OVER_IO_URING is
/// agreed, the kernel holds every request until each queue has an entry.
pub struct Prepared {
    queues: Vec<Queue>,
    stop: OwnedFd,
    payload: usize,
}

impl Prepared {
    /// Queues for every possible CPU, served by `threads` threads in all
    /// (as many as the classic transport's, at least 2 per CPU), each entry
    /// with `payload` bytes.
    pub fn new(payload: usize, threads: usize) -> io::Result<Prepared> {
        let n = possible_cpus();
        let per_cpu = threads.div_ceil(n).max(2);
        let queues = (0..n * per_cpu)
            .map(|k| {
                let qid =
                    u16::try_from(k / per_cpu).map_err(|_| io::Error::other("too many CPUs"))?;
                Queue::new(qid, payload)
            })
            .collect::<io::Result<Vec<_>>>()?;
        // SAFETY: eventfd creates a new descriptor, owned from here on.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor nobody else owns.
        let stop = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Prepared {
            queues,
            stop,
            payload,
        })
    }

    pub fn queues(&self) -> usize {
        self.queues.len()
    }

    /// Registers the session's device with every ring, hands the kernel
    /// all entries and starts one pinned thread per queue, each serving
    /// with its own `Filesystem` instance from `make_fs`.
    pub fn start<FS: Filesystem + Send + 'static>(
        self,
        session: &Session<FS>,
        make_fs: impl Fn() -> FS,
    ) -> io::Result<Running> {
        let dev = session.as_fd().try_clone_to_owned()?;
        let cpus = self
            .queues
            .iter()
            .map(|q| usize::from(q.qid) + 1)
            .max()
            .unwrap_or(0);
        let stats = Arc::new(Stats {
            per_queue: (0..cpus).map(|_| AtomicU64::new(0)).collect(),
            first: AtomicBool::new(false),
            refused: AtomicBool::new(false),
        });
        let stop_fd = self.stop.as_raw_fd();
        let mut threads = Vec::with_capacity(self.queues.len());
        for (k, q) in self.queues.into_iter().enumerate() {
            q.ring.submitter().register_files(&[dev.as_raw_fd()])?;
            let dispatcher = session.raw_dispatcher(make_fs());
            let stats = stats.clone();
            let qid = q.qid;
            let t = std::thread::Builder::new()
                .name(format!("ssefs-uring-{qid}-{k}"))
                .spawn(move || serve(q, dispatcher, stop_fd, &stats))?;
            threads.push(t);
        }
        tracing::info!(
            queues = cpus,
            threads = threads.len(),
            payload_kib = self.payload >> 10,
            "FUSE over io_uring: registering the rings"
        );
        Ok(Running {
            threads,
            stop: self.stop,
            _dev: dev,
            stats,
        })
    }
}

struct Stats {
    per_queue: Vec<AtomicU64>,
    first: AtomicBool,
    refused: AtomicBool,
}

/// The queue threads of a mounted session.
pub struct Running {
    threads: Vec<JoinHandle<()>>,
    stop: OwnedFd,
    _dev: OwnedFd,
    stats: Arc<Stats>,
}

impl Running {
    /// Ends the queue threads (after the unmount they have usually ended
    /// already: the kernel fails their pending commands with ENOTCONN) and
    /// logs how many requests came over the rings.
    pub fn stop(self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a local to our eventfd.
        let _ = unsafe { libc::write(self.stop.as_raw_fd(), (&one as *const u64).cast(), 8) };
        for t in self.threads {
            let _ = t.join();
        }
        let per: Vec<u64> = self
            .stats
            .per_queue
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        tracing::info!(
            requests = per.iter().sum::<u64>(),
            per_queue = ?per,
            "FUSE over io_uring: requests served over the rings"
        );
    }
}

/// Pins the calling thread to `cpu`; a CPU that is not online is left
/// unpinned (its queue only gets requests if the CPU comes online).
fn pin_to(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; CPU_SET bounds-checks against its
    // size; sched_setaffinity(0) applies to this thread only.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        let _ = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn serve<FS: Filesystem>(mut q: Queue, dispatcher: RawDispatcher<FS>, stop_fd: i32, stats: &Stats) {
    pin_to(usize::from(q.qid));
    let qid = usize::from(q.qid);
    let mut started = (0..DEPTH).try_for_each(|i| q.register(i));
    if started.is_ok() {
        let poll = opcode::PollAdd::new(types::Fd(stop_fd), libc::POLLIN as u32)
            .build()
            .user_data(STOP);
        started = q.push(poll.into());
    }
    if let Err(e) = started {
        tracing::error!(
            qid,
            "FUSE over io_uring: cannot queue the registration ({e})"
        );
        for s in &q.slots {
            s.disarm();
        }
        return;
    }
    // Entries with a command in the kernel; the thread ends when none is
    // left (unmount) or when asked to stop.
    let mut live = DEPTH;
    let mut done: Vec<(u64, i32)> = Vec::with_capacity(DEPTH + 1);
    'serve: loop {
        match q.ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) => {
                tracing::error!(qid, "FUSE over io_uring: io_uring_enter failed ({e})");
                break;
            }
        }
        done.clear();
        done.extend(q.ring.completion().map(|c| (c.user_data(), c.result())));
        for &(ud, res) in &done {
            if ud == STOP {
                break 'serve;
            }
            let Ok(i) = usize::try_from(ud) else { continue };
            if i >= DEPTH {
                continue;
            }
            if res < 0 {
                live -= 1;
                note_error(qid, -res, stats);
                continue;
            }
            if !stats.first.swap(true, Ordering::Relaxed) {
                tracing::info!(
                    qid,
                    "FUSE over io_uring: first request served over the rings"
                );
            }
            stats.per_queue[qid].fetch_add(1, Ordering::Relaxed);
            match handle(&mut q, i, &dispatcher) {
                Some(commit_id) => {
                    if let Err(e) = q.commit(i, commit_id) {
                        tracing::error!(qid, "FUSE over io_uring: cannot queue a reply ({e})");
                        live -= 1;
                    }
                }
                None => live -= 1,
            }
        }
        if live == 0 {
            break;
        }
    }
    for s in &q.slots {
        s.disarm();
    }
    // Dropping the ring cancels what is still registered (the kernel's
    // IO_URING_F_CANCEL path), then the mapping goes.
}

/// Logs a failed command once per kind: ENOTCONN / ECANCELED at unmount are
/// the normal end; anything else means the kernel refused the rings, and
/// the kernel then goes on over /dev/fuse.
fn note_error(qid: usize, errno: i32, stats: &Stats) {
    match errno {
        libc::ENOTCONN | libc::ECANCELED | libc::ECONNABORTED | libc::ENODEV => {
            tracing::debug!(qid, errno, "FUSE over io_uring: entry released");
        }
        _ => {
            if !stats.refused.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    qid,
                    "FUSE over io_uring: the kernel refused the rings ({}): serving over /dev/fuse",
                    io::Error::from_raw_os_error(errno)
                );
            }
        }
    }
}

/// Serves the request in entry `i`; returns the commit id to reply with,
/// or None when the entry cannot be committed (a request without reply).
fn handle<FS: Filesystem>(q: &mut Queue, i: usize, dispatcher: &RawDispatcher<FS>) -> Option<u64> {
    let base = q.entry_base(i);
    let mut in_header = [0u8; IN_HEADER];
    let mut ent = [0u8; 32];
    // SAFETY: the entry is ours between its CQE and its next commit; the
    // header area holds HEADER_SIZE bytes the kernel wrote before the CQE.
    unsafe {
        std::ptr::copy_nonoverlapping(base, in_header.as_mut_ptr(), IN_HEADER);
        std::ptr::copy_nonoverlapping(base.add(ENT_IN_OUT), ent.as_mut_ptr(), 32);
    }
    let word = |b: &[u8], at: usize| u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    let opcode = word(&in_header, 4);
    let mut unique_b = [0u8; 8];
    unique_b.copy_from_slice(&in_header[8..16]);
    let unique = u64::from_ne_bytes(unique_b);
    let mut commit_b = [0u8; 8];
    commit_b.copy_from_slice(&ent[COMMIT_ID - ENT_IN_OUT..COMMIT_ID - ENT_IN_OUT + 8]);
    let commit_id = u64::from_ne_bytes(commit_b);
    let payload_sz = (word(&ent, PAYLOAD_SZ - ENT_IN_OUT) as usize).min(q.payload);
    let op_size = fuser::ring_op_in_size(opcode).min(OP_IN);
    // The request as fuser parses it: header, op_in, payload, contiguous,
    // ending where the payload does. 8-aligned: PREFIX, IN_HEADER and every
    // argument struct are multiples of 8.
    let start = PREFIX - IN_HEADER - op_size;
    let len = IN_HEADER + op_size + payload_sz;
    let len32 = u32::try_from(len).unwrap_or(u32::MAX);
    in_header[0..4].copy_from_slice(&len32.to_ne_bytes());
    // SAFETY: start..PREFIX lies in the entry's first page after the
    // kernel's header (PREFIX - 168 > HEADER_SIZE); op_in is within it.
    unsafe {
        std::ptr::copy_nonoverlapping(in_header.as_ptr(), base.add(start), IN_HEADER);
        std::ptr::copy_nonoverlapping(base.add(OP_IN), base.add(start + IN_HEADER), op_size);
    }
    let slot = q.slots[i].clone();
    slot.arm(payload_sz == 0);
    {
        // SAFETY: start + len <= PREFIX + payload (payload_sz was capped),
        // all inside this entry, which nobody writes while the request is
        // served: the kernel does not touch it until the commit, and the
        // reply goes to the header area and, only when the request has no
        // payload (direct), to the payload after the request's end.
        let request = unsafe { std::slice::from_raw_parts(base.add(start).cast_const(), len) };
        if let Err(e) = dispatcher.dispatch(request, slot.clone()) {
            tracing::warn!(opcode, "FUSE over io_uring: bad request ({e})");
            slot.fail(unique, -libc::EIO);
        }
    }
    if opcode == FUSE_FORGET || opcode == FUSE_BATCH_FORGET {
        // The kernel sends these over /dev/fuse; one here would have no
        // reply to commit.
        tracing::error!(
            opcode,
            "FUSE over io_uring: request without reply on a ring"
        );
        slot.disarm();
        return None;
    }
    let body = slot.finish();
    let body32 = u32::try_from(body).unwrap_or(0);
    // SAFETY: the header area is ours until the commit.
    unsafe {
        std::ptr::copy_nonoverlapping(body32.to_ne_bytes().as_ptr(), base.add(PAYLOAD_SZ), 4);
    }
    Some(commit_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_are_counted() {
        assert_eq!(count_cpu_list("0"), Some(1));
        assert_eq!(count_cpu_list("0-1"), Some(2));
        assert_eq!(count_cpu_list("0-3,8-11"), Some(8));
        assert_eq!(count_cpu_list(""), None);
        assert_eq!(count_cpu_list("x"), None);
    }

    #[test]
    fn gather_skips_the_header_across_slices() {
        let a = [1u8, 2, 3];
        let b = [4u8, 5, 6, 7];
        let src = [IoSlice::new(&a), IoSlice::new(&b)];
        let mut dst = [0u8; 3];
        copy_gather(&src, 2, &mut dst);
        assert_eq!(dst, [3, 4, 5]);
    }

    #[test]
    fn sqe_len_lands_in_the_sqe() {
        let sqe = opcode::UringCmd80::new(types::Fixed(0), CMD_REGISTER)
            .addr(Some(0x1000))
            .build();
        let sqe = with_len(sqe, 2);
        // SAFETY: Entry128 is 128 plain bytes.
        let raw: [u8; 128] = unsafe { std::mem::transmute(sqe) };
        assert_eq!(&raw[24..28], &2u32.to_ne_bytes());
        assert_eq!(&raw[16..24], &0x1000u64.to_ne_bytes()); // addr untouched
        assert_eq!(raw[0], 46); // IORING_OP_URING_CMD
    }

    #[test]
    fn a_slot_writes_header_and_body_and_refuses_when_disarmed() {
        let map = Mapping::new(PREFIX + 8192).unwrap();
        let base = map.ptr.as_ptr();
        let slot = Slot {
            state: Mutex::new(SlotState {
                armed: false,
                done: false,
                direct: false,
                staged: Vec::new(),
                body_len: 0,
                header: base,
                // SAFETY: inside the mapping.
                payload: unsafe { base.add(PREFIX) },
                payload_cap: 8192,
            }),
            replied: Condvar::new(),
        };
        assert!(slot.send(&[IoSlice::new(&[0u8; 20])]).is_err());
        for direct in [true, false] {
            slot.arm(direct);
            let mut hdr = [0u8; 16];
            hdr[8] = 7;
            slot.send(&[IoSlice::new(&hdr), IoSlice::new(b"body")])
                .unwrap();
            assert_eq!(slot.finish(), 4);
            // SAFETY: inside the mapping.
            let (h, p) = unsafe {
                (
                    std::slice::from_raw_parts(base, 16),
                    std::slice::from_raw_parts(base.add(PREFIX), 4),
                )
            };
            assert_eq!(h[8], 7);
            assert_eq!(p, b"body");
            assert!(slot.send(&[IoSlice::new(&hdr)]).is_err());
        }
        // Too large for the payload: EIO, no body.
        slot.arm(true);
        let big = vec![0u8; 16 + 8193];
        slot.send(&[IoSlice::new(&big)]).unwrap();
        assert_eq!(slot.finish(), 0);
        // SAFETY: inside the mapping.
        let err = unsafe { std::slice::from_raw_parts(base.add(4), 4) };
        assert_eq!(err, &(-libc::EIO).to_ne_bytes());
    }
}
