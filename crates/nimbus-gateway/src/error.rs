//! Gateway errors. Each says whose fault it was ([`ErrorSource`]), which picks the status code,
//! and renders as the one JSON error shape `{"error": {code, message, field}}`.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};

use crate::body::GatewayBody;
use crate::gate::AdmitError;

/// The cause of an upstream failure (from the pooled client or a kept connection).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Who caused an error (as pingora's `ErrorSource`): it decides the status the client sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorSource {
    /// The client asked for something that does not exist (4xx).
    Downstream,
    /// The instance failed or was too slow (502/504).
    Upstream,
    /// Nimbus has nothing ready to serve, or no capacity in time (503, or 504 for a request
    /// that waited in the queue past its timeout).
    Gateway,
}

/// Why a request got no upstream response.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// No service is bound to the request's host.
    #[error("no service is bound to host {host:?}")]
    UnknownHost { host: String },
    /// The split is empty, or the chosen version is not in the table.
    #[error("{}", no_ready_message(namespace, service, version.as_deref()))]
    NoReadyInstance {
        namespace: String,
        service: String,
        version: Option<String>,
    },
    /// Every slot of the version is taken and its queue is full.
    #[error(
        "service {service} (namespace {namespace}) version {version} is at capacity: {source}; \
         retry shortly"
    )]
    QueueFull {
        namespace: String,
        service: String,
        version: String,
        source: AdmitError,
    },
    /// The request waited for a slot (or for a first instance to become ready) past the
    /// version's timeout.
    #[error("service {service} (namespace {namespace}) version {version}: {source}")]
    QueueTimeout {
        namespace: String,
        service: String,
        version: String,
        source: AdmitError,
    },
    /// The version has no ready instance and its instances keep failing to start.
    #[error(
        "service {service} (namespace {namespace}) version {version} has no ready instance: \
         {source}; see `nimbus logs {service} --version {version}`"
    )]
    VersionFailing {
        namespace: String,
        service: String,
        version: String,
        source: AdmitError,
    },
    /// Connecting to the instance failed.
    #[error("instance {instance} is unavailable: {source}")]
    UpstreamUnavailable {
        instance: String,
        #[source]
        source: BoxError,
    },
    /// The instance accepted the connection but the exchange failed before response headers.
    #[error("instance {instance} failed before responding: {source}")]
    UpstreamFailed {
        instance: String,
        #[source]
        source: BoxError,
    },
    /// The instance sent no response headers within the version's timeout.
    #[error("instance {instance} did not respond within {}s", timeout.as_secs_f64())]
    UpstreamTimeout { instance: String, timeout: Duration },
    /// The instance sent no response headers within the service's time-to-first-byte timeout.
    #[error("instance {instance} sent no response headers within the time-to-first-byte timeout of {}s", timeout.as_secs_f64())]
    UpstreamTtfbTimeout { instance: String, timeout: Duration },
    /// An access rule of the service denies the request.
    #[error("{}", forbidden_message(service, *rule))]
    Forbidden {
        service: String,
        rule: Option<usize>,
    },
    /// A rate limit of the service is exhausted.
    #[error("rate limit of service {service} {} exceeded; retry in {retry_after_secs}s", if *per_ip { "per client IP" } else { "(all clients)" })]
    RateLimited {
        service: String,
        per_ip: bool,
        retry_after_secs: u64,
    },
    /// The request body is larger than the service allows.
    #[error("request body is larger than the {limit} bytes service {service} accepts")]
    PayloadTooLarge { service: String, limit: u64 },
}

fn forbidden_message(service: &str, rule: Option<usize>) -> String {
    match rule {
        Some(i) => format!(
            "access rule {} of service {service} denies this request",
            i + 1
        ),
        None => format!("no access rule of service {service} allows this request"),
    }
}

fn no_ready_message(namespace: &str, service: &str, version: Option<&str>) -> String {
    match version {
        Some(version) => format!(
            "service {service} (namespace {namespace}) has no ready instance of version {version}; \
             check `nimbus version list {service}`"
        ),
        None => format!(
            "service {service} (namespace {namespace}) has no version taking traffic; \
             set one with `nimbus traffic {service}`"
        ),
    }
}

// === impl GatewayError ===

impl GatewayError {
    /// The error for a request the version's gate did not admit.
    pub fn not_admitted(namespace: &str, service: &str, version: &str, source: AdmitError) -> Self {
        let (namespace, service, version) = (
            namespace.to_string(),
            service.to_string(),
            version.to_string(),
        );
        match source {
            AdmitError::QueueFull { .. } => Self::QueueFull {
                namespace,
                service,
                version,
                source,
            },
            AdmitError::Timeout { .. } => Self::QueueTimeout {
                namespace,
                service,
                version,
                source,
            },
            AdmitError::Failing { .. } => Self::VersionFailing {
                namespace,
                service,
                version,
                source,
            },
        }
    }

    pub fn source_kind(&self) -> ErrorSource {
        match self {
            Self::UnknownHost { .. }
            | Self::Forbidden { .. }
            | Self::RateLimited { .. }
            | Self::PayloadTooLarge { .. } => ErrorSource::Downstream,
            Self::NoReadyInstance { .. }
            | Self::QueueFull { .. }
            | Self::QueueTimeout { .. }
            | Self::VersionFailing { .. } => ErrorSource::Gateway,
            Self::UpstreamUnavailable { .. }
            | Self::UpstreamFailed { .. }
            | Self::UpstreamTimeout { .. }
            | Self::UpstreamTtfbTimeout { .. } => ErrorSource::Upstream,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::UnknownHost { .. } => StatusCode::NOT_FOUND,
            Self::NoReadyInstance { .. } | Self::QueueFull { .. } | Self::VersionFailing { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::QueueTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::UpstreamUnavailable { .. } | Self::UpstreamFailed { .. } => {
                StatusCode::BAD_GATEWAY
            }
            Self::UpstreamTimeout { .. } | Self::UpstreamTtfbTimeout { .. } => {
                StatusCode::GATEWAY_TIMEOUT
            }
            Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }

    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnknownHost { .. } => "unknown_host",
            Self::NoReadyInstance { .. } => "no_ready_instance",
            Self::QueueFull { .. } => "queue_full",
            Self::QueueTimeout { .. } => "queue_timeout",
            Self::VersionFailing { .. } => "version_failing",
            Self::UpstreamUnavailable { .. } => "upstream_unavailable",
            Self::UpstreamFailed { .. } => "upstream_error",
            Self::UpstreamTimeout { .. } => "upstream_timeout",
            Self::UpstreamTtfbTimeout { .. } => "upstream_ttfb_timeout",
            Self::Forbidden { .. } => "forbidden",
            Self::RateLimited { .. } => "rate_limited",
            Self::PayloadTooLarge { .. } => "payload_too_large",
        }
    }

    /// The request field at fault, if the client's.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            Self::UnknownHost { .. } => Some("host"),
            Self::PayloadTooLarge { .. } => Some("body"),
            _ => None,
        }
    }

    /// Seconds after which the client may retry, sent as `Retry-After` (a full queue, a rate limit).
    pub fn retry_after(&self) -> Option<u32> {
        match self {
            Self::QueueFull { .. } => Some(1),
            Self::RateLimited {
                retry_after_secs, ..
            } => Some(u32::try_from(*retry_after_secs).unwrap_or(u32::MAX)),
            _ => None,
        }
    }

    /// The JSON error response, carrying `x-request-id` (and `Retry-After` when set).
    pub fn to_response(&self, request_id: &HeaderValue) -> Response<GatewayBody> {
        // Upstream error messages name the instance, not its address: clients need not know it.
        let body = serde_json::json!({
            "error": {
                "code": self.code(),
                "message": self.to_string(),
                "field": self.field(),
            }
        });
        let mut response = Response::new(GatewayBody::full(Bytes::from(body.to_string())));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(crate::proxy::X_REQUEST_ID, request_id.clone());
        if let Some(seconds) = self.retry_after() {
            headers.insert(http::header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
