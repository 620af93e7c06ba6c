//! The data directory's KMS policy loader (DATA_DIR/.ssefs/config.toml:
//! grants and `master_rotation_days`), a separate file and parser from the
//! mount config.
//!
//! Properties, beyond "does not panic", checked against the text read as
//! plain TOML (independently of the parser under test):
//! - nothing that is not TOML is accepted;
//! - root and the owner may do everything, the anonymous uid no KMS action;
//! - every grant does what it says: each uid and gid it names gets each
//!   action it names on each resource it names (a `*` suffix as a prefix);
//! - a principal named nowhere gets nothing;
//! - naming a resource by more names never takes a permission away;
//! - `master_rotation_days` is the file's value, or 90 when absent.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use toml::{Table, Value};

use ssefs::kms::policy::DEFAULT_MASTER_ROTATION_DAYS;
use ssefs::kms::{Action, Policy};
use ssefs::principal::{Principal, NOBODY_UID};

const OWNER: u32 = 1000;
/// A uid and gid no grant names (checked per input).
const STRANGER: u32 = 54_321;

fn actions_of(pattern: &str) -> Vec<Action> {
    match pattern {
        "*" => Action::ALL.to_vec(),
        "kms:*" => Action::ALL.into_iter().filter(|a| a.is_kms()).collect(),
        "oss:*" => Action::ALL.into_iter().filter(|a| !a.is_kms()).collect(),
        _ => Action::parse(pattern).into_iter().collect(),
    }
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn ints(v: Option<&Value>) -> Vec<u32> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_integer().and_then(|n| u32::try_from(n).ok()))
                .collect()
        })
        .unwrap_or_default()
}

/// A name the resource pattern matches: itself, or a longer name for a
/// prefix pattern.
fn instance(pattern: &str) -> String {
    match pattern.strip_suffix('*') {
        Some(prefix) => format!("{prefix}x"),
        None => pattern.to_owned(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let generic = text.parse::<Table>();
    let Ok(p) = Policy::parse(text, OWNER, Path::new("/fuzz/.ssefs/config.toml")) else {
        return;
    };
    let t = generic.expect("accepted text that is not TOML");

    let days = t
        .get("kms")
        .and_then(|k| k.get("master_rotation_days"))
        .and_then(Value::as_integer);
    let want = days.map_or(DEFAULT_MASTER_ROTATION_DAYS, |d| d as u32);
    assert_eq!(p.master_rotation_days(), want, "master_rotation_days");
    assert_eq!(p.owner_uid(), OWNER);

    let grants: Vec<&Table> = t
        .get("grant")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_table).collect())
        .unwrap_or_default();

    let mut names: Vec<String> = vec!["bucket".into(), "alias/acs/oss".into()];
    for g in &grants {
        names.extend(strings(g.get("resources")).iter().map(|r| instance(r)));
    }
    names.truncate(16);
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();

    let stranger_named = grants.iter().any(|g| {
        ints(g.get("uids")).contains(&STRANGER) || ints(g.get("gids")).contains(&STRANGER)
    });
    for a in Action::ALL {
        for n in &refs {
            assert!(
                p.allows(&Principal::root(), a, &[n]),
                "root refused {a} on {n}"
            );
            assert!(
                p.allows(&Principal::new(OWNER, 7), a, &[n]),
                "owner refused {a} on {n}"
            );
            if a.is_kms() {
                let nobody = Principal::new(NOBODY_UID, NOBODY_UID);
                assert!(!p.allows(&nobody, a, &[n]), "nobody allowed {a} on {n}");
            }
            if !stranger_named {
                let s = Principal::new(STRANGER, STRANGER);
                assert!(!p.allows(&s, a, &[n]), "a stranger was allowed {a} on {n}");
            }
        }
        // More names for the same resource only add permissions.
        for (i, n) in refs.iter().enumerate() {
            for q in [
                Principal::new(2000, 2000),
                Principal::new(STRANGER, STRANGER),
            ] {
                if p.allows(&q, a, &[n]) {
                    let other = refs[(i + 1) % refs.len()];
                    assert!(p.allows(&q, a, &[other, n]), "{other} took {a} on {n} away");
                }
            }
        }
    }

    for g in &grants {
        let actions: Vec<Action> = strings(g.get("actions"))
            .iter()
            .flat_map(|s| actions_of(s))
            .collect();
        let resources: Vec<String> = strings(g.get("resources"))
            .iter()
            .map(|r| instance(r))
            .collect();
        let mut who: Vec<Principal> = ints(g.get("uids"))
            .into_iter()
            .map(|u| Principal::new(u, STRANGER + 1))
            .collect();
        who.extend(
            ints(g.get("gids"))
                .into_iter()
                .map(|gid| Principal::new(STRANGER + 2, STRANGER + 3).with_groups(vec![gid])),
        );
        for q in who.iter().take(4) {
            for &a in actions.iter().take(5) {
                if a.is_kms() && q.is_anonymous() {
                    continue;
                }
                for r in resources.iter().take(4) {
                    assert!(p.allows(q, a, &[r]), "grant not honoured: {q:?} {a} on {r}");
                }
            }
        }
    }
});
