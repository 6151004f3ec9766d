//! What the fuzz targets share: a compiled product to run policies against (its
//! `Context`), requests made from fuzzer bytes, a byte reader for structured inputs,
//! and a scripted backend for the targets that read a backend's answer.
//!
//! Nothing here asserts anything; each target says what it checks at its top.

use http::request;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use tollgate_gateway::policy::Context;
use tollgate_gateway::snapshot::Product;

/// The HS256 secret of the `jwt` policy in [`product`]; `jwt` signs tokens with it.
pub const JWT_SECRET: &str = "fuzzing-secret-of-at-least-32-bytes!";
/// The issuer and audience that policy requires.
pub const JWT_ISSUER: &str = "https://idp.example/realms/fuzz";
pub const JWT_AUDIENCE: &str = "api";
/// "Now" for every request of the targets (Unix seconds), so results are repeatable.
pub const NOW: i64 = 1_800_000_000;

/// A product compiled once, through the same pipeline as a served configuration
/// (`parse_str` → `compile`), with a `jwt` policy (HS256, issuer, audience, a claim
/// check) and a `headers` policy in its chain.
pub fn product() -> &'static Arc<Product> {
    static PRODUCT: OnceLock<Arc<Product>> = OnceLock::new();
    PRODUCT.get_or_init(|| {
        let yaml = format!(
            r#"
backends:
  - {{ system_name: api, private_base_url: "http://127.0.0.1:9" }}
products:
  - system_name: fuzz
    staging_public_base_url: http://fuzz-staging.localhost
    production_public_base_url: http://fuzz.localhost
    backend_usages: [ {{ backend: api, path: / }} ]
    metrics: [ {{ system_name: hits }} ]
    methods: [ {{ system_name: read }} ]
    mapping_rules:
      - {{ http_method: GET, pattern: /, metric: read }}
    policy_chain:
      - name: jwt
        configuration:
          secret: "{JWT_SECRET}"
          algorithms: [HS256]
          issuer: "{JWT_ISSUER}"
          audiences: ["{JWT_AUDIENCE}"]
          token_sources: [authorization, query, subprotocol]
          claim_checks:
            - methods: [POST, DELETE]
              path: "^/admin/"
              condition: {{ operations: [ {{ left: "{{{{ jwt.role }}}}", op: "==", right: admin }} ] }}
      - name: headers
        configuration:
          request: [ {{ op: set, header: X-Client, value: "{{{{ remote_addr }}}}" }} ]
      - name: tollgate
    application_plans: [ {{ system_name: basic }} ]
"#
        );
        let config = tollgate_model::parse_str(&yaml).expect("the fuzz product's YAML is valid");
        let registry = tollgate_gateway::policy::Registry::offline();
        let snapshots = tollgate_gateway::compile(&config, &registry).expect("the fuzz product compiles");
        snapshots.production.product_for_host("fuzz.localhost").expect("published on fuzz.localhost").clone()
    })
}

/// A request context for `product`, as the gateway makes one when a request arrives.
pub fn context(product: &Product) -> Context<'_> {
    Context::new(product, SocketAddr::from(([192, 0, 2, 7], 40_000)), false, false, NOW)
}

/// A request head from text: `METHOD TARGET` on the first line, `Name: value` lines
/// after it. Lines that do not make a valid header are skipped; `None` when the request
/// line is not valid.
pub fn request_parts(text: &str) -> Option<request::Parts> {
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let first = lines.next()?;
    let (method, target) = first.split_once(' ').unwrap_or(("GET", first));
    let target = if target.is_empty() { "/" } else { target };
    let mut builder = http::Request::builder().method(method).uri(target);
    for line in lines {
        if let Some((name, value)) = line.split_once(':')
            && let (Ok(n), Ok(v)) =
                (http::HeaderName::from_bytes(name.as_bytes()), http::HeaderValue::from_str(value.trim()))
        {
            builder = builder.header(n, v);
        }
    }
    builder.body(()).ok().map(|r| r.into_parts().0)
}

/// Reads structured values off the front of fuzzer bytes; past the end, zeros.
pub struct Bytes<'a>(pub &'a [u8]);

impl<'a> Bytes<'a> {
    pub fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }

    pub fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }

    /// Up to `n` bytes.
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }

    pub fn rest(&mut self) -> &'a [u8] {
        self.take(self.0.len())
    }
}

/// A backend over an in-memory connection: reads the request head, then writes `data`
/// in pieces whose sizes `seed` chooses (1 to 97 bytes, so a head or a chunk line
/// arrives split at any point), and closes.
pub async fn scripted_backend(mut io: tokio::io::DuplexStream, data: Vec<u8>, seed: u8) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match io.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let mut rest = &data[..];
    let mut i = 0usize;
    while !rest.is_empty() {
        let size = (1 + (usize::from(seed) >> (i % 4)) % 97).min(rest.len());
        if io.write_all(&rest[..size]).await.is_err() {
            return;
        }
        rest = &rest[size..];
        i += 1;
    }
    let _ = io.shutdown().await;
}
