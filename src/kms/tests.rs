use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::thread;

use tempfile::TempDir;
use uuid::Uuid;
use zeroize::Zeroizing;

use super::*;
use crate::error::OssCode;
use crate::principal::{Principal, NOBODY_UID};

const OWNER: u32 = 4242;

/// The keystore's place for a KMS test: the state directory `dir`, made
/// (0700) if it is not there yet, as the engine makes it.
fn states(dir: &Path) -> Arc<crate::backend::StateDir> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .unwrap();
    Arc::new(crate::backend::StateDir::open(dir).unwrap())
}

struct Env {
    _tmp: TempDir,
    dir: PathBuf,
    root: RootKeySource,
}

impl Env {
    fn new() -> Self {
        let tmp = TempDir::new().unwrap();
        let dir = tmp.path().join("state");
        let root = RootKeySource::File(tmp.path().join("root.key"));
        Kms::init(&*states(&dir), &root).unwrap();
        Env {
            _tmp: tmp,
            dir,
            root,
        }
    }

    fn open(&self) -> Kms {
        self.open_with(Policy::empty(OWNER))
    }

    fn open_with(&self, policy: Policy) -> Kms {
        Kms::open(states(&self.dir), &self.root, policy).unwrap()
    }

    fn keystore_text(&self) -> String {
        fs::read_to_string(self.dir.join("keystore.toml")).unwrap()
    }
}

fn owner() -> Principal {
    Principal::new(OWNER, OWNER)
}

fn code<T: fmt::Debug>(r: Result<T>) -> OssCode {
    r.unwrap_err().code
}

fn cmk(r: &str) -> WrapTarget {
    WrapTarget::Cmk(Some(r.to_string()))
}

fn id_of(m: &KeyMetadata) -> String {
    m.key_id.hyphenated().to_string()
}

fn policy(text: &str) -> Policy {
    Policy::parse(text, OWNER, Path::new("test-policy.toml")).unwrap()
}

/// Wraps a data key with `kek`, then unwraps it with `back`.
fn round_trip(kek: &Kek, back: &Kek) {
    let dk = SecretKey::random(32);
    let (n, ct, tag) = kek.wrap(b"obj", &dk);
    assert_eq!(back.unwrap(b"obj", &n, &ct, &tag).unwrap(), dk);
    assert!(back.unwrap(b"other", &n, &ct, &tag).is_err());
}

// ---- root key and keystore ----

#[test]
fn init_then_open_round_trip() {
    let env = Env::new();
    let kms = env.open();
    let kek = kms.encryptor(&owner(), &WrapTarget::Master).unwrap();
    assert_eq!(kek.key_id(), MASTER_KEY_ID);
    assert_eq!(kek.version(), 1);
    let k = kms
        .create_key(Some("d"), KeyOrigin::AliyunKms, None)
        .unwrap();
    drop(kms);

    let kms = env.open();
    let back = kms
        .decryptor(&Principal::root(), &MASTER_KEY_ID, 1)
        .unwrap();
    round_trip(&kek, &back);
    assert_eq!(kms.describe_key(&id_of(&k)).unwrap(), k);
    assert!(env.keystore_text().contains("version = 1"));
}

#[test]
fn init_twice_is_refused() {
    let env = Env::new();
    let e = Kms::init(&*states(&env.dir), &env.root).unwrap_err();
    assert!(e.message.contains("already exists"), "{e}");
}

#[test]
fn open_without_keystore_says_not_initialized() {
    let tmp = TempDir::new().unwrap();
    let root = RootKeySource::File(tmp.path().join("k"));
    let e = Kms::open(states(tmp.path()), &root, Policy::empty(0))
        .map(|_| ())
        .unwrap_err();
    assert_eq!(e.code, OssCode::KmsServiceNotEnabled);
}

#[test]
fn root_key_file_is_0600_and_wider_modes_are_refused() {
    let env = Env::new();
    let RootKeySource::File(path) = &env.root else {
        unreachable!()
    };
    let meta = fs::metadata(path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.len(), 32);
    let dir_mode = fs::metadata(&env.dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(dir_mode, 0o700);
    let ks_mode = fs::metadata(env.dir.join("keystore.toml"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(ks_mode & 0o777, 0o600);

    fs::set_permissions(path, fs::Permissions::from_mode(0o644)).unwrap();
    let e = Kms::open(states(&env.dir), &env.root, Policy::empty(0))
        .map(|_| ())
        .unwrap_err();
    assert_eq!(e.code, OssCode::InvalidParameter);
    assert!(e.message.contains(&path.display().to_string()), "{e}");
    assert!(e.message.contains("0644"), "{e}");
}

#[test]
fn root_key_file_of_wrong_length_is_refused() {
    let tmp = TempDir::new().unwrap();
    let path = tmp.path().join("root.key");
    fs::write(&path, [7u8; 31]).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    let e = Kms::init(&*states(&tmp.path().join("s")), &RootKeySource::File(path)).unwrap_err();
    assert_eq!(e.code, OssCode::InvalidParameter);
    assert!(e.message.contains("32 bytes"), "{e}");
}

#[test]
fn existing_root_key_file_is_used_by_init() {
    let tmp = TempDir::new().unwrap();
    let path = tmp.path().join("root.key");
    fs::write(&path, [9u8; 32]).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    let root = RootKeySource::File(path.clone());
    Kms::init(&*states(&tmp.path().join("s")), &root).unwrap();
    assert_eq!(fs::read(&path).unwrap(), vec![9u8; 32]);
    Kms::open(states(&tmp.path().join("s")), &root, Policy::empty(0)).unwrap();
}

#[test]
fn wrong_root_key_file_is_detected() {
    let env = Env::new();
    let other = env._tmp.path().join("other.key");
    fs::write(&other, [1u8; 32]).unwrap();
    fs::set_permissions(&other, fs::Permissions::from_mode(0o600)).unwrap();
    let e = Kms::open(
        states(&env.dir),
        &RootKeySource::File(other),
        Policy::empty(0),
    )
    .map(|_| ())
    .unwrap_err();
    assert_eq!(e.code, OssCode::InvalidParameter);
    assert!(
        e.message
            .contains("the root key does not match this keystore"),
        "{e}"
    );
}

fn pass(s: &str) -> RootKeySource {
    RootKeySource::Passphrase(Zeroizing::new(s.to_string()))
}

#[test]
fn passphrase_root_key_round_trip_and_wrong_passphrase() {
    let tmp = TempDir::new().unwrap();
    Kms::init(&*states(tmp.path()), &pass("correct horse")).unwrap();
    let text = fs::read_to_string(tmp.path().join("keystore.toml")).unwrap();
    assert!(text.contains("argon2id") && text.contains("salt"), "{text}");

    let kms = Kms::open(states(tmp.path()), &pass("correct horse"), Policy::empty(0)).unwrap();
    let k = kms.create_key(None, KeyOrigin::AliyunKms, None).unwrap();
    let kek = kms.encryptor(&Principal::root(), &cmk(&id_of(&k))).unwrap();
    drop(kms);
    let kms = Kms::open(states(tmp.path()), &pass("correct horse"), Policy::empty(0)).unwrap();
    let back = kms
        .decryptor(&Principal::root(), &k.key_id.into_bytes(), 1)
        .unwrap();
    round_trip(&kek, &back);

    let e = Kms::open(states(tmp.path()), &pass("wrong horse"), Policy::empty(0))
        .map(|_| ())
        .unwrap_err();
    assert!(
        e.message
            .contains("the root key does not match this keystore"),
        "{e}"
    );
    // A key file where a passphrase was used is also a mismatch.
    let e = Kms::open(
        states(tmp.path()),
        &RootKeySource::File(tmp.path().join("nokey")),
        Policy::empty(0),
    )
    .map(|_| ())
    .unwrap_err();
    assert!(e.message.contains("does not match"), "{e}");
}

#[test]
fn empty_passphrase_is_refused() {
    let tmp = TempDir::new().unwrap();
    let e = Kms::init(&*states(tmp.path()), &pass("")).unwrap_err();
    assert_eq!(e.code, OssCode::InvalidParameter);
    assert!(e.message.contains("empty"));
    assert!(!tmp.path().join("keystore.toml").exists());
}

#[test]
fn keystore_never_holds_imported_material() {
    let env = Env::new();
    let kms = env.open();
    let k = kms.create_key(None, KeyOrigin::External, None).unwrap();
    let material: Vec<u8> = (0..32u8)
        .map(|i| i.wrapping_mul(37).wrapping_add(11))
        .collect();
    kms.import_key_material(&id_of(&k), SecretKey::from_bytes(&material))
        .unwrap();
    kms.rotate_master().unwrap();
    let raw = fs::read(env.dir.join("keystore.toml")).unwrap();
    assert!(!raw.windows(32).any(|w| w == material.as_slice()));
    let text = String::from_utf8(raw).unwrap();
    let hex = store::hex_encode(&material);
    assert!(!text.contains(&hex));
    assert!(!text.contains(&hex.to_uppercase()));
    // The key works, so the material did go somewhere: sealed.
    let kek = kms.encryptor(&owner(), &cmk(&id_of(&k))).unwrap();
    let back = Kek {
        key_id: k.key_id.into_bytes(),
        version: 1,
        material: SecretKey::from_bytes(&material),
    };
    round_trip(&kek, &back);
}

#[test]
fn corrupt_keystore_is_an_error() {
    let env = Env::new();
    let kms = env.open();
    let path = env.dir.join("keystore.toml");
    let good = env.keystore_text();

    fs::write(&path, "version = 1\n[root\n").unwrap();
    let e = kms.list_keys().unwrap_err();
    assert_eq!(e.code, OssCode::InternalError);
    assert!(
        e.message.contains("corrupt") && e.message.contains("keystore.toml"),
        "{e}"
    );

    // Flip one hex digit of the sealed master key: the keystore's MAC
    // covers the whole file, so this is an integrity error naming it.
    let i = good.find("sealed = \"").unwrap() + 20;
    let mut bad = good.clone().into_bytes();
    bad[i] = if bad[i] == b'0' { b'1' } else { b'0' };
    fs::write(&path, &bad).unwrap();
    let e = Env::open_err(&env);
    assert_eq!(e.code, OssCode::DataIntegrityError);
    assert!(e.message.contains("keystore.toml"), "{e}");
    assert!(kms.encryptor(&owner(), &WrapTarget::Master).is_err());
}

impl Env {
    fn open_err(&self) -> Error {
        Kms::open(states(&self.dir), &self.root, Policy::empty(OWNER))
            .map(|_| ())
            .unwrap_err()
    }
}

#[test]
fn sealed_blob_cannot_move_to_another_entry() {
    let env = Env::new();
    let kms = env.open();
    let a = kms.create_key(None, KeyOrigin::AliyunKms, None).unwrap();
    let b = kms.create_key(None, KeyOrigin::AliyunKms, None).unwrap();
    kms.edit_store_for_test(|s, _| {
        let sealed_a = s.cmk(&a.key_id).unwrap().versions[0].sealed.clone();
        s.cmk_mut(&b.key_id).unwrap().versions[0].sealed = sealed_a;
    })
    .unwrap();
    assert!(env.open_err().message.contains("corrupt"));
}

// ---- master keys ----

#[test]
fn master_rotation_keeps_old_versions() {
    let env = Env::new();
    let kms = env.open();
    let v1 = kms.encryptor(&owner(), &WrapTarget::Master).unwrap();
    assert_eq!(kms.rotate_master().unwrap(), 2);
    let v2 = kms.encryptor(&owner(), &WrapTarget::Master).unwrap();
    assert_eq!(v2.version(), 2);
    round_trip(&v1, &kms.decryptor(&owner(), &MASTER_KEY_ID, 1).unwrap());
    round_trip(&v2, &kms.decryptor(&owner(), &MASTER_KEY_ID, 2).unwrap());
    // A header naming a version that never existed is corrupt or forged.
    let e = kms.decryptor(&owner(), &MASTER_KEY_ID, 3).unwrap_err();
    assert_eq!(e.code, OssCode::DataIntegrityError);
    assert!(e.message.contains("master key version 3"), "{e}");
    let versions = kms.master_versions().unwrap();
    assert_eq!(
        versions.iter().map(|m| m.version).collect::<Vec<_>>(),
        [1, 2]
    );
}

#[test]
fn master_key_rotates_automatically_when_old() {
    let env = Env::new();
    let kms = env.open_with(Policy::empty(OWNER).with_master_rotation_days(30));
    assert_eq!(
        kms.encryptor(&owner(), &WrapTarget::Master)
            .unwrap()
            .version(),
        1
    );
    // 29 days old: not yet.
    kms.edit_store_for_test(|s, _| s.master[0].created -= 29 * SECS_PER_DAY)
        .unwrap();
    assert_eq!(
        kms.encryptor(&owner(), &WrapTarget::Master)
            .unwrap()
            .version(),
        1
    );
    kms.edit_store_for_test(|s, _| s.master[0].created -= 2 * SECS_PER_DAY)
        .unwrap();
    let kek = kms.encryptor(&owner(), &WrapTarget::Master).unwrap();
    assert_eq!(kek.version(), 2);
    assert_eq!(
        kms.encryptor(&owner(), &WrapTarget::Master)
            .unwrap()
            .version(),
        2
    );
    assert_eq!(kms.master_versions().unwrap().len(), 2);

    // Period 0 never rotates.
    let never = env.open_with(Policy::empty(OWNER).with_master_rotation_days(0));
    never
        .edit_store_for_test(|s, _| s.master.iter_mut().for_each(|m| m.created = 0))
        .unwrap();
    assert_eq!(
        never
            .encryptor(&owner(), &WrapTarget::Master)
            .unwrap()
            .version(),
        2
    );
}

#[test]
fn sse_oss_needs_no_permission_even_for_nobody() {
    let env = Env::new();
    let kms = env.open();
    let nobody = Principal::new(NOBODY_UID, NOBODY_UID);
    let kek = kms.encryptor(&nobody, &WrapTarget::Master).unwrap();
    round_trip(&kek, &kms.decryptor(&nobody, &MASTER_KEY_ID, 1).unwrap());
    let stranger = Principal::new(777, 777);
    kms.encryptor(&stranger, &WrapTarget::Master).unwrap();
}

// ---- CMK states ----

/// Creates a key in `state` and returns its id.
fn key_in_state(kms: &Kms, state: KeyState) -> String {
    let origin = if state == KeyState::PendingImport {
        KeyOrigin::External
    } else {
        KeyOrigin::AliyunKms
    };
    let id = id_of(&kms.create_key(None, origin, None).unwrap());
    match state {
        KeyState::Enabled | KeyState::PendingImport => {}
        KeyState::Disabled => {
            kms.disable_key(&id).unwrap();
        }
        KeyState::PendingDeletion => {
            kms.schedule_key_deletion(&id, 7).unwrap();
        }
    }
    assert_eq!(kms.describe_key(&id).unwrap().state, state);
    id
}

#[test]
fn data_path_in_every_state() {
    let env = Env::new();
    let kms = env.open();
    let cases = [
        (KeyState::Enabled, None),
        (KeyState::Disabled, Some(OssCode::RejectedDisabled)),
        (
            KeyState::PendingDeletion,
            Some(OssCode::RejectedPendingDeletion),
        ),
        (
            KeyState::PendingImport,
            Some(OssCode::RejectedPendingImport),
        ),
    ];
    for (state, want) in cases {
        let id = key_in_state(&kms, state);
        let uuid = Uuid::parse_str(&id).unwrap();
        let enc = kms.encryptor(&owner(), &cmk(&id));
        let dec = kms.decryptor(&owner(), &uuid.into_bytes(), 1);
        match want {
            None => round_trip(&enc.unwrap(), &dec.unwrap()),
            Some(c) => {
                let e = enc.unwrap_err();
                assert_eq!(e.code, c, "encryptor in {state}");
                assert_eq!(e.key_id.as_deref(), Some(id.as_str()));
                assert_eq!(code(dec), c, "decryptor in {state}");
            }
        }
    }
    let id = key_in_state(&kms, KeyState::Disabled);
    assert_eq!(
        kms.encryptor(&owner(), &cmk(&id)).unwrap_err().message,
        "The specified key is disabled"
    );
}

#[test]
fn state_transitions_allowed_and_refused() {
    use KeyState::*;
    use OssCode::RejectedStateModifiedFailed as Refused;
    let env = Env::new();
    let kms = env.open();
    type Op = fn(&Kms, &str) -> Result<KeyMetadata>;
    let ops: [(&str, Op); 4] = [
        ("enable", |k, r| k.enable_key(r)),
        ("disable", |k, r| k.disable_key(r)),
        ("schedule", |k, r| k.schedule_key_deletion(r, 30)),
        ("cancel", |k, r| k.cancel_key_deletion(r)),
    ];
    // (from, op) -> Ok(new state) or Err(code)
    let table: [(KeyState, [Result<KeyState, OssCode>; 4]); 4] = [
        (
            Enabled,
            [Ok(Enabled), Ok(Disabled), Ok(PendingDeletion), Err(Refused)],
        ),
        (
            Disabled,
            [Ok(Enabled), Ok(Disabled), Ok(PendingDeletion), Err(Refused)],
        ),
        (
            PendingDeletion,
            [Err(Refused), Err(Refused), Err(Refused), Ok(Enabled)],
        ),
        (
            PendingImport,
            [
                Err(Refused),
                Err(Refused),
                Ok(PendingDeletion),
                Err(Refused),
            ],
        ),
    ];
    for (from, wants) in table {
        for ((name, op), want) in ops.iter().zip(wants) {
            let id = key_in_state(&kms, from);
            let got = op(&kms, &id).map(|m| m.state).map_err(|e| e.code);
            assert_eq!(got, want, "{name} from {from}");
            let now = kms.describe_key(&id).unwrap().state;
            assert_eq!(now, want.unwrap_or(from), "{name} from {from} left state");
        }
    }
    // An EXTERNAL key without material goes back to PendingImport.
    let id = key_in_state(&kms, PendingImport);
    kms.schedule_key_deletion(&id, 7).unwrap();
    assert_eq!(kms.cancel_key_deletion(&id).unwrap().state, PendingImport);
}

#[test]
fn schedule_deletion_days_and_date() {
    let env = Env::new();
    let kms = env.open();
    let id = key_in_state(&kms, KeyState::Enabled);
    for bad in [0, 6, 367] {
        let e = kms.schedule_key_deletion(&id, bad).unwrap_err();
        assert_eq!(e.code, OssCode::InvalidParameter, "{bad}");
        assert_eq!(e.key_id.as_deref(), Some(id.as_str()));
    }
    let before = now_secs();
    let m = kms.schedule_key_deletion(&id, 366).unwrap();
    let d = m.deletion_date.unwrap();
    assert!(d >= before + 366 * SECS_PER_DAY && d <= now_secs() + 366 * SECS_PER_DAY);
    assert!(m.to_string().contains("DeleteDate: "));
    assert_eq!(kms.cancel_key_deletion(&id).unwrap().deletion_date, None);
}

#[test]
fn expired_deletion_is_key_not_found_and_purged() {
    let env = Env::new();
    let kms = env.open();
    let id = key_in_state(&kms, KeyState::Enabled);
    let uuid = Uuid::parse_str(&id).unwrap();
    kms.create_alias("alias/doomed", &id).unwrap();
    let kek = kms.encryptor(&owner(), &cmk(&id)).unwrap();
    kms.schedule_key_deletion(&id, 7).unwrap();
    kms.edit_store_for_test(|s, _| s.cmk_mut(&uuid).unwrap().deletion_date = Some(now_secs() - 1))
        .unwrap();
    assert!(
        env.keystore_text().contains(&id),
        "not purged before the next write"
    );

    let e = kms.encryptor(&owner(), &cmk(&id)).unwrap_err();
    assert_eq!(e.code, OssCode::KeyNotFound);
    assert_eq!(e.message, "The specified parameter KMS keyId is not found");
    assert_eq!(
        code(kms.decryptor(&owner(), &kek.key_id(), 1)),
        OssCode::KeyNotFound
    );
    assert_eq!(code(kms.describe_key(&id)), OssCode::KeyNotFound);
    assert_eq!(code(kms.cancel_key_deletion(&id)), OssCode::KeyNotFound);
    assert_eq!(
        code(kms.describe_key("alias/doomed")),
        OssCode::AliasNotFound
    );
    assert!(kms.list_keys().unwrap().iter().all(|k| k.key_id != uuid));
    assert!(kms.list_aliases().unwrap().is_empty());

    kms.rotate_master().unwrap();
    let text = env.keystore_text();
    assert!(
        !text.contains(&id) && !text.contains("alias/doomed"),
        "{text}"
    );
    // The freed alias can be reused.
    let other = key_in_state(&kms, KeyState::Enabled);
    kms.create_alias("alias/doomed", &other).unwrap();
}

#[test]
fn rotate_key_keeps_old_versions_decrypting() {
    let env = Env::new();
    let kms = env.open();
    let id = key_in_state(&kms, KeyState::Enabled);
    let v1 = kms.encryptor(&owner(), &cmk(&id)).unwrap();
    assert_eq!(v1.version(), 1);
    let m = kms.rotate_key(&id).unwrap();
    assert_eq!((m.primary_version, m.versions), (Some(2), 2));
    let v2 = kms.encryptor(&owner(), &cmk(&id)).unwrap();
    assert_eq!(v2.version(), 2);
    round_trip(&v1, &kms.decryptor(&owner(), &v1.key_id(), 1).unwrap());
    round_trip(&v2, &kms.decryptor(&owner(), &v1.key_id(), 2).unwrap());
    // Different material per version.
    let dk = SecretKey::random(32);
    let (n, ct, tag) = v1.wrap(b"", &dk);
    assert!(v2.unwrap(b"", &n, &ct, &tag).is_err());
    assert_eq!(
        code(kms.decryptor(&owner(), &v1.key_id(), 3)),
        OssCode::DataIntegrityError
    );
}

#[test]
fn rotate_key_refusals() {
    let env = Env::new();
    let kms = env.open();
    let ext = id_of(&kms.create_key(None, KeyOrigin::External, None).unwrap());
    kms.import_key_material(&ext, SecretKey::random(32))
        .unwrap();
    let e = kms.rotate_key(&ext).unwrap_err();
    assert_eq!(e.code, OssCode::InvalidParameter);
    assert!(e.message.contains("EXTERNAL"), "{e}");
    let dis = key_in_state(&kms, KeyState::Disabled);
    assert_eq!(code(kms.rotate_key(&dis)), OssCode::RejectedDisabled);
    let del = key_in_state(&kms, KeyState::PendingDeletion);
    assert_eq!(code(kms.rotate_key(&del)), OssCode::RejectedPendingDeletion);
}

#[test]
fn import_key_material_rules() {
    let env = Env::new();
    let kms = env.open();
    let native = key_in_state(&kms, KeyState::Enabled);
    assert_eq!(
        code(kms.import_key_material(&native, SecretKey::random(32))),
        OssCode::InvalidParameter
    );
    let ext = id_of(
        &kms.create_key(Some("byok"), KeyOrigin::External, None)
            .unwrap(),
    );
    for len in [0, 16, 31, 33] {
        let e = kms
            .import_key_material(&ext, SecretKey::random(len))
            .unwrap_err();
        assert_eq!(e.code, OssCode::InvalidParameter, "{len}");
        assert!(e.message.contains("32 bytes"));
    }
    let material = SecretKey::random(32);
    let m = kms.import_key_material(&ext, material.clone()).unwrap();
    assert_eq!(
        (m.state, m.primary_version, m.versions),
        (KeyState::Enabled, Some(1), 1)
    );
    // Same material again: fine, nothing changes.
    assert_eq!(kms.import_key_material(&ext, material.clone()).unwrap(), m);
    // Different material: refused.
    let e = kms
        .import_key_material(&ext, SecretKey::random(32))
        .unwrap_err();
    assert_eq!(e.code, OssCode::InvalidParameter);
    assert!(e.message.contains("different"), "{e}");
    // Same material into a disabled key is still fine; into one pending
    // deletion it is refused.
    kms.disable_key(&ext).unwrap();
    kms.import_key_material(&ext, material.clone()).unwrap();
    kms.schedule_key_deletion(&ext, 7).unwrap();
    assert_eq!(
        code(kms.import_key_material(&ext, material)),
        OssCode::RejectedPendingDeletion
    );
}

// ---- default managed key ----

#[test]
fn default_key_created_on_first_use_once() {
    let env = Env::new();
    let kms = env.open();
    assert_eq!(kms.default_key_id().unwrap(), None);
    assert!(kms.list_keys().unwrap().is_empty());
    let kek = kms.encryptor(&owner(), &WrapTarget::Cmk(None)).unwrap();
    let id = kms.default_key_id().unwrap().unwrap();
    assert_eq!(kek.key_id(), id.into_bytes());
    let again = kms.encryptor(&owner(), &WrapTarget::Cmk(None)).unwrap();
    assert_eq!(again.key_id(), id.into_bytes());
    let keys = kms.list_keys().unwrap();
    assert_eq!(keys.len(), 1);
    let m = &keys[0];
    assert_eq!(m.creator, KeyCreator::Oss);
    assert_eq!(m.description, "default managed key of OSS");
    assert_eq!(m.aliases, [DEFAULT_KEY_ALIAS]);
    assert_eq!(kms.describe_key(DEFAULT_KEY_ALIAS).unwrap().key_id, id);
    round_trip(&kek, &kms.decryptor(&owner(), &kek.key_id(), 1).unwrap());
}

#[test]
fn default_key_race_creates_one_key() {
    let env = Env::new();
    let instances: Vec<Arc<Kms>> = (0..4).map(|_| Arc::new(env.open())).collect();
    let barrier = Arc::new(Barrier::new(8));
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let kms = Arc::clone(&instances[i % 4]);
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                barrier.wait();
                kms.encryptor(&owner(), &WrapTarget::Cmk(None))
                    .unwrap()
                    .key_id()
            })
        })
        .collect();
    let ids: Vec<KeyId> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(ids.iter().all(|i| *i == ids[0]));
    let keys = instances[0].list_keys().unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
}

#[test]
fn default_key_is_protected() {
    let env = Env::new();
    let kms = env.open();
    kms.encryptor(&owner(), &WrapTarget::Cmk(None)).unwrap();
    for r in [
        DEFAULT_KEY_ALIAS.to_string(),
        kms.default_key_id().unwrap().unwrap().to_string(),
    ] {
        let e = kms.disable_key(&r).unwrap_err();
        assert_eq!(e.code, OssCode::InvalidParameter);
        assert!(e.message.contains("default managed key"), "{e}");
        assert_eq!(
            code(kms.schedule_key_deletion(&r, 30)),
            OssCode::InvalidParameter
        );
    }
    assert_eq!(
        code(kms.delete_alias(DEFAULT_KEY_ALIAS)),
        OssCode::InvalidParameter
    );
    assert_eq!(
        kms.describe_key(DEFAULT_KEY_ALIAS).unwrap().state,
        KeyState::Enabled
    );
    // It can be rotated and given further aliases.
    kms.rotate_key(DEFAULT_KEY_ALIAS).unwrap();
    kms.create_alias("alias/mine", DEFAULT_KEY_ALIAS).unwrap();
}

// ---- cross-instance changes ----

#[test]
fn change_through_one_instance_is_seen_by_another() {
    let env = Env::new();
    let daemon = env.open();
    let cli = env.open();
    let id = key_in_state(&cli, KeyState::Enabled);
    daemon.encryptor(&owner(), &cmk(&id)).unwrap();
    cli.disable_key(&id).unwrap();
    assert_eq!(
        code(daemon.encryptor(&owner(), &cmk(&id))),
        OssCode::RejectedDisabled
    );
    cli.enable_key(&id).unwrap();
    daemon.encryptor(&owner(), &cmk(&id)).unwrap();
    // Two quick writes of equal size are still both seen.
    cli.disable_key(&id).unwrap();
    cli.enable_key(&id).unwrap();
    cli.disable_key(&id).unwrap();
    assert_eq!(
        code(daemon.encryptor(&owner(), &cmk(&id))),
        OssCode::RejectedDisabled
    );
    cli.rotate_master().unwrap();
    assert_eq!(
        daemon
            .encryptor(&owner(), &WrapTarget::Master)
            .unwrap()
            .version(),
        2
    );
}

#[test]
fn every_write_moves_the_mtime_forward() {
    // Readers spot changes by (inode, size, mtime); an inode can be reused
    // and the clock can be coarse or step back, so each write must give the
    // file a strictly newer mtime than the one it replaces.
    let env = Env::new();
    let kms = env.open();
    let path = env.dir.join("keystore.toml");
    let future = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
    fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(future)
        .unwrap();
    kms.rotate_master().unwrap();
    assert!(fs::metadata(&path).unwrap().modified().unwrap() > future);
}

#[test]
fn quick_writes_that_restore_the_size_are_seen() {
    // Two writes in a row where the second restores the file's size (and
    // may reuse the first file's inode) must still be noticed.
    let env = Env::new();
    let daemon = env.open();
    let cli = env.open();
    let a = key_in_state(&cli, KeyState::Enabled);
    let b = key_in_state(&cli, KeyState::Disabled);
    for _ in 0..30 {
        daemon.encryptor(&owner(), &cmk(&a)).unwrap();
        cli.disable_key(&a).unwrap();
        cli.enable_key(&b).unwrap();
        assert_eq!(
            code(daemon.encryptor(&owner(), &cmk(&a))),
            OssCode::RejectedDisabled
        );
        daemon.encryptor(&owner(), &cmk(&b)).unwrap();
        cli.enable_key(&a).unwrap();
        cli.disable_key(&b).unwrap();
        assert_eq!(
            code(daemon.encryptor(&owner(), &cmk(&b))),
            OssCode::RejectedDisabled
        );
    }
}

// ---- aliases and key refs ----

#[test]
fn aliases() {
    let env = Env::new();
    let kms = env.open();
    let m = kms
        .create_key(Some("team key"), KeyOrigin::AliyunKms, Some("alias/team"))
        .unwrap();
    assert_eq!(m.aliases, ["alias/team"]);
    let id = id_of(&m);
    let other = key_in_state(&kms, KeyState::Enabled);

    let kek = kms.encryptor(&owner(), &cmk("alias/team")).unwrap();
    assert_eq!(kek.key_id(), m.key_id.into_bytes());

    let e = kms.create_alias("alias/team", &other).unwrap_err();
    assert_eq!(e.code, OssCode::AlreadyExistsAlias);
    assert_eq!(e.key_id.as_deref(), Some("alias/team"));
    assert_eq!(
        code(kms.create_key(None, KeyOrigin::AliyunKms, Some("alias/team"))),
        OssCode::AlreadyExistsAlias
    );
    for bad in [
        "alias/acs/mine",
        "alias/acs/oss",
        "alias/",
        "alias/has space",
        "alias/é",
        "team",
        &format!("alias/{}", "a".repeat(256)),
    ] {
        assert_eq!(
            code(kms.create_alias(bad, &id)),
            OssCode::InvalidParameter,
            "{bad}"
        );
    }
    kms.create_alias(&format!("alias/{}", "a".repeat(255)), &id)
        .unwrap();
    kms.create_alias("alias/x/Y_z-9", "alias/team").unwrap();
    assert_eq!(
        code(kms.create_alias("alias/to-nowhere", "alias/nope")),
        OssCode::AliasNotFound
    );
    assert_eq!(
        code(kms.create_alias("alias/to-nowhere", &Uuid::new_v4().to_string())),
        OssCode::KeyNotFound
    );
    let m = kms.describe_key(&id).unwrap();
    assert_eq!(m.aliases.len(), 3);
    assert!(kms
        .list_aliases()
        .unwrap()
        .iter()
        .all(|(_, k)| k.hyphenated().to_string() == id));

    kms.delete_alias("alias/team").unwrap();
    assert_eq!(code(kms.delete_alias("alias/team")), OssCode::AliasNotFound);
    assert_eq!(
        code(kms.encryptor(&owner(), &cmk("alias/team"))),
        OssCode::AliasNotFound
    );
    assert_eq!(code(kms.delete_alias("team")), OssCode::InvalidParameter);
}

#[test]
fn key_refs_malformed_unknown_and_case_insensitive() {
    let env = Env::new();
    let kms = env.open();
    let id = key_in_state(&kms, KeyState::Enabled);
    for bad in [
        "",
        "not-a-key",
        "1234",
        &id.replace('-', ""),
        &format!("{{{id}}}"),
        &format!("urn:uuid:{id}"),
        &format!(" {id}"),
    ] {
        let e = kms.encryptor(&owner(), &cmk(bad)).unwrap_err();
        assert_eq!(e.code, OssCode::InvalidParameter, "{bad:?}");
        assert_eq!(e.message, "the specified key id is malformed");
        assert_eq!(e.key_id.as_deref(), Some(bad));
        assert_eq!(code(kms.describe_key(bad)), OssCode::InvalidParameter);
    }
    let upper = id.to_uppercase();
    assert_eq!(id_of(&kms.describe_key(&upper).unwrap()), id);
    kms.encryptor(&owner(), &cmk(&upper)).unwrap();

    let unknown = Uuid::new_v4().to_string();
    let e = kms.encryptor(&owner(), &cmk(&unknown)).unwrap_err();
    assert_eq!(e.code, OssCode::KeyNotFound);
    assert_eq!(e.message, "The specified parameter KMS keyId is not found");
    assert_eq!(e.key_id.as_deref(), Some(unknown.as_str()));
    assert_eq!(code(kms.disable_key(&unknown)), OssCode::KeyNotFound);
    let e = kms.describe_key("alias/unknown").unwrap_err();
    assert_eq!(e.code, OssCode::AliasNotFound);
    assert_eq!(e.key_id.as_deref(), Some("alias/unknown"));
    assert_eq!(
        code(kms.decryptor(&owner(), &Uuid::new_v4().into_bytes(), 1)),
        OssCode::KeyNotFound
    );
    assert_eq!(
        Kms::key_id_string(&Uuid::parse_str(&upper).unwrap().into_bytes()),
        id
    );
}

// ---- permissions ----

#[test]
fn permissions_on_the_data_path() {
    let env = Env::new();
    let setup = env.open();
    let team = id_of(
        &setup
            .create_key(None, KeyOrigin::AliyunKms, Some("alias/team"))
            .unwrap(),
    );
    let other = key_in_state(&setup, KeyState::Enabled);
    // A real non-root account to grant by name (uid 1 is `daemon` on
    // Debian-like systems).
    let named = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(1))
        .unwrap()
        .expect("a user with uid 1");
    let alice = named.name.clone();
    let text = format!(
        r#"
[[grant]]
uids = [1001, {NOBODY_UID}]
actions = ["kms:GenerateDataKey", "kms:Decrypt"]
resources = ["alias/team"]

[[grant]]
gids = [500]
actions = ["kms:Decrypt"]
resources = ["{}"]

[[grant]]
users = ["{alice}"]
actions = ["kms:*"]
resources = ["*"]

[[grant]]
uids = [1003]
actions = ["*"]
resources = ["alias/te*"]
"#,
        team.to_uppercase()
    );
    let kms = env.open_with(policy(&text));
    let team_id = Uuid::parse_str(&team).unwrap().into_bytes();
    let other_id = Uuid::parse_str(&other).unwrap().into_bytes();
    let enc = |p: &Principal, r: &str| kms.encryptor(p, &cmk(r)).map(|_| ()).map_err(|e| e.code);
    let dec = |p: &Principal, id: &KeyId| kms.decryptor(p, id, 1).map(|_| ()).map_err(|e| e.code);
    let denied = Err(OssCode::AccessDenied);

    for p in [Principal::root(), owner()] {
        assert_eq!(enc(&p, &other), Ok(()));
        assert_eq!(dec(&p, &other_id), Ok(()));
        assert_eq!(enc(&p, "alias/team"), Ok(()));
    }

    let nobody = Principal::new(NOBODY_UID, NOBODY_UID);
    assert_eq!(enc(&nobody, "alias/team"), denied);
    assert_eq!(enc(&nobody, &team), denied);
    assert_eq!(dec(&nobody, &team_id), denied);
    assert_eq!(
        code(kms.encryptor(&nobody, &WrapTarget::Cmk(None))),
        OssCode::AccessDenied
    );
    // Even though a grant names uid 65534.
    assert!(!kms
        .policy()
        .allows(&nobody, Action::KmsGenerateDataKey, &[&team, "alias/team"]));
    let e = kms.encryptor(&nobody, &cmk(&team)).unwrap_err();
    assert_eq!(e.message, "This request is forbidden by kms");
    assert_eq!(e.key_id.as_deref(), Some(team.as_str()));

    // Granted by uid on the alias: allowed by id and by alias, not elsewhere.
    let u1001 = Principal::new(1001, 1001);
    assert_eq!(enc(&u1001, &team), Ok(()));
    assert_eq!(enc(&u1001, "alias/team"), Ok(()));
    assert_eq!(dec(&u1001, &team_id), Ok(()));
    assert_eq!(enc(&u1001, &other), denied);
    assert_eq!(dec(&u1001, &other_id), denied);
    assert_eq!(enc(&u1001, &team.to_uppercase()), Ok(()));

    // Granted Decrypt by a supplementary group, on the id (given upper case).
    let g = Principal::new(1002, 1002);
    assert_eq!(dec(&g, &team_id), denied);
    let g = g.with_groups(vec![20, 500]);
    assert_eq!(dec(&g, &team_id), Ok(()));
    assert_eq!(enc(&g, &team), denied);
    assert_eq!(dec(&g, &other_id), denied);
    assert_eq!(dec(&Principal::new(1002, 500), &team_id), Ok(()));

    // Prefix wildcard on resources.
    let u1003 = Principal::new(1003, 1003);
    assert_eq!(enc(&u1003, &team), Ok(()));
    assert_eq!(enc(&u1003, &other), denied);

    // Granted kms:* on everything by user name, resolved to its uid at load.
    let by_name = Principal::new(named.uid.as_raw(), 9999);
    assert_eq!(enc(&by_name, &other), Ok(()));
    assert_eq!(dec(&by_name, &other_id), Ok(()));
    let p = kms.policy();
    assert!(!p.allows(&by_name, Action::OssPutBucketEncryption, &["bucket"]));

    // The stranger learns the key is missing only if it is missing.
    let stranger = Principal::new(5000, 5000);
    assert_eq!(enc(&stranger, &team), denied);
    assert_eq!(
        enc(&stranger, &Uuid::new_v4().to_string()),
        Err(OssCode::KeyNotFound)
    );
}

#[test]
fn policy_rules() {
    let p = policy(
        r#"
[kms]
master_rotation_days = 7

[[grant]]
uids = [10]
gids = [300]
actions = ["oss:*"]
resources = ["bucket-a"]

[[grant]]
uids = [11]
actions = ["*"]
resources = ["*"]
"#,
    );
    assert_eq!(p.master_rotation_days(), 7);
    assert_eq!(p.owner_uid(), OWNER);
    let u10 = Principal::new(10, 10);
    assert!(p.allows(&u10, Action::OssPutBucketEncryption, &["bucket-a"]));
    assert!(!p.allows(&u10, Action::OssPutBucketEncryption, &["bucket-b"]));
    assert!(!p.allows(&u10, Action::KmsDecrypt, &["bucket-a"]));
    assert!(p.allows(
        &Principal::new(99, 300),
        Action::OssGetBucketEncryption,
        &["bucket-a"]
    ));
    let u11 = Principal::new(11, 11);
    for a in Action::ALL {
        assert!(p.allows(&u11, a, &["x"]), "{a}");
        assert!(p.allows(&Principal::root(), a, &["x"]));
        assert!(p.allows(&owner(), a, &["x"]));
        assert!(!p.allows(&Principal::new(12, 12), a, &["x"]));
        assert_eq!(Action::parse(a.as_str()), Some(a));
    }
    assert!(!p.allows(&Principal::new(NOBODY_UID, 0), Action::KmsDecrypt, &["x"]));
    assert_eq!(Policy::empty(3).master_rotation_days(), 90);
    assert_eq!(policy("").master_rotation_days(), 90);
    assert_eq!(Action::KmsGenerateDataKey.as_str(), "kms:GenerateDataKey");
    assert_eq!(
        Action::OssDeleteBucketEncryption.as_str(),
        "oss:DeleteBucketEncryption"
    );
}

#[test]
fn policy_file_errors_name_the_file() {
    let tmp = TempDir::new().unwrap();
    let path = tmp.path().join("policy.toml");
    let cases = [
        ("[kms]\nmaster_rotation_dayz = 3\n", "master_rotation_dayz"),
        (
            "[[grant]]\nuids = [1]\nactions = [\"kms:Encrypt\"]\nresources = [\"*\"]\n",
            "kms:Encrypt",
        ),
        (
            "[[grant]]\nusers = [\"no-such-user-ssefs\"]\nactions = [\"*\"]\nresources = [\"*\"]\n",
            "no-such-user-ssefs",
        ),
        (
            "[[grant]]\nuids = [1]\nactions = [\"*\"]\nresources = [\"*\"]\nextra = 1\n",
            "extra",
        ),
        (
            "[[grant]]\nactions = [\"*\"]\nresources = [\"*\"]\n",
            "no principal",
        ),
        ("[[grant]]\nuids = [1]\nactions = [\"*\"]\n", "resources"),
        // Settings in the wrong place or the wrong file say where they go.
        (
            "\nmaster_rotation_days = 30\n",
            "line 2: `master_rotation_days` goes under [kms]",
        ),
        (
            "[kms]\nmaster_rotation_days = 3\nmountpoint = \"/mnt\"\n",
            "`mountpoint` is a mount setting: it goes in the mount's config file",
        ),
    ];
    for (text, needle) in cases {
        fs::write(&path, text).unwrap();
        let e = Policy::load(&path, 0).unwrap_err();
        assert_eq!(e.code, OssCode::InvalidParameter, "{text}");
        assert!(e.message.contains(&path.display().to_string()), "{e}");
        assert!(e.message.contains(needle), "{needle}: {e}");
    }
    // toml's message carries the position.
    fs::write(&path, "[kms]\nmaster_rotation_dayz = 3\n").unwrap();
    assert!(Policy::load(&path, 0)
        .unwrap_err()
        .message
        .contains("line 2"));

    fs::write(
        &path,
        "[[grant]]\nuids = [1]\nactions = [\"*\"]\nresources = [\"*\"]\n",
    )
    .unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).unwrap();
    assert!(Policy::load(&path, 0)
        .unwrap_err()
        .message
        .contains("world-writable"));
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    assert!(Policy::load(&path, 0).unwrap().allows(
        &Principal::new(1, 1),
        Action::KmsDecrypt,
        &["k"]
    ));
    // Missing file: no grants.
    let p = Policy::load(&tmp.path().join("none.toml"), 7).unwrap();
    assert!(!p.allows(&Principal::new(1, 1), Action::KmsDecrypt, &["k"]));
    assert!(p.allows(&Principal::new(7, 1), Action::KmsDecrypt, &["k"]));
}

#[test]
fn principal_current_and_root() {
    let p = Principal::current();
    assert_eq!(p.uid, nix::unistd::geteuid().as_raw());
    assert_eq!(p.gid, nix::unistd::getegid().as_raw());
    assert!(Principal::root().uid == 0 && !Principal::root().is_anonymous());
    assert!(Principal::new(NOBODY_UID, 1).is_anonymous());
}

// ---- no material in output ----

#[test]
fn debug_output_never_holds_material() {
    let env = Env::new();
    let kms = env.open();
    let ext = id_of(&kms.create_key(None, KeyOrigin::External, None).unwrap());
    let material = SecretKey::from_bytes(&[0xab; 32]);
    kms.import_key_material(&ext, material.clone()).unwrap();
    let kek = kms.encryptor(&owner(), &cmk(&ext)).unwrap();
    let e = kms
        .import_key_material(&ext, SecretKey::from_bytes(&[0xcd; 32]))
        .unwrap_err();
    let hex_ab = "ab".repeat(32);
    let hex_cd = "cd".repeat(32);
    for s in [
        format!("{kek:?}"),
        format!("{e:?}"),
        format!("{e}"),
        format!("{material:?}"),
        format!("{:?}", kms.describe_key(&ext).unwrap()),
        kms.describe_key(&ext).unwrap().to_string(),
    ] {
        let lower = s.to_lowercase();
        assert!(!lower.contains(&hex_ab) && !lower.contains(&hex_cd), "{s}");
        assert!(!s.contains("171, 171, 171"), "{s}");
        assert!(!s.contains("205, 205, 205"), "{s}");
    }
    assert!(format!("{kek:?}").contains(&ext));
}

#[test]
fn describe_key_display_and_dates() {
    let env = Env::new();
    let kms = env.open();
    let m = kms
        .create_key(Some("hello"), KeyOrigin::AliyunKms, Some("alias/h"))
        .unwrap();
    let text = m.to_string();
    for field in [
        "KeyId: ",
        "Description: hello",
        "KeyState: Enabled",
        "Origin: Aliyun_KMS",
        "Creator: User",
        "CreationDate: 20",
        "PrimaryKeyVersion: 1",
        "KeyVersions: 1",
        "Aliases: alias/h",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(field)),
            "{field}\n{text}"
        );
    }
    assert!(!text.contains("DeleteDate"));
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(rfc3339(1_709_210_096), "2024-02-29T12:34:56Z");
    assert_eq!(rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
    let ext = kms.create_key(None, KeyOrigin::External, None).unwrap();
    assert!(ext.to_string().contains("PrimaryKeyVersion: -"));
    assert!(ext.to_string().contains("Origin: EXTERNAL"));
    assert!(ext.to_string().contains("KeyState: PendingImport"));
}

#[test]
fn kms_and_kek_are_send_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Kms>();
    assert_send_sync::<Kek>();
}

#[test]
fn a_request_principal_reads_the_callers_groups_only_when_asked() {
    use std::os::unix::process::CommandExt;
    // A caller with supplementary groups 4242 and 4343 (setting them needs
    // root; otherwise the test process's own groups serve).
    let mut cmd = std::process::Command::new("sleep");
    cmd.arg("5");
    let want: Vec<u32> = if nix::unistd::geteuid().is_root() {
        // SAFETY: setgroups is async-signal-safe; the child runs it alone.
        unsafe {
            cmd.pre_exec(|| {
                let gs = [4242 as libc::gid_t, 4343];
                if libc::setgroups(gs.len(), gs.as_ptr()) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        vec![4242, 4343]
    } else {
        nix::unistd::getgroups()
            .unwrap()
            .into_iter()
            .map(|g| g.as_raw())
            .collect()
    };
    let mut child = cmd.spawn().unwrap();
    let p = Principal::of_process(1000, 1000, child.id());
    for g in &want {
        assert!(p.in_group(*g), "group {g} not seen");
    }
    assert!(p.in_group(1000), "the primary group counts");
    assert!(!p.in_group(4141));
    child.kill().unwrap();
    child.wait().unwrap();
    // A caller that is gone has no supplementary groups (nothing is granted
    // through them), and the primary group still counts.
    let gone = Principal::of_process(1000, 1000, child.id());
    assert!(!gone.in_group(4242));
    assert!(gone.in_group(1000));
}

/// The data path's per-request check: cheap while the keystore is
/// unchanged, and it sees a state change made by another process.
#[test]
fn check_cmk_usable_follows_state_changes_made_elsewhere() {
    let env = Env::new();
    let kms = env.open();
    let other = env.open();
    let m = kms.create_key(None, KeyOrigin::AliyunKms, None).unwrap();
    let key_id = *m.key_id.as_bytes();
    let e1 = kms.check_cmk_usable(&key_id, 0).unwrap();
    assert_eq!(kms.check_cmk_usable(&key_id, e1).unwrap(), e1);
    other.disable_key(&id_of(&m)).unwrap();
    let e = kms.check_cmk_usable(&key_id, e1).unwrap_err();
    assert_eq!(e.code, OssCode::RejectedDisabled);
    other.enable_key(&id_of(&m)).unwrap();
    let e2 = kms.check_cmk_usable(&key_id, e1).unwrap();
    assert_ne!(e2, e1);
    other.schedule_key_deletion(&id_of(&m), 7).unwrap();
    assert_eq!(
        code(kms.check_cmk_usable(&key_id, e2)),
        OssCode::RejectedPendingDeletion
    );
    assert_eq!(
        code(kms.check_cmk_usable(&[7; 16], 0)),
        OssCode::KeyNotFound
    );
}

/// Bad input (issue 6, part 7): a key ref that no alias could be was
/// looked up (AliasNotFound, with a newline echoed into the error); a
/// description with a newline broke describe-key's one-field-a-line output.
#[test]
fn regression_malformed_aliases_and_descriptions_are_invalid_parameters() {
    let env = Env::new();
    let kms = env.open();
    kms.create_key(None, KeyOrigin::AliyunKms, Some("alias/app"))
        .unwrap();
    let long = format!("alias/{}", "a".repeat(256));
    for bad in [
        "alias/app\n",
        "alias/app ",
        "alias/",
        "alias/é",
        long.as_str(),
    ] {
        assert_eq!(
            code(kms.describe_key(bad)),
            OssCode::InvalidParameter,
            "{bad:?}"
        );
        assert_eq!(
            code(kms.disable_key(bad)),
            OssCode::InvalidParameter,
            "{bad:?}"
        );
    }
    // Aliases are case-sensitive: another alias, which does not exist.
    assert_eq!(code(kms.describe_key("alias/APP")), OssCode::AliasNotFound);
    for bad in ["line\nbreak", "tab\there", "nul\0"] {
        assert_eq!(
            code(kms.create_key(Some(bad), KeyOrigin::AliyunKms, None)),
            OssCode::InvalidParameter,
            "{bad:?}"
        );
    }
    assert_eq!(kms.list_keys().unwrap().len(), 1, "nothing was created");
}

/// Issue 12, part 3: the keystore's metadata (states, aliases, dates) is
/// authenticated. An edit by hand is refused at open and at the re-check
/// that open SSE-KMS objects make, naming the file.
#[test]
fn a_keystore_edited_by_hand_is_an_integrity_error() {
    let env = Env::new();
    let kms = env.open();
    let k = kms.create_key(None, KeyOrigin::AliyunKms, None).unwrap();
    kms.disable_key(&id_of(&k)).unwrap();
    let id = Uuid::parse_str(&id_of(&k)).unwrap();
    let epoch = code(kms.check_cmk_usable(id.as_bytes(), 0));
    assert_eq!(epoch, OssCode::RejectedDisabled);
    let path = env.dir.join("keystore.toml");
    let good = env.keystore_text();
    assert!(good.contains("state = \"Disabled\""), "{good}");
    // Re-enabled by hand.
    fs::write(
        &path,
        good.replace("state = \"Disabled\"", "state = \"Enabled\""),
    )
    .unwrap();
    for e in [
        Env::open_err(&env),
        kms.check_cmk_usable(id.as_bytes(), 0).unwrap_err(),
        kms.encryptor(&owner(), &cmk(&id_of(&k))).unwrap_err(),
        kms.list_keys().unwrap_err(),
    ] {
        assert_eq!(e.code, OssCode::DataIntegrityError, "{e}");
        assert!(e.message.contains("keystore.toml"), "{e}");
        assert_eq!(e.resource.as_deref(), path.to_str());
    }
    // Nothing was rewritten by those attempts: the edit is still there, and
    // putting the file back restores service as it was.
    assert!(env.keystore_text().contains("state = \"Enabled\""));
    fs::write(&path, &good).unwrap();
    assert_eq!(
        code(kms.check_cmk_usable(id.as_bytes(), 0)),
        OssCode::RejectedDisabled
    );
}

#[test]
fn a_swapped_alias_in_the_keystore_is_an_integrity_error() {
    let env = Env::new();
    let kms = env.open();
    let a = kms.create_key(None, KeyOrigin::AliyunKms, None).unwrap();
    let b = kms.create_key(None, KeyOrigin::AliyunKms, None).unwrap();
    kms.create_alias("alias/prod", &id_of(&a)).unwrap();
    let text = env.keystore_text();
    let swapped = text.replace(
        &format!("\"alias/prod\" = \"{}\"", id_of(&a)),
        &format!("\"alias/prod\" = \"{}\"", id_of(&b)),
    );
    assert_ne!(swapped, text, "the alias line is where expected: {text}");
    fs::write(env.dir.join("keystore.toml"), swapped).unwrap();
    let e = kms.encryptor(&owner(), &cmk("alias/prod")).unwrap_err();
    assert_eq!(e.code, OssCode::DataIntegrityError, "{e}");
    assert_eq!(Env::open_err(&env).code, OssCode::DataIntegrityError);
}

/// A keystore from before MACs is accepted at open (the engine then
/// upgrades it); one whose MAC was stripped, to pass it off as such, is not:
/// its check value was re-sealed when the MAC was added.
#[test]
fn a_keystore_without_its_mac_is_refused_unless_it_predates_macs() {
    let env = Env::new();
    let kms = env.open();
    assert!(!kms.needs_upgrade());
    let text = env.keystore_text();
    let stripped: String = text
        .lines()
        .filter(|l| !l.starts_with("mac = "))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(stripped, text);
    fs::write(env.dir.join("keystore.toml"), &stripped).unwrap();
    let e = Env::open_err(&env);
    assert_eq!(e.code, OssCode::DataIntegrityError, "{e}");
    assert!(e.message.contains("removed"), "{e}");
    assert_eq!(
        kms.list_keys().unwrap_err().code,
        OssCode::DataIntegrityError
    );

    // A genuine old keystore: opens, is flagged, and upgrading adds the MAC.
    fs::write(env.dir.join("keystore.toml"), &text).unwrap();
    kms.downgrade_for_test().unwrap();
    assert!(!env.keystore_text().contains("mac = "));
    let old = env.open();
    assert!(old.needs_upgrade());
    old.finish_upgrade(None, Default::default()).unwrap();
    assert!(!old.needs_upgrade());
    assert!(env.keystore_text().contains("mac = "));
    let again = env.open();
    assert!(!again.needs_upgrade());
    again.list_keys().unwrap();
    // A wrong root key is still told apart from tampering.
    let other = TempDir::new().unwrap();
    let wrong = RootKeySource::File(other.path().join("root.key"));
    fs::write(other.path().join("root.key"), [7u8; 32]).unwrap();
    fs::set_permissions(
        other.path().join("root.key"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let e = Kms::open(states(&env.dir), &wrong, Policy::empty(OWNER))
        .map(|_| ())
        .unwrap_err();
    assert_eq!(e.code, OssCode::InvalidParameter, "{e}");
}
