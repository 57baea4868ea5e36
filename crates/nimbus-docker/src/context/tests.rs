use std::collections::BTreeSet;

use super::*;

#[test]
fn dockerignore_rules() {
    // (rules, path, excluded)
    #[rustfmt::skip]
    let cases: &[(&str, &str, bool)] = &[
        ("", "a.txt", false),
        ("# only a comment\n\n", "a.txt", false),
        ("node_modules", "node_modules", true),
        ("node_modules", "node_modules/x/index.js", true), // inside an excluded folder
        ("node_modules", "src/node_modules", false),       // anchored at the context root
        ("/node_modules", "node_modules/x", true),         // leading slash cleaned
        ("./build/../dist", "dist/app.js", true),          // . and .. cleaned
        ("*.log", "debug.log", true),
        ("*.log", "logs/debug.log", false),                // * stays within one segment
        ("*/*.log", "logs/debug.log", true),
        ("**/*.log", "logs/deep/debug.log", true),         // ** spans segments
        ("**/*.log", "debug.log", true),                   // ... including none
        ("src/**/test", "src/a/b/test/x.rs", true),
        ("?.txt", "a.txt", true),
        ("?.txt", "ab.txt", false),
        ("[ab].txt", "b.txt", true),
        ("[ab].txt", "c.txt", false),
        ("[a-c].txt", "b.txt", true),
        ("[^a-c].txt", "b.txt", false),
        ("[^a-c].txt", "d.txt", true),
        ("[ab", "a", false),                               // unclosed class matches nothing
        ("\\*.txt", "*.txt", true),                        // escaped star is literal
        ("\\*.txt", "a.txt", false),
        ("*.md\n!README.md", "README.md", false),          // exception re-includes
        ("*.md\n!README.md", "CHANGES.md", true),
        ("!README.md\n*.md", "README.md", true),           // the last matching line wins
        ("docs\n!docs/keep.md", "docs/keep.md", false),
        ("docs\n!docs/keep.md", "docs/other.md", true),
        ("  secret.env  ", "secret.env", true),            // surrounding spaces trimmed
    ];
    for (rules, path, excluded) in cases {
        assert_eq!(
            IgnoreRules::parse(rules).excludes(path),
            *excluded,
            "{rules:?} on {path:?}"
        );
    }
}

fn packed(dir: &Path, keep: Option<&str>) -> BTreeSet<String> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    append_context(&mut builder, dir, keep).expect("packed");
    let bytes = builder.into_inner().expect("finished");
    let mut archive = tar::Archive::new(&bytes[..]);
    archive
        .entries()
        .expect("entries")
        .map(|e| {
            let e = e.expect("entry");
            let path = e.path().expect("path").to_string_lossy().into_owned();
            path.trim_start_matches("./")
                .trim_end_matches('/')
                .to_owned()
        })
        .filter(|p| !p.is_empty() && p != ".")
        .collect()
}

#[test]
fn the_context_leaves_out_what_dockerignore_excludes() -> io::Result<()> {
    let dir = tempfile::tempdir()?;
    let root = dir.path();
    for (path, text) in [
        ("app.js", "ok"),
        ("build/Dockerfile", "FROM scratch"),
        ("node_modules/dep/index.js", "dep"),
        (".git/HEAD", "ref"),
        ("docs/keep.md", "keep"),
        ("docs/drop.md", "drop"),
        ("debug.log", "log"),
    ] {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap_or(root))?;
        std::fs::write(path, text)?;
    }
    std::os::unix::fs::symlink("app.js", root.join("link.js"))?;

    let everything = packed(root, None);
    assert!(
        everything.contains("node_modules/dep/index.js"),
        "{everything:?}"
    );

    std::fs::write(
        root.join(".dockerignore"),
        "# not for the image\nnode_modules\n.git\n*.log\ndocs\n!docs/keep.md\nbuild\n.dockerignore\n",
    )?;
    let sent = packed(root, Some("build/Dockerfile"));
    let expected: BTreeSet<String> = [
        ".dockerignore", // always sent, even when it ignores itself
        "app.js",
        "build/Dockerfile", // the Dockerfile is always sent
        "docs/keep.md",     // re-included from an excluded folder
        "link.js",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(sent, expected);

    // Without a `!` line, an excluded folder is skipped whole, except for the Dockerfile.
    std::fs::write(root.join(".dockerignore"), "build\nnode_modules\n")?;
    let sent = packed(root, Some("build/Dockerfile"));
    assert!(sent.contains("build/Dockerfile"), "{sent:?}");
    assert!(
        !sent.iter().any(|p| p.starts_with("node_modules")),
        "{sent:?}"
    );
    assert!(
        sent.contains(".git/HEAD") && sent.contains("debug.log"),
        "{sent:?}"
    );
    Ok(())
}
