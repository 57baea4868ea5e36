//! One error shape for every failure: `{"error": {"code", "message", "field"}}`.

use axum::extract::{FromRequest, Request};
use axum::response::{IntoResponse, Response};
use axum::Json;
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
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_body",
                    e.body_text(),
                    Some("body"),
                )
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
