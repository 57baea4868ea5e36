use serde_json::json;

use super::*;

fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

#[test]
fn timer_events() {
    let fire = TimerFire {
        namespace: "default",
        function: "report",
        trigger_id: "t7",
        cron: "*/5 * * * *",
        scheduled: utc("2025-01-01T12:05:00Z"),
    };
    assert_eq!(
        timer_fired(&fire).to_value(),
        json!({
            "specversion": "1.0",
            "id": "timer-t7-1735733100000",
            "source": "/nimbus/namespaces/default/functions/report/triggers/t7",
            "type": "com.nimbus.timer.fired",
            "time": "2025-01-01T12:05:00.000Z",
            "subject": "t7",
            "datacontenttype": "application/json",
            "data": {
                "trigger": "t7",
                "cron": "*/5 * * * *",
                "scheduled_time": "2025-01-01T12:05:00.000Z"
            }
        })
    );
    // The same fire gives the same id; the next one a different id.
    let again = timer_fired(&fire);
    let next = timer_fired(&TimerFire {
        scheduled: utc("2025-01-01T12:10:00Z"),
        ..fire.clone()
    });
    assert_eq!(again.id, timer_fired(&fire).id);
    assert_ne!(next.id, again.id);
}

#[test]
fn storage_events() {
    // (kind, key, size, etag, expected type)
    let cases: &[(ObjectEventKind, &str, u64, &str, &str)] = &[
        (
            ObjectEventKind::Created,
            "photos/cat.png",
            1234,
            "9b2cf535f27731c974343645a3985328",
            OBJECT_CREATED,
        ),
        (
            ObjectEventKind::Deleted,
            "photos/cat.png",
            1234,
            "9b2cf535f27731c974343645a3985328",
            OBJECT_DELETED,
        ),
        (
            ObjectEventKind::Created,
            "big.bin",
            10 << 20,
            "0a1b2c-3",
            OBJECT_CREATED,
        ), // multipart etag
        (
            ObjectEventKind::Created,
            "a b/ü.txt",
            0,
            "d41d8cd98f00b204e9800998ecf8427e",
            OBJECT_CREATED,
        ), // any key, empty object
    ];
    for (kind, key, size, etag, event_type) in cases {
        let change = ObjectChange {
            bucket: "media",
            key,
            size: *size,
            etag,
            kind: *kind,
            time: utc("2025-03-04T05:06:07.089Z"),
        };
        let event = object_event(&change, "inv-0123456789abcdef");
        assert_eq!(
            event.to_value(),
            json!({
                "specversion": "1.0",
                "id": "inv-0123456789abcdef",
                "source": "/nimbus/storage/buckets/media",
                "type": event_type,
                "time": "2025-03-04T05:06:07.089Z",
                "subject": key,
                "datacontenttype": "application/json",
                "data": {"bucket": "media", "key": key, "size": size, "etag": etag}
            }),
            "{kind:?} {key}"
        );
    }
}

#[test]
fn optional_attributes_are_omitted_and_parsed() {
    let minimal = json!({
        "specversion": "1.0",
        "id": "1",
        "source": "/x",
        "type": "t",
        "data": null
    });
    let event: CloudEvent = serde_json::from_value(minimal.clone()).unwrap();
    assert_eq!(
        (event.time.as_deref(), event.subject.as_deref()),
        (None, None)
    );
    assert_eq!(event.to_value(), minimal);
}
