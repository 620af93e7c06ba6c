//! Every row of the reference's validation tables (oss-sse.md §2, §3).

use super::*;

fn code<T: fmt::Debug>(r: Result<T>) -> OssCode {
    r.expect_err("expected an error").code
}

#[test]
fn each_algorithm_is_accepted_exactly() {
    for a in ["AES256", "SM4", "KMS"] {
        let r = SseConfig::bucket_rule(a, None, None).unwrap();
        assert_eq!(r.algorithm.as_str(), a);
        assert_eq!(r.kms_key_id, None);
    }
}

#[test]
fn unknown_wrong_case_or_padded_algorithm_is_invalid_encryption_algorithm() {
    for a in [
        "DES", "random", "", "aes256", "kms", " KMS", "KMS ", "AES-256",
    ] {
        let e = SseConfig::bucket_rule(a, None, None).unwrap_err();
        assert_eq!(e.code, OssCode::InvalidEncryptionAlgorithmError, "{a:?}");
        assert!(e.message.contains("Supported value: AES256/SM4/KMS"));
    }
}

#[test]
fn key_id_with_aes256_or_sm4_is_invalid_argument() {
    for a in ["AES256", "SM4"] {
        let e = SseConfig::bucket_rule(a, Some("alias/foo"), None).unwrap_err();
        assert_eq!(e.code, OssCode::InvalidArgument);
        assert_eq!(
            e.message,
            "KMSMasterKeyID is not applicable if the default sse algorithm is not KMS."
        );
    }
}

#[test]
fn kms_with_data_encryption_other_than_sm4_is_invalid() {
    for d in ["AES256", "sm4", "SM4 ", "DES"] {
        let e = SseConfig::bucket_rule("KMS", None, Some(d)).unwrap_err();
        assert_eq!(
            e.code,
            OssCode::InvalidDataEncryptionAlgorithmError,
            "{d:?}"
        );
    }
    let r = SseConfig::bucket_rule("KMS", None, Some("SM4")).unwrap();
    assert!(r.kms_data_sm4);
    assert_eq!(r.cipher(), Cipher::Sm4Gcm);
}

#[test]
fn data_encryption_with_aes256_or_sm4_is_accepted_and_dropped() {
    for a in ["AES256", "SM4"] {
        let r = SseConfig::bucket_rule(a, None, Some("SM4")).unwrap();
        assert!(!r.kms_data_sm4);
        assert!(!r.describe_rule().contains("KMSDataEncryption"));
    }
}

#[test]
fn unknown_cmk_id_is_accepted_in_a_rule() {
    let r =
        SseConfig::bucket_rule("KMS", Some("00000000-0000-4000-8000-00000000dead"), None).unwrap();
    assert_eq!(
        r.kms_key_id.as_deref(),
        Some("00000000-0000-4000-8000-00000000dead")
    );
    // Empty means the default managed key.
    assert_eq!(
        SseConfig::bucket_rule("KMS", Some(""), None)
            .unwrap()
            .kms_key_id,
        None
    );
}

#[test]
fn malformed_key_ids_are_refused() {
    let long = "a".repeat(MAX_KEY_ID_LEN + 1);
    // Since issue 6, part 7: only a UUID or alias/NAME, so that "ALIAS/x"
    // or a stray word is refused at once rather than at the next write.
    for k in [
        "has space",
        " alias/x",
        "tab\tkey",
        long.as_str(),
        "ALIAS/x",
        "Alias/x",
        "alias/",
        "alias/x\n",
        "alias/x y",
        "key-123",
        "00000000-0000-4000-8000-00000000dea",
        "00000000x0000-4000-8000-00000000dead",
    ] {
        assert_eq!(
            code(SseConfig::bucket_rule("KMS", Some(k), None)),
            OssCode::InvalidArgument
        );
    }
}

#[test]
fn object_headers_follow_the_precedence_rules() {
    assert_eq!(SseConfig::object_headers(None, None, None).unwrap(), None);
    // Data-encryption header alone: ignored.
    assert_eq!(
        SseConfig::object_headers(None, None, Some("SM4")).unwrap(),
        None
    );
    // AES256 plus data-encryption: the data header is ignored.
    let r = SseConfig::object_headers(Some("AES256"), None, Some("SM4"))
        .unwrap()
        .unwrap();
    assert_eq!(r.cipher(), Cipher::Aes256Gcm);
    // Key id without KMS.
    assert_eq!(
        code(SseConfig::object_headers(None, Some("alias/x"), None)),
        OssCode::InvalidArgument
    );
    assert_eq!(
        code(SseConfig::object_headers(
            Some("SM4"),
            Some("alias/x"),
            None
        )),
        OssCode::InvalidArgument
    );
    let r = SseConfig::object_headers(Some("KMS"), Some("alias/x"), Some("SM4"))
        .unwrap()
        .unwrap();
    assert_eq!(r.kms_key_id.as_deref(), Some("alias/x"));
    assert_eq!(r.cipher(), Cipher::Sm4Gcm);
}

#[test]
fn bucket_names_follow_oss_rules() {
    for ok in ["abc", "my-bucket-1", "0a0", &"a".repeat(63)] {
        BucketName::parse(ok).unwrap();
    }
    for bad in [
        "ab",
        "-abc",
        "abc-",
        "ABC",
        "a_b",
        "a.b",
        "",
        &"a".repeat(64),
        "ab c",
        "é12",
    ] {
        assert_eq!(
            code(BucketName::parse(bad)),
            OssCode::InvalidBucketName,
            "{bad:?}"
        );
    }
}

#[test]
fn object_keys_refuse_dot_components_and_reserved_names() {
    ObjectKey::parse("a/b/c.txt").unwrap();
    for bad in [
        "",
        "a//b",
        "../x",
        "a/./b",
        ".ssefs-bucket.toml",
        "d/.ssefs",
        "/abs",
    ] {
        assert_eq!(
            code(ObjectKey::parse(bad)),
            OssCode::InvalidObjectName,
            "{bad:?}"
        );
    }
    let (b, k) = split_object_path("bkt/dir/file").unwrap();
    assert_eq!((b.as_str(), k.as_str()), ("bkt", "dir/file"));
    assert!(split_object_path("nokey").is_err());
}

/// Issue 6, part 7: KMSDataEncryption's only value is SM4; an empty one
/// was taken for "none" and silently dropped SM4 from a rule.
#[test]
fn regression_empty_data_encryption_is_invalid() {
    for a in ["AES256", "SM4", "KMS"] {
        assert_eq!(
            code(SseConfig::bucket_rule(a, None, Some(""))),
            OssCode::InvalidDataEncryptionAlgorithmError
        );
    }
    assert_eq!(
        code(SseConfig::object_headers(Some("KMS"), None, Some(""))),
        OssCode::InvalidDataEncryptionAlgorithmError
    );
}

#[test]
fn key_ids_are_uuids_in_any_case_or_aliases() {
    for k in [
        "00000000-0000-4000-8000-00000000dead",
        "00000000-0000-4000-8000-00000000DEAD",
        "alias/a",
        "alias/x/Y_z-9",
    ] {
        let r = SseConfig::bucket_rule("KMS", Some(k), None).unwrap();
        assert_eq!(r.kms_key_id.as_deref(), Some(k));
    }
}
