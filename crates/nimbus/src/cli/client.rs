//! The CLI's HTTP client for the REST API (docs/api.md): where the API is, which token to send,
//! JSON in and out, and the one error shape the API answers with.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::{Method, Url};
use serde_json::{json, Value};

use super::CliError;
use crate::paths;

/// Where the API listens when `NIMBUS_API` is not set (`nimbus server`'s default `--api`).
pub const DEFAULT_API: &str = "http://127.0.0.1:8080";
/// How long one request may take before the API counts as unreachable.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Larger answers are refused rather than buffered (log pages are the biggest, well below this).
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// How long a streamed answer (a build, a pull) may take in all.
const STREAM_TIMEOUT: Duration = Duration::from_secs(60 * 60);
/// Longest line of a streamed answer kept; longer ones are skipped.
const MAX_STREAM_LINE: usize = 1024 * 1024;

/// A request the API refused, in its `{"error": {code, message, field}}` shape. Local checks
/// (the model's validators run before any request) produce the same shape with no status.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status; `None` when the CLI rejected the input itself.
    pub status: Option<u16>,
    pub code: String,
    pub message: String,
    pub field: Option<String>,
    /// The error as JSON, printed as-is with `-o json`.
    pub body: Value,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{} (code {}, field {field})", self.message, self.code),
            None => write!(f, "{} (code {})", self.message, self.code),
        }
    }
}

impl From<nimbus_model::ModelError> for ApiError {
    fn from(e: nimbus_model::ModelError) -> Self {
        let body = json!({"error": {"code": e.code, "message": e.message, "field": e.field}});
        Self {
            status: None,
            code: e.code.to_string(),
            message: e.message,
            field: e.field,
            body,
        }
    }
}

/// A gateway policy the CLI compiled itself, refused as the API would refuse it.
impl From<nimbus_gateway::policy::PolicyError> for ApiError {
    fn from(e: nimbus_gateway::policy::PolicyError) -> Self {
        let (code, field, message) = (e.code(), e.field(), e.to_string());
        let body = json!({"error": {"code": code, "message": message, "field": field}});
        Self {
            status: None,
            code: code.to_string(),
            message,
            field: Some(field.to_string()),
            body,
        }
    }
}

impl ApiError {
    /// Reads an error answer. A body in the documented shape is taken as-is; anything else (a
    /// proxy's HTML page, an empty body) becomes `http_STATUS` with a short excerpt.
    pub fn from_response(status: u16, body: &[u8]) -> Self {
        let parsed: Option<Value> = serde_json::from_slice(body).ok();
        if let Some(value) = parsed {
            let err = &value["error"];
            if let (Some(code), Some(message)) = (err["code"].as_str(), err["message"].as_str()) {
                return Self {
                    status: Some(status),
                    code: code.to_string(),
                    message: message.to_string(),
                    field: err["field"].as_str().map(str::to_string),
                    body: value.clone(),
                };
            }
        }
        let text = String::from_utf8_lossy(body);
        let excerpt: String = text.trim().chars().take(200).collect();
        let message = if excerpt.is_empty() {
            format!("the API answered HTTP {status}")
        } else {
            format!("the API answered HTTP {status}: {excerpt}")
        };
        let code = format!("http_{status}");
        let body = json!({"error": {"code": code, "message": message, "field": null}});
        Self {
            status: Some(status),
            code,
            message,
            field: None,
            body,
        }
    }
}

/// Where the token came from, to explain a 401.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    Env,
    File(PathBuf),
    /// No `NIMBUS_TOKEN` and the token file could not be read.
    Missing(PathBuf),
}

/// The client's settings, read from the environment.
#[derive(Debug, Clone)]
pub struct Config {
    pub base: Url,
    pub token: Option<String>,
    pub token_source: TokenSource,
}

impl Config {
    /// `NIMBUS_API` (default [`DEFAULT_API`]); `NIMBUS_TOKEN`, else the admin token file in
    /// `NIMBUS_DATA` or the default data directory.
    pub fn from_env() -> Result<Self, CliError> {
        let api = env("NIMBUS_API").unwrap_or_else(|| DEFAULT_API.to_string());
        let base = parse_base(&api)?;
        let (token, token_source) = match env("NIMBUS_TOKEN") {
            Some(token) => (Some(token.trim().to_string()), TokenSource::Env),
            None => {
                let dir = env("NIMBUS_DATA")
                    .map(PathBuf::from)
                    .unwrap_or_else(paths::default_data_dir);
                let path = paths::admin_token_path(&dir);
                match std::fs::read_to_string(&path) {
                    Ok(text) if !text.trim().is_empty() => {
                        (Some(text.trim().to_string()), TokenSource::File(path))
                    }
                    _ => (None, TokenSource::Missing(path)),
                }
            }
        };
        Ok(Self {
            base,
            token,
            token_source,
        })
    }
}

/// A non-empty environment variable.
fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Parses the API address; `host:port` without a scheme means `http://host:port`.
pub fn parse_base(raw: &str) -> Result<Url, CliError> {
    let raw = raw.trim();
    let with_scheme = if raw.contains("://") {
        raw.to_string()
    } else {
        format!("http://{raw}")
    };
    let url = Url::parse(&with_scheme)
        .map_err(|e| CliError::Usage(format!("NIMBUS_API {raw:?} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return Err(CliError::Usage(format!(
            "NIMBUS_API {raw:?} must be an http:// URL such as {DEFAULT_API}"
        )));
    }
    Ok(url)
}

/// Builds `base/seg/seg?k=v`, percent-encoding each segment and query value.
pub fn endpoint(base: &Url, path: &[&str], query: &[(&str, &str)]) -> Result<Url, CliError> {
    let mut url = base.clone();
    url.set_query(None);
    url.path_segments_mut()
        .map_err(|()| CliError::Usage(format!("NIMBUS_API {base} cannot take a path")))?
        .pop_if_empty()
        .extend(path);
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(query);
    }
    Ok(url)
}

/// Talks JSON to one Nimbus API.
pub struct Client {
    http: reqwest::Client,
    config: Config,
}

impl Client {
    pub fn new(config: Config) -> Result<Self, CliError> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|e| CliError::Other(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self { http, config })
    }

    pub async fn get(&self, path: &[&str], query: &[(&str, &str)]) -> Result<Value, CliError> {
        self.send(Method::GET, path, query, None).await
    }

    pub async fn post(&self, path: &[&str], body: &Value) -> Result<Value, CliError> {
        self.send(Method::POST, path, &[], Some(body)).await
    }

    pub async fn put(&self, path: &[&str], body: &Value) -> Result<Value, CliError> {
        self.send(Method::PUT, path, &[], Some(body)).await
    }

    pub async fn patch(&self, path: &[&str], body: &Value) -> Result<Value, CliError> {
        self.send(Method::PATCH, path, &[], Some(body)).await
    }

    pub async fn delete(&self, path: &[&str]) -> Result<Value, CliError> {
        self.send(Method::DELETE, path, &[], None).await
    }

    /// A function invocation: `async_mode` adds `x-nimbus-invocation-type: async`. A timed-out
    /// invocation (504 with an `error` of kind `timeout`) is returned as a value, not an error.
    pub async fn invoke(
        &self,
        path: &[&str],
        query: &[(&str, &str)],
        event: &Value,
        async_mode: bool,
    ) -> Result<Value, CliError> {
        let extra: &[(&str, &str)] = if async_mode {
            &[("x-nimbus-invocation-type", "async")]
        } else {
            &[]
        };
        match self
            .send_with(Method::POST, path, query, Some(event), extra)
            .await
        {
            Err(CliError::Rejected(e)) if e.code == "function_timeout" => Ok(e.body),
            other => other,
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &[&str],
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Value, CliError> {
        self.send_with(method, path, query, body, &[]).await
    }

    async fn send_with(
        &self,
        method: Method,
        path: &[&str],
        query: &[(&str, &str)],
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Result<Value, CliError> {
        let url = endpoint(&self.config.base, path, query)?;
        let mut request = self.http.request(method, url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(token) = &self.config.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let mut response = request.send().await.map_err(|e| self.transport(e))?;
        let status = response.status();
        let mut bytes: Vec<u8> = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.transport(e))? {
            if bytes.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(CliError::Other(format!(
                    "the API's answer is larger than {} MiB; refusing to read it",
                    MAX_BODY_BYTES / (1024 * 1024)
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            let mut err = ApiError::from_response(status.as_u16(), &bytes);
            if status == reqwest::StatusCode::UNAUTHORIZED {
                err.message = format!("{}; {}", err.message, self.token_hint());
            }
            return Err(CliError::Rejected(err));
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            CliError::Other(format!(
                "the API answered {status} with a body that is not JSON: {e}"
            ))
        })
    }

    /// POSTs `body` to a route that answers NDJSON (docs/api.md): `on_event` sees every object as
    /// it arrives; the answer is the final `result`, or the final `error` as a refusal.
    pub async fn stream(
        &self,
        path: &[&str],
        query: &[(&str, &str)],
        body: Vec<u8>,
        content_type: &str,
        mut on_event: impl FnMut(&Value),
    ) -> Result<Value, CliError> {
        let url = endpoint(&self.config.base, path, query)?;
        let mut request = self
            .http
            .post(url)
            .timeout(STREAM_TIMEOUT)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body);
        if let Some(token) = &self.config.token {
            request = request.bearer_auth(token);
        }
        let mut response = request.send().await.map_err(|e| self.transport(e))?;
        let status = response.status();
        let mut lines = NdjsonLines::default();
        let mut error_body: Vec<u8> = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.transport(e))? {
            if !status.is_success() {
                if error_body.len() + chunk.len() <= MAX_BODY_BYTES {
                    error_body.extend_from_slice(&chunk);
                }
                continue;
            }
            for event in lines.push(&chunk) {
                on_event(&event);
                if let Some(done) = final_event(&event) {
                    return done;
                }
            }
        }
        if !status.is_success() {
            let mut err = ApiError::from_response(status.as_u16(), &error_body);
            if status == reqwest::StatusCode::UNAUTHORIZED {
                err.message = format!("{}; {}", err.message, self.token_hint());
            }
            return Err(CliError::Rejected(err));
        }
        for event in lines.finish() {
            on_event(&event);
            if let Some(done) = final_event(&event) {
                return done;
            }
        }
        Err(CliError::Other(
            "the API ended the stream without a result; see the server's log".to_string(),
        ))
    }

    fn transport(&self, e: reqwest::Error) -> CliError {
        let url = self.config.base.as_str().trim_end_matches('/').to_string();
        if e.is_connect() {
            CliError::Unreachable { url, detail: None }
        } else if e.is_timeout() {
            CliError::Unreachable {
                url,
                detail: Some(format!("no answer within {}s", REQUEST_TIMEOUT.as_secs())),
            }
        } else if e.is_body() || e.is_decode() || e.is_request() {
            // The server went away mid-exchange (stopped, crashed, restarted): say so, and
            // where to look, rather than reqwest's "error decoding response body".
            CliError::Other(format!(
                "the Nimbus API at {url} closed the connection before answering in full ({}): \
                 did the server stop or restart? `nimbus services` shows what was applied, \
                 and the server's log why it stopped",
                root_cause(&e)
            ))
        } else {
            CliError::Other(format!("request to the Nimbus API at {url} failed: {e}"))
        }
    }

    fn token_hint(&self) -> String {
        match &self.config.token_source {
            TokenSource::Env => "the token came from NIMBUS_TOKEN".to_string(),
            TokenSource::File(path) => format!("the token came from {}", path.display()),
            TokenSource::Missing(path) => format!(
                "no token was sent: set NIMBUS_TOKEN, or NIMBUS_DATA to the server's data directory ({} is not readable)",
                path.display()
            ),
        }
    }
}

/// The innermost error under `e` (hyper's "connection closed before message completed" under
/// reqwest's "error sending request").
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut inner = e;
    while let Some(source) = inner.source() {
        inner = source;
    }
    inner.to_string()
}

/// `{"result": …}` ends a stream well, `{"error": …}` badly; anything else is progress.
fn final_event(event: &Value) -> Option<Result<Value, CliError>> {
    if let Some(result) = event.get("result") {
        return Some(Ok(result.clone()));
    }
    if event.get("error").is_some() {
        let bytes = serde_json::to_vec(event).unwrap_or_default();
        let mut err = ApiError::from_response(200, &bytes);
        err.status = None;
        return Some(Err(CliError::Rejected(err)));
    }
    None
}

/// Splits a byte stream into JSON lines; lines that are not JSON objects are skipped.
#[derive(Debug, Default)]
pub struct NdjsonLines {
    partial: Vec<u8>,
    skipping: bool,
}

impl NdjsonLines {
    /// The complete lines `chunk` finishes, parsed.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Value> {
        let mut out = Vec::new();
        for &byte in chunk {
            if byte == b'\n' {
                if !self.skipping {
                    out.extend(parse_line(&self.partial));
                }
                self.partial.clear();
                self.skipping = false;
            } else if self.partial.len() < MAX_STREAM_LINE {
                self.partial.push(byte);
            } else {
                self.skipping = true;
            }
        }
        out
    }

    /// The unterminated last line, if any.
    pub fn finish(&mut self) -> Vec<Value> {
        let rest = std::mem::take(&mut self.partial);
        if self.skipping {
            return Vec::new();
        }
        parse_line(&rest).into_iter().collect()
    }
}

fn parse_line(line: &[u8]) -> Option<Value> {
    let value: Value = serde_json::from_slice(line).ok()?;
    value.is_object().then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ndjson_lines() {
        let mut lines = NdjsonLines::default();
        // A line split across chunks, a blank line, a non-JSON line, then an unterminated one.
        assert_eq!(lines.push(b"{\"line\":\"Step 1/2"), Vec::<Value>::new());
        assert_eq!(
            lines.push(b" : FROM scratch\"}\n\nnot json\n{\"result\":{\"id\":\"b1\"}}"),
            vec![json!({"line": "Step 1/2 : FROM scratch"})]
        );
        assert_eq!(lines.finish(), vec![json!({"result": {"id": "b1"}})]);

        let cases = [
            (json!({"line": "x"}), None),
            (json!({"result": {"id": "b2"}}), Some(Ok("b2"))),
            (
                json!({"error": {"code": "build_failed", "message": "boom", "field": "source"}}),
                Some(Err("build_failed")),
            ),
        ];
        for (event, expected) in cases {
            let got = match final_event(&event) {
                None => None,
                Some(Ok(v)) => Some(Ok(v["id"].as_str().unwrap_or_default().to_string())),
                Some(Err(CliError::Rejected(e))) => Some(Err(e.code)),
                Some(Err(other)) => panic!("{other:?}"),
            };
            let expected = expected.map(|r| r.map(str::to_string).map_err(str::to_string));
            assert_eq!(got, expected, "{event}");
        }
    }

    /// An API on loopback that reads one request head, writes `answer` and closes the
    /// connection: the server dying mid-exchange.
    fn vanishing_api(answer: &'static [u8]) -> Config {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            let _ = stream.write_all(answer);
        });
        Config {
            base: parse_base(&addr.to_string()).unwrap(),
            token: None,
            token_source: TokenSource::Env,
        }
    }

    #[tokio::test]
    async fn a_server_that_goes_away_mid_answer_is_named_as_such() {
        // (case, what the server writes before closing, whether the CLI reads it as a stream)
        let cases: [(&str, &'static [u8], bool); 4] = [
            ("closed before any answer", b"", false),
            (
                "closed inside the head",
                b"HTTP/1.1 200 OK\r\ncontent-le",
                false,
            ),
            (
                "closed inside a JSON body",
                b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"name\":",
                false,
            ),
            (
                "closed mid-stream, after a build line",
                b"HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\n\
                  transfer-encoding: chunked\r\n\r\n12\r\n{\"line\":\"Step 1\"}\n\r\n",
                true,
            ),
        ];
        for (case, answer, streamed) in cases {
            let client = Client::new(vanishing_api(answer)).unwrap();
            let mut events = 0;
            let result = if streamed {
                client
                    .stream(&["v1", "x"], &[], Vec::new(), "application/x-tar", |_| {
                        events += 1;
                    })
                    .await
            } else {
                client.get(&["v1", "services"], &[]).await
            };
            let message = match result {
                Err(CliError::Other(message)) => message,
                other => panic!("{case}: {other:?}"),
            };
            assert!(
                message.contains("closed the connection before answering in full")
                    && message.contains("did the server stop or restart?"),
                "{case}: {message}"
            );
            assert_eq!(events, usize::from(streamed), "{case}");
        }
    }

    #[test]
    fn base_urls() {
        let cases = &[
            ("http://127.0.0.1:8080", Some("http://127.0.0.1:8080/")),
            ("127.0.0.1:9000", Some("http://127.0.0.1:9000/")), // scheme added
            (
                " https://nimbus.example.com/ ",
                Some("https://nimbus.example.com/"),
            ),
            ("http://host/prefix", Some("http://host/prefix")),
            ("ftp://host", None), // not http
            ("http://", None),    // no host
        ];
        for (raw, expected) in cases {
            let got = parse_base(raw).ok().map(|u| u.to_string());
            assert_eq!(got.as_deref(), *expected, "{raw:?}");
        }
    }

    #[test]
    fn endpoints() {
        let base = |s: &str| parse_base(s).unwrap();
        type Case<'a> = (&'a str, &'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
        let cases: &[Case<'_>] = &[
            (
                "http://h:1",
                &["v1", "domains"],
                &[],
                "http://h:1/v1/domains",
            ),
            (
                "http://h:1/",
                &["v1", "domains", "www.example.com"],
                &[],
                "http://h:1/v1/domains/www.example.com",
            ),
            // A path prefix is kept (API behind a reverse proxy).
            (
                "http://h:1/nimbus/",
                &["v1", "instances"],
                &[],
                "http://h:1/nimbus/v1/instances",
            ),
            // Query values are encoded.
            (
                "http://h:1",
                &["v1", "instances"],
                &[("namespace", "default"), ("service", "a b")],
                "http://h:1/v1/instances?namespace=default&service=a+b",
            ),
            // Segments are encoded, never path-joined.
            (
                "http://h:1",
                &["v1", "domains", "a/b"],
                &[],
                "http://h:1/v1/domains/a%2Fb",
            ),
        ];
        for (b, path, query, expected) in cases {
            let got = endpoint(&base(b), path, query).unwrap();
            assert_eq!(got.as_str(), *expected, "{b} {path:?}");
        }
    }

    #[test]
    fn error_bodies() {
        let cases: &[(u16, &str, &str, &str, Option<&str>)] = &[
            (
                400,
                r#"{"error":{"code":"invalid_name","message":"bad name","field":"service"}}"#,
                "invalid_name",
                "bad name (code invalid_name, field service)",
                Some("service"),
            ),
            (
                404,
                r#"{"error":{"code":"not_found","message":"no such service","field":null}}"#,
                "not_found",
                "no such service (code not_found)",
                None,
            ),
            (
                502,
                "<html>Bad Gateway</html>",
                "http_502",
                "the API answered HTTP 502: <html>Bad Gateway</html> (code http_502)",
                None,
            ),
            (
                500,
                "",
                "http_500",
                "the API answered HTTP 500 (code http_500)",
                None,
            ),
            // JSON, but not the error shape.
            (
                418,
                r#"{"teapot":true}"#,
                "http_418",
                "the API answered HTTP 418: {\"teapot\":true} (code http_418)",
                None,
            ),
        ];
        for (status, body, code, display, field) in cases {
            let err = ApiError::from_response(*status, body.as_bytes());
            assert_eq!(err.code, *code, "{body}");
            assert_eq!(err.to_string(), *display, "{body}");
            assert_eq!(err.field.as_deref(), *field, "{body}");
            assert_eq!(err.body["error"]["code"], *code, "{body}");
        }
    }
}
