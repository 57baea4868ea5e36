//! The build context: a source folder packed as a tar for the engine, minus what its
//! `.dockerignore` excludes, as `docker build` does.
//!
//! The rules follow Docker's: one pattern per line, `#` comments, a leading `/` and `.`/`..`
//! segments cleaned away; `*` matches any run of characters within one path segment, `?` one
//! character, `[...]` a class, `**` any number of segments; a pattern that matches a directory
//! excludes everything in it; a `!` line re-includes what it matches, and the last matching line
//! wins. The Dockerfile and `.dockerignore` itself are always sent (the engine needs them).

use std::io::{self, Write};
use std::path::Path;

/// Where a Dockerfile given outside the folder is put inside the packed context.
pub const OUTSIDE_DOCKERFILE: &str = ".nimbus.Dockerfile";

/// The Dockerfile's path inside the folder, if it is inside (both paths canonical).
pub fn dockerfile_in_context(context: &Path, dockerfile: &Path) -> Option<String> {
    let name = dockerfile.strip_prefix(context).ok()?.to_str()?;
    (!name.is_empty()).then(|| name.to_owned())
}

/// The parsed lines of a `.dockerignore`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct IgnoreRules {
    rules: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    segments: Vec<String>,
    exception: bool,
}

// === impl IgnoreRules ===

impl IgnoreRules {
    pub fn parse(text: &str) -> Self {
        let rules = text
            .lines()
            .filter_map(|line| {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    return None;
                }
                let (exception, pattern) = match line.strip_prefix('!') {
                    Some(rest) => (true, rest.trim()),
                    None => (false, line),
                };
                let mut segments: Vec<String> = Vec::new();
                for segment in pattern.split('/') {
                    match segment {
                        "" | "." => {}
                        ".." => {
                            segments.pop();
                        }
                        _ => segments.push(segment.to_owned()),
                    }
                }
                (!segments.is_empty()).then_some(Rule {
                    segments,
                    exception,
                })
            })
            .collect();
        Self { rules }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether `path` (relative to the context, `/`-separated) is left out.
    pub fn excludes(&self, path: &str) -> bool {
        let path: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let mut excluded = false;
        for rule in &self.rules {
            // The path itself or one of its parent directories.
            let matched = (1..=path.len()).any(|n| segments_match(&rule.segments, &path[..n]));
            if matched {
                excluded = !rule.exception;
            }
        }
        excluded
    }

    /// Whether some `!` line could re-include something inside an excluded directory.
    fn has_exceptions(&self) -> bool {
        self.rules.iter().any(|r| r.exception)
    }
}

fn segments_match(pattern: &[String], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((first, rest)) if first == "**" => {
            segments_match(rest, path) || (!path.is_empty() && segments_match(pattern, &path[1..]))
        }
        Some((first, rest)) => match path.split_first() {
            Some((name, path_rest)) => {
                segment_matches(first.as_bytes(), name.as_bytes())
                    && segments_match(rest, path_rest)
            }
            None => false,
        },
    }
}

/// One segment against one glob: `*`, `?`, `[...]` (ranges, `^`/`!` negation), `\` escapes.
fn segment_matches(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|skip| segment_matches(rest, &name[skip..])),
        Some((b'?', rest)) => !name.is_empty() && segment_matches(rest, &name[1..]),
        Some((b'[', rest)) => match (class_matches(rest, name.first().copied()), name.len()) {
            (Some((true, after)), 1..) => segment_matches(after, &name[1..]),
            _ => false,
        },
        Some((b'\\', rest)) if !rest.is_empty() => {
            name.first() == Some(&rest[0]) && segment_matches(&rest[1..], &name[1..])
        }
        Some((c, rest)) => name.first() == Some(c) && segment_matches(rest, &name[1..]),
    }
}

/// Matches `c` against a class whose `[` was consumed; returns whether it matched and the pattern
/// after the closing `]`, or `None` for an unclosed class (which matches nothing).
fn class_matches(class: &[u8], c: Option<u8>) -> Option<(bool, &[u8])> {
    let c = c?;
    let (negated, mut rest) = match class.first() {
        Some(b'^' | b'!') => (true, &class[1..]),
        _ => (false, class),
    };
    let mut matched = false;
    let mut first = true;
    loop {
        match rest {
            [b']', after @ ..] if !first => return Some((matched != negated, after)),
            [lo, b'-', hi, after @ ..] if *hi != b']' => {
                matched |= (*lo..=*hi).contains(&c);
                rest = after;
            }
            [x, after @ ..] => {
                matched |= *x == c;
                rest = after;
            }
            [] => return None,
        }
        first = false;
    }
}

/// Appends the folder `dir` to `builder` as the build context: what its `.dockerignore`
/// excludes is left out, except `.dockerignore` itself and `keep` (the Dockerfile's path in the
/// folder). Symlinks are kept as links if the builder is set so. Without a `.dockerignore`
/// the whole folder goes in.
pub fn append_context<W: Write>(
    builder: &mut tar::Builder<W>,
    dir: &Path,
    keep: Option<&str>,
) -> io::Result<()> {
    let rules = match std::fs::read_to_string(dir.join(".dockerignore")) {
        Ok(text) => IgnoreRules::parse(&text),
        Err(error) if error.kind() == io::ErrorKind::NotFound => IgnoreRules::default(),
        Err(error) => return Err(error),
    };
    if rules.is_empty() {
        return builder.append_dir_all(".", dir);
    }
    let always = [Some(".dockerignore"), keep];
    append_filtered(builder, dir, Path::new(""), &rules, &always)
}

fn append_filtered<W: Write>(
    builder: &mut tar::Builder<W>,
    root: &Path,
    relative: &Path,
    rules: &IgnoreRules,
    always: &[Option<&str>],
) -> io::Result<()> {
    let mut entries = std::fs::read_dir(root.join(relative))?.collect::<io::Result<Vec<_>>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = relative.join(entry.file_name());
        // Matched as text (a name that is not UTF-8 is matched lossily, packed as it is).
        let text = path.to_string_lossy();
        let included = !rules.excludes(&text) || always.contains(&Some(&*text));
        if entry.file_type()?.is_dir() {
            if included {
                builder.append_dir(&path, entry.path())?;
            }
            // An excluded folder is still searched when a `!` line may bring something back,
            // or when the Dockerfile is in it.
            let holds_kept = always.iter().flatten().any(|kept| {
                kept.strip_prefix(&*text)
                    .is_some_and(|r| r.starts_with('/'))
            });
            if included || holds_kept || rules.has_exceptions() {
                append_filtered(builder, root, &path, rules, always)?;
            }
        } else if included {
            builder.append_path_with_name(entry.path(), &path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
