//! The `nimbus` command-line client: every subcommand except `server` talks to the REST API
//! described in docs/api.md.
//!
//! # Layout
//! - [`client`]: base URL and token from the environment, JSON requests, [`client::ApiError`].
//! - [`table`]: column-aligned tables, ages, traffic summaries.
//! - [`views`]: the parts of the API's JSON answers the tables show.
//! - one module per command group: [`deploy`], [`services`], [`versions`], [`traffic`],
//!   [`instances`], [`logs`], [`domains`], [`scaling`] (scale, schedules), [`events`],
//!   [`volumes`].
//!
//! Tables are the default output; `-o json` prints the API's JSON answer as-is, pretty-printed.

/// Like `print!`, but a closed stdout (`nimbus logs -f | head`) ends the command quietly instead
/// of panicking: it returns [`CliError::Closed`] from the calling function.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::write_out(format_args!($($arg)*))?
    };
}

/// Like `println!`, with [`out!`]'s handling of a closed stdout.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::write_out(format_args!("{}\n", format_args!($($arg)*)))?
    };
}

pub mod certs;
pub mod client;
pub mod deploy;
pub mod domains;
pub mod events;
pub mod functions;
pub mod gateway;
pub mod instances;
pub mod logs;
pub mod scaling;
pub mod services;
pub mod storage;
pub mod table;
pub mod traffic;
pub mod usage;
pub mod versions;
pub mod views;
pub mod volumes;

use std::fmt;
use std::io::Write;

use serde::de::DeserializeOwned;
use serde_json::Value;

use client::{ApiError, Client, Config};

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Human-readable tables.
    Table,
    /// The API's JSON, pretty-printed.
    Json,
}

/// Why a command failed; decides the message and the exit code.
#[derive(Debug)]
pub enum CliError {
    /// The API (or the same check run locally first) refused the request.
    Rejected(ApiError),
    /// No API answered at the configured address.
    Unreachable { url: String, detail: Option<String> },
    /// The command line or a file it names is unusable.
    Usage(String),
    /// A deploy finished without a ready version, or timed out.
    Failed(String),
    /// Anything else: an unexpected answer, an I/O error.
    Other(String),
    /// Stdout was closed by its reader (e.g. `| head`); nothing more to say.
    Closed,
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Rejected(e) => e.fmt(f),
            CliError::Unreachable { url, detail } => {
                write!(
                    f,
                    "cannot reach the Nimbus API at {url}: is `nimbus server` running?"
                )?;
                match detail {
                    Some(detail) => write!(f, " ({detail}; set NIMBUS_API to use another address)"),
                    None => write!(f, " (set NIMBUS_API to use another address)"),
                }
            }
            CliError::Usage(m) | CliError::Failed(m) | CliError::Other(m) => f.write_str(m),
            CliError::Closed => f.write_str("stdout was closed"),
        }
    }
}

impl From<nimbus_model::ModelError> for CliError {
    fn from(e: nimbus_model::ModelError) -> Self {
        CliError::Rejected(e.into())
    }
}

impl CliError {
    /// 2 when the server cannot be reached, 0 when the reader of stdout went away, 1 for
    /// everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Unreachable { .. } => 2,
            CliError::Closed => 0,
            _ => 1,
        }
    }

    /// Prints `error: MESSAGE` to stderr; with `-o json`, a refused request's error body also
    /// goes to stdout, so scripts read JSON either way.
    pub fn report(&self, output: Output) {
        if let CliError::Closed = self {
            return;
        }
        if let (Output::Json, CliError::Rejected(e)) = (output, self) {
            // Best effort: the error line below is what matters.
            let _ = print_json(&e.body);
        }
        eprintln!("error: {self}");
    }
}

/// What every command needs: the client, the output format and the namespace flag.
pub struct Ctx {
    pub client: Client,
    pub output: Output,
    /// `-n/--namespace`; `None` means `default` (or, for `deploy -f`, the file's namespace).
    pub namespace: Option<String>,
}

impl Ctx {
    pub fn from_env(output: Output, namespace: Option<String>) -> Result<Self, CliError> {
        Ok(Self {
            client: Client::new(Config::from_env()?)?,
            output,
            namespace,
        })
    }

    /// The namespace to act in.
    pub fn ns(&self) -> &str {
        self.namespace
            .as_deref()
            .unwrap_or(nimbus_model::DEFAULT_NAMESPACE)
    }

    pub fn json(&self) -> bool {
        self.output == Output::Json
    }
}

/// Writes to stdout; a closed pipe becomes [`CliError::Closed`]. Used through [`out!`].
pub fn write_out(args: fmt::Arguments<'_>) -> Result<(), CliError> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_fmt(args)
        .and_then(|()| stdout.flush())
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::BrokenPipe => CliError::Closed,
            _ => CliError::Other(format!("cannot write to stdout: {e}")),
        })
}

/// Pretty-prints JSON to stdout.
pub fn print_json(value: &Value) -> Result<(), CliError> {
    match serde_json::to_string_pretty(value) {
        Ok(text) => outln!("{text}"),
        Err(_) => outln!("{value}"),
    }
    Ok(())
}

/// Reads a typed view out of an API answer.
pub fn decode<T: DeserializeOwned>(value: &Value) -> Result<T, CliError> {
    T::deserialize(value)
        .map_err(|e| CliError::Other(format!("unexpected answer from the API: {e}")))
}

/// Reads the list under `key` (`{"services": [...]}`).
pub fn decode_list<T: DeserializeOwned>(value: &Value, key: &str) -> Result<Vec<T>, CliError> {
    match value.get(key) {
        Some(list) => decode(list),
        None => Err(CliError::Other(format!(
            "unexpected answer from the API: no {key:?} list"
        ))),
    }
}
