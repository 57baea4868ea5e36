use super::*;

use ObjectEventKind::{Created, Deleted};

#[test]
fn event_lists() {
    let cases: &[(&str, Result<&[ObjectEventKind], TriggerError>)] = &[
        ("created", Ok(&[Created])),
        ("deleted", Ok(&[Deleted])),
        ("created,deleted", Ok(&[Created, Deleted])),
        ("deleted, created", Ok(&[Created, Deleted])), // sorted, spaces tolerated
        ("created,created", Ok(&[Created])),           // deduplicated
        ("", Err(TriggerError::NoEvents)),
        (" , ", Err(TriggerError::NoEvents)),
        ("created,put", Err(TriggerError::UnknownEvent("put".into()))),
        ("Created", Err(TriggerError::UnknownEvent("Created".into()))), // lowercase only
    ];
    for (list, expected) in cases {
        assert_eq!(
            parse_events(list),
            expected.clone().map(<[_]>::to_vec),
            "{list:?}"
        );
    }
}

#[test]
fn matching() {
    let uploads = StorageTrigger::new("media", "created", Some("uploads/")).unwrap();
    let any = StorageTrigger::new("media", "created,deleted", Some("")).unwrap();
    assert_eq!(any.prefix, None, "an empty prefix matches every key");
    // (trigger, bucket, key, kind, fires?)
    let cases: &[(&StorageTrigger, &str, &str, ObjectEventKind, bool)] = &[
        (&uploads, "media", "uploads/a.png", Created, true),
        (&uploads, "media", "uploads/", Created, true), // the prefix itself
        (&uploads, "media", "uploads/a.png", Deleted, false), // event not chosen
        (&uploads, "media", "other/a.png", Created, false), // outside the prefix
        (&uploads, "media", "Uploads/a.png", Created, false), // keys are case-sensitive
        (&uploads, "backup", "uploads/a.png", Created, false), // other bucket
        (&any, "media", "x", Deleted, true),
        (&any, "media", "", Created, true),
    ];
    for (trigger, bucket, key, kind, expected) in cases {
        assert_eq!(
            trigger.matches(bucket, key, *kind),
            *expected,
            "{trigger:?} {bucket} {key} {kind}"
        );
    }
}

#[test]
fn invalid_triggers() {
    let long = "p".repeat(MAX_PREFIX_LEN + 1);
    let cases: &[(&str, &str, Option<&str>, TriggerError)] = &[
        ("", "created", None, TriggerError::EmptyBucket),
        ("b", "", None, TriggerError::NoEvents),
        (
            "b",
            "created",
            Some(&long),
            TriggerError::PrefixTooLong(MAX_PREFIX_LEN + 1),
        ),
    ];
    for (bucket, events, prefix, expected) in cases {
        assert_eq!(
            StorageTrigger::new(bucket, events, *prefix),
            Err(expected.clone())
        );
    }
}
