//! The one place where admin failures become responses:
//! `{"error": {"code", "message", "field"}}` with 400/401/403/404/409/422/500.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tollgate_model::ConfigErrors;
use tollgate_store::StoreError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), field: None }
    }
    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }
    pub fn not_found(what: &str) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("{what} not found"))
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::CONFLICT, "conflict", message)
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message)
    }

    /// A validation failure of the whole configuration, reported relative to the
    /// resource at `prefix` (e.g. `products[2].mapping_rules[0]`) when it is the cause.
    pub fn from_config(errors: ConfigErrors, prefix: &str) -> Self {
        let within =
            |path: &str| path.strip_prefix(prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']));
        let mine = errors.0.iter().find(|e| within(&e.path));
        let e = mine.or(errors.0.first());
        let Some(e) = e else { return ApiError::invalid("invalid configuration") };
        let field = match e.path.strip_prefix(prefix) {
            Some(rest) if mine.is_some() => rest.trim_start_matches('.').to_string(),
            _ => e.path.clone(),
        };
        let message = match &e.hint {
            Some(h) => format!("{} ({h})", e.message),
            None => e.message.clone(),
        };
        let err = ApiError::invalid(message);
        if field.is_empty() { err } else { err.field(field) }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::not_found("resource"),
            StoreError::Conflict(m) => ApiError::conflict(m),
            StoreError::Stale => ApiError::conflict("the resource was changed concurrently; retry"),
            StoreError::Busy => ApiError::conflict("the store is busy with another write; retry"),
            StoreError::Database(
                e @ (sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Tls(_)),
            ) => {
                tracing::error!(error = %e, "the store is unreachable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the store cannot be reached; retry",
                )
            }
            other => {
                tracing::error!(error = %other, "store failure");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the store failed; see the server log")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = serde_json::json!({ "code": self.code, "message": self.message });
        if let Some(f) = self.field {
            error["field"] = serde_json::Value::String(f);
        }
        (self.status, Json(serde_json::json!({ "error": error }))).into_response()
    }
}

/// JSON bodies that fail to parse become 400 with the offending field.
pub fn body_error(e: axum::extract::rejection::JsonRejection) -> ApiError {
    let text = e.body_text();
    // serde_path_to_error is not in play here; axum's message names line/column and
    // serde's message names the key, which is what a user needs.
    let field = text.split('`').nth(1).map(str::to_string);
    let err = ApiError::bad_request(text);
    match field {
        Some(f) => err.field(f),
        None => err,
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
