//! `ssefs root-key ...`: move the root key out of the data directory,
//! export it as text for paper, import it back (docs/SECURITY.md, "Where
//! the root key lives"; the paper format is docs/FORMAT.md §7.2).

use std::io::Read;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use zeroize::Zeroizing;

use super::{out, GlobalArgs};
use crate::backend::StateDir;
use crate::engine::Engine;
use crate::error::{Error, IoContext, OssCode, Result};
use crate::kms::{self, location, paper, RootKeySource};

#[derive(Subcommand, Debug)]
pub enum RootKeyCmd {
    /// Move the root key file to KEY_DIR/ID.key (see --root-key), apart
    /// from the data directory: written and synced there, checked against
    /// the keystore, and only then the old file overwritten and removed.
    Move {
        /// Another directory for it [default: $SSEFS_KEY_DIR, /etc/ssefs
        /// for root, else $XDG_CONFIG_HOME/ssefs]; later commands then need
        /// --root-key naming the new file
        #[arg(long, value_name = "DIR")]
        to: Option<PathBuf>,
    },
    /// Print the root key as text to keep on paper: four lines of hex
    /// digits, each with a check that catches a typo, and a sum.
    Export,
    /// Restore the root key from the paper text (FILE, or stdin), to
    /// KEY_DIR/ID.key or the --root-key path. The key is checked against
    /// the keystore before anything is written.
    Import { file: Option<PathBuf> },
}

pub fn run(g: &GlobalArgs, cmd: RootKeyCmd) -> Result<()> {
    match cmd {
        RootKeyCmd::Move { to } => {
            // A store's key is never beside its data: there is nothing to move.
            g.local_only("root-key move")?;
            move_key(g, to)
        }
        RootKeyCmd::Export => {
            let e = g.open_engine()?;
            let key = e.kms().root_key_material()?;
            out(&paper::encode(&key, e.kms().data_dir_id()?)?)
        }
        RootKeyCmd::Import { file } => import(g, file),
    }
}

fn move_key(g: &GlobalArgs, to: Option<PathBuf>) -> Result<()> {
    let dir = g.data_dir();
    let src = g.root_source(&dir, false)?;
    // Opening checks the key against the keystore (and gives an old
    // keystore its id).
    let e = Engine::open(&dir, &src)?;
    let key = e.kms().root_key_material()?;
    let id = e.kms().data_dir_id()?.ok_or_else(|| {
        Error::new(
            OssCode::InternalError,
            "the keystore could not be given a data directory id (is it writable?)",
        )
    })?;
    let old = match &src {
        RootKeySource::File(p) => p.clone(),
        RootKeySource::KeyDir(d) => location::key_file(d, &id),
        // root_key_material refused these already.
        RootKeySource::Passphrase(_) => {
            return Err(Error::new(OssCode::InvalidArgument, "no key file to move"))
        }
    };
    if location::credential().as_deref() == Some(old.as_path()) {
        return Err(Error::new(
            OssCode::InvalidArgument,
            "the root key comes from a systemd credential: there is no file here to move",
        ));
    }
    let to_default = to.is_none();
    let to = match to {
        Some(d) => d,
        None => location::key_dir()?,
    };
    let dest = location::key_file(&to, &id);
    let inside = std::fs::canonicalize(&dir)
        .ok()
        .zip(std::fs::canonicalize(to.parent().unwrap_or(Path::new("/"))).ok())
        .is_some_and(|(d, t)| t.join(to.file_name().unwrap_or_default()).starts_with(d));
    if inside {
        return Err(Error::new(
            OssCode::InvalidArgument,
            format!(
                "{} is inside the data directory: choose a directory apart from it",
                to.display()
            ),
        ));
    }
    location::ensure_key_dir(&to)?;
    location::install_key(&dest, &key)?;
    // The new file must open this keystore before the old one goes.
    kms::check_root_key(&StateDir::of_data_dir(&dir)?, &kms::load_key_file(&dest)?)?;
    let mut removed = Vec::new();
    let legacy = location::legacy_key(&dir);
    for p in [old, legacy] {
        if p != dest && p.exists() && !removed.contains(&p) {
            location::retire_key(&p, &key)?;
            removed.push(p);
        }
    }
    let mut s = format!("root key: {}\n", dest.display());
    for p in &removed {
        s.push_str(&format!("removed {}\n", p.display()));
    }
    if !removed.is_empty() {
        s.push_str(
            "backups and snapshots made before still hold the old file: destroy them, or treat \
             their data as exposed\n",
        );
    }
    if g.root_key.is_some() && removed.iter().any(|p| Some(p) == g.root_key.as_ref()) {
        s.push_str(
            "the old path was named by --root-key, $SSEFS_ROOT_KEY or root_key in the config \
             file: drop that setting, ssefs now finds the key by itself\n",
        );
    }
    if !to_default {
        s.push_str(&format!(
            "not the default place: name it with --root-key {} (or root_key in the config file)\n",
            dest.display()
        ));
    }
    out(&s)
}

fn import(g: &GlobalArgs, file: Option<PathBuf>) -> Result<()> {
    let mut text = Zeroizing::new(String::new());
    match &file {
        Some(f) if f.as_os_str() != "-" => {
            std::fs::File::open(f)
                .and_then(|mut r| r.read_to_string(&mut text))
                .ctx(f.display())?;
        }
        _ => {
            std::io::stdin()
                .lock()
                .read_to_string(&mut text)
                .ctx("stdin")?;
        }
    }
    let (key, _) = paper::decode(&text)?;
    // Nothing is written unless the key opens this keystore.
    let id = match g.store()? {
        Some(store) => kms::check_root_key(&*store, &key)?,
        None => kms::check_root_key(&StateDir::of_data_dir(&g.data_dir())?, &key)?,
    };
    let dest =
        match (&g.root_key, id) {
            (Some(p), _) => p.clone(),
            (None, Some(id)) => {
                let kd = location::key_dir()?;
                location::ensure_key_dir(&kd)?;
                location::key_file(&kd, &id)
            }
            (None, None) => return Err(Error::new(
                OssCode::InvalidArgument,
                "the keystore names no data directory id: say where the key goes with --root-key",
            )),
        };
    location::install_key(&dest, &key)?;
    out(&format!("root key restored to {}\n", dest.display()))
}
