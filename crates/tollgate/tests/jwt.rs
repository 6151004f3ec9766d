//! The `jwt` policy through a real gateway: HS256, RS256 and ES256 tokens (signed here
//! with `ring`, RSA keys made by openssl), a JWK Set from a file and from a URL served
//! by a real socket (with key rotation), issuer/audience/expiry checks, the client id
//! mapped to the application, claim checks per method and path, and WebSockets that
//! carry the token in Sec-WebSocket-Protocol and close with 1008 when it expires.

mod support;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures_util::StreamExt;
use http::StatusCode;
use ring::signature::{self, KeyPair};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SECRET: &str = "a-shared-secret-of-at-least-32-bytes!!";

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn signing_input(header: &Value, claims: &Value) -> String {
    format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()))
}

fn hs256(claims: &Value) -> String {
    let input = signing_input(&json!({ "alg": "HS256", "typ": "JWT" }), claims);
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
    format!("{input}.{}", b64(ring::hmac::sign(&key, input.as_bytes()).as_ref()))
}

struct Ec {
    pair: signature::EcdsaKeyPair,
    kid: String,
}

impl Ec {
    fn new(kid: &str) -> Ec {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 =
            signature::EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("key");
        let pair =
            signature::EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
                .expect("pair");
        Ec { pair, kid: kid.into() }
    }

    fn jwk(&self) -> Value {
        let point = self.pair.public_key().as_ref();
        json!({ "kty": "EC", "crv": "P-256", "kid": self.kid, "x": b64(&point[1..33]), "y": b64(&point[33..65]) })
    }

    fn sign(&self, claims: &Value) -> String {
        let input = signing_input(&json!({ "alg": "ES256", "kid": self.kid }), claims);
        let sig = self.pair.sign(&ring::rand::SystemRandom::new(), input.as_bytes()).expect("sign");
        format!("{input}.{}", b64(sig.as_ref()))
    }
}

struct Rsa {
    pair: signature::RsaKeyPair,
}

impl Rsa {
    /// A 2048-bit key made by openssl.
    fn new(dir: &std::path::Path) -> Rsa {
        let path = dir.join("rsa.der");
        let out = std::process::Command::new("openssl")
            .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-outform", "DER", "-out"])
            .arg(&path)
            .output()
            .expect("openssl");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let der = std::fs::read(&path).expect("key");
        // OpenSSL 3 writes an RSA key as PKCS#1 in DER.
        Rsa { pair: signature::RsaKeyPair::from_der(&der).expect("RSA key") }
    }

    fn jwk(&self) -> Value {
        let c: signature::RsaPublicKeyComponents<Vec<u8>> = self.pair.public().into();
        json!({ "kty": "RSA", "kid": "rsa-1", "n": b64(&c.n), "e": b64(&c.e) })
    }

    fn sign(&self, claims: &Value) -> String {
        let input = signing_input(&json!({ "alg": "RS256", "kid": "rsa-1" }), claims);
        let mut sig = vec![0; self.pair.public().modulus_len()];
        self.pair
            .sign(&signature::RSA_PKCS1_SHA256, &ring::rand::SystemRandom::new(), input.as_bytes(), &mut sig)
            .expect("sign");
        format!("{input}.{}", b64(&sig))
    }
}

/// Serves whatever JWK Set `doc` holds, over HTTP, on a free port; `served` is notified
/// after each answer.
async fn jwks_server(doc: Arc<Mutex<String>>) -> (SocketAddr, Arc<tokio::sync::Notify>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let served = Arc::new(tokio::sync::Notify::new());
    let notify = served.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let (doc, notify) = (doc.clone(), notify.clone());
            tokio::spawn(async move {
                let mut buf = vec![0; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let body = doc.lock().expect("doc").clone();
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
                notify.notify_one();
            });
        }
    });
    (addr, served)
}

fn product(name: &str, chain: &str) -> String {
    format!(
        r#"  - system_name: {name}
    staging_public_base_url: http://{name}-staging.localhost
    production_public_base_url: http://{name}.localhost
    backend_usages: [ {{ backend: echo, path: / }} ]
    authentication: {{ mode: app_id_app_key }}
    mapping_rules: [ {{ http_method: ANY, pattern: /, metric: hits }} ]
    policy_chain: {chain}
    application_plans:
      - system_name: open
      - system_name: one
        limits: [ {{ metric: hits, period: eternity, value: 1 }} ]
"#
    )
}

async fn call(addr: SocketAddr, name: &str, method: &str, path: &str, token: Option<&str>) -> (StatusCode, String) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    let (status, _, body) = request(
        addr,
        &format!("{name}-staging.localhost"),
        method,
        path,
        boxed(http_body_util::Empty::new()),
        &headers,
    )
    .await;
    (status, body)
}

fn code(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or_default()
}

#[tokio::test]
async fn tokens_are_verified_mapped_to_applications_and_checked_per_route() {
    let backend = http_backend().await;
    let dir = TempDir::new();
    let (ec, rsa) = (Ec::new("ec-1"), Rsa::new(dir.path()));
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, json!({ "keys": [ec.jwk(), rsa.jwk()] }).to_string()).expect("jwks");
    let hs_chain = format!(
        r#"[ {{ name: jwt, configuration: {{ secret: "{SECRET}", issuer: "https://idp", audiences: [api], leeway: 0, client_id_claim: azp,
             claim_checks: [ {{ methods: [POST], path: "^/admin", condition: {{ operations: [ {{ left: "{{{{ jwt.role }}}}", op: "==", right: admin }} ] }} }} ] }} }},
           {{ name: headers, configuration: {{ request: [ {{ op: set, header: x-subject, value: "{{{{ jwt.sub }}}}" }} ] }} }},
           {{ name: tollgate }} ]"#
    );
    let file_chain = format!(
        r#"[ {{ name: jwt, configuration: {{ jwks_file: "{}", client_id_claim: client_id }} }}, {{ name: tollgate }} ]"#,
        jwks.display()
    );
    let yaml = format!(
        "backends: [ {{ system_name: echo, private_base_url: \"http://{backend}\" }} ]\nproducts:\n{}{}accounts:\n  - name: acme\n    applications:\n      - {{ name: web, product: hs, plan: open, app_id: web-client, app_keys: [unused-key] }}\n      - {{ name: once, product: hs, plan: one, app_id: once-client, app_keys: [unused-key] }}\n      - {{ name: svc, product: keys, plan: open, app_id: svc-client, app_keys: [unused-key] }}\n",
        product("hs", &hs_chain),
        product("keys", &file_chain),
    );
    let gw = gateway(&yaml).await;
    let addr = gw.server.staging;
    let good = json!({ "iss": "https://idp", "aud": ["api", "other"], "azp": "web-client", "sub": "alice", "exp": now() + 300, "role": "user" });

    let (status, body) = call(addr, "hs", "GET", "/x", Some(&hs256(&good))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["headers"]["x-subject"], "alice", "claims feed templates");
    // The scheme is case-insensitive (RFC 9110 §11.1).
    for scheme in ["bearer", "BEARER"] {
        let auth = format!("{scheme} {}", hs256(&good));
        let (status, _, body) =
            request(addr, "hs-staging.localhost", "GET", "/x", full(""), &[("authorization", &auth)]).await;
        assert_eq!(status, StatusCode::OK, "{scheme}: {body}");
    }

    let with = |patch: Value| {
        let mut c = good.clone();
        for (k, val) in patch.as_object().expect("object") {
            c[k] = val.clone();
        }
        c
    };
    for (claims, why) in [
        (with(json!({ "exp": now() - 5 })), "token expired"),
        (with(json!({ "nbf": now() + 300 })), "token not yet valid"),
        (with(json!({ "iss": "https://evil" })), "wrong issuer"),
        (with(json!({ "aud": "nobody" })), "wrong audience"),
    ] {
        let (status, body) = call(addr, "hs", "GET", "/x", Some(&hs256(&claims))).await;
        assert_eq!((status, code(&body)), (StatusCode::UNAUTHORIZED, why.to_string()), "{claims}");
    }
    let token = hs256(&good);
    // One signature character changed (not the last, whose spare bits do not count).
    let at = token.rfind('.').expect("three parts") + 5;
    let swapped = if &token[at..=at] == "A" { "B" } else { "A" };
    let tampered = format!("{}{swapped}{}", &token[..at], &token[at + 1..]);
    assert_eq!(code(&call(addr, "hs", "GET", "/x", Some(&tampered)).await.1), "invalid signature");
    let none = format!("{}.", signing_input(&json!({ "alg": "none" }), &good));
    assert_eq!(code(&call(addr, "hs", "GET", "/x", Some(&none)).await.1), "unsupported algorithm");
    let (status, body) = call(addr, "hs", "GET", "/x", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body.contains("jwt_missing"), "{body}");
    // An ES256 token is refused where only the secret is configured.
    assert_eq!(call(addr, "hs", "GET", "/x", Some(&ec.sign(&good))).await.0, StatusCode::UNAUTHORIZED);

    // The client id names the application: its plan's limit applies.
    let once = hs256(&with(json!({ "azp": "once-client" })));
    assert_eq!(call(addr, "hs", "GET", "/x", Some(&once)).await.0, StatusCode::OK);
    assert_eq!(call(addr, "hs", "GET", "/x", Some(&once)).await.0, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        call(addr, "hs", "GET", "/x", Some(&hs256(&with(json!({ "azp": "stranger" }))))).await.0,
        StatusCode::FORBIDDEN
    );

    // Claim checks: POST /admin needs role admin; GET does not.
    let (status, body) = call(addr, "hs", "POST", "/admin/users", Some(&token)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("jwt_claim_check_failed"), "{body}");
    assert_eq!(call(addr, "hs", "GET", "/admin/users", Some(&token)).await.0, StatusCode::OK);
    let admin = hs256(&with(json!({ "role": "admin" })));
    assert_eq!(call(addr, "hs", "POST", "/admin/users", Some(&admin)).await.0, StatusCode::OK);

    // RS256 and ES256 from a JWK Set file; an unknown kid is refused.
    let svc = json!({ "client_id": "svc-client", "exp": now() + 300 });
    assert_eq!(call(addr, "keys", "GET", "/x", Some(&rsa.sign(&svc))).await.0, StatusCode::OK);
    assert_eq!(call(addr, "keys", "GET", "/x", Some(&ec.sign(&svc))).await.0, StatusCode::OK);
    let stranger = Ec::new("ec-unknown");
    assert_eq!(code(&call(addr, "keys", "GET", "/x", Some(&stranger.sign(&svc))).await.1), "unknown signing key");
}

// Multi-threaded: the gateway fetches the JWK Set while it loads its configuration,
// from the server this test runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwks_url_is_fetched_and_a_rotated_key_is_picked_up() {
    let backend = http_backend().await;
    let (old, new) = (Ec::new("2025"), Ec::new("2026"));
    let doc = Arc::new(Mutex::new(json!({ "keys": [old.jwk()] }).to_string()));
    let (idp, served) = jwks_server(doc.clone()).await;
    let chain =
        format!(r#"[ {{ name: jwt, configuration: {{ jwks_url: "http://{idp}/certs", client_id_claim: azp }} }} ]"#);
    let yaml = format!(
        "backends: [ {{ system_name: echo, private_base_url: \"http://{backend}\" }} ]\nproducts:\n{}accounts:\n  - name: acme\n    applications:\n      - {{ name: web, product: url, plan: open, app_id: web-client, app_keys: [k] }}\n",
        product("url", &chain)
    );
    let gw = gateway(&yaml).await;
    let addr = gw.server.staging;
    let claims = json!({ "azp": "web-client", "exp": now() + 300 });
    assert_eq!(call(addr, "url", "GET", "/x", Some(&old.sign(&claims))).await.0, StatusCode::OK);
    assert_eq!(call(addr, "url", "GET", "/x", Some(&new.sign(&claims))).await.0, StatusCode::UNAUTHORIZED);
    // The identity provider rotates: the next tokens name the new key, which the
    // gateway fetches when it first sees its kid (at most once a second).
    *doc.lock().expect("doc") = json!({ "keys": [new.jwk()] }).to_string();
    let token = new.sign(&claims);
    // A refused request starts a fetch if none ran in the last second (the gateway's
    // rule); try again after each fetch the identity provider serves, or once that
    // second has passed.
    let rotated = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            let served = served.notified();
            if call(addr, "url", "GET", "/x", Some(&token)).await.0 == StatusCode::OK {
                break;
            }
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), served).await;
        }
    })
    .await;
    assert!(rotated.is_ok(), "the rotated key was never fetched");
}

#[tokio::test]
async fn a_websocket_carries_its_token_in_the_subprotocol_and_closes_when_it_expires() {
    let backend = node_backend().await;
    let yaml = format!(
        r#"
backends: [ {{ system_name: echo, private_base_url: "{url}", tls: {{ ca_file: "{cert}" }} }} ]
products:
  - system_name: ws
    staging_public_base_url: http://ws-staging.localhost
    production_public_base_url: http://ws.localhost
    backend_usages: [ {{ backend: echo, path: / }} ]
    authentication: {{ mode: app_id_app_key }}
    mapping_rules: [ {{ http_method: GET, pattern: /, metric: hits }} ]
    policy_chain:
      - {{ name: jwt, configuration: {{ secret: "{SECRET}", leeway: 0, client_id_claim: azp, token_sources: [authorization, subprotocol, query] }} }}
      - {{ name: websocket }}
      - {{ name: tollgate }}
    application_plans: [ {{ system_name: basic }} ]
accounts:
  - name: a
    applications: [ {{ name: app, product: ws, plan: basic, app_id: browser, app_keys: [k] }} ]
"#,
        url = backend.url(),
        cert = backend.cert.display()
    );
    let gw = gateway(&yaml).await;
    let addr = gw.server.staging;
    let token = hs256(&json!({ "azp": "browser", "exp": now() + 2 }));
    // What a browser does: new WebSocket(url, ["access_token", token]).
    let mut req =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!("ws://{addr}/"))
            .expect("request");
    req.headers_mut().insert("host", "ws-staging.localhost".parse().expect("host"));
    req.headers_mut().insert("sec-websocket-protocol", format!("access_token, {token}").parse().expect("protocols"));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut socket, resp) = tokio_tungstenite::client_async(req, tcp).await.expect("upgrade with the token");
    assert_eq!(resp.headers()["sec-websocket-protocol"], "access_token", "an offered protocol is selected");
    futures_util::SinkExt::send(&mut socket, tokio_tungstenite::tungstenite::Message::text("hi")).await.expect("send");
    match socket.next().await {
        Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) => assert!(t.ends_with("hi"), "{t}"),
        other => panic!("expected the echo, got {other:?}"),
    }
    // The token expires two seconds after it was made: the gateway closes with 1008.
    let closed = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            match socket.next().await {
                Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(f)))) => {
                    return (u16::from(f.code), f.reason.to_string());
                }
                Some(Ok(_)) => continue,
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await
    .expect("closed before 10 s");
    assert_eq!(closed, (1008, "token expired".to_string()));
    // Without a token the upgrade is refused; with one in the query it passes.
    let (status, body) = ws_refused(addr, "ws-staging.localhost", "/").await;
    assert_eq!(status, 401, "{body}");
    let fresh = hs256(&json!({ "azp": "browser", "exp": now() + 300 }));
    assert!(ws(addr, "ws-staging.localhost", &format!("/?access_token={fresh}")).await.is_ok());
}

#[tokio::test]
async fn configuration_errors_name_the_field() {
    let registry = tollgate_gateway::policy::Registry::default();
    for (configuration, expected) in [
        (json!({}), "configuration.jwks_url: give jwks_url, jwks_file or (for HS256) secret"),
        (json!({ "secret": "short" }), "configuration.secret: use at least 32 bytes"),
        (json!({ "jwks_file": "/nonexistent/jwks.json" }), "configuration.jwks_file: cannot read"),
        (json!({ "secret": SECRET, "algorithms": ["HS512"] }), "configuration.algorithms[0]"),
        (json!({ "jwks_file": "x", "algorithms": ["HS256"] }), "configuration.jwks_file: cannot read"),
        (
            json!({ "secret": SECRET, "claim_checks": [ { "path": "(", "condition": { "operations": [ { "left": "a", "op": "==", "right": "b" } ] } } ] }),
            "configuration.claim_checks[0].path: `(` is not a regular expression: unclosed group",
        ),
    ] {
        let err = match registry.build("policy_chain[0]", "jwt", &configuration) {
            Ok(_) => panic!("{configuration}: accepted"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(&format!("policy_chain[0].{expected}")), "{configuration}:\n  got {err}");
    }
    // Building never touches the network; a JWK Set that cannot be fetched is said when
    // the policy is prepared (before its configuration is served), naming the option.
    let policy = registry
        .build("policy_chain[0]", "jwt", &json!({ "jwks_url": "http://127.0.0.1:9/certs" }))
        .expect("built without fetching");
    let err = policy.prepare().expect("a fetch to make").await.expect_err("nothing listens there");
    assert!(err.starts_with("jwks_url: cannot fetch `http://127.0.0.1:9/certs`"), "{err}");
}
