//! The `ssefs` command line. Parses arguments with clap, opens the engine and
//! prints results; all logic lives in the engine and the KMS.

mod bucket;
mod harden;
mod kms;
mod object;

pub use bucket::{BucketCmd, ChunkSizeCmd, EncryptionCmd};
pub use object::{ObjectCmd, SseArgs};
mod preflight;
mod rootkey;

use std::ffi::OsString;
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand};
use zeroize::Zeroizing;

use crate::engine::{default_root_key, Engine};
use crate::error::{Error, IoContext, OssCode, Result};
use crate::kms::RootKeySource;
use crate::ops;
use crate::oss::BucketName;
use crate::principal::Principal;
use crate::service::helper::{self, HelperCall};
use crate::service::{notify, ServiceConfig};

#[derive(Parser, Debug)]
#[command(name = "ssefs", version, about = "OSS-style server-side encryption for local storage", long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct GlobalArgs {
    /// The mount's configuration file (TOML; see ssefs.toml.example). Its
    /// keys are defaults: options on the command line override them.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The data directory [default: $SSEFS_DATA_DIR, else /var/lib/ssefs for
    /// root, else $XDG_DATA_HOME/ssefs]
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The root key file [default: $CREDENTIALS_DIRECTORY/root.key under
    /// systemd, else KEY_DIR/ID.key named after the data directory's id,
    /// where KEY_DIR is $SSEFS_KEY_DIR, /etc/ssefs for root or
    /// $XDG_CONFIG_HOME/ssefs; else DATA_DIR/.ssefs/root.key (old layout)]
    #[arg(long, global = true, value_name = "PATH", env = "SSEFS_ROOT_KEY")]
    pub root_key: Option<PathBuf>,
    /// Keep a new data directory's root key inside it
    /// (DATA_DIR/.ssefs/root.key). This gives up the protection of backups,
    /// copies and snapshots of the data directory: each then holds the key
    /// to decrypt it.
    #[arg(long, global = true)]
    pub insecure_root_key_in_data_dir: bool,
    /// Derive the root key from the passphrase in this file (first line)
    /// instead of a key file; $SSEFS_PASSPHRASE works too.
    #[arg(long, global = true, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// Keep the buckets on an S3-compatible store instead of a data
    /// directory: s3://BUCKET[/PREFIX]. The endpoint, region and
    /// credentials come from the config file's [backend] table or the
    /// environment ($AWS_ENDPOINT_URL_S3, $AWS_REGION, $AWS_ACCESS_KEY_ID,
    /// $AWS_SECRET_ACCESS_KEY), never from the command line.
    #[arg(long, global = true, value_name = "URL", env = "SSEFS_BACKEND")]
    pub backend: Option<String>,
    /// The config file's [backend] table, if it has one.
    #[arg(skip)]
    pub backend_table: Option<crate::backend::s3::BackendTable>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create the data directory, its keystore and a random root key.
    Init {
        /// Derive the root key from a passphrase (Argon2id) instead of a key
        /// file: read from --passphrase-file, $SSEFS_PASSPHRASE, or stdin.
        #[arg(long)]
        passphrase: bool,
    },
    /// Buckets and their default encryption rule.
    #[command(subcommand)]
    Bucket(BucketCmd),
    /// Objects: put, get, head, copy.
    #[command(subcommand)]
    Object(ObjectCmd),
    /// The built-in KMS: master keys, customer master keys, aliases.
    #[command(subcommand)]
    Kms(kms::KmsCmd),
    /// Mount the data directory (or, with --backend, a store): buckets
    /// appear as directories, objects as files. Creates the data directory
    /// and root key on first use.
    #[command(after_long_help = MOUNT_AFTER_HELP)]
    Mount {
        /// Where to mount [default: `mountpoint` in the --config file]
        mountpoint: Option<PathBuf>,
        /// Mount options: allow_other, allow_root, ro, rw, default_permissions,
        /// threads=N (FUSE worker threads, default 4), cache_mb=N (decrypted
        /// chunk cache, default 64), max_inodes=N (inodes remembered before the
        /// kernel is asked to forget some, default 100000), io_uring (FUSE over
        /// io_uring where the kernel's fuse module has enable_uring=Y; else
        /// /dev/fuse, with one log line), meta_ttl_ms=N (on a store: how long
        /// listings and attributes are trusted, default 1000); generic fstab
        /// options (defaults, _netdev,
        /// noauto, nofail, x-*, ...) are accepted and ignored
        #[arg(short = 'o', value_name = "OPTIONS")]
        options: Vec<String>,
        /// Stay in the foreground (for systemd); default: run in the
        /// background and return once the mount answers.
        #[arg(long, short = 'f')]
        foreground: bool,
    },
    /// Rewrite the objects of BUCKET[/PREFIX] whose encryption differs from
    /// their target: the object's own override if it has one, else the
    /// bucket rule (as CopyObject over itself). Safe while mounted.
    Reencrypt {
        /// BUCKET, or BUCKET/PREFIX to limit it to keys starting with PREFIX
        path: String,
    },
    /// Re-wrap data keys under the newest master key version or the CMK's
    /// primary version; the data is not re-encrypted. Safe while mounted.
    Rewrap {
        /// Only this bucket [default: all]
        bucket: Option<String>,
    },
    /// Authenticate every chunk of every object; list the corrupt ones and
    /// exit non-zero if there are any.
    Verify {
        /// Only this bucket [default: all]
        bucket: Option<String>,
    },
    /// Copy every bucket, object, key and setting of SRC to DST, as they
    /// are stored (nothing is re-encrypted; the same root key opens the
    /// copy), then verify every object in DST. SRC and DST are each a data
    /// directory or s3://BUCKET[/PREFIX]. Safe to run again after an
    /// interruption: objects already copied whole are skipped.
    Migrate { src: String, dst: String },
    /// Mounts of the data directory, buckets with their rule and object
    /// count, keys with their states, and where the root key is (with a
    /// warning when a copy of the data directory would hold it too).
    Status,
    /// The root key: move it out of the data directory, export it as text
    /// to keep on paper, import it back.
    #[command(subcommand)]
    RootKey(rootkey::RootKeyCmd),
    /// Write the man pages to DIR (for packaging).
    #[command(hide = true)]
    Man { dir: PathBuf },
}

const MOUNT_AFTER_HELP: &str = "\
As a service, the unit ssefs@NAME.service runs

  ssefs --config /etc/ssefs/NAME.toml mount --foreground

with the root key passed as a credential: sealed by systemd-creds in
/etc/ssefs/NAME.cred, or the plain file /etc/ssefs/NAME.key. It tells systemd
when the mount is ready (Type=notify).

From /etc/fstab, through the mount helper mount.fuse.ssefs:

  /var/lib/ssefs  /mnt/oss  fuse.ssefs  defaults,allow_other,_netdev  0 0

The source may also be a config file (/etc/ssefs/NAME.toml), and the options
root_key=PATH and config=PATH name files. By hand: mount -t fuse.ssefs DATA_DIR
DIR -o allow_other. Unmount with umount, fusermount3 -u, or SIGTERM.

The background daemon logs to DATA_DIR/.ssefs/mount.log; in the foreground,
logs go to stderr (the journal under systemd).";

/// The default data directory for this user.
pub fn default_data_dir() -> PathBuf {
    // An empty $SSEFS_DATA_DIR is refused before anything runs (`run`).
    if let Some(d) = std::env::var_os("SSEFS_DATA_DIR") {
        return PathBuf::from(d);
    }
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/lib/ssefs");
    }
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("ssefs")
}

impl GlobalArgs {
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(default_data_dir)
    }

    /// The root key source: a passphrase when one is offered, else the key
    /// file (explicit, systemd credential, or the default path).
    pub fn root_source(&self, data_dir: &Path, ask: bool) -> Result<RootKeySource> {
        if let Some(f) = &self.passphrase_file {
            let text = Zeroizing::new(std::fs::read_to_string(f).ctx(f.display())?);
            let line = text.lines().next().unwrap_or("").to_owned();
            return Ok(RootKeySource::Passphrase(Zeroizing::new(line)));
        }
        if let Some(p) = harden::passphrase_from_env() {
            return Ok(RootKeySource::Passphrase(p));
        }
        if ask {
            let mut line = Zeroizing::new(String::new());
            eprint!("passphrase: ");
            io::stdin().lock().read_line(&mut line).ctx("stdin")?;
            let p = line.trim_end_matches(['\n', '\r']).to_owned();
            return Ok(RootKeySource::Passphrase(Zeroizing::new(p)));
        }
        Ok(match &self.root_key {
            Some(p) => RootKeySource::File(p.clone()),
            None if self.insecure_root_key_in_data_dir => {
                crate::kms::location::default_source(data_dir, true)?
            }
            None => default_root_key(data_dir)?,
        })
    }

    pub fn open_engine(&self) -> Result<Engine> {
        if let Some(store) = self.store()? {
            return Engine::open_store(store, &self.store_root_source(false)?);
        }
        let dir = self.data_dir();
        Engine::open(&dir, &self.root_source(&dir, false)?)
    }

    /// The store named by --backend or the config file's [backend] table;
    /// None for a data directory.
    pub fn store(&self) -> Result<Option<std::sync::Arc<dyn crate::backend::Backend>>> {
        Ok(self
            .store_spec()?
            .map(|spec| crate::backend::s3::S3Backend::open(&spec))
            .transpose()?
            .map(|s| std::sync::Arc::new(s) as std::sync::Arc<dyn crate::backend::Backend>))
    }

    /// The store named by --backend or [backend], resolved (nothing is
    /// opened); None for a data directory.
    pub fn store_spec(&self) -> Result<Option<crate::backend::s3::StoreSpec>> {
        if !self.is_store() {
            return Ok(None);
        }
        if self.data_dir.is_some() {
            return Err(Error::new(
                OssCode::InvalidArgument,
                "--data-dir and --backend name two places: give one",
            ));
        }
        crate::backend::s3::StoreSpec::resolve(self.backend.as_deref(), self.backend_table.as_ref())
            .map(Some)
    }

    /// The root key of a store: a passphrase, --root-key, the systemd
    /// credential, else KEY_DIR/ID.key named after the store's id. It
    /// never goes to the store.
    pub fn store_root_source(&self, ask: bool) -> Result<RootKeySource> {
        if self.passphrase_file.is_some() || harden::passphrase_from_env().is_some() || ask {
            return self.root_source(Path::new("/nonexistent"), ask);
        }
        if let Some(p) = &self.root_key {
            return Ok(RootKeySource::File(p.clone()));
        }
        if let Some(p) = crate::kms::location::credential() {
            return Ok(RootKeySource::File(p));
        }
        Ok(RootKeySource::KeyDir(crate::kms::location::key_dir()?))
    }

    /// Refuses a command that works on a data directory only.
    /// Whether a store is named (nothing is opened).
    fn is_store(&self) -> bool {
        self.backend.is_some() || self.backend_table.as_ref().is_some_and(|t| t.url.is_some())
    }

    pub(super) fn local_only(&self, what: &str) -> Result<()> {
        if self.is_store() {
            return Err(Error::new(
                OssCode::InvalidArgument,
                format!("`ssefs {what}` works on a data directory only, not on a store (yet)"),
            ));
        }
        Ok(())
    }
}

fn out(s: &str) -> Result<()> {
    let mut o = io::stdout().lock();
    o.write_all(s.as_bytes())
        .and_then(|_| o.flush())
        .ctx("stdout")
}

impl GlobalArgs {
    /// Loads the --config file, if any, and takes from it what the command
    /// line left unset. Precedence: command line (and $SSEFS_ROOT_KEY) over
    /// the config file over the built-in defaults.
    pub fn load_config(&mut self) -> Result<Option<ServiceConfig>> {
        let Some(path) = &self.config else {
            return Ok(None);
        };
        let cfg = ServiceConfig::load(path)?;
        if self.data_dir.is_none() {
            self.data_dir.clone_from(&cfg.data_dir);
        }
        if self.root_key.is_none() {
            self.root_key.clone_from(&cfg.root_key);
        }
        if self.passphrase_file.is_none() {
            self.passphrase_file.clone_from(&cfg.passphrase_file);
        }
        self.backend_table.clone_from(&cfg.backend);
        Ok(Some(cfg))
    }
}

/// Runs one parsed command, reading its --config file first.
pub fn run(mut cli: Cli) -> Result<()> {
    let cfg = cli.global.load_config()?;
    run_with(cli, cfg.as_ref())
}

/// Runs one parsed command whose config file `cfg` is already loaded into
/// its global arguments.
fn run_with(cli: Cli, cfg: Option<&ServiceConfig>) -> Result<()> {
    let g = &cli.global;
    // Empty would mean the current directory: `init` would make a state
    // directory wherever the command happened to run.
    if g.data_dir.is_none() && std::env::var_os("SSEFS_DATA_DIR").is_some_and(|d| d.is_empty()) {
        return Err(Error::new(
            OssCode::InvalidArgument,
            "$SSEFS_DATA_DIR is empty: unset it or name a directory",
        ));
    }
    match cli.command {
        Command::Init { passphrase } if g.store()?.is_some() => {
            let store = g
                .store()?
                .ok_or_else(|| Error::new(OssCode::InternalError, "no store"))?;
            let src = g.store_root_source(passphrase)?;
            if passphrase && !matches!(src, RootKeySource::Passphrase(_)) {
                return Err(Error::new(OssCode::InvalidArgument, "no passphrase given"));
            }
            Engine::init_store(&*store, &src)?;
            let id = crate::kms::recorded_data_dir_id(&*store);
            let key = match (&src, id) {
                (RootKeySource::KeyDir(d), Some(id)) => {
                    format!(
                        "root key: {}\n",
                        crate::kms::location::key_file(d, &id).display()
                    )
                }
                (RootKeySource::File(p), _) => format!("root key: {}\n", p.display()),
                _ => "root key: derived from the passphrase\n".to_owned(),
            };
            out(&format!("initialised {}\n{key}", store.describe()))
        }
        Command::Init { passphrase } => {
            let dir = g.data_dir();
            let src = g.root_source(&dir, passphrase)?;
            if passphrase && !matches!(src, RootKeySource::Passphrase(_)) {
                return Err(Error::new(OssCode::InvalidArgument, "no passphrase given"));
            }
            Engine::init(&dir, &src)?;
            let id = crate::backend::StateDir::of_data_dir(&dir)
                .ok()
                .and_then(|s| crate::kms::recorded_data_dir_id(&s));
            let lines = crate::kms::location::describe(&dir, &src, id).join("\n");
            out(&format!("initialised {}\n{lines}\n", dir.display()))
        }
        Command::Bucket(b) => bucket::run(g, b),
        Command::Object(o) => object::run(g, o),
        Command::Kms(k) => kms::run(g, k),
        Command::Reencrypt { path } => {
            let e = g.open_engine()?;
            let (b, prefix) = match path.split_once('/') {
                Some((b, p)) => (b, Some(p).filter(|p| !p.is_empty())),
                None => (path.as_str(), None),
            };
            let b = BucketName::parse(b)?;
            let pb = ops::progress_bar(0, "reencrypt");
            let r = ops::reencrypt(&e, &Principal::current(), &b, prefix, &pb)?;
            finish_op(&r, "reencrypt", "rewritten")
        }
        Command::Rewrap { bucket } => {
            let e = g.open_engine()?;
            let b = bucket.as_deref().map(BucketName::parse).transpose()?;
            let pb = ops::progress_bar(0, "rewrap");
            let r = ops::rewrap(&e, &Principal::current(), b.as_ref(), &pb)?;
            finish_op(&r, "rewrap", "rewrapped")
        }
        Command::Verify { bucket } => {
            let e = g.open_engine()?;
            let b = bucket.as_deref().map(BucketName::parse).transpose()?;
            let pb = ops::progress_bar(0, "verify");
            let r = ops::verify(&e, &Principal::current(), b.as_ref(), &pb)?;
            finish_op(&r, "verify", "")
        }
        Command::Migrate { src, dst } => migrate(g, &src, &dst),
        Command::Status if g.is_store() => {
            let e = g.open_engine()?;
            out(&ops::status(&e)?.to_string())
        }
        Command::Status => {
            let dir = g.data_dir();
            let src = g.root_source(&dir, false)?;
            let e = Engine::open(&dir, &src)?;
            let mut text = ops::status(&e)?.to_string();
            for l in crate::kms::location::describe(&dir, &src, e.kms().data_dir_id()?) {
                text.push_str(&l);
                text.push('\n');
            }
            out(&text)
        }
        Command::RootKey(c) => rootkey::run(g, c),
        Command::Man { dir } => {
            std::fs::create_dir_all(&dir).ctx(dir.display())?;
            clap_mangen::generate_to(Cli::command(), &dir).ctx(dir.display())
        }
        Command::Mount {
            mountpoint,
            options,
            foreground,
        } => {
            let Some(mountpoint) = mountpoint.or_else(|| cfg.and_then(|c| c.mountpoint.clone()))
            else {
                return Err(Error::new(
                    OssCode::InvalidArgument,
                    "no mount point: give one, or `mountpoint` in the --config file",
                ));
            };
            let base = cfg.map(ServiceConfig::mount_opts).unwrap_or_default();
            let opts = base.with(&options)?;
            preflight::check(&mountpoint, &opts)?;
            // Create a missing mount point (but leave a dead mount, which
            // stats as ENOTCONN, to the stale-mount cleanup).
            if matches!(std::fs::metadata(&mountpoint), Err(e) if e.kind() == io::ErrorKind::NotFound)
            {
                std::fs::create_dir_all(&mountpoint).ctx(mountpoint.display())?;
            }
            if let Some(spec) = g.store_spec()? {
                return mount_store(g, spec, &mountpoint, &options, &opts, foreground);
            }
            let dir = g.data_dir();
            if foreground {
                let root = g.root_source(&dir, false)?;
                let id = crate::backend::StateDir::of_data_dir(&dir)
                    .ok()
                    .and_then(|s| crate::kms::recorded_data_dir_id(&s));
                for w in crate::kms::location::describe(&dir, &root, id) {
                    if let Some(w) = w.strip_prefix("warning: ") {
                        tracing::warn!("{w}");
                    }
                }
                crate::fuse::run_foreground(
                    &dir,
                    &root,
                    &mountpoint,
                    &opts,
                    || {
                        notify::ready(&mountpoint);
                        notify::spawn_watchdog(&mountpoint);
                    },
                    notify::stopping,
                )
            } else {
                let place = ["--data-dir".into(), OsString::from(dir.clone())];
                let (args, pass) = daemon_args(g, &place, &mountpoint, &options);
                let env = pass_env(pass.as_ref());
                crate::fuse::spawn_background(&dir, &mountpoint, &args, &env)
            }
        }
    }
}

/// The arguments of a mount daemon (`ssefs ... mount MP --foreground` is
/// what `fuse::spawn_*` runs): the same config file, then the same
/// command-line overrides, `place` (where the buckets are), and the
/// passphrase to hand it through its environment if we took ours from
/// there (it takes it out of its own in turn). Paths go as they are: a
/// name that is not UTF-8 must not become another name.
fn daemon_args(
    g: &GlobalArgs,
    place: &[OsString],
    mountpoint: &Path,
    options: &[String],
) -> (Vec<OsString>, Option<zeroize::Zeroizing<String>>) {
    let mut args: Vec<OsString> = Vec::new();
    if let Some(c) = &g.config {
        args.extend(["--config".into(), c.into()]);
    }
    args.extend(place.iter().cloned());
    if let Some(k) = &g.root_key {
        args.extend(["--root-key".into(), k.into()]);
    }
    if let Some(f) = &g.passphrase_file {
        args.extend(["--passphrase-file".into(), f.into()]);
    }
    if g.insecure_root_key_in_data_dir {
        args.push("--insecure-root-key-in-data-dir".into());
    }
    args.extend(["mount".into(), mountpoint.into()]);
    for o in options {
        args.extend(["-o".into(), o.into()]);
    }
    let pass = match (&g.passphrase_file, harden::passphrase_from_env()) {
        (None, Some(p)) => Some(p),
        _ => None,
    };
    (args, pass)
}

/// The daemon's environment: the passphrase, if `daemon_args` kept one.
fn pass_env(pass: Option<&zeroize::Zeroizing<String>>) -> Vec<(&'static str, &str)> {
    pass.map(|p| (harden::PASSPHRASE_ENV, p.as_str()))
        .into_iter()
        .collect()
}

/// `ssefs mount` of a store: in the foreground, or a daemon started as
/// for a data directory, logging to the host's state directory.
fn mount_store(
    g: &GlobalArgs,
    spec: crate::backend::s3::StoreSpec,
    mountpoint: &Path,
    options: &[String],
    opts: &crate::fuse::MountOpts,
    foreground: bool,
) -> Result<()> {
    if foreground {
        let store = std::sync::Arc::new(crate::backend::s3::S3Backend::open(&spec)?);
        let root = g.store_root_source(false)?;
        return crate::fuse::run_foreground_store(
            store,
            &root,
            mountpoint,
            opts,
            || {
                notify::ready(mountpoint);
                notify::spawn_watchdog(mountpoint);
            },
            notify::stopping,
        );
    }
    let place: Vec<OsString> = match &g.backend {
        Some(b) => vec!["--backend".into(), b.into()],
        None => Vec::new(),
    };
    let (args, pass) = daemon_args(g, &place, mountpoint, options);
    let env = pass_env(pass.as_ref());
    crate::backend::strict::create_private_dir(&spec.state_dir).ctx(spec.state_dir.display())?;
    crate::fuse::spawn_logged(&spec.state_dir.join("mount.log"), mountpoint, &args, &env)
}

/// `ssefs migrate SRC DST`.
fn migrate(g: &GlobalArgs, src: &str, dst: &str) -> Result<()> {
    use crate::backend::s3::{S3Backend, StoreSpec};
    use crate::backend::{Backend, PosixBackend};
    use std::sync::Arc;
    if g.backend.is_some() || g.data_dir.is_some() {
        return Err(Error::new(
            OssCode::InvalidArgument,
            "migrate names both places itself: drop --backend and --data-dir",
        ));
    }
    let table = g.backend_table.as_ref();
    let store = |url: &str| -> Result<Arc<dyn Backend>> {
        Ok(Arc::new(S3Backend::open(&StoreSpec::resolve(
            Some(url),
            table,
        )?)?))
    };
    // SRC, opened whole (keystore, grants, upgrade): its root key opens DST.
    let (src_engine, root) = if src.starts_with("s3://") {
        let root = g.store_root_source(false)?;
        (Engine::open_store(store(src)?, &root)?, root)
    } else {
        let dir = PathBuf::from(src);
        let root = g.root_source(&dir, false)?;
        (Engine::open(&dir, &root)?, root)
    };
    let dst_backend: Arc<dyn Backend> = if dst.starts_with("s3://") {
        store(dst)?
    } else {
        let dir = PathBuf::from(dst);
        if PosixBackend::initialised(&dir) {
            Arc::new(PosixBackend::open(&dir)?)
        } else {
            Arc::new(PosixBackend::create(&dir)?)
        }
    };
    let pb = ops::progress_bar(0, "migrate");
    let m = ops::migrate(&src_engine, &*dst_backend, &pb)?;
    pb.finish_and_clear();
    let mut s = String::new();
    for f in &m.failures {
        s.push_str(&format!("FAILED {}: {}\n", f.name, f.reason));
    }
    s.push_str(&format!(
        "migrate: {} buckets, {} objects copied, {} already there, {} failed\n",
        m.buckets,
        m.copied,
        m.present,
        m.failures.len()
    ));
    out(&s)?;
    // DST opened afresh, as its users will open it, and every chunk checked.
    drop(dst_backend);
    let dst_engine = if dst.starts_with("s3://") {
        Engine::open_store(store(dst)?, &root)?
    } else {
        Engine::open(Path::new(dst), &root)?
    };
    let pb = ops::progress_bar(0, "verify");
    let r = ops::verify(&dst_engine, &Principal::current(), None, &pb)?;
    if !m.failures.is_empty() {
        out(&format!("{}\n", r.summary("verify", "")))?;
        return Err(Error::new(
            OssCode::InternalError,
            format!(
                "migrate: {} objects could not be copied; run it again",
                m.failures.len()
            ),
        ));
    }
    finish_op(&r, "verify", "")
}

/// Prints an operation's failures, skipped objects and summary on stdout;
/// fails (exit 1) when any object failed or was skipped, so scripts and
/// timers notice (and can run it again).
fn finish_op(r: &ops::Report, op: &str, changed_word: &str) -> Result<()> {
    let mut s = String::new();
    for f in &r.failures {
        s.push_str(&format!("FAILED {}: {}\n", f.name, f.reason));
    }
    for b in &r.busy {
        s.push_str(&format!(
            "BUSY {b}: open for writing through a mount, skipped\n"
        ));
    }
    s.push_str(&r.summary(op, changed_word));
    s.push('\n');
    out(&s)?;
    if r.failures.is_empty() && r.busy.is_empty() {
        Ok(())
    } else if r.failures.is_empty() {
        Err(Error::new(
            OssCode::InternalError,
            format!(
                "{op}: {} objects busy (open for writing through a mount) were skipped; \
                 run `ssefs {op}` again once they are closed",
                r.busy.len()
            ),
        ))
    } else {
        let (code, what) = if op == "verify" {
            (OssCode::DataIntegrityError, "failed verification")
        } else {
            (OssCode::InternalError, "could not be processed")
        };
        Err(Error::new(
            code,
            format!("{op}: {} objects {what}", r.failures.len()),
        ))
    }
}

/// Entry point of the binary: one line on stderr and a non-zero exit per error.
pub fn main() -> ExitCode {
    // First, while the process has one thread: every command may hold keys.
    harden::no_core_dumps();
    harden::scrub_env();
    let argv: Vec<OsString> = std::env::args_os().collect();
    let argv = match helper::translate(&argv) {
        None => argv,
        Some(Ok(HelperCall::Run(args))) => args,
        Some(Ok(HelperCall::Fake)) => return ExitCode::SUCCESS,
        Some(Err(e)) => return fail(&e),
    };
    let mut cli = match Cli::try_parse_from(argv) {
        Ok(c) => c,
        Err(e) => return usage_error(&e),
    };
    // Before logging starts: the config file may set the level. Its errors
    // still reach stderr as one line.
    let cfg = match cli.global.load_config() {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let default = if matches!(cli.command, Command::Mount { .. }) {
        "info"
    } else {
        "warn"
    };
    init_logging(
        cfg.as_ref()
            .and_then(|c| c.log_level.as_deref())
            .unwrap_or(default),
    );
    match run_with(cli, cfg.as_ref()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// A command line clap refuses (unknown or missing option, a value that is
/// not UTF-8 or not a number): one line with an OSS code, as for every other
/// error, and exit status 2 as for usage errors. Help and version requests
/// print as usual.
fn usage_error(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
    }
    let text = e.render().to_string();
    // clap's text: "error: WHAT\n  DETAIL\n\nUsage: ...\n\nFor more ...".
    let what = text.split("\n\n").next().unwrap_or_default();
    let what = what.strip_prefix("error: ").unwrap_or(what);
    let line = what.split_whitespace().collect::<Vec<_>>().join(" ");
    let err = Error::new(OssCode::InvalidArgument, format!("{line} (see --help)"));
    eprintln!("ssefs: {err}");
    ExitCode::from(2)
}

fn fail(e: &Error) -> ExitCode {
    tracing::debug!(code = e.code.as_str(), "command failed");
    eprintln!("ssefs: {e}");
    ExitCode::from(1)
}

/// tracing to stderr, which journald records under systemd; RUST_LOG
/// overrides `default` (the config file's log_level, else info for mounts
/// and warn for other commands).
pub fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&io::stderr()))
        // A line that cannot be written (the mount log's disk is full) is
        // dropped: reporting that would go to the same stderr, and a failed
        // eprintln! panics, which killed the daemon.
        .log_internal_errors(false)
        .try_init();
}
