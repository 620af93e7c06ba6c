//! The mount configuration loader (`ssefs --config FILE`, /etc/ssefs/NAME.toml).
//!
//! Properties, beyond "does not panic":
//! - a refusal is one line naming the file (the CLI prints it as is), and a
//!   line:column in it points inside the text;
//! - nothing that is not TOML is accepted, and an accepted file holds only
//!   documented keys;
//! - an accepted config keeps its rules (absolute paths, threads 1..=64,
//!   cache_mb 0..=1048576, max_inodes at least 64, not both allow_other and
//!   allow_root), and its mount options follow from it;
//! - an accepted config written back as TOML parses back equal.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use toml::{Table, Value};

use ssefs::service::{MountOpts, ServiceConfig};
use ssefs::settings::MOUNT_KEYS;

const FILE: &str = "/etc/ssefs/fuzz.toml";

fn check_refusal(text: &str, msg: &str) {
    assert!(!msg.contains('\n'), "not one line: {msg:?}");
    let Some(rest) = msg.split_once(FILE).map(|(_, r)| r) else {
        panic!("the file is not named: {msg:?}");
    };
    // "FILE:LINE:COL: why" or "FILE: why".
    let mut parts = rest.splitn(4, ':');
    parts.next();
    let (Some(l), Some(c)) = (parts.next(), parts.next()) else {
        return;
    };
    let (Ok(l), Ok(c)) = (l.parse::<usize>(), c.parse::<usize>()) else {
        return;
    };
    let lines: Vec<&str> = text.split('\n').collect();
    assert!(
        l >= 1 && l <= lines.len(),
        "line {l} of {} in {msg:?}",
        lines.len()
    );
    let width = lines[l - 1].chars().count();
    assert!(c >= 1 && c <= width + 1, "column {c} of {width} in {msg:?}");
}

fn path_value(p: &Option<std::path::PathBuf>) -> Option<Value> {
    p.as_ref()
        .map(|p| Value::String(p.to_str().expect("parsed from UTF-8 text").to_owned()))
}

fn write_back(c: &ServiceConfig) -> String {
    let mut t = Table::new();
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            t.insert(k.to_owned(), v);
        }
    };
    put("data_dir", path_value(&c.data_dir));
    put("mountpoint", path_value(&c.mountpoint));
    put("root_key", path_value(&c.root_key));
    put("passphrase_file", path_value(&c.passphrase_file));
    put("allow_other", Some(Value::Boolean(c.allow_other)));
    put("allow_root", Some(Value::Boolean(c.allow_root)));
    put("read_only", Some(Value::Boolean(c.read_only)));
    put("threads", c.threads.map(|n| Value::Integer(n as i64)));
    put("cache_mb", c.cache_mb.map(|n| Value::Integer(n as i64)));
    put("max_inodes", c.max_inodes.map(|n| Value::Integer(n as i64)));
    put("io_uring", Some(Value::Boolean(c.io_uring)));
    put("log_level", c.log_level.clone().map(Value::String));
    toml::to_string(&t).expect("a table serialises")
}

fuzz_target!(|data: &[u8]| {
    // `load` reads the file as UTF-8 and refuses anything else.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let generic = text.parse::<Table>();
    let c = match ServiceConfig::parse(text, Path::new(FILE)) {
        Ok(c) => c,
        Err(e) => return check_refusal(text, &e.to_string()),
    };

    let generic = generic.expect("accepted text that is not TOML");
    for k in generic.keys() {
        assert!(
            MOUNT_KEYS.contains(&k.as_str()),
            "accepted unknown key {k:?}"
        );
    }
    for p in [&c.data_dir, &c.mountpoint, &c.root_key, &c.passphrase_file]
        .into_iter()
        .flatten()
    {
        assert!(p.is_absolute(), "accepted relative path {p:?}");
    }
    assert!(
        !(c.allow_other && c.allow_root),
        "accepted allow_other with allow_root"
    );
    assert!(
        c.threads.is_none_or(|n| (1..=64).contains(&n)),
        "threads {:?}",
        c.threads
    );
    assert!(
        c.cache_mb.is_none_or(|n| n <= 1 << 20),
        "cache_mb {:?}",
        c.cache_mb
    );
    assert!(
        c.max_inodes.is_none_or(|n| n >= 64),
        "max_inodes {:?}",
        c.max_inodes
    );
    let d = MountOpts::default();
    let o = c.mount_opts();
    assert_eq!(o.threads, c.threads.unwrap_or(d.threads));
    assert_eq!(o.cache_mb, c.cache_mb.unwrap_or(d.cache_mb));
    assert_eq!(o.max_inodes, c.max_inodes.unwrap_or(d.max_inodes));
    assert_eq!(o.io_uring, c.io_uring);
    assert_eq!(
        (o.allow_other, o.allow_root, o.read_only),
        (c.allow_other, c.allow_root, c.read_only)
    );

    let written = write_back(&c);
    match ServiceConfig::parse(&written, Path::new(FILE)) {
        Ok(back) => assert_eq!(back, c, "round trip through:\n{written}"),
        Err(e) => panic!("written-back config refused: {e}\n{written}"),
    }
});
