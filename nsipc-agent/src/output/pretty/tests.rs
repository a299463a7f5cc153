use std::time::Duration;

use super::*;
use crate::containers::{Pod, Runtime};

const PLAIN: Style = Style {
    color: false,
    utc: true,
};

fn line(style: Style, write: impl FnOnce(&mut PrettyLine<'_>)) -> String {
    let mut buf = Vec::new();
    write(&mut PrettyLine::new(&mut buf, style));
    String::from_utf8(buf).unwrap()
}

fn at(secs: u64, nanos: u32) -> SystemTime {
    UNIX_EPOCH + Duration::new(secs, nanos)
}

#[test]
fn times_of_day_in_milliseconds() {
    for (time, text) in [
        (at(0, 0), "00:00:00.000"),
        (at(1_700_000_000, 5_000), "22:13:20.000"),
        (at(1_700_000_000, 999_999_999), "22:13:20.999"),
        (at(1_700_000_001, 12_345_678), "22:13:21.012"),
        (at(86_399, 100_000_000), "23:59:59.100"),
    ] {
        let mut buf = Vec::new();
        push_time_of_day(&mut buf, time, true);
        assert_eq!(String::from_utf8(buf).unwrap(), text);
    }
}

#[test]
fn local_time_follows_the_time_zone_libc_has() {
    // Whatever the zone, the minutes past the hour of a whole-hour zone, and the local
    // second of day, are what localtime_r says.
    let secs = 1_700_000_000;
    let mut buf = Vec::new();
    push_time_of_day(&mut buf, at(secs, 0), false);
    let local = local_second_of_day(secs).unwrap();
    assert_eq!(
        String::from_utf8(buf).unwrap(),
        format!(
            "{:02}:{:02}:{:02}.000",
            local / 3600,
            local / 60 % 60,
            local % 60
        )
    );
}

#[test]
fn columns_are_padded_to_line_up() {
    let head = |kind, ns, who, task| {
        line(PLAIN, |l| {
            l.head(&Head {
                time: at(1_700_000_000, 0),
                kind,
                tone: Tone::Create,
                ns,
                who,
                task,
            });
            l.uint("id", 3);
        })
    };
    assert_eq!(
        head(
            "msg.create",
            Some(4026532177),
            Who::Host,
            Some((1234, &b"ipcmk"[..]))
        ),
        "22:13:20.000 msg.create         4026532177 host         1234/ipcmk           id 3"
    );
    assert_eq!(
        head("agent.ready", None, Who::Nobody, None),
        "22:13:20.000 agent.ready        -          -            -                    id 3"
    );
    // Longer than its column: the rest moves right, nothing is cut.
    let long = Container {
        id: "ab".repeat(32),
        runtime: Runtime::Docker,
        name: Some("a-rather-long-name".into()),
        pod: None,
    };
    assert_eq!(
        head(
            "container.host_ipc",
            Some(4026531839),
            Who::Containers(&[&long]),
            Some((4_194_304, &b"postgres: walwr"[..]))
        ),
        "22:13:20.000 container.host_ipc 4026531839 a-rather-long-name 4194304/postgres: walwr id 3"
    );
}

#[test]
fn containers_by_name_then_pod_then_short_id() {
    let unnamed = Container {
        id: "9c1f3b6e0a2d4c8e7f5a1b3d9e0c2f4a6b8d0e1f3a5c7e9b2d4f6a8c0e1b3d5f".into(),
        runtime: Runtime::Containerd,
        name: None,
        pod: None,
    };
    let in_pod = Container {
        pod: Some(Pod {
            name: "db-0".into(),
            namespace: "prod".into(),
            uid: String::new(),
        }),
        ..unnamed.clone()
    };
    let named = Container {
        name: Some("web".into()),
        ..in_pod.clone()
    };
    assert_eq!(
        line(PLAIN, |l| {
            l.containers("containers", &[&named, &in_pod, &unnamed]);
        }),
        " containers web,prod/db-0,9c1f3b6e0a2d"
    );
}

#[test]
fn facts_in_the_units_people_read() {
    assert_eq!(
        line(PLAIN, |l| {
            l.key(0x5eed).key(-1).mode(0o1600).mode(0o44);
            l.hex("addr", 0x7f00_0000_1000).hex("flags", 0);
            l.octal("flags", 0o1600).octal("flags", 0);
            l.switch(4026531839, 4026532177).flag("late");
        }),
        " key 0x00005eed key 0xffffffff mode 0600 mode 0044 addr 0x7f0000001000 flags 0x0 \
         flags 01600 flags 00 4026531839→4026532177 late"
    );
    let durations: Vec<String> = [
        0,
        999,
        1_000,
        1_500,
        12_345_678,
        1_000_000_000,
        1_234_000_000,
        90_000_000_001,
    ]
    .into_iter()
    .map(|ns| {
        line(PLAIN, |l| {
            l.duration("t", ns);
        })
    })
    .collect();
    assert_eq!(
        durations,
        [
            " t 0ns",
            " t 999ns",
            " t 1µs",
            " t 1.5µs",
            " t 12.345ms",
            " t 1s",
            " t 1.234s",
            " t 90s"
        ]
    );
}

#[test]
fn text_from_outside_cannot_drive_the_terminal() {
    assert_eq!(
        line(PLAIN, |l| {
            l.text("comm", b"evil\x1b[2J\x07\x7f\xc2\x9b\xff");
        }),
        " comm evil\\x1b[2J\\x07\\x7f\\u{9b}\u{fffd}"
    );
    // Its width counts the escapes as written.
    let mut buf = Vec::new();
    assert_eq!(push_text(&mut buf, b"a\x1bb"), 6);
    assert_eq!(push_text(&mut buf, "pé".as_bytes()), 2);
}

#[test]
fn colour_only_on_the_kind_and_only_when_asked() {
    let head = |color, tone| {
        line(Style { color, utc: true }, |l| {
            l.head(&Head {
                time: at(0, 0),
                kind: "x.y",
                tone,
                ns: None,
                who: Who::Nobody,
                task: None,
            })
        })
    };
    assert_eq!(
        head(true, Tone::Destroy),
        "00:00:00.000 \x1b[31mx.y\x1b[0m                -          -            -"
    );
    assert_eq!(
        head(true, Tone::Plain),
        "00:00:00.000 x.y                -          -            -"
    );
    assert_eq!(head(false, Tone::Error), head(true, Tone::Plain));
}
