//! `/proc/self/mountinfo` (proc(5)), parsed in one place: the FUSE layer
//! asks whether a path is one of our live mounts and which device it has;
//! `ssefs status` lists the mounts of a data directory. Fields are kept as
//! bytes until unescaped: mount points and sources need not be UTF-8.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// One mount, as a mountinfo line describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Field 1: the mount id.
    pub mount_id: u64,
    /// Field 3: the device (major, minor) of the mounted filesystem.
    pub dev: Option<(u32, u32)>,
    /// Field 5, unescaped.
    pub mount_point: PathBuf,
    /// Field 6: the per-mount options.
    pub options: String,
    /// First field after ` - `.
    pub fstype: String,
    /// Second field after ` - `, unescaped.
    pub source: PathBuf,
}

impl Entry {
    /// A FUSE mount (`fuse`, or `fuse.NAME` as ours are).
    pub fn is_fuse(&self) -> bool {
        self.fstype == "fuse" || self.fstype.starts_with("fuse.")
    }
}

/// The mounts of this process's namespace, oldest first; none when
/// mountinfo cannot be read (no /proc).
pub fn read() -> Vec<Entry> {
    std::fs::read("/proc/self/mountinfo")
        .map(|t| parse(&t))
        .unwrap_or_default()
}

/// Parses mountinfo text; lines that do not parse are skipped.
pub fn parse(text: &[u8]) -> Vec<Entry> {
    text.split(|&b| b == b'\n').filter_map(line).collect()
}

fn line(l: &[u8]) -> Option<Entry> {
    let fields: Vec<&[u8]> = l.split(|&b| b == b' ').collect();
    // Optional fields end at a lone "-"; the type and source follow it.
    let sep = fields.iter().position(|f| *f == b"-")?;
    let text = |f: &[u8]| std::str::from_utf8(f).ok().map(str::to_owned);
    let dev = text(fields.get(2)?).and_then(|d| {
        let (maj, min) = d.split_once(':')?;
        Some((maj.parse().ok()?, min.parse().ok()?))
    });
    Some(Entry {
        mount_id: text(fields.first()?)?.parse().ok()?,
        dev,
        mount_point: path(fields.get(4)?),
        options: text(fields.get(5)?)?,
        fstype: text(fields.get(sep + 1)?)?,
        source: path(fields.get(sep + 2)?),
    })
}

/// A field as a path, octal escapes undone.
fn path(f: &[u8]) -> PathBuf {
    PathBuf::from(OsString::from_vec(unescape(f)))
}

/// Undoes mountinfo's octal escapes (`\040` for a space, ...).
pub fn unescape(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) if b[i] == b'\\' => {
                let v = d.iter().fold(0u32, |v, c| v * 8 + u32::from(c - b'0'));
                out.push(v as u8);
                i += 4;
            }
            _ => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    out
}

/// The FUSE mounts whose mount point is `path` (canonicalized), oldest
/// first.
pub fn fuse_mounts_at(path: &Path) -> Vec<Entry> {
    let Ok(canon) = path.canonicalize() else {
        return Vec::new();
    };
    read()
        .into_iter()
        .filter(|e| {
            e.is_fuse() && e.mount_point.as_os_str().as_bytes() == canon.as_os_str().as_bytes()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_with_escapes_and_optional_fields() {
        let text = b"36 35 98:7 / /mnt/a\\040b rw,nosuid - fuse.ssefs /data/dir rw,user_id=0\n\
                     38 35 0:51 / /mnt/d ro,relatime shared:1 master:2 - ext4 /dev/x\\134y rw\n\
                     garbage\n";
        let e = parse(text);
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].mount_id, 36);
        assert_eq!(e[0].dev, Some((98, 7)));
        assert_eq!(e[0].mount_point, PathBuf::from("/mnt/a b"));
        assert_eq!(e[0].options, "rw,nosuid");
        assert_eq!((e[0].fstype.as_str(), e[0].is_fuse()), ("fuse.ssefs", true));
        assert_eq!(e[0].source, PathBuf::from("/data/dir"));
        assert_eq!((e[1].fstype.as_str(), e[1].is_fuse()), ("ext4", false));
        assert_eq!(e[1].source, PathBuf::from("/dev/x\\y"));
        assert_eq!(e[1].options, "ro,relatime");
    }

    #[test]
    fn unescape_leaves_what_is_not_an_octal_escape() {
        assert_eq!(unescape(b"a\\040b\\04\\x"), b"a b\\04\\x");
        assert_eq!(unescape(b"\\377"), [0xff]);
    }
}
