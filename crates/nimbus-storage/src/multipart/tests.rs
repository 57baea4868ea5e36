use super::*;

const MIB: u64 = 1024 * 1024;
const E1: &str = "11111111111111111111111111111111";
const E2: &str = "22222222222222222222222222222222";
const E3: &str = "33333333333333333333333333333333";

fn stored(parts: &[(i32, &str, u64)]) -> BTreeMap<i32, StoredPart> {
    parts
        .iter()
        .map(|(n, etag, size)| {
            (
                *n,
                StoredPart {
                    etag: etag.to_string(),
                    size: *size,
                },
            )
        })
        .collect()
}

#[test]
fn completion_rules() {
    use CompleteError as E;
    let parts = stored(&[(1, E1, 5 * MIB), (2, E2, 5 * MIB), (3, E3, 1)]);
    let req = |list: &[(i32, &str)]| -> Vec<(i32, String)> {
        list.iter().map(|(n, e)| (*n, e.to_string())).collect()
    };
    let quoted = format!("\"{E2}\"");
    type Case = (Vec<(i32, String)>, Result<(), CompleteError>);
    let cases: Vec<Case> = vec![
        (req(&[(1, E1), (2, E2), (3, E3)]), Ok(())), // all parts
        (req(&[(1, E1), (2, &quoted)]), Ok(())),     // quoted etag; a subset is fine
        (req(&[(3, E3)]), Ok(())),                   // one small last part
        (req(&[]), Err(E::NoParts)),
        (req(&[(2, E2), (1, E1)]), Err(E::InvalidPartOrder)), // descending
        (req(&[(1, E1), (1, E1)]), Err(E::InvalidPartOrder)), // repeated
        (req(&[(1, E2), (2, E2)]), Err(E::InvalidPart(1))),   // etag mismatch
        (req(&[(1, E1), (4, E1)]), Err(E::InvalidPart(4))),   // never uploaded
        (req(&[(1, E1), (3, E3), (2, E2)]), Err(E::InvalidPartOrder)),
        (req(&[(3, E3), (4, E1)]), Err(E::EntityTooSmall(3))), // small and not last
    ];
    for (requested, expected) in cases {
        assert_eq!(check_parts(&requested, &parts), expected, "{requested:?}");
    }
    let small_first = stored(&[(1, E1, MIB), (2, E2, 5 * MIB)]);
    assert_eq!(
        check_parts(&req(&[(1, E1), (2, E2)]), &small_first),
        Err(E::EntityTooSmall(1))
    );
}

#[test]
fn multipart_etags() {
    // md5 of the two 16-byte digests of "a" and "b", as S3 computes it (checked with Python's
    // hashlib: md5(md5(b"a").digest() + md5(b"b").digest())).
    let a = hex(&Md5::checksum(b"a"));
    let b = hex(&Md5::checksum(b"b"));
    assert_eq!(a, "0cc175b9c0f1b6a831c399e269772661");
    assert_eq!(
        multipart_etag([a.as_str(), b.as_str()]).as_deref(),
        Some("96e024ba2074fe77e8e965ba43a704be-2")
    );
    assert_eq!(multipart_etag(["not hex"]), None);
    assert_eq!(multipart_etag(["abc"]), None);
}
