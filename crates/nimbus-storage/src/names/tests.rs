use super::*;

#[test]
fn bucket_names() {
    use BucketNameError as E;
    let cases: &[(&str, Result<(), BucketNameError>)] = &[
        ("photos", Ok(())),
        ("my-bucket.v2", Ok(())),
        ("abc", Ok(())),                                 // shortest
        (&"a".repeat(63), Ok(())),                       // longest
        ("123", Ok(())),                                 // digits only
        ("ab", Err(E::Length(2))),                       // too short
        (&"a".repeat(64), Err(E::Length(64))),           // too long
        ("", Err(E::Length(0))),                         // empty
        ("My-Bucket", Err(E::Character('M'))),           // uppercase
        ("my_bucket", Err(E::Character('_'))),           // underscore
        ("a/b/c", Err(E::Character('/'))),               // a path
        ("..", Err(E::Length(2))),                       // traversal is never a name
        ("...", Err(E::Edge)),                           // nor are dots alone
        ("-abc", Err(E::Edge)),                          // starts with '-'
        ("abc.", Err(E::Edge)),                          // ends with '.'
        ("a..b", Err(E::AdjacentPeriods)),               // two periods
        ("192.168.5.4", Err(E::IpAddress)),              // IP address
        ("999.1.1.1", Err(E::IpAddress)),                // IP-formatted even if out of range
        ("1.2.3", Ok(())),                               // three groups is not an IP
        ("xn--abc", Err(E::ReservedPrefix("xn--"))),     // punycode prefix
        ("sthree-x", Err(E::ReservedPrefix("sthree-"))), // S3 internal
        ("data-s3alias", Err(E::ReservedSuffix("-s3alias"))),
        ("data.mrap", Err(E::ReservedSuffix(".mrap"))),
        ("naïve", Err(E::Character('ï'))), // non-ASCII
    ];
    for (name, expected) in cases {
        assert_eq!(&validate_bucket_name(name), expected, "{name:?}");
    }
}

#[test]
fn messages_say_what_to_change() {
    let message = validate_bucket_name("My-Bucket")
        .err()
        .map(|e| e.to_string());
    assert_eq!(
        message.as_deref(),
        Some("may contain only lowercase letters, digits, '.' and '-' (found 'M')")
    );
}
