//! Shared helpers: a temp data directory and a runner for the binary.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub struct DataDir {
    pub tmp: tempfile::TempDir,
}

pub struct Run {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from(o: Output) -> Run {
        Run {
            status: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    #[track_caller]
    pub fn ok(self) -> Run {
        assert_eq!(self.status, 0, "command failed: {}", self.stderr);
        self
    }

    /// Asserts failure with `code` in a single stderr line.
    #[track_caller]
    pub fn fails_with(self, code: &str) -> Run {
        assert_ne!(
            self.status, 0,
            "command unexpectedly succeeded: {}",
            self.stdout
        );
        assert!(
            self.stderr.contains(code),
            "stderr lacks {code}: {}",
            self.stderr
        );
        assert_eq!(
            self.stderr.trim_end().lines().count(),
            1,
            "one line expected: {}",
            self.stderr
        );
        self
    }
}

/// The binary under test: the one cargo built with the tests, unless
/// `$SSEFS_TEST_BIN` names another (scripts/stress-debug.sh runs these
/// tests against a debug build).
pub fn bin() -> PathBuf {
    std::env::var_os("SSEFS_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_ssefs")))
}

impl DataDir {
    /// A fresh, initialised data directory.
    pub fn new() -> DataDir {
        let d = DataDir::uninit();
        d.run(&["init"]).ok();
        d
    }

    pub fn uninit() -> DataDir {
        DataDir {
            tmp: tempfile::tempdir().unwrap(),
        }
    }

    pub fn data(&self) -> PathBuf {
        self.tmp.path().join("data")
    }

    /// Where this data directory's root key goes ($SSEFS_KEY_DIR).
    pub fn keys(&self) -> PathBuf {
        self.tmp.path().join("keys")
    }

    /// The root key file, as `init` reported it (KEYS/ID.key).
    pub fn key_file(&self) -> PathBuf {
        let mut found = std::fs::read_dir(self.keys())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "key"));
        let k = found.next().expect("no root key file");
        assert!(found.next().is_none(), "more than one root key file");
        k
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(bin());
        c.env_remove("SSEFS_PASSPHRASE")
            .env_remove("SSEFS_ROOT_KEY")
            .env_remove("CREDENTIALS_DIRECTORY")
            .env("SSEFS_DATA_DIR", self.data())
            // New root keys go beside the data directory, not into the
            // machine's /etc/ssefs (tests run as root).
            .env("SSEFS_KEY_DIR", self.keys());
        c
    }

    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(self.cmd().args(args).output().unwrap())
    }

    pub fn run_stdin(&self, args: &[&str], input: &[u8]) -> Run {
        let mut child = self
            .cmd()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        Run::from(child.wait_with_output().unwrap())
    }

    pub fn write(&self, rel: &str, data: &[u8]) -> PathBuf {
        let p = self.path(rel);
        std::fs::write(&p, data).unwrap();
        p
    }
}

/// A snapshot of every file under `dir` (path, bytes) to prove nothing changed.
pub fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// A small seeded generator (SplitMix64) so a failing random run can be
/// replayed from the seed it prints.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// Index into `weights`, chosen with probability proportional to each.
    pub fn weighted(&mut self, weights: &[u64]) -> usize {
        let mut x = self.below(weights.iter().sum());
        for (i, &w) in weights.iter().enumerate() {
            if x < w {
                return i;
            }
            x -= w;
        }
        unreachable!()
    }
}

/// `len` bytes determined by `seed`: a workload logs the seed, a checker
/// regenerates the bytes.
pub fn seeded_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut r = Rng::new(seed);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&r.next_u64().to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The seed of a randomised test: `$SSEFS_TEST_SEED` to replay a run, else
/// fresh. Printed so a failure can be replayed.
pub fn test_seed(test: &str) -> u64 {
    let seed = match std::env::var("SSEFS_TEST_SEED") {
        Ok(s) => s.parse().expect("SSEFS_TEST_SEED must be a number"),
        Err(_) => {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap();
            t.as_nanos() as u64 ^ (u64::from(std::process::id()) << 32)
        }
    };
    eprintln!("{test}: seed {seed} (replay with SSEFS_TEST_SEED={seed})");
    seed
}

/// A count from the environment (`name`), else `default`: CI runs the
/// default, a longer soak sets the variable.
pub fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .map(|s| {
            s.parse()
                .unwrap_or_else(|_| panic!("{name} must be a number"))
        })
        .unwrap_or(default)
}

pub fn errno_of(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(-1)
}

/// /proc/self/mountinfo as text. Read as bytes and converted lossily: a
/// test elsewhere in this binary mounts at a path that is not UTF-8
/// (badinput.rs), and `read_to_string` then failed in every test that
/// looked at the mount table at that moment. Our own mount points are
/// UTF-8, so they compare as before.
pub fn mountinfo() -> String {
    String::from_utf8_lossy(&std::fs::read("/proc/self/mountinfo").unwrap()).into_owned()
}
