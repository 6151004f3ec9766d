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

/// A whole configuration document: its backends, products and accounts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The backends products route requests to.
    #[serde(default)]
    pub backends: Vec<Backend>,
    /// The products, each published on a staging and a production public base URL.
    #[serde(default)]
    pub products: Vec<Product>,
    /// The accounts and their applications.
    #[serde(default)]
    pub accounts: Vec<Account>,
}

/// A backend: an upstream API that products route requests to by path prefix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    /// Unique name; letters, digits, `_`, `-` and `.`.
    pub system_name: String,
    /// Human-readable name; free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `http://`, `https://`, `ws://` or `wss://`, with an optional path prefix.
    pub private_base_url: String,
    /// How the backend's TLS certificate is verified (`https://` and `wss://` URLs).
    #[serde(default, skip_serializing_if = "is_default")]
    pub tls: BackendTls,
    /// How long to wait for a TCP + TLS connection to the backend, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "crate::typed::option_u64")]
    #[schemars(with = "Option<u64>")]
    pub connect_timeout_ms: Option<u64>,
    /// The backend's instances; without them the base URL's host is the one endpoint.
    /// See `docs/upstreams.md`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<crate::fleet::Endpoint>,
    /// How requests are spread over `endpoints`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub load_balancing: crate::fleet::LoadBalancing,
    /// How sick endpoints are found and taken out.
    #[serde(default, skip_serializing_if = "is_default")]
    pub health_checks: crate::fleet::HealthChecks,
    /// Per-endpoint caps on busy connections and pending requests.
    #[serde(default, skip_serializing_if = "is_default")]
    pub circuit_breaker: crate::fleet::CircuitBreaker,
    /// The HTTP version spoken to the backend: `http1` (default), `http2` or `auto`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub protocol: crate::fleet::UpstreamProtocol,
    /// How long a draining endpoint's open WebSockets may stay, in milliseconds, before
    /// they are closed with 1001; default 60000.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "crate::typed::option_u64")]
    #[schemars(with = "Option<u64>")]
    pub drain_timeout_ms: Option<u64>,
    /// How often endpoints given by host name are resolved again, in milliseconds;
    /// default: when each answer's TTL runs out (at least every second, at most every
    /// hour). Every address of a name is an endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "crate::typed::option_u64")]
    #[schemars(with = "Option<u64>")]
    pub dns_refresh_ms: Option<u64>,
    /// Backend-level metrics; a product using the backend can map to and limit them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<Metric>,
    /// Backend-level methods (children of `hits`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<Method>,
    /// Backend-level mapping rules; their patterns are relative to the backend usage path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mapping_rules: Vec<MappingRule>,
}

/// TLS settings for connections to a backend.
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
    #[serde(default = "yes", deserialize_with = "crate::typed::boolean")]
    #[schemars(with = "bool")]
    pub verify: bool,
    /// Name to send in SNI and verify the certificate for, when it differs from the URL's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// PEM file of the client certificate (its chain, leaf first) the gateway presents
    /// to a backend that asks for one (upstream mutual TLS; APIcast's upstream mTLS
    /// policy). Needs `client_key_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_file: Option<PathBuf>,
    /// PEM file of that certificate's private key (PKCS#8, PKCS#1 or SEC1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key_file: Option<PathBuf>,
    /// `client_cert_file` inline: the PEM text, stored with the configuration so every
    /// gateway node has it. Use either the file or the text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_pem: Option<String>,
    /// `client_key_file` inline: the PEM text of the private key (kept out of the
    /// audit log). Use either the file or the text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key_pem: Option<String>,
}

impl ProductTls {
    /// Whether the product checks client certificates (`client_ca_file` or
    /// `client_ca_pem`).
    pub fn checks_client_certificates(&self) -> bool {
        self.client_ca_file.is_some() || self.client_ca_pem.is_some()
    }
}

impl Default for BackendTls {
    fn default() -> Self {
        BackendTls {
            ca_file: None,
            ca_pem: None,
            verify: true,
            server_name: None,
            client_cert_file: None,
            client_key_file: None,
            client_cert_pem: None,
            client_key_pem: None,
        }
    }
}

/// A product: the API applications subscribe to, routed to backends by path prefix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Product {
    /// Unique name; letters, digits, `_`, `-` and `.`.
    pub system_name: String,
    /// Human-readable name; free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `http(s)://host[:port]` the product answers on at the staging gateway (no path).
    pub staging_public_base_url: String,
    /// `http(s)://host[:port]` the product answers on at the production gateway (no path).
    pub production_public_base_url: String,
    /// Which backend serves which path prefix; the longest matching prefix wins.
    #[serde(default)]
    pub backend_usages: Vec<BackendUsage>,
    /// How requests identify their application.
    #[serde(default, skip_serializing_if = "is_default")]
    pub authentication: Authentication,
    /// Replacements for the gateway's `auth_missing`, `auth_failed`, `no_match` and
    /// `limits_exceeded` responses.
    #[serde(default, skip_serializing_if = "is_default")]
    pub errors: ErrorMessages,
    /// The product's metrics; `hits` exists even when not listed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<Metric>,
    /// The product's methods (children of `hits`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<Method>,
    /// Product-level mapping rules, matched in order.
    #[serde(default)]
    pub mapping_rules: Vec<MappingRule>,
    /// Policies run for each request, in order; `tollgate` runs last unless named.
    #[serde(default)]
    pub policy_chain: Vec<PolicyConfig>,
    /// The application plans applications subscribe to.
    #[serde(default)]
    pub application_plans: Vec<ApplicationPlan>,
    /// How request paths are made canonical before anything reads them.
    #[serde(default, skip_serializing_if = "is_default")]
    pub request_path: RequestPath,
    /// Whether `Location`, `Content-Location` and `Refresh` headers of a backend's
    /// responses that point at its private base URL are rewritten to the public base URL
    /// the request came through (as nginx's `proxy_redirect default`). Default `true`.
    #[serde(default = "yes", skip_serializing_if = "is_true", deserialize_with = "crate::typed::boolean")]
    #[schemars(with = "bool")]
    pub rewrite_redirects: bool,
    /// The certificate TLS listeners serve for the product's public hosts (chosen by
    /// SNI); without it, the listener's default (`--tls-cert`). See `docs/tls.md`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ProductTls>,
}

/// A product's TLS on the listeners: its certificate (chosen by SNI) and what it asks
/// of clients' certificates (mutual TLS).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductTls {
    /// PEM file of the certificate chain, leaf first; the leaf names the product's
    /// public hosts (a wildcard name such as `*.example.com` may cover them). With
    /// `key_file`; without both, the listener's default certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// PEM file of its private key (PKCS#8, PKCS#1 or SEC1), unencrypted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// PEM file of the authorities that issue the product's client certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca_file: Option<PathBuf>,
    /// `cert_file` inline: the PEM text, stored with the configuration so every gateway
    /// node has it (the admin API's way). Use either the file or the text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_pem: Option<String>,
    /// `key_file` inline: the PEM text of the private key (kept out of the audit log).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_pem: Option<String>,
    /// `client_ca_file` inline: the PEM text of the authorities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca_pem: Option<String>,
    /// A DER OCSP response for the certificate (as `openssl ocsp -respout` writes one),
    /// stapled to its handshakes (RFC 6066 §8); renew the file, then reload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ocsp_file: Option<PathBuf>,
    /// `optional` (default, with `client_ca_file`) or `required`: without a
    /// certificate, a request to the product is refused with 403
    /// `client_certificate_required`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificates: Option<ClientCertificates>,
}

/// Whether a product's clients must present a certificate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClientCertificates {
    /// A certificate is checked when presented; requests without one go on.
    #[default]
    Optional,
    /// Requests without a verified certificate are refused (403).
    Required,
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
    #[serde(default = "merge_slashes_by_default", deserialize_with = "crate::typed::boolean")]
    #[schemars(with = "bool")]
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
    /// 400 `bad_path` (the default).
    #[default]
    Reject,
    /// Kept encoded, part of their segment.
    Keep,
}

/// A backend usage: requests under `path` go to `backend`, with `path` removed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BackendUsage {
    /// System name of the backend.
    pub backend: String,
    /// Path prefix starting with `/`, matched on whole segments; unique within the product.
    pub path: String,
}

/// Which credentials identify an application, as in 3scale.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// A `user_key` (the default).
    #[default]
    UserKey,
    /// An `app_id` and one of the application's `app_keys`.
    AppIdAppKey,
    /// The client certificate of the TLS connection (mutual TLS): the SHA-256
    /// fingerprint of its leaf is one of the application's `client_certificates`. The
    /// product needs `tls.client_ca_file`; `credentials_location` does not apply.
    ClientCertificate,
}

/// Where requests carry their credentials.
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

/// How a product's requests identify their application.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Authentication {
    /// Which credentials: `user_key` (default) or `app_id_app_key`.
    #[serde(default)]
    pub mode: AuthMode,
    /// Where requests carry them (default `query`).
    #[serde(default)]
    pub credentials_location: CredentialsLocation,
    /// Name of the query parameter or header carrying the user key (default `user_key`).
    #[serde(default = "Authentication::default_user_key_param")]
    pub user_key_param: String,
    /// Name of the query parameter or header carrying the app id (default `app_id`).
    #[serde(default = "Authentication::default_app_id_param")]
    pub app_id_param: String,
    /// Name of the query parameter or header carrying the app key (default `app_key`).
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
    /// Replaces the 401 sent when a request carries no credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_missing: Option<ErrorMessage>,
    /// Replaces the 403 sent for unknown credentials, a wrong app key or a suspended
    /// application.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_failed: Option<ErrorMessage>,
    /// Replaces the 404 sent when no mapping rule matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_match: Option<ErrorMessage>,
    /// Replaces the 429 sent when a usage limit would be exceeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits_exceeded: Option<ErrorMessage>,
}

/// A replacement error response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorMessage {
    /// HTTP status, 400 to 599.
    #[serde(deserialize_with = "crate::typed::u16")]
    #[schemars(with = "u16")]
    pub status: u16,
    /// Response body, sent as is.
    pub body: String,
    /// `Content-Type` of the body (default `text/plain; charset=utf-8`).
    #[serde(default = "ErrorMessage::default_content_type")]
    pub content_type: String,
}

impl ErrorMessage {
    fn default_content_type() -> String {
        "text/plain; charset=utf-8".into()
    }
}

/// A metric: something usage is counted in, mapped by mapping rules and limited by
/// application plans.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Metric {
    /// Name, unique among the metrics and methods in its scope; letters, digits, `_`, `-`
    /// and `.`.
    pub system_name: String,
    /// Human-readable name; free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub friendly_name: Option<String>,
    /// Unit the metric counts in; free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A method: a metric counted under `hits` (each use of a method is also a hit).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Method {
    /// Name, unique among the metrics and methods in its scope; letters, digits, `_`, `-`
    /// and `.`.
    pub system_name: String,
    /// Human-readable name; free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub friendly_name: Option<String>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A mapping rule: requests matching `http_method` and `pattern` add `delta` to `metric`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MappingRule {
    /// `GET`, `POST`, `PUT`, `PATCH`, `DELETE`, `HEAD`, `OPTIONS`, `TRACE`, `CONNECT` or `ANY`.
    pub http_method: String,
    /// Path pattern with an optional query part, e.g. `/rooms/{room}?since={ts}`;
    /// a prefix match unless it ends in `$`.
    pub pattern: String,
    /// System name of a metric or method of the product, or of a backend it uses.
    pub metric: String,
    /// How much to add, at least 1 (default 1).
    #[serde(default = "one", deserialize_with = "crate::typed::u64")]
    #[schemars(with = "u64")]
    pub delta: u64,
    /// Stop the scan after this rule when it matches (default `false`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not", deserialize_with = "crate::typed::boolean")]
    #[schemars(with = "bool")]
    pub last: bool,
}

/// One entry of a product's policy chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Name of the policy, e.g. `headers` or `tollgate`.
    pub name: String,
    /// The policy's settings (a JSON object; `{}` when omitted).
    #[serde(default = "PolicyConfig::empty", skip_serializing_if = "PolicyConfig::is_empty")]
    pub configuration: serde_json::Value,
    /// `false` leaves the entry out of the chain (default `true`).
    #[serde(default = "yes", deserialize_with = "crate::typed::boolean")]
    #[schemars(with = "bool")]
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

/// An application plan: the usage limits of the applications subscribed to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplicationPlan {
    /// Name, unique within the product; letters, digits, `_`, `-` and `.`.
    pub system_name: String,
    /// Human-readable name; free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Usage limits, at most one per metric and period.
    #[serde(default)]
    pub limits: Vec<Limit>,
    /// Concurrent WebSocket connections per application on this plan.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "crate::typed::option_u32")]
    #[schemars(with = "Option<u32>")]
    pub max_connections: Option<u32>,
}

/// A usage limit: at most `value` of `metric` in each `period`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    /// System name of a metric or method of the product, or of a backend it uses.
    pub metric: String,
    /// Calendar window the limit counts over.
    pub period: Period,
    /// Most usage allowed in one window; 0 blocks the metric.
    #[serde(deserialize_with = "crate::typed::u64")]
    #[schemars(with = "u64")]
    pub value: u64,
}

/// An account: the owner of applications.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Account {
    /// Unique, non-empty name.
    pub name: String,
    /// The account's applications.
    #[serde(default)]
    pub applications: Vec<Application>,
}

/// Whether an application's requests are served.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ApplicationState {
    /// Served (the default).
    #[default]
    Live,
    /// Refused with 403 `auth_failed`.
    Suspended,
}

/// An application: an account's credentials for one product, on one of its plans.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Application {
    /// Name, unique within the account.
    pub name: String,
    /// System name of the product.
    pub product: String,
    /// System name of one of the product's application plans.
    pub plan: String,
    /// Key for a `user_key` product; unique per product.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_key: Option<String>,
    /// Id for an `app_id_app_key` product; unique per product.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    /// Keys for an `app_id_app_key` product: at least one; any of them is accepted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub app_keys: Vec<String>,
    /// For a `client_certificate` product: the SHA-256 fingerprints of the client
    /// certificates that identify the application (64 hex digits, colons allowed, as
    /// `openssl x509 -fingerprint -sha256` prints them); unique per product.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client_certificates: Vec<String>,
    /// `live` (default) or `suspended`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub state: ApplicationState,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// The HTTP methods a mapping rule may name.
pub const HTTP_METHODS: [&str; 10] =
    ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE", "CONNECT", "ANY"];

/// A certificate fingerprint as Tollgate compares them: 64 lower-case hex digits, from
/// any case, with or without colons (`AB:CD:…`). `None` when it is not a SHA-256
/// fingerprint.
pub fn normalize_fingerprint(fingerprint: &str) -> Option<String> {
    let hex: String = fingerprint.chars().filter(|c| *c != ':').map(|c| c.to_ascii_lowercase()).collect();
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hex)
}
