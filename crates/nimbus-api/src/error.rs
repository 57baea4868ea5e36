//! One error shape for every failure: `{"error": {"code", "message", "field"}}`.

use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::request::Parts;
use http::StatusCode;
use nimbus_model::{ErrorKind, ModelError};
use nimbus_store::StoreError;
use serde::de::DeserializeOwned;
use serde_json::json;

/// A failed API call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        code: &str,
        message: impl Into<String>,
        field: Option<&str>,
    ) -> Self {
        Self {
            status,
            code: code.to_string(),
            message: message.into(),
            field: field.map(str::to_string),
        }
    }

    pub fn unauthorized(message: &str) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            message,
            Some("authorization"),
        )
    }

    /// The same error, naming another input field.
    pub fn with_field(mut self, field: &str) -> Self {
        self.field = Some(field.to_string());
        self
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message, None)
    }
}

impl From<ModelError> for ApiError {
    fn from(e: ModelError) -> Self {
        let status = match e.kind {
            ErrorKind::Invalid => StatusCode::BAD_REQUEST,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Conflict => StatusCode::CONFLICT,
            ErrorKind::Limit => StatusCode::UNPROCESSABLE_ENTITY,
        };
        Self {
            status,
            code: e.code.to_string(),
            message: e.message,
            field: e.field,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Rejected(model) => model.into(),
            other => {
                tracing::error!(error = %other, "Store failure.");
                Self::internal(other.to_string())
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body =
            json!({"error": {"code": self.code, "message": self.message, "field": self.field}});
        (self.status, Json(body)).into_response()
    }
}

/// A JSON body parsed strictly: malformed JSON, a wrong type or an unknown field is a 400 in the
/// one error shape, naming the field where serde can tell.
pub struct StrictJson<T>(pub T);

impl<S, T> FromRequest<S> for StrictJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| {
                // Over the API's body limit is 413, as the gateway answers it.
                let (status, code) = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large")
                } else {
                    (StatusCode::BAD_REQUEST, "invalid_body")
                };
                ApiError::new(status, code, e.body_text(), Some("body"))
            })?;
        serde_json::from_slice(&bytes).map(StrictJson).map_err(|e| {
            let message = e.to_string();
            let field = field_of_serde_error(&message);
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                format!("request body is not valid: {message}"),
                Some(field.as_deref().unwrap_or("body")),
            )
        })
    }
}

/// Query parameters parsed into `T`: a malformed one is a 400 `invalid_query` in the one error
/// shape, naming the parameter (axum's own `Query` answers plain text).
pub struct StrictQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for StrictQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::try_from_uri(&parts.uri) {
            Ok(Query(value)) => Ok(StrictQuery(value)),
            Err(rejection) => {
                let text = rejection.body_text();
                let (field, problem) = query_problem(&text);
                Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_query",
                    format!("query parameter {field} is not valid: {problem}"),
                    Some(field),
                ))
            }
        }
    }
}

/// axum says "Failed to deserialize query string: tail: invalid digit found in string": the
/// parameter and what is wrong with it (`query` when it names none).
fn query_problem(text: &str) -> (&str, &str) {
    let detail = text
        .strip_prefix("Failed to deserialize query string: ")
        .unwrap_or(text);
    match detail.split_once(": ") {
        Some((field, problem))
            if !field.is_empty()
                && field
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') =>
        {
            (field, problem)
        }
        _ => ("query", detail),
    }
}

/// serde_json names the culprit in backticks: "unknown field `foo`", "missing field `command`".
fn field_of_serde_error(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(message[start..start + len].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_fields() {
        let cases = &[
            (
                "unknown field `foo`, expected one of `command`",
                Some("foo"),
            ),
            (
                "missing field `command` at line 1 column 2",
                Some("command"),
            ),
            ("expected value at line 1 column 1", None),
        ];
        for (message, field) in cases {
            assert_eq!(
                field_of_serde_error(message).as_deref(),
                *field,
                "{message}"
            );
        }
    }

    #[test]
    fn query_problems() {
        let cases = [
            (
                "Failed to deserialize query string: tail: invalid digit found in string",
                ("tail", "invalid digit found in string"),
            ),
            (
                "Failed to deserialize query string: unknown variant `x`, expected `a`",
                ("query", "unknown variant `x`, expected `a`"),
            ),
            ("something else", ("query", "something else")),
        ];
        for (text, expected) in cases {
            assert_eq!(query_problem(text), expected, "{text}");
        }
    }

    #[test]
    fn model_kinds_map_to_statuses() {
        let cases = [
            (ModelError::invalid("x", "f", "m"), StatusCode::BAD_REQUEST),
            (ModelError::not_found("x", "f", "m"), StatusCode::NOT_FOUND),
            (ModelError::conflict("x", "f", "m"), StatusCode::CONFLICT),
            (
                ModelError::limit("x", "f", "m"),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
        ];
        for (model, status) in cases {
            assert_eq!(ApiError::from(model).status, status);
        }
    }
}
