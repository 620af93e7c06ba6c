//! Per-bucket chunk sizes through real mounts: `user.ssefs.chunk-size` and
//! `ssefs bucket chunk-size`, set only on empty buckets; sizes from the
//! file length and the bucket's chunk size; renames across buckets; objects
//! moved by hand; fsx on a 4 KiB bucket.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use crate::mount::{xattr_remove, xattr_set, Mount};
use crate::stress::{ensure_fsx, script};
use crate::util::{env_count, seeded_bytes, test_seed, DataDir};

const CHUNK: &str = "user.ssefs.chunk-size";
const SSE: &str = "user.oss.server-side-encryption";
/// The chunk sizes the format allows, in bytes, and their header byte.
const SIZES: [(u64, u8); 3] = [(4096, 12), (16384, 14), (65536, 16)];

/// Byte 11 of an object's backend file: log2 of its chunk size.
fn header_shift(backend: &Path) -> u8 {
    fs::read(backend).unwrap()[11]
}

/// The backend length of `plain` bytes in chunks of `c` (FORMAT.md §3.2)
/// in wide slots (§3.1: 40 bytes of overhead), as every bucket made by
/// this version has.
fn backend_len(plain: u64, c: u64) -> u64 {
    backend_len_in(plain, c, 40)
}

/// `backend_len` with `overhead` bytes a slot: 28 narrow, 40 wide.
fn backend_len_in(plain: u64, c: u64, overhead: u64) -> u64 {
    let (full, rem) = (plain / c, plain % c);
    128 + full * (c + overhead) + if rem == 0 { 0 } else { rem + overhead }
}

/// Byte 12 of an object's backend file: its slot format (0 narrow, 1 wide).
fn header_slot_format(backend: &Path) -> u8 {
    fs::read(backend).unwrap()[12]
}

/// The mount log from byte `from` on.
fn log_since(m: &Mount, from: usize) -> String {
    let log = fs::read(m.d.data().join(".ssefs/mount.log")).unwrap_or_default();
    String::from_utf8_lossy(&log[from.min(log.len())..]).into_owned()
}

fn log_len(m: &Mount) -> usize {
    fs::metadata(m.d.data().join(".ssefs/mount.log")).map_or(0, |m| m.len() as usize)
}

/// The backend as it stands, less the mount log (which refusals write).
fn backend(m: &Mount) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    crate::util::snapshot(&m.d.data())
        .into_iter()
        .filter(|(p, _)| !p.ends_with(".ssefs/mount.log"))
        .collect()
}

#[test]
fn the_chunk_size_is_set_and_read_on_an_empty_bucket() {
    let m = Mount::new(&[]);
    fs::create_dir(m.p("small")).unwrap();
    assert_eq!(m.getfattr("small", CHUNK).as_deref(), Ok("16384"));
    m.setfattr("small", CHUNK, "4096").unwrap();
    assert_eq!(m.getfattr("small", CHUNK).as_deref(), Ok("4096"));
    // Besides its MAC line (FORMAT.md §8.1).
    assert_eq!(
        fs::read_to_string(m.backend("small/.ssefs-bucket.toml"))
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with("mac = "))
            .collect::<Vec<_>>(),
        ["chunk_size = 4096", "slot_format = \"wide\""]
    );
    // Listed once set, as the rule's names are.
    let list = Command::new("getfattr")
        .args(["-d", "-m", "-"])
        .arg(m.p("small"))
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(list.contains("user.ssefs.chunk-size=\"4096\""), "{list}");

    m.setfattr("small", SSE, "AES256").unwrap();
    let data = seeded_bytes(1, 10_000);
    fs::write(m.p("small/f"), &data).unwrap();
    assert_eq!(header_shift(&m.backend("small/f")), 12);
    assert_eq!(
        fs::metadata(m.backend("small/f")).unwrap().len(),
        backend_len(10_000, 4096)
    );
    assert_eq!(fs::metadata(m.p("small/f")).unwrap().len(), 10_000);
    assert_eq!(fs::read(m.p("small/f")).unwrap(), data);
    // On a file it says how the object is stored, and is read-only.
    assert_eq!(m.getfattr("small/f", CHUNK).as_deref(), Ok("4096"));
    assert_eq!(m.setfattr("small/f", CHUNK, "4096"), Err(libc::ENOTSUP));
    assert_eq!(m.getfattr("", CHUNK), Err(libc::ENOTSUP));

    // The CLI sees the same, while mounted.
    let out = m.d.run(&["bucket", "chunk-size", "get", "small"]).ok();
    assert_eq!(out.stdout, "4096\n");
    let st = m.d.run(&["status"]).ok();
    assert!(
        st.stdout
            .contains("small\trule: AES256\tobjects: 1\tchunk size: 4096"),
        "{}",
        st.stdout
    );
}

#[test]
fn the_chunk_size_of_a_bucket_holding_objects_cannot_change() {
    let m = Mount::new(&[]);
    fs::create_dir(m.p("full")).unwrap();
    fs::write(m.p("full/o"), b"x").unwrap();
    let before = backend(&m);
    let at = log_len(&m);
    assert_eq!(m.setfattr("full", CHUNK, "4096"), Err(libc::ENOTEMPTY));
    let log = log_since(&m, at);
    assert!(
        log.lines()
            .any(|l| l.contains("BucketNotEmpty") && l.contains("path=\"full\"")),
        "no log line with the code and the bucket: {log}"
    );
    assert_eq!(backend(&m), before, "a refusal changes nothing");
    assert_eq!(m.getfattr("full", CHUNK).as_deref(), Ok("16384"));
    // Setting the size it has changes nothing, so it is no error.
    m.setfattr("full", CHUNK, "16384").unwrap();
    assert_eq!(xattr_remove(&m.p("full"), CHUNK), Ok(()));
    m.d.run(&["bucket", "chunk-size", "put", "full", "65536"])
        .fails_with("BucketNotEmpty");
    assert_eq!(backend(&m), before);

    // Emptied, it can change; with an object again, it cannot go back.
    fs::remove_file(m.p("full/o")).unwrap();
    m.setfattr("full", CHUNK, "65536").unwrap();
    fs::write(m.p("full/o"), b"y").unwrap();
    assert_eq!(header_shift(&m.backend("full/o")), 16);
    assert_eq!(xattr_remove(&m.p("full"), CHUNK), Err(libc::ENOTEMPTY));
    assert_eq!(m.getfattr("full", CHUNK).as_deref(), Ok("65536"));
    fs::remove_file(m.p("full/o")).unwrap();
    xattr_remove(&m.p("full"), CHUNK).unwrap();
    assert_eq!(m.getfattr("full", CHUNK).as_deref(), Ok("16384"));
}

/// The conventions of badinput.rs: every bad value is EINVAL with a log
/// line naming the code and the bucket, and changes nothing.
#[test]
fn bad_chunk_size_values_are_refused_with_einval_and_change_nothing() {
    let m = Mount::new(&[]);
    fs::create_dir(m.p("b-c")).unwrap();
    let mut values: Vec<Vec<u8>> = [
        "",
        "0",
        "1",
        "4095",
        "4097",
        "8192",
        "32768",
        "131072",
        "1048576",
        "04096",
        "+4096",
        "-4096",
        " 4096",
        "4096 ",
        "\t4096",
        "4096\n",
        "4096\0",
        "4k",
        "4K",
        "4KiB",
        "16k",
        "0x1000",
        "4096.0",
        "4e3",
        "16384,4096",
        "default",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    values.push(b"\xff".to_vec());
    values.push(b"4096\xff".to_vec());
    values.push("4".repeat(65536).into_bytes());
    let before = backend(&m);
    let mut failures = Vec::new();
    for v in &values {
        let what = format!("{:?}", String::from_utf8_lossy(&v[..v.len().min(20)]));
        let at = log_len(&m);
        match xattr_set(&m.p("b-c"), CHUNK, v) {
            Ok(()) => failures.push(format!("{what}: accepted")),
            Err(e) if e != libc::EINVAL => failures.push(format!("{what}: errno {e}")),
            Err(_) => {
                let log = log_since(&m, at);
                if !log
                    .lines()
                    .any(|l| l.contains("InvalidArgument") && l.contains("path=\"b-c\""))
                {
                    failures.push(format!("{what}: no log line with the code: {log}"));
                }
                if log.lines().any(|l| l.len() > 4096) {
                    failures.push(format!("{what}: an over-long log line"));
                }
            }
        }
        if backend(&m) != before {
            failures.push(format!("{what}: changed the backend"));
            break;
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(m.getfattr("b-c", CHUNK).as_deref(), Ok("16384"));
    // The CLI: one line with the code, exit 1, nothing created.
    for v in ["4097", "4k", " 4096", ""] {
        m.d.run(&["bucket", "create", "b-new", "--chunk-size", v])
            .fails_with("InvalidArgument");
        assert!(!m.backend("b-new").exists());
        m.d.run(&["bucket", "chunk-size", "put", "b-c", v])
            .fails_with("InvalidArgument");
    }
    assert_eq!(backend(&m), before);
}

/// stat, from the file length and the bucket's chunk size alone, shows
/// every size right in buckets of every chunk size, after a remount too
/// (nothing cached), and the bytes read back.
#[test]
fn stat_shows_the_right_sizes_for_every_chunk_size() {
    let m = Mount::new(&[]);
    let lens = [
        0u64, 1, 28, 29, 4095, 4096, 4097, 8192, 16383, 16384, 16385, 65535, 65536, 65537, 200_001,
    ];
    for (c, shift) in SIZES {
        let b = format!("c{c}");
        fs::create_dir(m.p(&b)).unwrap();
        m.setfattr(&b, CHUNK, &c.to_string()).unwrap();
        m.setfattr(&b, SSE, "SM4").unwrap();
        for n in lens {
            let f = format!("{b}/f{n}");
            fs::write(m.p(&f), seeded_bytes(n, n as usize)).unwrap();
            let len = fs::metadata(m.backend(&f)).unwrap().len();
            if n > 0 {
                assert_eq!(header_shift(&m.backend(&f)), shift, "{f}");
                assert_eq!(len, backend_len(n, c), "{f}");
            }
        }
    }
    m.unmount();
    m.mount(&[]);
    for (c, _) in SIZES {
        for n in lens {
            let f = format!("c{c}/f{n}");
            assert_eq!(fs::metadata(m.p(&f)).unwrap().len(), n, "{f}");
            assert_eq!(
                fs::read(m.p(&f)).unwrap(),
                seeded_bytes(n, n as usize),
                "{f}"
            );
        }
        // ls -l agrees (READDIRPLUS).
        let ls = Command::new("ls")
            .arg("-ln")
            .arg(m.p(&format!("c{c}")))
            .output()
            .unwrap();
        let ls = String::from_utf8_lossy(&ls.stdout);
        for n in lens {
            assert!(
                ls.lines().any(|l| l.ends_with(&format!(" f{n}"))
                    && l.split_whitespace().nth(4) == Some(&n.to_string())),
                "c{c}/f{n}: {ls}"
            );
        }
    }
}

/// Objects never move between buckets with a rename (each bucket has its
/// rule and chunk size): EXDEV, and `mv` copies, re-encrypting with the
/// destination's chunk size. Within a bucket a rename stays a rename.
#[test]
fn renames_across_buckets_of_different_chunk_sizes_are_exdev_and_mv_copies() {
    let m = Mount::new(&[]);
    for (b, c) in [("small", "4096"), ("std", "16384"), ("small2", "4096")] {
        fs::create_dir(m.p(b)).unwrap();
        m.setfattr(b, CHUNK, c).unwrap();
        m.setfattr(b, SSE, "AES256").unwrap();
    }
    let data = seeded_bytes(7, 50_000);
    fs::write(m.p("small/f"), &data).unwrap();
    let ino = fs::metadata(m.backend("small/f")).unwrap().ino();
    for dst in ["std/f", "small2/f"] {
        let e = fs::rename(m.p("small/f"), m.p(dst)).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EXDEV), "{dst}");
        assert_eq!(fs::read(m.p("small/f")).unwrap(), data);
    }
    fs::rename(m.p("small/f"), m.p("small/g")).unwrap();
    assert_eq!(fs::metadata(m.backend("small/g")).unwrap().ino(), ino);

    let st = Command::new("mv")
        .arg(m.p("small/g"))
        .arg(m.p("std/g"))
        .status()
        .unwrap();
    assert!(st.success());
    assert!(!m.p("small/g").exists());
    assert_eq!(fs::read(m.p("std/g")).unwrap(), data);
    assert_eq!(fs::metadata(m.p("std/g")).unwrap().len(), 50_000);
    assert_eq!(header_shift(&m.backend("std/g")), 14);
    assert_eq!(
        fs::metadata(m.backend("std/g")).unwrap().len(),
        backend_len(50_000, 16384)
    );
    // And back: 4 KiB chunks again.
    let st = Command::new("mv")
        .arg(m.p("std/g"))
        .arg(m.p("small/h"))
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(header_shift(&m.backend("small/h")), 12);
    assert_eq!(fs::read(m.p("small/h")).unwrap(), data);
    m.d.run(&["verify"]).ok();
}

/// A backend file moved by hand into a bucket of another chunk size would
/// show a wrong size and read wrong bytes were it taken at its bucket's
/// layout: it fails to open (EIO) with a log line naming it.
#[test]
fn an_object_moved_by_hand_to_another_chunk_size_fails_with_eio() {
    let m = Mount::new(&[]);
    fs::create_dir(m.p("std")).unwrap();
    fs::create_dir(m.p("small")).unwrap();
    m.setfattr("small", CHUNK, "4096").unwrap();
    m.setfattr("std", SSE, "AES256").unwrap();
    let data = seeded_bytes(3, 40_000);
    fs::write(m.p("std/f"), &data).unwrap();
    m.unmount();
    fs::rename(m.backend("std/f"), m.backend("small/f")).unwrap();
    m.mount(&[]);
    let at = log_len(&m);
    let e = fs::read(m.p("small/f")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO));
    let log = log_since(&m, at);
    assert!(
        log.lines().any(|l| l.contains("DataIntegrityError")
            && l.contains("path=\"small/f\"")
            && l.contains("chunk size")),
        "{log}"
    );
    // Writes, truncations and re-encryption are refused the same way.
    let e = fs::OpenOptions::new()
        .write(true)
        .open(m.p("small/f"))
        .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO));
    assert_eq!(m.setfattr("small/f", SSE, "SM4"), Err(libc::EIO));
    let v = m.d.run(&["verify", "small"]);
    assert_ne!(v.status, 0);
    assert!(v.stdout.contains("small/f") || v.stderr.contains("small/f"));
    m.d.run(&["object", "get", "small/f"])
        .fails_with("DataIntegrityError");
    // Put back, it is whole.
    m.unmount();
    fs::rename(m.backend("small/f"), m.backend("std/f")).unwrap();
    m.mount(&[]);
    assert_eq!(fs::read(m.p("std/f")).unwrap(), data);
}

/// The CLI writes with the bucket's chunk size too: create with
/// --chunk-size, put, copy between buckets, reencrypt and rewrap.
#[test]
fn the_cli_writes_objects_with_their_buckets_chunk_size() {
    let d = DataDir::new();
    d.run(&["bucket", "create", "small", "--chunk-size", "4096"])
        .ok();
    d.run(&["bucket", "create", "std"]).ok();
    assert_eq!(
        d.run(&["bucket", "chunk-size", "get", "small"]).ok().stdout,
        "4096\n"
    );
    assert_eq!(
        d.run(&["bucket", "chunk-size", "get", "std"]).ok().stdout,
        "16384\n"
    );
    let data = seeded_bytes(9, 30_000);
    d.run_stdin(&["object", "put", "small/o", "-"], &data).ok();
    let obj = d.data().join("small/o");
    assert_eq!(header_shift(&obj), 12);
    assert_eq!(fs::metadata(&obj).unwrap().len(), backend_len(30_000, 4096));
    let head = d.run(&["object", "head", "small/o"]).ok().stdout;
    assert!(head.contains("content-length: 30000"), "{head}");
    d.run(&["object", "copy", "small/o", "std/o"]).ok();
    assert_eq!(header_shift(&d.data().join("std/o")), 14);
    d.run(&["object", "copy", "std/o", "small/p", "--sse", "SM4"])
        .ok();
    assert_eq!(header_shift(&d.data().join("small/p")), 12);
    d.run(&[
        "bucket",
        "encryption",
        "put",
        "small",
        "--algorithm",
        "AES256",
    ])
    .ok();
    d.run(&["reencrypt", "small"]).ok();
    assert_eq!(header_shift(&obj), 12);
    assert_eq!(fs::read(&obj).unwrap()[9], 1, "now SSE-OSS");
    d.run(&["kms", "rotate-master"]).ok();
    d.run(&["rewrap"]).ok();
    assert_eq!(header_shift(&obj), 12);
    for o in ["small/o", "std/o", "small/p"] {
        let out = d.path("out.bin");
        d.run(&["object", "get", o, out.to_str().unwrap()]).ok();
        assert_eq!(fs::read(&out).unwrap(), data, "{o}");
    }
    d.run(&["verify"]).ok();
}

#[test]
fn fsx_on_a_4_kib_bucket() {
    let ops = env_count("SSEFS_CHUNKS_FSX_OPS", 10_000);
    let seed = test_seed("fsx-4k") % 1_000_000;
    ensure_fsx();
    let m = Mount::new(&[]);
    fs::create_dir(m.p("fsx4k")).unwrap();
    m.setfattr("fsx4k", CHUNK, "4096").unwrap();
    m.setfattr("fsx4k", SSE, "AES256").unwrap();
    let out = Command::new(script("fsx.sh"))
        .arg(m.p("fsx4k/f.bin"))
        .arg(ops.to_string())
        .env("FSX_SEED", seed.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "fsx (FSX_SEED={seed}): {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // "fsx: N operations, 0 miscompares"
    eprintln!("{}", String::from_utf8_lossy(&out.stdout).trim_end());
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("{ops} operations")));
    assert_eq!(header_shift(&m.backend("fsx4k/f.bin")), 12);
    m.d.run(&["verify", "fsx4k"]).ok();
}

/// FORMAT.md §3.1, §3.2, §4.1 through a mount: a bucket made with mkdir
/// gets wide slots (40 bytes a slot, header byte 12 = 1); the buckets of a
/// data directory made by an older version (tests/fixtures/old-layout,
/// upgraded on first use) keep narrow ones (28 bytes, byte 12 = 0). Both
/// show the right sizes and read back, after a remount too;
/// `user.ssefs.chunk-size` works on both; `mv` from an old bucket to a new
/// one re-encrypts into wide slots.
#[test]
fn new_buckets_get_wide_slots_and_old_ones_stay_narrow() {
    let m = Mount::on(crate::rootkey::old_layout(), &[]);
    // The old object, as the older version wrote it.
    let old = crate::rootkey::OLD_OBJECT.len() as u64;
    assert_eq!(header_slot_format(&m.backend("bkt/o")), 0);
    assert_eq!(
        fs::metadata(m.backend("bkt/o")).unwrap().len(),
        backend_len_in(old, 16384, 28)
    );
    assert_eq!(
        fs::read_to_string(m.p("bkt/o")).unwrap(),
        crate::rootkey::OLD_OBJECT
    );
    fs::create_dir(m.p("wide")).unwrap();
    assert_eq!(
        fs::read_to_string(m.backend("wide/.ssefs-bucket.toml"))
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with("mac = "))
            .collect::<Vec<_>>(),
        ["slot_format = \"wide\""]
    );
    assert_eq!(m.getfattr("wide", CHUNK).as_deref(), Ok("16384"));
    assert_eq!(m.getfattr("bkt", CHUNK).as_deref(), Ok("16384"));
    let data = seeded_bytes(4, 50_000);
    let want = [
        ("wide/f", 1u8, backend_len_in(50_000, 16384, 40)),
        ("bkt/f", 0u8, backend_len_in(50_000, 16384, 28)),
        // The CLI's bucket (made at the upgrade) is new, hence wide.
        ("new/f", 1u8, backend_len_in(50_000, 16384, 40)),
        // Under an SM4 rule from before.
        ("sm4/f", 0u8, backend_len_in(50_000, 16384, 28)),
    ];
    for (f, ..) in want {
        fs::write(m.p(f), &data).unwrap();
    }
    let check = |m: &Mount| {
        for (f, format, len) in want {
            assert_eq!(header_slot_format(&m.backend(f)), format, "{f}");
            assert_eq!(fs::metadata(m.backend(f)).unwrap().len(), len, "{f}");
            assert_eq!(fs::metadata(m.p(f)).unwrap().len(), 50_000, "{f}");
            assert_eq!(fs::read(m.p(f)).unwrap(), data, "{f}");
        }
    };
    check(&m);
    m.unmount();
    m.mount(&[]);
    check(&m);
    // Random writes in place keep both formats readable.
    for f in ["wide/f", "bkt/f"] {
        let file = fs::OpenOptions::new().write(true).open(m.p(f)).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&file, b"patched", 20_000).unwrap();
    }
    let mut patched = data.clone();
    patched[20_000..20_007].copy_from_slice(b"patched");
    assert_eq!(fs::read(m.p("wide/f")).unwrap(), patched);
    assert_eq!(fs::read(m.p("bkt/f")).unwrap(), patched);

    // Moving from the old bucket to a new one is a copy into wide slots.
    let st = Command::new("mv")
        .arg(m.p("bkt/f"))
        .arg(m.p("wide/moved"))
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(header_slot_format(&m.backend("wide/moved")), 1);
    assert_eq!(
        fs::metadata(m.backend("wide/moved")).unwrap().len(),
        backend_len_in(50_000, 16384, 40)
    );
    assert_eq!(fs::read(m.p("wide/moved")).unwrap(), patched);

    // The chunk size of a new, empty bucket: still wide.
    fs::create_dir(m.p("new4k")).unwrap();
    m.setfattr("new4k", CHUNK, "4096").unwrap();
    assert_eq!(m.getfattr("new4k", CHUNK).as_deref(), Ok("4096"));
    fs::write(m.p("new4k/f"), &data).unwrap();
    assert_eq!(header_slot_format(&m.backend("new4k/f")), 1);
    assert_eq!(
        fs::metadata(m.backend("new4k/f")).unwrap().len(),
        backend_len_in(50_000, 4096, 40)
    );
    assert_eq!(fs::read(m.p("new4k/f")).unwrap(), data);
    m.d.run(&["verify"]).ok();
}
