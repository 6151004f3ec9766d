//! The declarative surface: the YAML of DESIGN §3, key for key. These types are what
//! `tollgate apply` reads and `tollgate export` writes; unknown keys are errors.

use crate::period::Period;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

fn yes() -> bool {
    true
}
fn one() -> u64 {
    1
}
fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub backends: Vec<Backend>,
    #[serde(default)]
    pub products: Vec<Product>,
    #[serde(default)]
    pub accounts: Vec<Account>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    pub system_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `http://`, `https://`, `ws://` or `wss://`, with an optional path prefix.
    pub private_base_url: String,
    #[serde(default, skip_serializing_if = "is_default")]
    pub tls: BackendTls,
    /// How long to wait for a TCP + TLS connection to the backend, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<Metric>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<Method>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mapping_rules: Vec<MappingRule>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BackendTls {
    /// PEM file of the certificate authorities (or the self-signed certificate) to trust
    /// for this backend instead of the system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// The same, inline: PEM text of the certificates to trust. Stored with the
    /// configuration, so every gateway node has it (the console's upload fills it).
    /// Use either `ca_file` or `ca_pem`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    /// `false` turns certificate verification off: an explicit, logged opt-out.
    #[serde(default = "yes")]
    pub verify: bool,
    /// Name to send in SNI and verify the certificate for, when it differs from the URL's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

impl Default for BackendTls {
    fn default() -> Self {
        BackendTls { ca_file: None, ca_pem: None, verify: true, server_name: None }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Product {
    pub system_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub staging_public_base_url: String,
    pub production_public_base_url: String,
    #[serde(default)]
    pub backend_usages: Vec<BackendUsage>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub authentication: Authentication,
    #[serde(default, skip_serializing_if = "is_default")]
    pub errors: ErrorMessages,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<Metric>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<Method>,
    #[serde(default)]
    pub mapping_rules: Vec<MappingRule>,
    #[serde(default)]
    pub policy_chain: Vec<PolicyConfig>,
    #[serde(default)]
    pub application_plans: Vec<ApplicationPlan>,
    /// How request paths are made canonical before anything reads them.
    #[serde(default, skip_serializing_if = "is_default")]
    pub request_path: RequestPath,
    /// Whether `Location`, `Content-Location` and `Refresh` headers of a backend's
    /// responses that point at its private base URL are rewritten to the public base URL
    /// the request came through (as nginx's `proxy_redirect default`). Default `true`.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub rewrite_redirects: bool,
}

fn is_true(b: &bool) -> bool {
    *b
}

/// How a product's request paths are made canonical, once, as requests enter: dot
/// segments removed (also `%2e`), unreserved characters decoded, escapes upper-cased
/// (RFC 3986 §5.2.4, §6.2.2). See docs/gateway.md#the-request-path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestPath {
    /// `reject` (default): a path with an encoded `/` or `\` (`%2F`, `%5C`) gets 400
    /// `bad_path`, since a backend may decode it and see another path than the one
    /// matched; `keep`: they stay encoded, part of their segment.
    #[serde(default)]
    pub encoded_slashes: EncodedSlashes,
    /// Merge `//` into `/` (default `true`, as nginx does): `//admin` is `/admin` for
    /// mapping rules and for the backend alike — kept as sent, it would match other
    /// rules than `/admin`'s while a backend that merges slashes serves `/admin`.
    /// `false` keeps `//` as sent.
    #[serde(default = "merge_slashes_by_default")]
    pub merge_slashes: bool,
}

impl Default for RequestPath {
    fn default() -> Self {
        RequestPath { encoded_slashes: EncodedSlashes::default(), merge_slashes: true }
    }
}

fn merge_slashes_by_default() -> bool {
    true
}

/// What an encoded `/` or `\` in a request path gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EncodedSlashes {
    #[default]
    Reject,
    Keep,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BackendUsage {
    pub backend: String,
    pub path: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    #[default]
    UserKey,
    AppIdAppKey,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CredentialsLocation {
    /// Query-string parameters (`?user_key=…`).
    #[default]
    Query,
    /// Request headers named after the parameters (`user_key: …`).
    Headers,
    /// `Authorization: Basic` (user = user_key or app_id, password = app_key) or
    /// `Authorization: Bearer <user_key>`.
    Authorization,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Authentication {
    #[serde(default)]
    pub mode: AuthMode,
    #[serde(default)]
    pub credentials_location: CredentialsLocation,
    #[serde(default = "Authentication::default_user_key_param")]
    pub user_key_param: String,
    #[serde(default = "Authentication::default_app_id_param")]
    pub app_id_param: String,
    #[serde(default = "Authentication::default_app_key_param")]
    pub app_key_param: String,
}

impl Authentication {
    fn default_user_key_param() -> String {
        "user_key".into()
    }
    fn default_app_id_param() -> String {
        "app_id".into()
    }
    fn default_app_key_param() -> String {
        "app_key".into()
    }
}

impl Default for Authentication {
    fn default() -> Self {
        Authentication {
            mode: AuthMode::default(),
            credentials_location: CredentialsLocation::default(),
            user_key_param: Self::default_user_key_param(),
            app_id_param: Self::default_app_id_param(),
            app_key_param: Self::default_app_key_param(),
        }
    }
}

/// Per-product overrides of the gateway's error responses.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorMessages {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_missing: Option<ErrorMessage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_failed: Option<ErrorMessage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_match: Option<ErrorMessage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits_exceeded: Option<ErrorMessage>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorMessage {
    pub status: u16,
    pub body: String,
    #[serde(default = "ErrorMessage::default_content_type")]
    pub content_type: String,
}

impl ErrorMessage {
    fn default_content_type() -> String {
        "text/plain; charset=utf-8".into()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Metric {
    pub system_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub friendly_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Method {
    pub system_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub friendly_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MappingRule {
    /// `GET`, `POST`, `PUT`, `PATCH`, `DELETE`, `HEAD`, `OPTIONS`, `TRACE`, `CONNECT` or `ANY`.
    pub http_method: String,
    pub pattern: String,
    pub metric: String,
    #[serde(default = "one")]
    pub delta: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub last: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    pub name: String,
    #[serde(default = "PolicyConfig::empty", skip_serializing_if = "PolicyConfig::is_empty")]
    pub configuration: serde_json::Value,
    #[serde(default = "yes")]
    pub enabled: bool,
}

impl PolicyConfig {
    fn empty() -> serde_json::Value {
        serde_json::Value::Object(Default::default())
    }
    fn is_empty(v: &serde_json::Value) -> bool {
        v.as_object().is_some_and(|o| o.is_empty()) || v.is_null()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplicationPlan {
    pub system_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub limits: Vec<Limit>,
    /// Concurrent WebSocket connections per application on this plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    pub metric: String,
    pub period: Period,
    pub value: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Account {
    pub name: String,
    #[serde(default)]
    pub applications: Vec<Application>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ApplicationState {
    #[default]
    Live,
    Suspended,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Application {
    pub name: String,
    pub product: String,
    pub plan: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub app_keys: Vec<String>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub state: ApplicationState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// The HTTP methods a mapping rule may name.
pub const HTTP_METHODS: [&str; 10] =
    ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE", "CONNECT", "ANY"];
