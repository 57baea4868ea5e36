//! `--runtime` and `--handler`: which program serves a function, and the command line that
//! starts it.
//!
//! - `python3` and `node` run the engine's shim (`RUNTIMES_DIR/python/nimbus_shim.py`,
//!   `RUNTIMES_DIR/node/nimbus_shim.js`) with the handler spec `FILE.func` as its argument; the
//!   shim loads `FILE.py` / `FILE.js` from its working directory (the code dir) once.
//! - `binary` runs the user's own executable, which implements the invoke protocol itself; the
//!   handler is then the executable's path inside the code dir (e.g. `bootstrap`, `bin/server`).
//!
//! Every instance gets `PORT` in its environment and must serve `127.0.0.1:$PORT`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

#[cfg(test)]
mod tests;

/// Longest accepted `--handler`.
pub const MAX_HANDLER_LEN: usize = 128;

/// The Python shim, relative to the runtimes dir.
pub const PYTHON_SHIM: &str = "python/nimbus_shim.py";
/// The Node shim, relative to the runtimes dir.
pub const NODE_SHIM: &str = "node/nimbus_shim.js";

/// A `--runtime` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// `python3`: the Python shim.
    Python3,
    /// `node`: the Node shim.
    Node,
    /// `binary`: the user's executable speaks the protocol itself.
    Binary,
}

/// A `--runtime` or `--handler` that cannot be accepted; the message says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandlerError {
    #[error("unknown runtime `{0}`; expected python3, node or binary")]
    UnknownRuntime(String),
    #[error("the handler is empty; expected FILE.func, e.g. index.main")]
    Empty,
    #[error("handler `{spec}` is {len} characters long; the limit is {MAX_HANDLER_LEN}")]
    TooLong { spec: String, len: usize },
    #[error(
        "handler `{0}` names no function; expected FILE.func, e.g. index.main \
         (file index.py or index.js, function main)"
    )]
    MissingFunction(String),
    #[error(
        "handler `{spec}`: file part `{file}` is invalid; use letters, digits, '_' and '-', \
         with '/' between directories (no leading '/', no '.' or '..')"
    )]
    InvalidFile { spec: String, file: String },
    #[error(
        "handler `{spec}`: function name `{function}` is invalid; use letters, digits and '_', \
         not starting with a digit"
    )]
    InvalidFunction { spec: String, function: String },
    #[error(
        "binary handler `{0}` is invalid; name the executable inside the code directory, \
         e.g. bootstrap or bin/server (letters, digits, '_', '-', '.', no '..')"
    )]
    InvalidExecutable(String),
    #[error("the runtimes directory {0} must be an absolute path")]
    RelativeRuntimesDir(PathBuf),
    #[error("the path {0} is not valid UTF-8")]
    NonUtf8Path(PathBuf),
}

/// A parsed `FILE.func` handler spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handler {
    /// Path of the module inside the code dir, without extension: `index`, `src/app`.
    pub file: String,
    /// The function the module exports: `main`.
    pub function: String,
}

/// The program and arguments that start one instance of a function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchCommand {
    /// `python3`, `node` (looked up on `PATH`) or `./EXECUTABLE` (relative to the code dir).
    pub program: String,
    pub args: Vec<String>,
}

// === impl Runtime ===

impl Runtime {
    pub const ALL: [Runtime; 3] = [Runtime::Python3, Runtime::Node, Runtime::Binary];

    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Python3 => "python3",
            Runtime::Node => "node",
            Runtime::Binary => "binary",
        }
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Runtime {
    type Err = HandlerError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Runtime::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| HandlerError::UnknownRuntime(s.to_owned()))
    }
}

// === impl Handler ===

impl Handler {
    /// Parses `FILE.func`: the file part is `/`-separated segments of `[A-Za-z0-9_-]` (not
    /// starting with `-`), the function an identifier. The last `.` separates them.
    pub fn parse(spec: &str) -> Result<Self, HandlerError> {
        check_length(spec)?;
        let Some((file, function)) = spec.rsplit_once('.') else {
            return Err(HandlerError::MissingFunction(spec.to_owned()));
        };
        if function.is_empty() {
            return Err(HandlerError::MissingFunction(spec.to_owned()));
        }
        let file_ok = !file.is_empty()
            && file.split('/').all(|segment| {
                segment
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                    && segment
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            });
        if !file_ok {
            return Err(HandlerError::InvalidFile {
                spec: spec.to_owned(),
                file: file.to_owned(),
            });
        }
        let function_ok = function
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && function
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !function_ok {
            return Err(HandlerError::InvalidFunction {
                spec: spec.to_owned(),
                function: function.to_owned(),
            });
        }
        Ok(Self {
            file: file.to_owned(),
            function: function.to_owned(),
        })
    }
}

impl fmt::Display for Handler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.file, self.function)
    }
}

fn check_length(spec: &str) -> Result<(), HandlerError> {
    if spec.is_empty() {
        return Err(HandlerError::Empty);
    }
    if spec.len() > MAX_HANDLER_LEN {
        return Err(HandlerError::TooLong {
            spec: spec.to_owned(),
            len: spec.len(),
        });
    }
    Ok(())
}

/// Checks a `binary` handler: a relative path inside the code dir, segments of
/// `[A-Za-z0-9_.-]` that do not start with `.` or `-`.
fn parse_executable(spec: &str) -> Result<&str, HandlerError> {
    check_length(spec)?;
    let spec_trimmed = spec.strip_prefix("./").unwrap_or(spec);
    let ok = !spec_trimmed.is_empty()
        && spec_trimmed.split('/').all(|segment| {
            segment
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                && segment
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        });
    if ok {
        Ok(spec_trimmed)
    } else {
        Err(HandlerError::InvalidExecutable(spec.to_owned()))
    }
}

/// Checks `--runtime` and `--handler` together (what `nimbus fn deploy` validates).
pub fn validate(runtime: Runtime, handler: &str) -> Result<(), HandlerError> {
    match runtime {
        Runtime::Python3 | Runtime::Node => Handler::parse(handler).map(|_| ()),
        Runtime::Binary => parse_executable(handler).map(|_| ()),
    }
}

/// The command that starts one instance, to run with the code dir as working directory and
/// `PORT` set. `runtimes_dir` is the absolute path of the `runtimes/` folder holding the shims.
///
/// - `python3`, `index.main` → `python3 RUNTIMES/python/nimbus_shim.py index.main`
/// - `node`, `index.main` → `node RUNTIMES/node/nimbus_shim.js index.main`
/// - `binary`, `bootstrap` → `./bootstrap`
pub fn launch_command(
    runtime: Runtime,
    handler: &str,
    runtimes_dir: &Path,
) -> Result<LaunchCommand, HandlerError> {
    let shim = |relative: &str| -> Result<String, HandlerError> {
        if !runtimes_dir.is_absolute() {
            return Err(HandlerError::RelativeRuntimesDir(runtimes_dir.to_owned()));
        }
        let path = runtimes_dir.join(relative);
        path.to_str()
            .map(str::to_owned)
            .ok_or(HandlerError::NonUtf8Path(path))
    };
    match runtime {
        Runtime::Python3 => {
            let handler = Handler::parse(handler)?;
            Ok(LaunchCommand {
                program: "python3".into(),
                args: vec![shim(PYTHON_SHIM)?, handler.to_string()],
            })
        }
        Runtime::Node => {
            let handler = Handler::parse(handler)?;
            Ok(LaunchCommand {
                program: "node".into(),
                args: vec![shim(NODE_SHIM)?, handler.to_string()],
            })
        }
        Runtime::Binary => Ok(LaunchCommand {
            program: format!("./{}", parse_executable(handler)?),
            args: Vec::new(),
        }),
    }
}

// === impl LaunchCommand ===

impl LaunchCommand {
    /// The command as one `sh -c` line, each word quoted when needed.
    pub fn shell_line(&self) -> String {
        std::iter::once(&self.program)
            .chain(&self.args)
            .map(|word| shell_quote(word))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// `cd CODE_DIR && exec COMMAND`: for drivers that run `sh -c LINE` in their own working
    /// directory (the process driver). `exec` keeps the shim the instance's main process.
    pub fn shell_line_in(&self, code_dir: &Path) -> Result<String, HandlerError> {
        let dir = code_dir
            .to_str()
            .ok_or_else(|| HandlerError::NonUtf8Path(code_dir.to_owned()))?;
        Ok(format!(
            "cd {} && exec {}",
            shell_quote(dir),
            self.shell_line()
        ))
    }
}

/// Quotes a word for `sh` unless it is made only of characters that need no quoting.
pub fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | '=' | ':'));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}
