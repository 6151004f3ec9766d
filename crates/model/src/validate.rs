//! Cross-item validation: names are well formed and unique, references resolve, URLs
//! and patterns parse, credentials fit the product's authentication mode. Every problem
//! is collected, each with its path and a fix.

use crate::config::*;
use crate::error::{ConfigError, ConfigErrors};
use crate::pattern::Pattern;
use crate::suggest::did_you_mean;
use std::collections::{HashMap, HashSet};

/// A URL split into what Tollgate needs of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    /// Lower-cased; one of the `schemes` given to [`BaseUrl::parse`].
    pub scheme: String,
    /// Lower-cased; IPv6 addresses without brackets.
    pub host: String,
    /// The URL's port, else 443 for `https` and `wss`, 80 for the others.
    pub port: u16,
    /// Without a trailing `/`; empty for the root.
    pub path: String,
}

impl BaseUrl {
    /// Parses `scheme://host[:port][/path]`, with the schemes allowed in `schemes`.
    pub fn parse(s: &str, schemes: &[&str]) -> Result<BaseUrl, String> {
        if s.contains('#') {
            return Err(format!("`{s}` must not have a fragment (`#…`): a fragment is never sent to a server"));
        }
        let uri: http::Uri = s.parse().map_err(|e| match s.split_once("://") {
            Some((_, "")) => format!("`{s}` has no host: write scheme://HOST[:PORT][/PATH]"),
            _ => format!("`{s}` is not a URL: {e}"),
        })?;
        let scheme = uri.scheme_str().ok_or_else(|| format!("`{s}` has no scheme"))?.to_ascii_lowercase();
        if !schemes.contains(&scheme.as_str()) {
            return Err(format!("scheme `{scheme}` is not allowed here; use {}", schemes.join(", ")));
        }
        let host = uri.host().filter(|h| !h.is_empty()).ok_or_else(|| format!("`{s}` has no host"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        // A host is an IP address or a DNS name that a TLS client can check a
        // certificate against (rustls's rules) — anything else `http::Uri` lets through
        // (`a_b!`, `x..y`, `%41`) could neither be resolved nor verified.
        if rustls_pki_types::ServerName::try_from(host.as_str()).is_err() {
            return Err(format!(
                "`{host}` in `{s}` is not a host name nor an IP address: write a DNS name of letters, digits, \
                 `-` and `.` (such as api.internal), an IPv4 address, or an IPv6 address in brackets"
            ));
        }
        if uri.query().is_some() {
            return Err(format!("`{s}` must not have a query string"));
        }
        let authority = uri.authority().map_or("", |a| a.as_str());
        if authority.contains('@') {
            return Err(format!(
                "`{s}` carries user information (`user:password@`), which is never sent: give the backend its \
                 credentials with the `headers` policy (an Authorization header) instead"
            ));
        }
        let port = match uri.port_u16() {
            Some(0) => return Err(format!("`{s}` has port 0: write a port from 1 to 65535")),
            Some(p) => p,
            None if uri.port().is_some()
                || authority.rsplit_once(':').is_some_and(|(h, _)| !h.ends_with(':') && !authority.ends_with(']')) =>
            {
                return Err(format!("`{s}` has a port that is not a number from 1 to 65535"));
            }
            None if matches!(scheme.as_str(), "https" | "wss") => 443,
            None => 80,
        };
        let path = uri.path().trim_end_matches('/').to_string();
        Ok(BaseUrl { scheme, host, port, path })
    }

    /// Whether the scheme is `https` or `wss`.
    pub fn is_tls(&self) -> bool {
        matches!(self.scheme.as_str(), "https" | "wss")
    }
}

/// The longest system_name, in characters: 3scale's (`varchar(255)`).
pub const SYSTEM_NAME_MAX: usize = 255;

fn valid_system_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= SYSTEM_NAME_MAX
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// A name as error messages quote it: whole up to 60 characters, else its start and its
/// length (a message must not repeat a 100,000-character name).
fn quoted(name: &str) -> String {
    match name.char_indices().nth(60) {
        None => format!("`{name}`"),
        Some((end, _)) => format!("`{}…` ({} characters)", &name[..end], name.chars().count()),
    }
}

/// The names a hint lists: the first ten, and how many more.
fn listed(known: &[&str]) -> String {
    match known.len() {
        0..=10 => known.join(", "),
        n => format!("{}, and {} more", known[..10].join(", "), n - 10),
    }
}

struct Checker {
    errors: ConfigErrors,
}

impl Checker {
    fn err(&mut self, path: String, msg: impl Into<String>, hint: impl Into<String>) {
        self.errors.push(ConfigError::new(path, msg).hint(hint));
    }

    fn system_name(&mut self, path: &str, name: &str, seen: &mut HashSet<String>, what: &str) {
        if !valid_system_name(name) {
            self.err(
                format!("{path}.system_name"),
                format!("{} is not a valid system_name", quoted(name)),
                format!("use letters, digits, `_`, `-` or `.`; at most {SYSTEM_NAME_MAX} of them"),
            );
        }
        if !seen.insert(name.to_string()) {
            self.err(
                format!("{path}.system_name"),
                format!("another {what} is already named {}", quoted(name)),
                format!("give each {what} its own system_name"),
            );
        }
    }

    fn reference(&mut self, path: String, name: &str, known: &[&str], what: &str) -> bool {
        if known.contains(&name) {
            return true;
        }
        let hint = match did_you_mean(name, known.iter().copied()) {
            Some(s) => format!("did you mean `{s}`?"),
            None if known.is_empty() => format!("declare the {what} first"),
            None => format!("known: {}", listed(known)),
        };
        self.err(path, format!("no {what} named {}", quoted(name)), hint);
        false
    }
}

/// Validates a complete configuration, ready to serve.
pub fn validate(config: &Config) -> Result<(), ConfigErrors> {
    check(config, false)
}

/// Validates a draft: like [`validate`], but a product may still lack backend usages
/// (as when a product is being built step by step through the admin API).
pub fn validate_draft(config: &Config) -> Result<(), ConfigErrors> {
    check(config, true)
}

fn check(config: &Config, draft: bool) -> Result<(), ConfigErrors> {
    let mut c = Checker { errors: ConfigErrors::default() };

    let mut backend_names = HashSet::new();
    for (i, b) in config.backends.iter().enumerate() {
        let path = format!("backends[{i}]");
        c.system_name(&path, &b.system_name, &mut backend_names, "backend");
        if let Err(e) = BaseUrl::parse(&b.private_base_url, &["http", "https", "ws", "wss"]) {
            c.err(
                format!("{path}.private_base_url"),
                e,
                "write it like wss://10.0.0.5:8443 or http://backend.internal/api",
            );
        }
        if b.tls.ca_file.is_some() && b.tls.ca_pem.is_some() {
            c.err(format!("{path}.tls.ca_pem"), "both `ca_file` and `ca_pem` are set", "keep one of them");
        }
        let t = &b.tls;
        pem_pair(
            &mut c,
            &format!("{path}.tls"),
            [("client_cert_file", t.client_cert_file.is_some()), ("client_cert_pem", t.client_cert_pem.is_some())],
            [("client_key_file", t.client_key_file.is_some()), ("client_key_pem", t.client_key_pem.is_some())],
        );
        if b.connect_timeout_ms == Some(0) {
            c.err(format!("{path}.connect_timeout_ms"), "must be greater than 0", "omit it for the default of 5000");
        }
        fleet(&mut c, &path, b);
        let mut names = HashSet::new();
        for (j, m) in b.metrics.iter().enumerate() {
            c.system_name(&format!("{path}.metrics[{j}]"), &m.system_name, &mut names, "metric or method");
        }
        for (j, m) in b.methods.iter().enumerate() {
            c.system_name(&format!("{path}.methods[{j}]"), &m.system_name, &mut names, "metric or method");
        }
        let mut known: Vec<&str> = b.metrics.iter().chain_methods(&b.methods);
        known.push("hits");
        rules(&mut c, &path, &b.mapping_rules, &known);
    }

    let backends: HashMap<&str, &Backend> = config.backends.iter().map(|b| (b.system_name.as_str(), b)).collect();
    let backend_list: Vec<&str> = config.backends.iter().map(|b| b.system_name.as_str()).collect();
    let mut product_names = HashSet::new();
    let mut hosts: [HashMap<String, String>; 2] = Default::default();
    let mut product_namespaces: HashMap<&str, (Vec<&str>, Vec<&str>, AuthMode)> = HashMap::new();

    for (i, p) in config.products.iter().enumerate() {
        let path = format!("products[{i}]");
        c.system_name(&path, &p.system_name, &mut product_names, "product");
        if p.authentication.mode == AuthMode::ClientCertificate
            && p.tls.as_ref().is_none_or(|t| !t.checks_client_certificates())
        {
            c.err(
                format!("{path}.authentication.mode"),
                "`client_certificate` authentication needs the certificates verified: `tls.client_ca_file` is not set",
                "set `tls: { client_ca_file: <PEM of the authorities>, client_certificates: required }`",
            );
        }
        if let Some(tls) = &p.tls {
            pem_pair(
                &mut c,
                &format!("{path}.tls"),
                [("cert_file", tls.cert_file.is_some()), ("cert_pem", tls.cert_pem.is_some())],
                [("key_file", tls.key_file.is_some()), ("key_pem", tls.key_pem.is_some())],
            );
            if tls.ocsp_file.is_some() && tls.cert_file.is_none() && tls.cert_pem.is_none() {
                c.err(
                    format!("{path}.tls.ocsp_file"),
                    "an OCSP response is stapled with the product's certificate, and it has none",
                    "give the product `cert_file` and `key_file`, or drop `ocsp_file`",
                );
            }
            if tls.client_ca_file.is_some() && tls.client_ca_pem.is_some() {
                c.err(
                    format!("{path}.tls.client_ca_pem"),
                    "both `client_ca_file` and `client_ca_pem` are set",
                    "keep one of them",
                );
            }
            if tls.client_certificates.is_some() && !tls.checks_client_certificates() {
                c.err(
                    format!("{path}.tls.client_certificates"),
                    "client certificates are checked against `client_ca_file` (or `client_ca_pem`), which is not set",
                    "set `client_ca_file` to the PEM file of the authorities that issue them",
                );
            }
        }
        for (env, (key, url)) in [
            ("staging_public_base_url", &p.staging_public_base_url),
            ("production_public_base_url", &p.production_public_base_url),
        ]
        .into_iter()
        .enumerate()
        {
            match BaseUrl::parse(url, &["http", "https"]) {
                Ok(u) if !u.path.is_empty() => c.err(
                    format!("{path}.{key}"),
                    format!("`{url}` has a path; a public base URL names a host (and port) only"),
                    "route by path with `backend_usages` instead",
                ),
                Ok(u) => {
                    if let Some(other) = hosts[env].insert(u.host.clone(), p.system_name.clone()) {
                        c.err(
                            format!("{path}.{key}"),
                            format!("host `{}` is already used by product `{other}`", u.host),
                            "each product needs its own public host in each environment",
                        );
                    }
                }
                Err(e) => c.err(format!("{path}.{key}"), e, "write it like https://api.example.com"),
            }
        }

        // The product's metric namespace: its own metrics and methods, plus those of the
        // backends it uses (which is how 3scale exposes backend metrics to plans).
        let mut names = HashSet::from(["hits".to_string()]);
        for (j, m) in p.metrics.iter().enumerate() {
            if m.system_name != "hits" {
                c.system_name(&format!("{path}.metrics[{j}]"), &m.system_name, &mut names, "metric or method");
            }
        }
        for (j, m) in p.methods.iter().enumerate() {
            c.system_name(&format!("{path}.methods[{j}]"), &m.system_name, &mut names, "metric or method");
        }
        let mut metrics: Vec<&str> = p.metrics.iter().chain_methods(&p.methods);
        if !metrics.contains(&"hits") {
            metrics.push("hits");
        }

        if p.backend_usages.is_empty() && !draft {
            c.err(
                format!("{path}.backend_usages"),
                "a product needs at least one backend usage",
                "add `backend_usages: [ { backend: NAME, path: / } ]`",
            );
        }
        let mut paths = HashSet::new();
        for (j, u) in p.backend_usages.iter().enumerate() {
            let upath = format!("{path}.backend_usages[{j}]");
            if c.reference(format!("{upath}.backend"), &u.backend, &backend_list, "backend") {
                let b = backends[u.backend.as_str()];
                for m in b.metrics.iter().map(|m| &m.system_name).chain(b.methods.iter().map(|m| &m.system_name)) {
                    if !metrics.contains(&m.as_str()) {
                        metrics.push(m);
                    }
                }
            }
            if !u.path.starts_with('/') {
                c.err(
                    format!("{upath}.path"),
                    format!("`{}` must start with `/`", u.path),
                    "write `/` or a prefix like `/api`",
                );
            } else if u.path.contains(['?', '#', '{', '$']) {
                c.err(
                    format!("{upath}.path"),
                    format!("`{}` must be a plain path prefix", u.path),
                    "remove query strings and placeholders",
                );
            }
            if !paths.insert(u.path.trim_end_matches('/')) {
                c.err(
                    format!("{upath}.path"),
                    format!("path `{}` is used twice", u.path),
                    "give each backend usage its own path",
                );
            }
        }
        rules(&mut c, &path, &p.mapping_rules, &metrics);

        for (j, pol) in p.policy_chain.iter().enumerate() {
            if pol.name.trim().is_empty() {
                c.err(format!("{path}.policy_chain[{j}].name"), "is empty", "name a policy, e.g. `websocket`");
            }
            // Certificate-bound tokens need the client certificate the product verifies:
            // without one, every request would be refused.
            if pol.enabled
                && pol.name == "jwt"
                && pol.configuration.get("require_certificate_binding") == Some(&serde_json::Value::Bool(true))
                && p.tls.as_ref().is_none_or(|t| !t.checks_client_certificates())
            {
                c.err(
                    format!("{path}.policy_chain[{j}].configuration.require_certificate_binding"),
                    "certificate-bound tokens are checked against the client certificate, and this product asks for none (no `tls.client_ca_file`): every request would be refused",
                    "give the product `tls: { client_ca_file: <PEM of the clients' authorities> }`, or drop require_certificate_binding",
                );
            }
        }

        let auth = &p.authentication;
        for (key, v) in [
            ("user_key_param", &auth.user_key_param),
            ("app_id_param", &auth.app_id_param),
            ("app_key_param", &auth.app_key_param),
        ] {
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_graphic() && b != b'=' && b != b'&') {
                c.err(
                    format!("{path}.authentication.{key}"),
                    format!("`{v}` is not a usable parameter name"),
                    "use a plain name such as `user_key`",
                );
            }
        }
        let e = &p.errors;
        for (key, m) in [
            ("auth_missing", &e.auth_missing),
            ("auth_failed", &e.auth_failed),
            ("no_match", &e.no_match),
            ("limits_exceeded", &e.limits_exceeded),
        ] {
            if let Some(m) = m {
                if !(400..=599).contains(&m.status) {
                    c.err(
                        format!("{path}.errors.{key}.status"),
                        format!("{} is not an error status", m.status),
                        "use a status from 400 to 599",
                    );
                }
                if http::HeaderValue::from_str(&m.content_type).is_err() {
                    c.err(
                        format!("{path}.errors.{key}.content_type"),
                        "is not a valid header value",
                        "use e.g. `text/plain` or `application/json`",
                    );
                }
            }
        }

        let mut plan_names = HashSet::new();
        let mut plans = Vec::new();
        for (j, plan) in p.application_plans.iter().enumerate() {
            let ppath = format!("{path}.application_plans[{j}]");
            c.system_name(&ppath, &plan.system_name, &mut plan_names, "application plan");
            plans.push(plan.system_name.as_str());
            let mut seen = HashSet::new();
            for (k, l) in plan.limits.iter().enumerate() {
                let lpath = format!("{ppath}.limits[{k}]");
                c.reference(format!("{lpath}.metric"), &l.metric, &metrics, "metric or method");
                if !seen.insert((l.metric.as_str(), l.period)) {
                    c.err(
                        format!("{lpath}.period"),
                        format!("`{}` already has a {} limit in this plan", l.metric, l.period),
                        "keep one limit per metric and period",
                    );
                }
            }
            if plan.max_connections == Some(0) {
                c.err(
                    format!("{ppath}.max_connections"),
                    "0 would refuse every WebSocket",
                    "omit it for no cap, or set at least 1",
                );
            }
        }
        product_namespaces.insert(&p.system_name, (plans, metrics, auth.mode));
    }

    let products: Vec<&str> = config.products.iter().map(|p| p.system_name.as_str()).collect();
    let mut account_names = HashSet::new();
    let mut user_keys: HashSet<(&str, &str)> = HashSet::new();
    let mut app_ids: HashSet<(&str, &str)> = HashSet::new();
    let mut fingerprints: HashSet<(&str, String)> = HashSet::new();
    for (i, a) in config.accounts.iter().enumerate() {
        let path = format!("accounts[{i}]");
        if a.name.trim().is_empty() {
            c.err(format!("{path}.name"), "is empty", "name the account");
        }
        if !account_names.insert(a.name.as_str()) {
            c.err(
                format!("{path}.name"),
                format!("another account is already named `{}`", a.name),
                "give each account its own name",
            );
        }
        let mut app_names = HashSet::new();
        for (j, app) in a.applications.iter().enumerate() {
            let apath = format!("{path}.applications[{j}]");
            if !app_names.insert(app.name.as_str()) {
                c.err(
                    format!("{apath}.name"),
                    format!("account `{}` already has an application named `{}`", a.name, app.name),
                    "give each application of an account its own name",
                );
            }
            // `product_namespaces` answers at once; the list (for the hint) only on a miss.
            if !product_namespaces.contains_key(app.product.as_str())
                && !c.reference(format!("{apath}.product"), &app.product, &products, "product")
            {
                continue;
            }
            let (plans, _, mode) = &product_namespaces[app.product.as_str()];
            c.reference(format!("{apath}.plan"), &app.plan, plans, "application plan");
            match mode {
                AuthMode::UserKey => match &app.user_key {
                    None => c.err(
                        format!("{apath}.user_key"),
                        format!("product `{}` authenticates with user_key", app.product),
                        "add `user_key: <a long random string>`",
                    ),
                    Some(k) if k.is_empty() => {
                        c.err(format!("{apath}.user_key"), "is empty", "use a long random string")
                    }
                    Some(k) => {
                        if !user_keys.insert((app.product.as_str(), k.as_str())) {
                            c.err(
                                format!("{apath}.user_key"),
                                "another application of this product has the same user_key",
                                "keys must be unique per product",
                            );
                        }
                    }
                },
                AuthMode::ClientCertificate => {
                    if app.client_certificates.is_empty() {
                        c.err(
                            format!("{apath}.client_certificates"),
                            format!("product `{}` authenticates with client certificates", app.product),
                            "add `client_certificates: [ <the SHA-256 fingerprint of the application's certificate> ]` (openssl x509 -noout -fingerprint -sha256 -in CERT)",
                        );
                    }
                    for (k, f) in app.client_certificates.iter().enumerate() {
                        match crate::config::normalize_fingerprint(f) {
                            None => c.err(
                                format!("{apath}.client_certificates[{k}]"),
                                format!("`{f}` is not a SHA-256 fingerprint"),
                                "write the 64 hex digits `openssl x509 -noout -fingerprint -sha256 -in CERT` prints (colons allowed)",
                            ),
                            Some(f) => {
                                if !fingerprints.insert((app.product.as_str(), f)) {
                                    c.err(
                                        format!("{apath}.client_certificates[{k}]"),
                                        "another application of this product has the same certificate",
                                        "a certificate identifies one application per product",
                                    );
                                }
                            }
                        }
                    }
                }
                AuthMode::AppIdAppKey => match &app.app_id {
                    None => c.err(
                        format!("{apath}.app_id"),
                        format!("product `{}` authenticates with app_id and app_key", app.product),
                        "add `app_id:` and `app_keys: [ … ]`",
                    ),
                    Some(id) => {
                        if id.is_empty() {
                            c.err(format!("{apath}.app_id"), "is empty", "use a unique identifier");
                        } else if !app_ids.insert((app.product.as_str(), id.as_str())) {
                            c.err(
                                format!("{apath}.app_id"),
                                "another application of this product has the same app_id",
                                "app_ids must be unique per product",
                            );
                        }
                        if app.app_keys.is_empty() || app.app_keys.iter().any(String::is_empty) {
                            c.err(
                                format!("{apath}.app_keys"),
                                "needs at least one non-empty key",
                                "add `app_keys: [ <a long random string> ]`",
                            );
                        }
                    }
                },
            }
        }
    }
    c.errors.into_result(())
}

fn rules(c: &mut Checker, path: &str, rules: &[MappingRule], metrics: &[&str]) {
    for (k, r) in rules.iter().enumerate() {
        let rpath = format!("{path}.mapping_rules[{k}]");
        if !HTTP_METHODS.contains(&r.http_method.as_str()) {
            let hint = match did_you_mean(&r.http_method.to_ascii_uppercase(), HTTP_METHODS) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!("use one of {}", HTTP_METHODS.join(", ")),
            };
            c.err(format!("{rpath}.http_method"), format!("`{}` is not an HTTP method", r.http_method), hint);
        }
        if let Err(e) = Pattern::parse(&r.pattern) {
            c.err(
                format!("{rpath}.pattern"),
                e,
                "see the mapping-rule pattern syntax in docs/gateway.md#mapping-rules",
            );
        }
        c.reference(format!("{rpath}.metric"), &r.metric, metrics, "metric or method");
        if r.delta == 0 {
            c.err(format!("{rpath}.delta"), "must be at least 1", "omit it for 1");
        }
    }
}

trait ChainMethods<'a> {
    fn chain_methods(self, methods: &'a [Method]) -> Vec<&'a str>;
}

impl<'a, I: Iterator<Item = &'a Metric>> ChainMethods<'a> for I {
    fn chain_methods(self, methods: &'a [Method]) -> Vec<&'a str> {
        self.map(|m| m.system_name.as_str()).chain(methods.iter().map(|m| m.system_name.as_str())).collect()
    }
}

/// The fleet keys of a backend: endpoints, load balancing, health checks, circuit
/// breaker, drain timeout.
fn fleet(c: &mut Checker, path: &str, b: &Backend) {
    use crate::fleet::{Algorithm, HashOn};
    /// One day: longer intervals, timeouts and ejections are mistakes (and would
    /// overflow clocks); a week for draining.
    const DAY_MS: u64 = 86_400_000;
    let mut seen = HashMap::new();
    for (j, e) in b.endpoints.iter().enumerate() {
        let at = format!("{path}.endpoints[{j}]");
        match e.host_port() {
            Err(e) => {
                c.err(format!("{at}.address"), e, "write it like 10.0.0.5:8080, [fd00::5]:8080 or api-1.internal:8080")
            }
            Ok(_) => {
                // The same endpoint however spelled: case, a trailing dot, IPv6 forms,
                // leading zeros in the port.
                if let Some(first) = e.canonical().and_then(|key| seen.insert(key, j)) {
                    c.err(
                        format!("{at}.address"),
                        format!("`{}` is the same endpoint as endpoints[{first}]", e.address),
                        "list each endpoint once; give it a larger `weight` instead",
                    );
                }
            }
        }
        if !(1..=1000).contains(&e.weight) {
            c.err(
                format!("{at}.weight"),
                format!("{} is out of range", e.weight),
                "use 1 to 1000 (to take an endpoint out, set `drain: true`)",
            );
        }
    }
    let lb = &b.load_balancing;
    match (&lb.hash_on, lb.algorithm) {
        (Some(_), a) if a != Algorithm::ConsistentHash => c.err(
            format!("{path}.load_balancing.hash_on"),
            "`hash_on` applies to `consistent_hash` only",
            "set `algorithm: consistent_hash`, or remove `hash_on`",
        ),
        (Some(HashOn::Header { header: h }), _) if http_header_name(h).is_none() => c.err(
            format!("{path}.load_balancing.hash_on.header"),
            format!("`{h}` is not a header name"),
            "name a header like X-Session-Id",
        ),
        (Some(HashOn::Cookie { cookie: k }), _)
            if k.is_empty() || !k.bytes().all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b)) =>
        {
            c.err(
                format!("{path}.load_balancing.hash_on.cookie"),
                format!("`{k}` is not a cookie name"),
                "name a cookie like session",
            )
        }
        _ => {}
    }
    let hc = &b.health_checks;
    if let Some(a) = &hc.active {
        let at = format!("{path}.health_checks.active");
        // Sent as the request target: visible ASCII, no fragment (RFC 9112 §3.2).
        let target_ok = a.path.starts_with('/') && a.path.bytes().all(|b| b.is_ascii_graphic() && b != b'#');
        if !target_ok {
            c.err(
                format!("{at}.path"),
                format!("`{}` cannot be sent as a request path", a.path.escape_debug()),
                "write an absolute path of visible ASCII like /health (percent-encode anything else; no #fragment)",
            );
        }
        for s in &a.expected_statuses {
            if !(100..=599).contains(s) {
                c.err(format!("{at}.expected_statuses"), format!("{s} is not an HTTP status"), "use 100 to 599");
            }
        }
        if !(100..=DAY_MS).contains(&a.interval_ms) {
            c.err(
                format!("{at}.interval_ms"),
                format!("{} is out of range", a.interval_ms),
                "use 100 to 86400000 (a day)",
            );
        }
        if let Some(t) = a.timeout_ms
            && (t == 0 || t > a.interval_ms)
        {
            c.err(
                format!("{at}.timeout_ms"),
                format!("{t} must be at least 1 and at most interval_ms ({})", a.interval_ms),
                "give a probe less time than the interval between probes",
            );
        }
        for (key, v) in [("healthy_threshold", a.healthy_threshold), ("unhealthy_threshold", a.unhealthy_threshold)] {
            if !(1..=1000).contains(&v) {
                c.err(format!("{at}.{key}"), format!("{v} is out of range"), "count 1 to 1000 probes");
            }
        }
    }
    let p = &hc.passive;
    let at = format!("{path}.health_checks.passive");
    if p.enabled {
        if !(1..=1000).contains(&p.consecutive_failures) {
            c.err(
                format!("{at}.consecutive_failures"),
                format!("{} is out of range", p.consecutive_failures),
                "use 1 to 1000, or turn ejection off with `enabled: false`",
            );
        }
        for s in &p.unhealthy_statuses {
            if !(100..=599).contains(s) {
                c.err(format!("{at}.unhealthy_statuses"), format!("{s} is not an HTTP status"), "use 100 to 599");
            }
        }
        if !(1..=DAY_MS).contains(&p.ejection_ms) {
            c.err(
                format!("{at}.ejection_ms"),
                format!("{} is out of range", p.ejection_ms),
                "use 1 to 86400000 (a day)",
            );
        }
        if let Some(max) = p.max_ejection_ms
            && (max < p.ejection_ms || max > DAY_MS)
        {
            c.err(
                format!("{at}.max_ejection_ms"),
                format!("{max} is not between ejection_ms ({}) and 86400000 (a day)", p.ejection_ms),
                "make the longest ejection at least the first, and at most a day",
            );
        }
    }
    let cb = &b.circuit_breaker;
    for (key, v) in [("max_connections", cb.max_connections), ("max_pending_requests", cb.max_pending_requests)] {
        if v == Some(0) {
            c.err(format!("{path}.circuit_breaker.{key}"), "must be at least 1", "omit it for no limit");
        }
    }
    if let Some(t) = b.drain_timeout_ms
        && !(1..=7 * DAY_MS).contains(&t)
    {
        c.err(
            format!("{path}.drain_timeout_ms"),
            format!("{t} is out of range"),
            "use 1 to 604800000 (a week); omit it for 60000",
        );
    }
    if let Some(t) = b.dns_refresh_ms
        && !(1000..=DAY_MS).contains(&t)
    {
        c.err(
            format!("{path}.dns_refresh_ms"),
            format!("{t} is out of range"),
            "use 1000 to 86400000 (a day); omit it to follow each answer's TTL",
        );
    }
}

/// A certificate and its key, each from a file or inline PEM: `[(file key, set),
/// (pem key, set)]` for each. One source each, and both or neither.
fn pem_pair(c: &mut Checker, at: &str, cert: [(&str, bool); 2], key: [(&str, bool); 2]) {
    for [(file, f), (pem, p)] in [cert, key] {
        if f && p {
            c.err(format!("{at}.{pem}"), format!("both `{file}` and `{pem}` are set"), "keep one of them");
        }
    }
    let (has_cert, has_key) = (cert[0].1 || cert[1].1, key[0].1 || key[1].1);
    if has_cert && !has_key {
        c.err(
            format!("{at}.{}", key[0].0),
            "a certificate needs its private key",
            format!("set `{}` (a PEM file) or `{}` (PEM text) to the certificate's key", key[0].0, key[1].0),
        );
    }
    if has_key && !has_cert {
        c.err(
            format!("{at}.{}", cert[0].0),
            "a key needs its certificate",
            format!("set `{}` (a PEM file) or `{}` (PEM text) to the key's certificate", cert[0].0, cert[1].0),
        );
    }
}

/// `name` if it is a valid HTTP field name (RFC 9110 §5.1: a token).
fn http_header_name(name: &str) -> Option<&str> {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    (!name.is_empty() && name.bytes().all(token)).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::BaseUrl;

    const ALL: &[&str] = &["http", "https", "ws", "wss"];

    #[test]
    fn base_urls_name_a_host_a_tls_client_can_check() {
        for ok in ["http://api.internal:8080/v1", "https://127.0.0.1", "wss://[::1]:9000", "http://svc-1.ns.svc"] {
            assert!(BaseUrl::parse(ok, ALL).is_ok(), "{ok}");
        }
        let url = BaseUrl::parse("https://API.Example:8443/v1/", ALL).expect("parses");
        assert_eq!((url.host.as_str(), url.port, url.path.as_str()), ("api.example", 8443, "/v1"));
        for bad in ["http://a..b/", "http://a!b/", "http://%41pi/", "https://-x.example/", "http://a,b/"] {
            let e = BaseUrl::parse(bad, ALL).expect_err(bad);
            assert!(e.contains("not a host name nor an IP address") || e.contains("is not a URL"), "{bad}: {e}");
        }
        assert!(BaseUrl::parse("ftp://x", ALL).expect_err("scheme").contains("use http, https, ws, wss"));
        assert!(BaseUrl::parse("http://x/?q=1", ALL).expect_err("query").contains("query string"));
        for (bad, says) in [
            ("http://127.0.0.1:99999", "port"),
            ("http://127.0.0.1:0", "port 0"),
            ("http://user:secret@127.0.0.1:9000/v1", "user information"),
            ("http://127.0.0.1:9000/v1#frag", "fragment"),
            ("http://", "has no host"),
        ] {
            let e = BaseUrl::parse(bad, ALL).expect_err(bad);
            assert!(e.contains(says), "{bad}: {e}");
        }
        assert_eq!(BaseUrl::parse("http://[::1]:8080", ALL).map(|b| b.port), Ok(8080));
        assert_eq!(BaseUrl::parse("http://[::1]", ALL).map(|b| b.port), Ok(80));
    }
}
