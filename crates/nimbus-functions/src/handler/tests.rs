use std::path::Path;

use super::*;

#[test]
fn runtimes() {
    let cases: &[(&str, Option<Runtime>)] = &[
        ("python3", Some(Runtime::Python3)),
        ("node", Some(Runtime::Node)),
        ("binary", Some(Runtime::Binary)),
        ("python", None), // only python3
        ("Node", None),   // case-sensitive
        ("", None),
    ];
    for (input, expected) in cases {
        let got = input.parse::<Runtime>().ok();
        assert_eq!(got, *expected, "{input:?}");
        if let Some(runtime) = expected {
            assert_eq!(runtime.to_string(), *input);
        }
    }
}

/// (spec, Ok((file, function)) or the start of the error message)
type SpecCase = (
    &'static str,
    Result<(&'static str, &'static str), &'static str>,
);

#[test]
fn handler_specs() {
    let cases: &[SpecCase] = &[
        ("index.main", Ok(("index", "main"))),
        ("src/app.handler", Ok(("src/app", "handler"))), // module in a subdirectory
        ("my-module.run_2", Ok(("my-module", "run_2"))), // dash in the file, digit in the name
        ("_private._f", Ok(("_private", "_f"))),
        ("lib/v2/h.main", Ok(("lib/v2/h", "main"))), // nested directories
        (
            "my.mod.main",
            Err("handler `my.mod.main`: file part `my.mod`"),
        ), // last dot splits
        ("", Err("the handler is empty")),
        ("index", Err("handler `index` names no function")),
        ("index.", Err("handler `index.` names no function")),
        (".main", Err("handler `.main`: file part `` is invalid")),
        ("../etc.main", Err("handler `../etc.main`: file part `..")), // no escaping the code dir
        (
            "/abs/index.main",
            Err("handler `/abs/index.main`: file part"),
        ), // no absolute paths
        ("a//b.main", Err("handler `a//b.main`: file part")),         // empty segment
        ("-x.main", Err("handler `-x.main`: file part")),             // looks like an option
        ("in dex.main", Err("handler `in dex.main`: file part")),
        (
            "index.2main",
            Err("handler `index.2main`: function name `2main`"),
        ),
        (
            "index.ma-in",
            Err("handler `index.ma-in`: function name `ma-in`"),
        ),
        ("index.$main", Err("handler `index.$main`: function name")),
    ];
    for (spec, expected) in cases {
        let got = Handler::parse(spec);
        match (expected, &got) {
            (Ok((file, function)), Ok(h)) => {
                assert_eq!(
                    (h.file.as_str(), h.function.as_str()),
                    (*file, *function),
                    "{spec}"
                );
                assert_eq!(h.to_string(), *spec);
            }
            (Err(prefix), Err(e)) => {
                assert!(e.to_string().starts_with(prefix), "{spec}: {e}")
            }
            _ => panic!("{spec}: expected {expected:?}, got {got:?}"),
        }
    }
    let long = format!("{}.main", "a".repeat(MAX_HANDLER_LEN));
    assert!(matches!(
        Handler::parse(&long),
        Err(HandlerError::TooLong { .. })
    ));
}

#[test]
fn launch_commands() {
    let dir = Path::new("/opt/nimbus/runtimes");
    // (runtime, handler, Ok(shell line) or the start of the error message)
    let cases: &[(Runtime, &str, Result<&str, &str>)] = &[
        (
            Runtime::Python3,
            "index.main",
            Ok("python3 /opt/nimbus/runtimes/python/nimbus_shim.py index.main"),
        ),
        (
            Runtime::Node,
            "src/app.handler",
            Ok("node /opt/nimbus/runtimes/node/nimbus_shim.js src/app.handler"),
        ),
        (Runtime::Binary, "bootstrap", Ok("./bootstrap")),
        (Runtime::Binary, "./bin/server", Ok("./bin/server")), // leading ./ tolerated
        (Runtime::Binary, "server-1.2", Ok("./server-1.2")),
        (
            Runtime::Binary,
            "../bin/sh",
            Err("binary handler `../bin/sh`"),
        ),
        (Runtime::Binary, "/bin/sh", Err("binary handler `/bin/sh`")),
        (Runtime::Binary, ".hidden", Err("binary handler `.hidden`")),
        (Runtime::Binary, "a b", Err("binary handler `a b`")),
        (
            Runtime::Python3,
            "index",
            Err("handler `index` names no function"),
        ),
        (Runtime::Node, "", Err("the handler is empty")),
    ];
    for (runtime, handler, expected) in cases {
        let got = launch_command(*runtime, handler, dir).map(|c| c.shell_line());
        match (expected, &got) {
            (Ok(line), Ok(got_line)) => assert_eq!(got_line, line, "{runtime} {handler}"),
            (Err(prefix), Err(e)) => {
                assert!(
                    e.to_string().starts_with(prefix),
                    "{runtime} {handler}: {e}"
                )
            }
            _ => panic!("{runtime} {handler}: expected {expected:?}, got {got:?}"),
        }
        assert_eq!(
            validate(*runtime, handler).is_ok(),
            expected.is_ok(),
            "{runtime} {handler}"
        );
    }
}

#[test]
fn launch_command_words() {
    let command = launch_command(Runtime::Python3, "index.main", Path::new("/r")).unwrap();
    assert_eq!(command.program, "python3");
    assert_eq!(command.args, vec!["/r/python/nimbus_shim.py", "index.main"]);
    // The shims need an absolute path: the instance runs in the code dir.
    assert_eq!(
        launch_command(Runtime::Node, "index.main", Path::new("runtimes")),
        Err(HandlerError::RelativeRuntimesDir("runtimes".into()))
    );
    // `binary` does not use the runtimes dir at all.
    assert!(launch_command(Runtime::Binary, "bootstrap", Path::new("runtimes")).is_ok());
}

#[test]
fn shell_lines() {
    let command = LaunchCommand {
        program: "python3".into(),
        args: vec!["/opt/my runtimes/shim.py".into(), "index.main".into()],
    };
    let cases: &[(&str, &str)] = &[
        (
            "/srv/code",
            "cd /srv/code && exec python3 '/opt/my runtimes/shim.py' index.main",
        ),
        (
            "/tmp/it's here", // a quote inside the path
            r"cd '/tmp/it'\''s here' && exec python3 '/opt/my runtimes/shim.py' index.main",
        ),
    ];
    for (dir, expected) in cases {
        assert_eq!(command.shell_line_in(Path::new(dir)).unwrap(), *expected);
    }
    let quotes: &[(&str, &str)] = &[
        ("plain-word_1.0/x", "plain-word_1.0/x"),
        ("", "''"),
        ("a b", "'a b'"),
        ("$HOME", "'$HOME'"),
        ("a'b", r"'a'\''b'"),
    ];
    for (word, expected) in quotes {
        assert_eq!(shell_quote(word), *expected, "{word:?}");
    }
}
