//! Where the root key lives (docs/SECURITY.md, "Where the root key
//! lives"): apart from the data directory by default, so that a copy,
//! backup or snapshot of the data directory alone decrypts nothing.
//!
//! With no key named, the key is looked for in this order: the systemd
//! credential `$CREDENTIALS_DIRECTORY/root.key`; `KEY_DIR/ID.key`, named
//! after the data directory's id, where KEY_DIR is `$SSEFS_KEY_DIR`, else
//! /etc/ssefs for root, else `$XDG_CONFIG_HOME/ssefs` (`~/.config/ssefs`);
//! last the old layout's `DATA_DIR/.ssefs/root.key`, which keeps working
//! and which `ssefs status` warns about.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use uuid::Uuid;

use super::rootkey;
use super::RootKeySource;
use crate::crypto::{fill_random, SecretKey};
use crate::error::{Error, IoContext, OssCode, Result};

/// The old layout's key file, inside the state directory.
pub const LEGACY_KEY: &str = ".ssefs/root.key";
/// The systemd credentials' names, in the order they are looked for:
/// the sealed one (LoadCredentialEncrypted=), then the plain file.
pub const CREDENTIALS: [&str; 2] = ["root.key", "root.key.plain"];

/// The directory new root keys go to (see the module comment).
pub fn key_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("SSEFS_KEY_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d));
    }
    if nix::unistd::geteuid().is_root() {
        return Ok(PathBuf::from("/etc/ssefs"));
    }
    // XDG: a relative $XDG_CONFIG_HOME is invalid and ignored.
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
    {
        return Ok(x.join("ssefs"));
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(h) => Ok(Path::new(&h).join(".config/ssefs")),
        None => Err(Error::new(
            OssCode::InvalidArgument,
            "no place for the root key: $HOME is not set; set $SSEFS_KEY_DIR or name the key \
             with --root-key",
        )),
    }
}

/// `DIR/ID.key`.
pub fn key_file(dir: &Path, id: &Uuid) -> PathBuf {
    dir.join(format!("{}.key", id.hyphenated()))
}

/// The old layout's key file of `data_dir`.
pub fn legacy_key(data_dir: &Path) -> PathBuf {
    data_dir.join(LEGACY_KEY)
}

/// What the unit's `SetCredential=` fallback passes for a credential file
/// that is not there.
pub const NO_CREDENTIAL: &[u8] = b"none";

/// The systemd credential, if this process was given one. An empty one, or
/// the unit's "none", is not a key.
pub fn credential() -> Option<PathBuf> {
    let dir = std::env::var_os("CREDENTIALS_DIRECTORY")?;
    CREDENTIALS
        .iter()
        .map(|c| Path::new(&dir).join(c))
        .find(|p| match fs::metadata(p) {
            Ok(m) if m.len() == 0 => false,
            Ok(m) if m.len() == NO_CREDENTIAL.len() as u64 => {
                fs::read(p).is_ok_and(|b| b != NO_CREDENTIAL)
            }
            Ok(_) => true,
            Err(_) => false,
        })
}

/// Where the root key comes from when none is named. `in_data_dir` asks
/// for a new data directory's key to go inside it (the old layout).
pub fn default_source(data_dir: &Path, in_data_dir: bool) -> Result<RootKeySource> {
    if let Some(p) = credential() {
        return Ok(RootKeySource::File(p));
    }
    let state = data_dir.join(super::super::engine::STATE_DIR);
    let legacy = legacy_key(data_dir);
    let initialised = state.join(super::KEYSTORE_FILE).exists();
    if !initialised {
        if in_data_dir {
            return Ok(RootKeySource::File(legacy));
        }
        return Ok(RootKeySource::KeyDir(key_dir()?));
    }
    let id = crate::backend::StateDir::open(&state)
        .ok()
        .and_then(|s| super::recorded_data_dir_id(&s));
    // A key in the key directory wins over a stale copy left in the data
    // directory by an interrupted `root-key move`.
    if let (Some(id), Ok(dir)) = (id, key_dir()) {
        if key_file(&dir, &id).exists() || !legacy.exists() {
            return Ok(RootKeySource::KeyDir(dir));
        }
    }
    Ok(RootKeySource::File(legacy))
}

/// Creates the key directory (0700) if missing, and refuses one that
/// another user owns or that group or others may write (StrictModes).
pub fn ensure_key_dir(dir: &Path) -> Result<()> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).ctx(parent.display())?;
    }
    match DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io(format!("creating {}", dir.display()), e)),
    }
    // Owned by us or root, not writable by group or others, no symlink:
    // the same rule as for the data directory.
    crate::backend::strict::check(dir)
}

/// Whether `inner` is `outer` or below it (both made absolute and
/// resolved where they exist).
fn is_within(inner: &Path, outer: &Path) -> bool {
    let canon = |p: &Path| {
        p.parent()
            .and_then(|d| fs::canonicalize(d).ok())
            .and_then(|d| p.file_name().map(|n| d.join(n)))
            .unwrap_or_else(|| p.to_path_buf())
    };
    let outer = fs::canonicalize(outer).unwrap_or_else(|_| outer.to_path_buf());
    canon(inner).starts_with(outer)
}

/// What `ssefs status` says about the root key: where it is, and the
/// warnings (each with the command that fixes it).
pub fn describe(data_dir: &Path, source: &RootKeySource, id: Option<Uuid>) -> Vec<String> {
    let path = match source {
        RootKeySource::Passphrase(_) => {
            return vec!["root key: derived from the passphrase (Argon2id); not stored".into()]
        }
        RootKeySource::File(p) => p.clone(),
        RootKeySource::KeyDir(d) => match id {
            Some(id) => key_file(d, &id),
            None => return vec![format!("root key: in {} (no id recorded)", d.display())],
        },
    };
    let mut out = vec![format!("root key: {}", path.display())];
    let fix = format!(
        "ssefs --data-dir {} root-key move",
        shell_word(&data_dir.display().to_string())
    );
    if is_within(&path, data_dir) {
        out.push(format!(
            "warning: the root key is inside the data directory, so every copy, backup or \
             snapshot of it can be decrypted; move it out: {fix}"
        ));
    } else if let (Ok(k), Ok(d)) = (fs::metadata(&path), fs::metadata(data_dir)) {
        if k.dev() == d.dev() {
            out.push(format!(
                "warning: the root key is on the same filesystem as the data directory, so an \
                 image or snapshot of that filesystem holds both; move it to another one \
                 ({fix} --to DIR) or seal it with systemd-creds (README, \"Where the root key \
                 lives\")"
            ));
        }
    }
    let legacy = legacy_key(data_dir);
    if legacy != path && legacy.exists() {
        out.push(format!(
            "warning: an old copy of the root key remains at {}; remove it: {fix}",
            legacy.display()
        ));
    }
    out
}

/// Quotes `s` for a shell if it needs it.
fn shell_word(s: &str) -> String {
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-+=:,@".contains(&b))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Test hook: `SSEFS_TEST_KILL_AT=STEP` kills the process (SIGKILL) at that
/// step of `move_key`, as a crash or power loss would stop it.
fn kill_point(step: &str) {
    if std::env::var_os("SSEFS_TEST_KILL_AT").is_some_and(|s| s == step) {
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}

/// Puts `key` at `dest` durably, or finds it there already. Through a
/// temp file renamed into place, so a crash leaves either no `dest` or a
/// whole one (never a short file that would hide the old key).
pub fn install_key(dest: &Path, key: &SecretKey) -> Result<()> {
    let ctx = || format!("writing root key file {}", dest.display());
    if dest.exists() {
        let have = rootkey::load_file(dest)?;
        if have == *key {
            return Ok(());
        }
        return Err(Error::new(
            OssCode::InvalidArgument,
            format!(
                "{} exists and holds another key; nothing was changed",
                dest.display()
            ),
        )
        .resource(dest.display().to_string()));
    }
    let dir = dest.parent().unwrap_or(Path::new("."));
    let mut r = [0u8; 6];
    fill_random(&mut r);
    let suffix: String = r.iter().map(|b| format!("{b:02x}")).collect();
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned());
    let name = name.unwrap_or_default();
    // Temp files of an earlier, interrupted attempt hold the key too.
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with(&format!(".{name}.")) && n.ends_with(".tmp") {
                let _ = fs::remove_file(e.path());
            }
        }
    }
    let tmp = dir.join(format!(".{name}.{suffix}.tmp"));
    rootkey::write_key_file(&tmp, key).ctx(ctx())?;
    kill_point("temp-written");
    // A second writer may have made `dest` since the check: never replace.
    let linked = fs::hard_link(&tmp, dest);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return install_key(dest, key),
        Err(e) => return Err(Error::io(ctx(), e)),
    }
    File::open(dir).and_then(|d| d.sync_all()).ctx(ctx())?;
    kill_point("installed");
    // Read back what the disk holds now.
    if rootkey::load_file(dest)? != *key {
        return Err(Error::new(
            OssCode::InternalError,
            format!("{} does not read back as written", dest.display()),
        ));
    }
    Ok(())
}

/// Removes the old key file `old` once the key is safe elsewhere: its
/// bytes are overwritten and synced first (on filesystems that write in
/// place), then it is unlinked and the directory synced.
pub fn retire_key(old: &Path, key: &SecretKey) -> Result<()> {
    let ctx = || format!("removing old root key file {}", old.display());
    // Only ever the same key (or what an interrupted retire left of it,
    // zeros): anything else is not ours to destroy.
    let have = rootkey::load_file(old)?;
    let wiped = have.expose().iter().all(|b| *b == 0);
    if !wiped && have != *key {
        return Err(Error::new(
            OssCode::InvalidArgument,
            format!("{} holds another key; left as it is", old.display()),
        ));
    }
    if !wiped {
        let mut f = OpenOptions::new().write(true).open(old).ctx(ctx())?;
        f.write_all(&[0u8; rootkey::ROOT_KEY_LEN])
            .and_then(|_| f.sync_all())
            .ctx(ctx())?;
        drop(f);
        kill_point("old-wiped");
    }
    fs::remove_file(old).ctx(ctx())?;
    if let Some(dir) = old.parent() {
        File::open(dir).and_then(|d| d.sync_all()).ctx(ctx())?;
    }
    Ok(())
}
