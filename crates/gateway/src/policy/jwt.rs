//! The `jwt` policy: validates a JSON Web Token (RS256, ES256, HS256) from the
//! `Authorization` header, a query parameter or — for WebSockets, whose browser API
//! cannot set headers — the `Sec-WebSocket-Protocol` header; checks issuer, audience,
//! expiry and not-before (with leeway); maps a claim to the application (OpenID
//! Connect's client id is the application's `app_id`); and checks claims per method and
//! path (403). A WebSocket opened with a token closes with 1008 when the token expires.
//! A certificate-bound token (RFC 8705 §3: a `cnf` claim with `x5t#S256`) is accepted
//! only on a connection whose verified client certificate has that SHA-256 thumbprint.
//!
//! ```yaml
//! - name: jwt
//!   configuration:
//!     issuer: https://idp.example.com/realms/api
//!     audiences: [api]
//!     jwks_url: https://idp.example.com/realms/api/protocol/openid-connect/certs
//!     client_id_claim: azp
//!     token_sources: [authorization, query, subprotocol]
//!     claim_checks:
//!       - methods: [POST, DELETE]
//!         path: "^/admin/"
//!         condition: { operations: [ { left: "{{ jwt.role }}", op: "==", right: "admin" } ] }
//! - name: tollgate
//! ```
//!
//! Keys come from `jwks_file` or `jwks_url` (fetched before the configuration is served, then
//! again every `jwks_refresh` seconds and when a token names an unknown `kid`, so key
//! rotation needs no reload) or, for HS256, `secret`. Tokens and JWK Sets are read, and
//! signatures verified, with the `jsonwebtoken` crate (on `ring`, the library that does
//! Tollgate's TLS); the claims are checked here, at the request's time from the
//! gateway's clock.

use super::condition::{Condition, ConditionConfig};
use super::{Context, Credential, Decision, Flow, Policy, PolicyError, Prepare};
use crate::refusal::{ErrorTemplate, Refusal};
use arc_swap::ArcSwap;
use http::{HeaderValue, Method, StatusCode, header, request, response};
use schemars::JsonSchema;
use serde::Deserialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// The JWS algorithms the policy verifies (RFC 7518 §3.1).
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq)]
pub enum Alg {
    /// RSASSA-PKCS1-v1_5 with SHA-256 (keys of 2048 to 8192 bits).
    RS256,
    /// ECDSA on P-256 with SHA-256.
    ES256,
    /// HMAC with SHA-256 (the `secret`).
    HS256,
}

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Source {
    /// `Authorization: Bearer TOKEN`.
    Authorization,
    /// `?access_token=TOKEN` (see `query_param`).
    Query,
    /// `Sec-WebSocket-Protocol: access_token, TOKEN` (or the token alone).
    Subprotocol,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ClaimCheckConfig {
    /// Only for these methods (default: all).
    #[serde(default)]
    methods: Vec<String>,
    /// Only for paths matching this regular expression (default: all).
    #[serde(default)]
    path: Option<String>,
    /// What must hold, e.g. `{{ jwt.role }} == admin`.
    condition: ConditionConfig,
    #[serde(default)]
    error_message: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Config {
    /// Required `iss`.
    #[serde(default)]
    issuer: Option<String>,
    /// `aud` must contain one of these (default: not checked).
    #[serde(default)]
    audiences: Vec<String>,
    /// Accepted algorithms (default: RS256 and ES256, and HS256 with a `secret`).
    #[serde(default)]
    algorithms: Vec<Alg>,
    /// HS256 shared secret.
    #[serde(default)]
    secret: Option<String>,
    /// A JWK Set file.
    #[serde(default)]
    jwks_file: Option<String>,
    /// A JWK Set URL (http or https).
    #[serde(default)]
    jwks_url: Option<String>,
    /// Seconds between JWK Set refreshes (default 300).
    #[serde(default = "default_refresh")]
    jwks_refresh: u64,
    /// Seconds of clock difference tolerated on `exp` and `nbf` (default 30).
    #[serde(default = "default_leeway")]
    leeway: u64,
    /// Whether a request without a token is refused (default true); a present but
    /// invalid token is always refused.
    #[serde(default = "yes")]
    required: bool,
    /// The claim that names the application (its app_id), e.g. `azp` or `client_id`.
    #[serde(default)]
    client_id_claim: Option<String>,
    /// Where the token is looked for, in order (default: authorization).
    #[serde(default)]
    token_sources: Vec<Source>,
    /// The query parameter of the `query` source (default `access_token`).
    #[serde(default = "default_param")]
    query_param: String,
    /// Checks on claims per method and path; a failed check is 403.
    #[serde(default)]
    claim_checks: Vec<ClaimCheckConfig>,
    /// Whether every token must be certificate-bound (RFC 8705 `cnf.x5t#S256`); a bound
    /// token is checked against the client certificate either way (default false).
    #[serde(default)]
    require_certificate_binding: bool,
}

fn default_refresh() -> u64 {
    300
}
fn default_leeway() -> u64 {
    30
}
fn yes() -> bool {
    true
}
fn default_param() -> String {
    "access_token".into()
}

/// A verification key and the algorithm it verifies.
#[derive(Clone)]
struct Key {
    alg: Alg,
    decoding: jsonwebtoken::DecodingKey,
}

#[derive(Clone)]
struct Jwk {
    kid: Option<String>,
    key: Key,
    /// Fetched from `jwks_url` (replaced by each fetch), rather than configured.
    fetched: bool,
}

/// The keys to serve with after a fetch: the configured ones (`secret`, `jwks_file`)
/// and the fresh set in place of the last one fetched.
fn merged(current: &[Jwk], fresh: Vec<Jwk>) -> Vec<Jwk> {
    let mut all: Vec<Jwk> = current.iter().filter(|k| !k.fetched).cloned().collect();
    all.extend(fresh.into_iter().map(|k| Jwk { fetched: true, ..k }));
    all
}

struct ClaimCheck {
    methods: Vec<Method>,
    path: Option<regex::Regex>,
    condition: Condition,
    refusal: Arc<ErrorTemplate>,
}

/// The `jwt` policy, built from its configuration (see the module's documentation).
pub struct JwtPolicy {
    issuer: Option<String>,
    audiences: Vec<String>,
    algorithms: Vec<Alg>,
    keys: Arc<ArcSwap<Vec<Jwk>>>,
    jwks_url: Option<String>,
    refresh: i64,
    /// Unix seconds of the last JWKS fetch attempt.
    fetched: Arc<AtomicI64>,
    leeway: i64,
    required: bool,
    client_id_claim: Option<String>,
    sources: Vec<Source>,
    query_param: String,
    checks: Vec<ClaimCheck>,
    /// `require_certificate_binding`.
    require_binding: bool,
}

/// A `jsonwebtoken` validation that checks the signature with `alg` and nothing else:
/// expiry, not-before, issuer and audience are the policy's to check, at the request's
/// time from the gateway's clock. Made once per algorithm.
fn signature_only(alg: Alg) -> &'static jsonwebtoken::Validation {
    use jsonwebtoken::{Algorithm, Validation};
    static ALL: std::sync::OnceLock<[Validation; 3]> = std::sync::OnceLock::new();
    let all = ALL.get_or_init(|| {
        [Algorithm::RS256, Algorithm::ES256, Algorithm::HS256].map(|a| {
            let mut v = Validation::new(a);
            v.validate_exp = false;
            v.validate_nbf = false;
            v.validate_aud = false;
            v.required_spec_claims.clear();
            v
        })
    });
    &all[match alg {
        Alg::RS256 => 0,
        Alg::ES256 => 1,
        Alg::HS256 => 2,
    }]
}

/// Parses a JWK Set document (RFC 7517 §5) with `jsonwebtoken`'s JWK types: RSA keys
/// (for RS256) and EC P-256 keys (for ES256); keys of other types or curves, and keys
/// that do not parse, are skipped.
fn parse_jwks(text: &str) -> Result<Vec<Jwk>, String> {
    use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve};
    let doc: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not a JWK Set (JSON): {e}"))?;
    let list = doc["keys"].as_array().ok_or("not a JWK Set: no `keys` array")?;
    let mut keys = Vec::new();
    for k in list {
        let Ok(jwk) = serde_json::from_value::<jsonwebtoken::jwk::Jwk>(k.clone()) else { continue };
        let alg = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Alg::RS256,
            AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => Alg::ES256,
            _ => continue,
        };
        let Ok(decoding) = jsonwebtoken::DecodingKey::from_jwk(&jwk) else { continue };
        keys.push(Jwk { kid: jwk.common.key_id.clone(), key: Key { alg, decoding }, fetched: false });
    }
    Ok(keys)
}

/// Fetches a JWK Set over HTTP(S), with the system's roots; bounded in time.
async fn fetch_jwks(url: &str) -> Result<Vec<Jwk>, String> {
    use http_body_util::BodyExt as _;
    let base = tollgate_model::BaseUrl::parse(url, &["http", "https"])?;
    let upstream =
        crate::upstream::Upstream::new(url, base, &tollgate_model::BackendTls::default(), Duration::from_secs(5))?;
    let exchange = async {
        let uri = upstream.uri("", None).map_err(|e| e.to_string())?;
        let req = http::Request::get(uri)
            .header(header::ACCEPT, "application/json")
            .body(crate::upstream::body::UpstreamBody::Empty)
            .map_err(|e| e.to_string())?;
        // The refusal's words are a client's ("the backend could not be reached"); the
        // operator wants what failed, which its detail says.
        let resp = upstream.request(req).await.map_err(|e| e.detail().map_or_else(|| e.to_string(), str::to_string))?;
        if !resp.status().is_success() {
            return Err(format!("the server answered {}", resp.status()));
        }
        let body = http_body_util::Limited::new(resp.into_body(), 1 << 20)
            .collect()
            .await
            .map_err(|e| format!("reading the JWK Set: {e}"))?
            .to_bytes();
        parse_jwks(&String::from_utf8_lossy(&body))
    };
    tokio::time::timeout(Duration::from_secs(10), exchange).await.map_err(|_| "timed out".to_string())?
}

/// Wall-clock seconds, for when the JWK Set was last fetched only: refreshing follows
/// the identity provider's real time; tokens are checked at the request's time from the
/// gateway's (injected) clock.
fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

impl JwtPolicy {
    /// Builds the policy without the network (it may read `jwks_file`): `jwks_url` must
    /// be an http(s) URL, and is fetched by [`Policy::prepare`] before the policy serves.
    pub(super) fn new(c: Config) -> Result<Self, PolicyError> {
        let mut keys = Vec::new();
        if let Some(secret) = &c.secret {
            if secret.len() < 32 {
                return Err(PolicyError::new("secret", "use at least 32 bytes for an HS256 secret"));
            }
            keys.push(Jwk {
                kid: None,
                key: Key { alg: Alg::HS256, decoding: jsonwebtoken::DecodingKey::from_secret(secret.as_bytes()) },
                fetched: false,
            });
        }
        if let Some(path) = &c.jwks_file {
            let bytes = crate::files::read_bounded(std::path::Path::new(path), crate::files::MAX_JWKS)
                .map_err(|e| PolicyError::new("jwks_file", e))?;
            let text = String::from_utf8_lossy(&bytes);
            keys.extend(parse_jwks(&text).map_err(|e| PolicyError::new("jwks_file", e))?);
        }
        if let Some(url) = &c.jwks_url {
            tollgate_model::BaseUrl::parse(url, &["http", "https"]).map_err(|e| PolicyError::new("jwks_url", e))?;
        }
        if keys.is_empty() && c.jwks_url.is_none() {
            return Err(PolicyError::new(
                "jwks_url",
                "give jwks_url, jwks_file or (for HS256) secret; no key was found",
            ));
        }
        let algorithms = if c.algorithms.is_empty() {
            let mut a = vec![Alg::RS256, Alg::ES256];
            if c.secret.is_some() {
                a.push(Alg::HS256);
            }
            a
        } else {
            c.algorithms
        };
        if algorithms.contains(&Alg::HS256) && c.secret.is_none() {
            return Err(PolicyError::new("algorithms", "HS256 needs a `secret`"));
        }
        let mut checks = Vec::new();
        for (i, k) in c.claim_checks.into_iter().enumerate() {
            let at = |f: &str| format!("claim_checks[{i}].{f}");
            let mut methods = Vec::new();
            for (j, m) in k.methods.iter().enumerate() {
                methods.push(Method::from_bytes(m.to_ascii_uppercase().as_bytes()).map_err(|_| {
                    PolicyError::new(format!("claim_checks[{i}].methods[{j}]"), format!("`{m}` is not an HTTP method"))
                })?);
            }
            let path = k.path.map(|p| super::regex(&p).map_err(|e| PolicyError::new(at("path"), e))).transpose()?;
            let condition = Condition::new(k.condition)
                .map_err(|e| PolicyError { field: at(&format!("condition.{}", e.field)), ..e })?;
            let refusal = ErrorTemplate::shared_json(
                StatusCode::FORBIDDEN,
                "jwt_claim_check_failed",
                k.error_message.as_deref().unwrap_or("the token does not allow this request"),
            );
            checks.push(ClaimCheck { methods, path, condition, refusal });
        }
        Ok(JwtPolicy {
            issuer: c.issuer,
            audiences: c.audiences,
            algorithms,
            keys: Arc::new(ArcSwap::from_pointee(keys)),
            jwks_url: c.jwks_url,
            refresh: c.jwks_refresh.max(10) as i64,
            fetched: Arc::new(AtomicI64::new(0)),
            leeway: i64::try_from(c.leeway).unwrap_or(i64::MAX),
            required: c.required,
            client_id_claim: c.client_id_claim,
            sources: if c.token_sources.is_empty() { vec![Source::Authorization] } else { c.token_sources },
            query_param: c.query_param,
            checks,
            require_binding: c.require_certificate_binding,
        })
    }

    /// Refreshes the JWK Set in the background when it is due, or at once (at most once
    /// a second) when a token names a key it does not know: a rotated key is picked up
    /// by the next request after the identity provider publishes it.
    fn maybe_refresh(&self, unknown_kid: bool) {
        let Some(url) = &self.jwks_url else { return };
        let (t, last) = (now(), self.fetched.load(Ordering::Relaxed));
        let due = t - last >= self.refresh || (unknown_kid && t - last >= 1);
        if !due || self.fetched.compare_exchange(last, t, Ordering::Relaxed, Ordering::Relaxed).is_err() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let (url, keys) = (url.clone(), self.keys.clone());
        runtime.spawn(async move {
            match fetch_jwks(&url).await {
                Ok(fresh) if !fresh.is_empty() => {
                    keys.store(Arc::new(merged(&keys.load(), fresh)));
                    tracing::debug!(%url, "JWK Set refreshed");
                }
                Ok(_) => tracing::warn!(%url, "the JWK Set fetched holds no usable key; keeping the previous keys"),
                Err(e) => tracing::warn!(%url, error = %e, "cannot refresh the JWK Set; keeping the previous keys"),
            }
        });
    }

    /// The token and where it was found.
    fn token<'r>(&self, req: &'r request::Parts) -> Option<std::borrow::Cow<'r, str>> {
        for s in &self.sources {
            let found = match s {
                Source::Authorization => req
                    .headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    // The scheme is case-insensitive (RFC 9110 §11.1): `BEARER` too.
                    .and_then(|v| v.trim_start().split_once(' '))
                    .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                    .map(|(_, t)| std::borrow::Cow::Borrowed(t.trim())),
                Source::Query => tollgate_model::pattern::QueryArgs::parse(req.uri.query())
                    .get(&self.query_param)
                    .map(|t| std::borrow::Cow::Owned(t.to_string())),
                Source::Subprotocol => subprotocol_token(req).map(std::borrow::Cow::Borrowed),
            };
            if found.as_deref().is_some_and(|t| !t.is_empty()) {
                return found;
            }
        }
        None
    }

    /// Verifies `token` at `now` (Unix seconds, the request's time from the gateway's
    /// clock); the claims, or why not.
    fn verify(&self, token: &str, now: i64) -> Result<serde_json::Map<String, serde_json::Value>, &'static str> {
        // A JWS in compact form: header.payload.signature (RFC 7515 §7.1). Reading and
        // verifying them is `jsonwebtoken`'s; the claims are checked below, at the
        // request's time (the gateway's clock).
        if token.split('.').count() != 3 {
            return Err("malformed token");
        }
        // The header is UTF-8 JSON (RFC 7515 §4, §5.2 step 3), decoded once here. Read
        // straight into `jsonwebtoken`'s header, invalid UTF-8 inside a string would
        // get through; a generic JSON value checks every string first, so a header no
        // JSON parser would accept is refused whatever signs it.
        let header = {
            use base64::Engine as _;
            let segment = token.split('.').next().unwrap_or_default();
            let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(segment)
                .map_err(|_| "malformed token header")?;
            let named = match serde_json::from_slice::<serde_json::Value>(&json) {
                Ok(serde_json::Value::Object(h)) => h.get("alg").is_some_and(serde_json::Value::is_string),
                _ => return Err("malformed token header"),
            };
            // Say which: a header naming an algorithm that `jsonwebtoken` cannot use
            // (`none`, say), or one naming none.
            serde_json::from_slice::<jsonwebtoken::Header>(&json)
                .map_err(|_| if named { "unsupported algorithm" } else { "malformed token header" })?
        };
        let alg = match header.alg {
            jsonwebtoken::Algorithm::RS256 => Alg::RS256,
            jsonwebtoken::Algorithm::ES256 => Alg::ES256,
            jsonwebtoken::Algorithm::HS256 => Alg::HS256,
            _ => return Err("unsupported algorithm"),
        };
        if !self.algorithms.contains(&alg) {
            return Err("algorithm not accepted");
        }
        let kid = header.kid.as_deref();
        let keys = self.keys.load();
        let candidates =
            keys.iter().filter(|k| k.key.alg == alg && (alg == Alg::HS256 || kid.is_none() || k.kid.as_deref() == kid));
        let validation = signature_only(alg);
        let mut any = false;
        let mut verified = None;
        for k in candidates {
            any = true;
            match jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(token, &k.key.decoding, validation)
            {
                Ok(data) => {
                    verified = Some(data.claims);
                    break;
                }
                Err(e) => match e.kind() {
                    jsonwebtoken::errors::ErrorKind::InvalidSignature => continue,
                    jsonwebtoken::errors::ErrorKind::Base64(_) => return Err("malformed signature"),
                    jsonwebtoken::errors::ErrorKind::Json(_) | jsonwebtoken::errors::ErrorKind::Utf8(_) => {
                        return Err("malformed token payload");
                    }
                    _ => return Err("invalid signature"),
                },
            }
        }
        if !any {
            self.maybe_refresh(true);
            return Err("unknown signing key");
        }
        let claims = verified.ok_or("invalid signature")?;
        let t = now;
        if let Some(exp) = claims.get("exp") {
            let exp = exp.as_i64().ok_or("malformed exp")?;
            // Saturating: a token may say it never expires with `exp` at i64::MAX.
            if t > exp.saturating_add(self.leeway) {
                return Err("token expired");
            }
        }
        if let Some(nbf) = claims.get("nbf")
            && t.saturating_add(self.leeway) < nbf.as_i64().ok_or("malformed nbf")?
        {
            return Err("token not yet valid");
        }
        if let Some(iss) = &self.issuer
            && claims.get("iss").and_then(|v| v.as_str()) != Some(iss.as_str())
        {
            return Err("wrong issuer");
        }
        if !self.audiences.is_empty() {
            let ok = match claims.get("aud") {
                Some(serde_json::Value::String(a)) => self.audiences.contains(a),
                Some(serde_json::Value::Array(list)) => {
                    list.iter().filter_map(|a| a.as_str()).any(|a| self.audiences.iter().any(|x| x == a))
                }
                _ => false,
            };
            if !ok {
                return Err("wrong audience");
            }
        }
        self.maybe_refresh(false);
        Ok(claims)
    }
}

/// The entries of the request's `Sec-WebSocket-Protocol` headers, trimmed.
fn offered_protocols(req: &request::Parts) -> impl Iterator<Item = &str> {
    req.headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

/// The token in `Sec-WebSocket-Protocol`: an entry that looks like a JWT.
fn subprotocol_token(req: &request::Parts) -> Option<&str> {
    offered_protocols(req).find(|e| e.split('.').count() == 3 && e.len() > 20)
}

/// RFC 8705 §3: a token with `cnf.x5t#S256` (the base64url SHA-256 of the DER
/// certificate its client was issued for) is accepted only from a connection whose
/// verified client certificate is that one; without `cnf.x5t#S256`, it is accepted unless
/// `required`. `Err` is the refusal's message.
fn certificate_binding(
    claims: &serde_json::Map<String, serde_json::Value>,
    certificate: Option<&crate::sni::PeerCertificate>,
    required: bool,
) -> Result<(), &'static str> {
    let Some(cnf) = claims.get("cnf") else {
        return if required { Err("the token is not bound to a client certificate") } else { Ok(()) };
    };
    // A confirmation this gateway cannot check (a DPoP key's `jkt`, a key `jwk`, a
    // malformed `cnf`) is refused rather than ignored: the token's issuer meant it to
    // be proven (RFC 7800 §3).
    let Some(thumbprint) = cnf.get("x5t#S256") else {
        return Err("the token is bound by a confirmation method this API does not check (cnf without x5t#S256)");
    };
    let Some(thumbprint) = thumbprint.as_str() else { return Err("the token's cnf.x5t#S256 is not a string") };
    let Some(certificate) = certificate else {
        return Err("the token is bound to a client certificate and the connection presented none this API verifies");
    };
    use base64::Engine as _;
    let own = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(certificate.sha256());
    // The thumbprint is public (it is in the token): a plain comparison. Padding a
    // producer may have left is not part of base64url (RFC 7515 §2).
    if thumbprint.trim_end_matches('=') == own {
        Ok(())
    } else {
        Err("the token is bound to another client certificate")
    }
}

fn refusal(status: StatusCode, code: &'static str, message: &'static str) -> Flow {
    Flow::Refuse(Refusal::TokenRefused { status, code, message })
}

impl Policy for JwtPolicy {
    fn name(&self) -> &'static str {
        "jwt"
    }

    /// Fetches the JWK Set of `jwks_url` (bounded: 10 s) and serves with its keys and
    /// those of `secret`/`jwks_file`. A set that cannot be fetched, or has no key Tollgate
    /// can use, is an error: the caller keeps serving the configuration it had.
    fn prepare(&self) -> Option<Prepare<'_>> {
        let url = self.jwks_url.clone()?;
        Some(Box::pin(async move {
            let fresh = fetch_jwks(&url).await.map_err(|e| format!("jwks_url: cannot fetch `{url}`: {e}"))?;
            if fresh.is_empty() {
                return Err(format!("jwks_url: `{url}` has no key Tollgate can use (RSA, or EC P-256)"));
            }
            self.keys.store(Arc::new(merged(&self.keys.load(), fresh)));
            self.fetched.store(now(), Ordering::Relaxed);
            Ok(())
        }))
    }

    fn access(&self, req: &request::Parts, ctx: &mut Context<'_>) -> Flow {
        let Some(token) = self.token(req) else {
            if self.required {
                return refusal(StatusCode::UNAUTHORIZED, "jwt_missing", "a bearer token is required");
            }
            return Flow::Continue;
        };
        let claims = match self.verify(&token, ctx.now) {
            Ok(c) => c,
            Err(why) => return refusal(StatusCode::UNAUTHORIZED, "jwt_invalid", why),
        };
        if let Err(why) = certificate_binding(&claims, ctx.client_certificate.as_deref(), self.require_binding) {
            return refusal(StatusCode::UNAUTHORIZED, "jwt_certificate_mismatch", why);
        }
        if let Some(expires) = claims.get("exp").and_then(serde_json::Value::as_i64) {
            ctx.decide(Decision::SessionExpires(expires));
        }
        if let Some(claim) = &self.client_id_claim {
            match claims.get(claim).and_then(|v| v.as_str()) {
                Some(id) if !id.is_empty() => ctx.default_credentials = Some(Arc::new(Credential::ClientId(id.into()))),
                _ => {
                    return refusal(StatusCode::FORBIDDEN, "jwt_no_client", "the token names no application");
                }
            }
        }
        ctx.claims = Some(Arc::new(claims));
        for check in &self.checks {
            let applies = (check.methods.is_empty() || check.methods.contains(&req.method))
                && check.path.as_ref().is_none_or(|p| p.is_match(req.uri.path()));
            if applies && !check.condition.holds(req, ctx) {
                let answer = check.refusal.clone();
                return Flow::Refuse(Refusal::Denied { policy: "jwt", code: "jwt_claim_check_failed", answer });
            }
        }
        Flow::Continue
    }

    /// The token does not travel to the backend in `Sec-WebSocket-Protocol`.
    fn upstream_request(&self, req: &mut request::Parts, ctx: &Context<'_>) {
        if !ctx.websocket || !self.sources.contains(&Source::Subprotocol) {
            return;
        }
        let Some(token) = subprotocol_token(req).map(str::to_string) else { return };
        let kept: Vec<&str> = offered_protocols(req).filter(|e| *e != token && !e.is_empty()).collect();
        let kept = kept.join(", ");
        req.headers.remove(header::SEC_WEBSOCKET_PROTOCOL);
        if !kept.is_empty()
            && let Ok(v) = HeaderValue::from_str(&kept)
        {
            req.headers.insert(header::SEC_WEBSOCKET_PROTOCOL, v);
        }
    }

    /// A browser that offered protocols fails a handshake that selects none: when the
    /// backend chose none, choose the client's marker entry (`access_token`), or the
    /// token entry itself when it offered nothing else.
    fn response(&self, resp: &mut response::Parts, req: &request::Parts, ctx: &Context<'_>) {
        if !ctx.websocket
            || !self.sources.contains(&Source::Subprotocol)
            || resp.headers.contains_key(header::SEC_WEBSOCKET_PROTOCOL)
            || !(resp.status == StatusCode::SWITCHING_PROTOCOLS || resp.status.is_success())
        {
            return;
        }
        let Some(token) = subprotocol_token(req) else { return };
        let choice = offered_protocols(req).find(|e| *e == "access_token" || *e == "bearer").unwrap_or(token);
        if let Ok(v) = HeaderValue::from_str(choice) {
            resp.headers.insert(header::SEC_WEBSOCKET_PROTOCOL, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    #[test]
    fn jwks_documents_parse_and_skip_what_they_cannot_use() {
        let doc = r#"{"keys":[{"kty":"RSA","kid":"r","n":"AQAB","e":"AQAB"},{"kty":"EC","crv":"P-384","x":"AA","y":"AA"},{"kty":"oct","k":"x"}]}"#;
        let keys = parse_jwks(doc).expect("parses");
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid.as_deref(), Some("r"));
        assert!(parse_jwks("{}").is_err());
        assert!(parse_jwks("nope").is_err());
    }

    /// Found by the `jwt` fuzz target: a validly signed token with `"exp":
    /// 9223372036854775807` (i64::MAX, "never expires") overflowed `exp + leeway` —
    /// a panic with overflow checks, an "expired" token without them.
    #[test]
    fn extreme_times_neither_overflow_nor_expire_a_token() {
        let secret = "a-secret-of-at-least-thirty-two-bytes";
        let config = serde_json::json!({ "secret": secret, "algorithms": ["HS256"], "leeway": u64::MAX });
        let policy = JwtPolicy::new(serde_json::from_value(config).expect("config")).expect("builds");
        let sign = |claims: &str| hs256(secret, br#"{"alg":"HS256"}"#, claims.as_bytes());
        let now = 1_800_000_000;
        assert!(policy.verify(&sign(r#"{"exp":9223372036854775807}"#), now).is_ok());
        assert!(policy.verify(&sign(r#"{"nbf":-9223372036854775808}"#), now).is_ok());
        let strict = serde_json::json!({ "secret": secret, "algorithms": ["HS256"], "leeway": 0 });
        let strict = JwtPolicy::new(serde_json::from_value(strict).expect("config")).expect("builds");
        assert!(strict.verify(&sign(r#"{"exp":9223372036854775807}"#), now).is_ok());
        assert_eq!(strict.verify(&sign(r#"{"exp":1}"#), now).err(), Some("token expired"));
        // The request's time decides, not the wall clock's: at 0, `exp: 1` holds.
        assert!(strict.verify(&sign(r#"{"exp":1}"#), 0).is_ok());
    }

    /// An HS256 token with `header` and `claims` as they are (bytes, not JSON values).
    fn hs256(secret: &str, header: &[u8], claims: &[u8]) -> String {
        let signed = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(claims));
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(ring::hmac::sign(&key, signed.as_bytes())))
    }

    /// Found by the `jwt` fuzz target: `jsonwebtoken` read a header with invalid UTF-8
    /// inside a string (`"typ": "\xff\x83T"`) and the token passed. A header is UTF-8
    /// JSON (RFC 7515 §4), so such a token is refused however well it is signed.
    #[test]
    fn a_header_that_is_not_utf8_json_is_refused_even_when_signed() {
        let secret = "a-secret-of-at-least-thirty-two-bytes";
        let config = serde_json::json!({ "secret": secret, "algorithms": ["HS256"] });
        let policy = JwtPolicy::new(serde_json::from_value(config).expect("config")).expect("builds");
        let claims = br#"{"sub":"u1"}"#;
        assert!(policy.verify(&hs256(secret, br#"{"alg": "HS256", "typ": "JWT"}"#, claims), 0).is_ok());
        let bad = hs256(secret, b"{\"alg\": \"HS256\", \"typ\": \"\xff\x83T\"}", claims);
        assert_eq!(policy.verify(&bad, 0).err(), Some("malformed token header"));
        for header in [&b"[\"HS256\"]"[..], b"{\"alg\":\"HS256\"", b"\xef\xbb\xbf{\"alg\":\"HS256\"}"] {
            assert_eq!(policy.verify(&hs256(secret, header, claims), 0).err(), Some("malformed token header"));
        }
        assert_eq!(policy.verify(&hs256(secret, br#"{"alg":"none"}"#, claims), 0).err(), Some("unsupported algorithm"));
    }
}
