//! Templates: text with `{{ variable }}` placeholders filled from the request, for
//! header values, rate-limit keys and conditions. A small, closed language — variables
//! only, no expressions, loops or calls — so a template can never run code, loop, or
//! fail at request time: it is parsed when the configuration loads (an unknown variable
//! is a config error there) and a missing value renders as the empty string.
//!
//! | variable | value |
//! |---|---|
//! | `remote_addr` | the client's IP address (the TCP peer) |
//! | `host` | the request's host, without port |
//! | `method`, `path`, `query` | the request line's parts (`query` without `?`) |
//! | `headers['Name']` | a request header (first value; case-insensitive) |
//! | `query['name']` | a query argument (first value, percent-decoded) |
//! | `application.id`, `application.plan` | the application, once `tollgate` identified it |
//! | `jwt.CLAIM` | a claim of the request's validated JWT (`jwt` policy) |
//! | `client_certificate.fingerprint` | the client certificate's SHA-256, lower-case hex |
//! | `client_certificate.subject`, `client_certificate.issuer` | its names, RFC 4514 (`CN=client,O=Example`) |
//! | `client_certificate.common_name` | the subject's CN |
//! | `client_certificate.serial` | its serial number, lower-case hex |
//! | `client_certificate.sans` | its alternative names, OpenSSL's notation (`DNS:a.example, URI:spiffe://x, email:a@example, IP Address:10.0.0.1`) |
//! | `now` | Unix seconds |
//!
//! `{{` and `}}` around a variable may hold spaces; `{{` without a closing `}}` is a
//! config error. Text outside placeholders is copied as it is.

use super::Context;
use http::HeaderName;
use http::request::Parts;
use std::borrow::Cow;
use tollgate_model::pattern::QueryArgs;

/// A template variable (the module documentation lists them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Var {
    /// `remote_addr`: the client's IP address (the TCP peer).
    RemoteAddr,
    /// `host`: the request's host, without port.
    Host,
    /// `method`: the request method.
    Method,
    /// `path`: the request path.
    Path,
    /// `query`: the query string, without `?`.
    Query,
    /// `headers['Name']`: a request header's first value.
    Header(HeaderName),
    /// `query['name']`: a query argument's first value, percent-decoded.
    Arg(Box<str>),
    /// `application.id`: the application, once `tollgate` identified it.
    ApplicationId,
    /// `application.plan`: the application's plan.
    ApplicationPlan,
    /// `jwt.CLAIM`: a claim of the request's validated JWT.
    Claim(Box<str>),
    /// `now`: Unix seconds.
    Now,
    /// `client_certificate.FIELD`: a field of the connection's client certificate, when
    /// the product verified one (`tls.client_ca_file`); empty otherwise.
    ClientCertificate(CertificateField),
}

/// A field of a client certificate a template can read (`client_certificate.FIELD`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertificateField {
    /// `fingerprint`: SHA-256 of the leaf, lower-case hex.
    Fingerprint,
    /// `subject`: RFC 4514.
    Subject,
    /// `issuer`: RFC 4514.
    Issuer,
    /// `common_name`: the subject's CN.
    CommonName,
    /// `serial`: lower-case hex.
    Serial,
    /// `sans`: the subject alternative names, OpenSSL's notation.
    Sans,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(Box<str>),
    Var(Var),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

/// The variables a template may use, as listed in error messages.
pub const VARIABLES: &str = "remote_addr, host, method, path, query, headers['NAME'], query['NAME'], application.id, application.plan, jwt.CLAIM, client_certificate.{fingerprint,subject,issuer,common_name,serial,sans}, now";

/// `name['key']` or `name["key"]` → key.
fn indexed<'a>(expr: &'a str, name: &str) -> Option<&'a str> {
    let rest = expr.strip_prefix(name)?.trim_start().strip_prefix('[')?.strip_suffix(']')?.trim();
    rest.strip_prefix('\'')
        .and_then(|r| r.strip_suffix('\''))
        .or_else(|| rest.strip_prefix('"').and_then(|r| r.strip_suffix('"')))
}

fn variable(expr: &str) -> Result<Var, String> {
    let expr = expr.trim();
    Ok(match expr {
        "remote_addr" => Var::RemoteAddr,
        "host" => Var::Host,
        "method" => Var::Method,
        "path" => Var::Path,
        "query" => Var::Query,
        "application.id" => Var::ApplicationId,
        "application.plan" => Var::ApplicationPlan,
        "now" => Var::Now,
        "client_certificate.fingerprint" => Var::ClientCertificate(CertificateField::Fingerprint),
        "client_certificate.subject" => Var::ClientCertificate(CertificateField::Subject),
        "client_certificate.issuer" => Var::ClientCertificate(CertificateField::Issuer),
        "client_certificate.common_name" => Var::ClientCertificate(CertificateField::CommonName),
        "client_certificate.serial" => Var::ClientCertificate(CertificateField::Serial),
        "client_certificate.sans" => Var::ClientCertificate(CertificateField::Sans),
        _ => {
            if let Some(h) = indexed(expr, "headers") {
                Var::Header(HeaderName::from_bytes(h.as_bytes()).map_err(|_| format!("`{h}` is not a header name"))?)
            } else if let Some(a) = indexed(expr, "query") {
                Var::Arg(a.into())
            } else if let Some(c) = expr.strip_prefix("jwt.").filter(|c| !c.is_empty()) {
                Var::Claim(c.into())
            } else {
                return Err(format!("unknown variable `{expr}` in a template; variables: {VARIABLES}"));
            }
        }
    })
}

impl Template {
    /// Parses `{{ variable }}` placeholders in `s`.
    ///
    /// # Errors
    ///
    /// A message when a `{{` has no closing `}}`, a variable is unknown, or a header name is
    /// invalid.
    pub fn parse(s: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Text(rest[..open].into()));
            }
            let after = &rest[open + 2..];
            let close = after.find("}}").ok_or_else(|| format!("`{{{{` without a closing `}}}}` in `{s}`"))?;
            parts.push(Part::Var(variable(&after[..close])?));
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.into()));
        }
        Ok(Template { parts })
    }

    /// Whether the template has no variables (its text is its value).
    pub fn is_static(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Text(_)))
    }

    /// The text, with each variable's value for `req` in `ctx`; a missing value is empty.
    pub fn render<'r>(&'r self, req: &Parts, ctx: &Context<'_>) -> Cow<'r, str> {
        match self.parts.as_slice() {
            [] => Cow::Borrowed(""),
            [Part::Text(t)] => Cow::Borrowed(t),
            parts => {
                let mut out = String::new();
                for p in parts {
                    match p {
                        Part::Text(t) => out.push_str(t),
                        Part::Var(v) => value(v, req, ctx, &mut out),
                    }
                }
                Cow::Owned(out)
            }
        }
    }
}

/// Appends a variable's value.
fn value(v: &Var, req: &Parts, ctx: &Context<'_>, out: &mut String) {
    use std::fmt::Write as _;
    match v {
        Var::RemoteAddr => {
            let _ = write!(out, "{}", ctx.client_addr.ip());
        }
        Var::Host => {
            let host = req.uri.host().or_else(|| req.headers.get(http::header::HOST).and_then(|h| h.to_str().ok()));
            let host = host.unwrap_or_default();
            // Without the port (an IPv6 literal keeps its brackets).
            let bare = match host.rfind(':') {
                Some(i) if !host[i..].contains(']') => &host[..i],
                _ => host,
            };
            out.push_str(bare);
        }
        Var::Method => out.push_str(req.method.as_str()),
        Var::Path => out.push_str(req.uri.path()),
        Var::Query => out.push_str(req.uri.query().unwrap_or_default()),
        Var::Header(name) => {
            if let Some(v) = req.headers.get(name) {
                out.push_str(&String::from_utf8_lossy(v.as_bytes()));
            }
        }
        Var::Arg(name) => {
            if let Some(v) = QueryArgs::parse(req.uri.query()).get(name) {
                out.push_str(v);
            }
        }
        Var::ApplicationId => {
            if let Some(a) = &ctx.application {
                out.push_str(&a.id);
            }
        }
        Var::ApplicationPlan => {
            if let Some(a) = &ctx.application {
                out.push_str(&a.plan.system_name);
            }
        }
        Var::Claim(name) => {
            if let Some(claim) = ctx.claims.as_ref().and_then(|c| c.get(&**name)) {
                match claim {
                    serde_json::Value::String(s) => out.push_str(s),
                    serde_json::Value::Null => {}
                    other => {
                        let _ = write!(out, "{other}");
                    }
                }
            }
        }
        Var::Now => {
            let _ = write!(out, "{}", ctx.now);
        }
        Var::ClientCertificate(field) => {
            if let Some(cert) = &ctx.client_certificate {
                out.push_str(match field {
                    CertificateField::Fingerprint => cert.fingerprint(),
                    CertificateField::Subject => &cert.details().subject,
                    CertificateField::Issuer => &cert.details().issuer,
                    CertificateField::CommonName => &cert.details().common_name,
                    CertificateField::Serial => &cert.details().serial,
                    CertificateField::Sans => &cert.details().sans,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_text_and_variables() {
        let t = Template::parse("ip={{ remote_addr }}, ua={{headers['User-Agent']}}; q={{ query[\"a\"] }}")
            .expect("parses");
        assert!(!t.is_static());
        assert_eq!(t.parts.len(), 6);
        assert_eq!(t.parts[1], Part::Var(Var::RemoteAddr));
        assert_eq!(t.parts[3], Part::Var(Var::Header(HeaderName::from_static("user-agent"))));
        assert_eq!(t.parts[5], Part::Var(Var::Arg("a".into())));
        assert!(Template::parse("plain").expect("text").is_static());
        assert!(Template::parse("").expect("empty").is_static());
    }

    #[test]
    fn errors_name_the_problem() {
        let e = Template::parse("{{ remote_adr }}").expect_err("unknown");
        assert!(e.contains("unknown variable `remote_adr`") && e.contains("remote_addr"), "{e}");
        assert!(Template::parse("a {{ path").expect_err("unclosed").contains("without a closing"));
        assert!(Template::parse("{{ headers['bad header'] }}").expect_err("name").contains("not a header name"));
        assert!(Template::parse("{{ jwt. }}").is_err());
        let e = Template::parse("{{ client_certificate.subjet }}").expect_err("unknown field");
        assert!(e.contains("client_certificate.{fingerprint,subject"), "{e}");
        assert_eq!(
            Template::parse("{{ client_certificate.sans }}").expect("parses").parts,
            [Part::Var(Var::ClientCertificate(CertificateField::Sans))]
        );
    }
}
