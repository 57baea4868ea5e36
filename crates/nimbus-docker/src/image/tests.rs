use bollard::models::ProgressDetail;

use super::*;

#[test]
fn splits_image_references() {
    let cases: &[(&str, Option<(&str, &str)>)] = &[
        ("busybox", Some(("busybox", "latest"))),
        ("busybox:1.36", Some(("busybox", "1.36"))),
        ("nimbus/hello:v1", Some(("nimbus/hello", "v1"))),
        ("localhost:5000/app", Some(("localhost:5000/app", "latest"))), // a port, not a tag
        ("localhost:5000/app:v2", Some(("localhost:5000/app", "v2"))),
        ("ghcr.io/a/b/c:1", Some(("ghcr.io/a/b/c", "1"))),
        ("app@sha256:abc", Some(("app", "sha256:abc"))),
        ("", None),
        ("a b", None),
        ("app:", None),
        (":v1", None),
        ("@sha256:abc", None),
    ];
    for (reference, expected) in cases {
        let got = split_image_ref(reference).ok();
        let expected = expected.map(|(r, t)| (r.to_owned(), t.to_owned()));
        assert_eq!(got, expected, "{reference:?}");
    }
}

#[test]
fn splits_build_output_into_lines() {
    // Each case: chunks in, lines out after each chunk, and the rest at the end.
    type Case<'a> = (&'a [&'a str], &'a [&'a [&'a str]], Option<&'a str>);
    let cases: &[Case<'_>] = &[
        (
            &["Step 1/2 : FROM scratch\n"],
            &[&["Step 1/2 : FROM scratch"]],
            None,
        ),
        (
            &["Ste", "p 1/2\n ---> x\n"],
            &[&[], &["Step 1/2", " ---> x"]],
            None,
        ),
        (&["a\n\n\nb\r\n"], &[&["a", "b"]], None), // blank lines dropped, CR stripped
        (&["done", ""], &[&[], &[]], Some("done")),
        (&["\n"], &[&[]], None),
    ];
    for (chunks, expected, rest) in cases {
        let mut splitter = LineSplitter::default();
        for (chunk, lines) in chunks.iter().zip(expected.iter()) {
            assert_eq!(splitter.push(chunk), *lines, "{chunks:?} at {chunk:?}");
        }
        assert_eq!(splitter.finish().as_deref(), *rest, "{chunks:?}");
        assert_eq!(splitter.finish(), None, "finish empties it");
    }
}

#[test]
fn finds_the_failing_step() {
    let log = |lines: &[&str]| lines.iter().map(|l| (*l).to_owned()).collect::<Vec<_>>();
    let cases: &[(&[&str], Option<&str>)] = &[
        (
            &[
                "Step 1/3 : FROM scratch",
                " ---> abc",
                "Step 2/3 : RUN false",
                " ---> Running in x",
            ],
            Some("Step 2/3 : RUN false"),
        ),
        (&["Sending build context"], None),
        (&[], None),
    ];
    for (lines, expected) in cases {
        assert_eq!(failing_step(&log(lines)).as_deref(), *expected, "{lines:?}");
    }
}

#[test]
fn formats_pull_progress() {
    let info =
        |id: Option<&str>, status: Option<&str>, detail: Option<(i64, i64)>| CreateImageInfo {
            id: id.map(str::to_owned),
            status: status.map(str::to_owned),
            progress_detail: detail.map(|(current, total)| ProgressDetail {
                current: Some(current),
                total: Some(total),
            }),
            ..CreateImageInfo::default()
        };
    let cases = &[
        (
            info(None, Some("Pulling from library/busybox"), None),
            Some("Pulling from library/busybox"),
        ),
        (
            info(
                Some("abc"),
                Some("Downloading"),
                Some((1_500_000, 3_000_000)),
            ),
            Some("abc: Downloading 1.5/3.0 MB"),
        ),
        (
            info(Some("abc"), Some("Extracting"), Some((2_000_000, 0))),
            Some("abc: Extracting 2.0 MB"),
        ),
        (
            info(Some("abc"), Some("Pull complete"), Some((0, 0))),
            Some("abc: Pull complete"),
        ),
        (info(Some("abc"), None, None), None),
        (info(None, Some("  "), None), None),
    ];
    for (info, expected) in cases {
        assert_eq!(progress_line(info).as_deref(), *expected, "{info:?}");
    }
}

#[test]
fn dockerfile_inside_or_outside_the_context() {
    let cases = &[
        ("/src", "/src/Dockerfile", Some("Dockerfile")),
        (
            "/src",
            "/src/docker/prod.Dockerfile",
            Some("docker/prod.Dockerfile"),
        ),
        ("/src", "/elsewhere/Dockerfile", None),
        ("/src", "/src", None),
        ("/src", "/srcx/Dockerfile", None), // a prefix of the name is not a parent
    ];
    for (context, dockerfile, expected) in cases {
        let got = dockerfile_in_context(Path::new(context), Path::new(dockerfile));
        assert_eq!(got.as_deref(), *expected, "{dockerfile}");
    }
}
