//! The `cors` policy (as APIcast's): answers preflight requests itself, before
//! authentication (browsers send no credentials on a preflight), and adds the
//! `Access-Control-*` headers to every response of a cross-origin request.
//!
//! ```yaml
//! - name: cors
//!   configuration:
//!     allow_origins: ["https://app.example.com"]        # exact origins, and/or
//!     allow_origin_patterns: ['^https://[a-z]+\.example\.com$']
//!     allow_methods: [GET, POST]                # default: the preflight's requested method
//!     allow_headers: [Content-Type, user_key]   # default: the preflight's requested headers
//!     expose_headers: [RateLimit-Remaining]
//!     allow_credentials: true
//!     max_age: 600
//! ```
//!
//! Without `allow_origins`/`allow_origin_patterns` every origin is allowed: the
//! request's `Origin` is echoed, or `allow_origin` (e.g. `*`) is sent as it is — except
//! `*` with credentials, which browsers refuse, where the origin is echoed. An origin not
//! allowed gets no CORS headers, and its preflight a 403 `cors_origin_not_allowed`.

use super::{Context, Flow, Policy, PolicyError};
use crate::refusal::{ErrorTemplate, Refusal};
use crate::upstream::body::GatewayBody;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header, request, response};
use schemars::JsonSchema;
use serde::Deserialize;

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Config {
    /// The Access-Control-Allow-Origin to send (e.g. `*`); default: the request's Origin.
    #[serde(default)]
    allow_origin: Option<String>,
    /// Origins allowed, exactly (`https://app.example.com`).
    #[serde(default)]
    allow_origins: Vec<String>,
    /// Origins allowed, as regular expressions matched against the whole Origin.
    #[serde(default)]
    allow_origin_patterns: Vec<String>,
    /// Headers the browser may show to the page (Access-Control-Expose-Headers).
    #[serde(default)]
    expose_headers: Vec<String>,
    #[serde(default)]
    allow_methods: Vec<String>,
    #[serde(default)]
    allow_headers: Vec<String>,
    #[serde(default)]
    allow_credentials: bool,
    #[serde(default)]
    max_age: Option<u32>,
}

pub struct CorsPolicy {
    allow_origin: Option<HeaderValue>,
    /// None: every origin.
    allowed: Option<(Vec<String>, Vec<regex::Regex>)>,
    expose_headers: Option<HeaderValue>,
    allow_methods: Option<HeaderValue>,
    allow_headers: Option<HeaderValue>,
    allow_credentials: bool,
    max_age: Option<HeaderValue>,
    /// The answer to a preflight from an origin not allowed (403).
    refused: std::sync::Arc<ErrorTemplate>,
}

fn joined(list: &[String], what: &str) -> Result<Option<HeaderValue>, PolicyError> {
    if list.is_empty() {
        return Ok(None);
    }
    HeaderValue::from_str(&list.join(", "))
        .map(Some)
        .map_err(|_| PolicyError::new(what, "contains characters not allowed in a header"))
}

impl CorsPolicy {
    pub(super) fn new(c: Config) -> Result<Self, PolicyError> {
        for (i, m) in c.allow_methods.iter().enumerate() {
            if Method::from_bytes(m.as_bytes()).is_err() {
                return Err(PolicyError::new(format!("allow_methods[{i}]"), format!("`{m}` is not an HTTP method")));
            }
        }
        let allow_origin = c
            .allow_origin
            .map(|o| {
                HeaderValue::try_from(o).map_err(|_| PolicyError::new("allow_origin", "is not a valid header value"))
            })
            .transpose()?;
        let mut patterns = Vec::new();
        for (i, p) in c.allow_origin_patterns.iter().enumerate() {
            // Checked alone first, so the error shows the operator's own pattern.
            super::regex(p).map_err(|e| PolicyError::new(format!("allow_origin_patterns[{i}]"), e))?;
            patterns.push(
                super::regex(&format!("^(?:{p})$"))
                    .map_err(|e| PolicyError::new(format!("allow_origin_patterns[{i}]"), e))?,
            );
        }
        let allowed = (!c.allow_origins.is_empty() || !patterns.is_empty()).then_some((c.allow_origins, patterns));
        let allow_origin = allow_origin.filter(|o| !(c.allow_credentials && o.as_bytes() == b"*"));
        Ok(CorsPolicy {
            allow_origin,
            allowed,
            expose_headers: joined(&c.expose_headers, "expose_headers")?,
            allow_methods: joined(&c.allow_methods, "allow_methods")?,
            allow_headers: joined(&c.allow_headers, "allow_headers")?,
            allow_credentials: c.allow_credentials,
            max_age: c.max_age.map(HeaderValue::from),
            refused: ErrorTemplate::shared_json(
                StatusCode::FORBIDDEN,
                "cors_origin_not_allowed",
                "this origin may not call the API",
            ),
        })
    }

    /// What to send as Access-Control-Allow-Origin: `None` when the request has no
    /// Origin, `Some(None)` when its origin is not allowed.
    fn origin(&self, req: &HeaderMap) -> Option<Option<HeaderValue>> {
        let origin = req.get(header::ORIGIN)?;
        if let Some((exact, patterns)) = &self.allowed {
            let o = origin.to_str().unwrap_or_default();
            if !exact.iter().any(|e| e.eq_ignore_ascii_case(o)) && !patterns.iter().any(|p| p.is_match(o)) {
                return Some(None);
            }
            return Some(Some(origin.clone()));
        }
        Some(Some(self.allow_origin.clone().unwrap_or_else(|| origin.clone())))
    }

    fn common(&self, origin: HeaderValue, out: &mut HeaderMap) {
        out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        if self.allow_credentials {
            out.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        }
        out.append(header::VARY, HeaderValue::from_static("Origin"));
    }
}

impl Policy for CorsPolicy {
    fn name(&self) -> &'static str {
        "cors"
    }

    fn rewrite(&self, req: &mut request::Parts, _ctx: &mut Context<'_>) -> Flow {
        let preflight =
            req.method == Method::OPTIONS && req.headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        let Some(origin) = preflight.then(|| self.origin(&req.headers)).flatten() else {
            return Flow::Continue;
        };
        let Some(origin) = origin else {
            return Flow::Refuse(Refusal::Denied {
                policy: "cors",
                code: "cors_origin_not_allowed",
                answer: self.refused.clone(),
            });
        };
        let mut resp = Response::new(GatewayBody::empty());
        *resp.status_mut() = StatusCode::NO_CONTENT;
        let h = resp.headers_mut();
        self.common(origin, h);
        let methods =
            self.allow_methods.clone().or_else(|| req.headers.get(header::ACCESS_CONTROL_REQUEST_METHOD).cloned());
        if let Some(m) = methods {
            h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, m);
        }
        let headers =
            self.allow_headers.clone().or_else(|| req.headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS).cloned());
        if let Some(v) = headers {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
        }
        if let Some(age) = &self.max_age {
            h.insert(header::ACCESS_CONTROL_MAX_AGE, age.clone());
        }
        Flow::Respond(resp)
    }

    fn response(&self, resp: &mut response::Parts, req: &request::Parts, _ctx: &Context<'_>) {
        if resp.headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN) {
            return; // a preflight we answered, or a backend that does CORS itself
        }
        if let Some(Some(origin)) = self.origin(&req.headers) {
            self.common(origin, &mut resp.headers);
            if let Some(e) = &self.expose_headers {
                resp.headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, e.clone());
            }
        }
    }
}
