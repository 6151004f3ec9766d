//! `jwt`: the `jwt` policy's token handling — finding the token (Authorization header,
//! query parameter, `Sec-WebSocket-Protocol`), parsing its three base64url parts,
//! checking the signature, then the claims (`exp`, `nbf`, `iss`, `aud`) and the claim
//! checks — as the policy's access phase runs it on a request.
//!
//! Feeds: one byte of flags (bit 0: sign the token with the policy's HS256 secret;
//! bits 1–2: where the token travels; bit 3: a WebSocket request; bit 4: a POST to
//! `/admin/…`, under the claim check), then either a raw
//! token, or — when signing — a JSON header and a JSON payload separated by a NUL byte
//! (the target base64url-encodes and signs them, so the claims checks are reached).
//!
//! Asserts, beyond "no panic":
//! - a request passes exactly when its token is one the target signed (the fuzzer
//!   cannot forge the HS256 signature), whose header names HS256, whose `iss` is the
//!   policy's issuer, whose `aud` names its audience, whose `exp`/`nbf` hold (within
//!   the 30 s leeway; times within 5 s of the boundary are not judged) and, for a POST
//!   under `/admin/`, whose `role` claim is `admin` (the policy's claim check);
//! - a passing request carries the token's claims and expiry into the request context;
//! - a token with a `cnf` claim is refused (the requests carry no client certificate);
//! - a refusal is 401 (with `WWW-Authenticate: Bearer`, `error="invalid_token"` when a
//!   token was sent) or 403, never anything else;
//! - on a WebSocket, the token does not travel on to the backend in
//!   `Sec-WebSocket-Protocol`.

#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::header;
use libfuzzer_sys::fuzz_target;
use tollgate_fuzz::{JWT_AUDIENCE, JWT_ISSUER, JWT_SECRET};
use tollgate_gateway::policy::Flow;

fn sign(header: &[u8], payload: &[u8]) -> String {
    let signed = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(payload));
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, JWT_SECRET.as_bytes());
    let tag = ring::hmac::sign(&key, signed.as_bytes());
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

/// Whether the policy must let the request through (`Some(true)`), must refuse it
/// (`Some(false)`), or either (`None`: `exp` or `nbf` within a few seconds of the
/// policy's own clock, with its 30 s leeway). `admin`: the request falls under the
/// claim check (`role` must be `admin`).
fn acceptable(header: &[u8], payload: &[u8], admin: bool) -> Option<bool> {
    let Ok(h) = serde_json::from_slice::<serde_json::Value>(header) else { return Some(false) };
    let Ok(serde_json::Value::Object(c)) = serde_json::from_slice::<serde_json::Value>(payload) else {
        return Some(false);
    };
    // The request's time as the gateway's clock gives it (the fuzz context's).
    let now = i128::from(tollgate_fuzz::NOW);
    let mut unsure = false;
    let mut time_ok = |k: &str, ok: &dyn Fn(i128) -> bool| match c.get(k) {
        None => true,
        Some(v) => match v.as_i64() {
            Some(t) => {
                let t = i128::from(t);
                unsure |= ok(t - 5) != ok(t + 5);
                ok(t)
            }
            None => false,
        },
    };
    let exp_ok = time_ok("exp", &|exp| now <= exp + 30);
    let nbf_ok = time_ok("nbf", &|nbf| now + 30 >= nbf);
    let aud_ok = match c.get("aud") {
        Some(serde_json::Value::String(a)) => a == JWT_AUDIENCE,
        Some(serde_json::Value::Array(l)) => l.iter().any(|a| a.as_str() == Some(JWT_AUDIENCE)),
        _ => false,
    };
    let iss_ok = c.get("iss").and_then(|v| v.as_str()) == Some(JWT_ISSUER);
    let role_ok = !admin || c.get("role").and_then(|v| v.as_str()) == Some("admin");
    // A bound token (`cnf`, RFC 7800) needs its proof, and the fuzzed requests come with
    // no client certificate: never acceptable.
    let unbound = !c.contains_key("cnf");
    let verdict = h["alg"] == "HS256" && exp_ok && nbf_ok && aud_ok && iss_ok && role_ok && unbound;
    // RFC 7515 §4.1: the registered header parameters have types (`x5c` an array of
    // strings, `kid` a string, …). A header that gives one of them another type is
    // malformed; a parser may refuse it, or ignore a parameter it does not use: either
    // answer is right.
    let strings = ["typ", "cty", "jku", "kid", "x5u", "x5t", "x5t#S256"];
    let mistyped = strings.iter().any(|k| h.get(*k).is_some_and(|v| !v.is_string()))
        || h.get("x5c").is_some_and(|v| !v.as_array().is_some_and(|a| a.iter().all(|s| s.is_string())))
        || h.get("jwk").is_some_and(|v| !v.is_object())
        || h.get("crit").is_some_and(|v| !v.is_array());
    // RFC 7519 §4: a parser may refuse a claims set with duplicate names, or keep the
    // last of them: either answer is right.
    if unsure || mistyped || has_duplicate_names(payload) { None } else { Some(verdict) }
}

/// Whether the JSON object `payload` names a member twice (at the top level).
fn has_duplicate_names(payload: &[u8]) -> bool {
    struct Names(bool);
    impl<'de> serde::Deserialize<'de> for Names {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = Names;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("an object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Names, A::Error> {
                    let mut seen = std::collections::HashSet::new();
                    let mut twice = false;
                    while let Some((k, _)) = m.next_entry::<String, serde::de::IgnoredAny>()? {
                        twice |= !seen.insert(k);
                    }
                    Ok(Names(twice))
                }
            }
            d.deserialize_map(V)
        }
    }
    serde_json::from_slice::<Names>(payload).is_ok_and(|n| n.0)
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else { return };
    let signed = flags & 1 != 0;
    let admin = flags & 16 != 0;
    let (token, passable) = if signed {
        let at = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        let (h, p) = (&rest[..at], rest.get(at + 1..).unwrap_or_default());
        (sign(h, p), acceptable(h, p, admin))
    } else {
        match std::str::from_utf8(rest) {
            Ok(t) => (t.to_string(), Some(false)),
            Err(_) => return,
        }
    };
    let websocket = flags & 8 != 0;
    let (method, path) = if admin { ("POST", "/admin/users") } else { ("GET", "/items") };
    let mut req = http::Request::builder().method(method).uri(format!("{path}?x=1"));
    match flags >> 1 & 3 {
        0 => req = req.header(header::AUTHORIZATION, format!("Bearer {token}")),
        1 => {
            let q: String = token.bytes().map(|b| format!("%{b:02X}")).collect();
            req = req.uri(format!("{path}?access_token={q}"));
        }
        _ => req = req.header(header::SEC_WEBSOCKET_PROTOCOL, format!("access_token, {token}")),
    }
    let Ok(req) = req.body(()) else { return };
    let (mut parts, ()) = req.into_parts();

    let product = tollgate_fuzz::product();
    let policy = product.chain.iter().find(|p| p.name() == "jwt").expect("the product has a jwt policy");
    let mut ctx = tollgate_fuzz::context(product);
    ctx.websocket = websocket;
    let passed = match policy.access(&parts, &mut ctx) {
        Flow::Continue => {
            assert!(signed, "an unsigned token passed: {token:?}");
            assert_ne!(passable, Some(false), "a token that should be refused passed: {token:?}");
            let claims = ctx.claims.as_ref().expect("a passing token's claims are in the context");
            assert_eq!(claims.get("iss").and_then(|v| v.as_str()), Some(JWT_ISSUER));
            assert_eq!(ctx.plan().session_expires, claims.get("exp").and_then(|v| v.as_i64()));
            true
        }
        Flow::Respond(_) => panic!("the jwt policy answers only with refusals"),
        Flow::Refuse(refusal) => {
            // The answer the client gets, as the gateway's one rescue makes it.
            let metrics = tollgate_gateway::Metrics::default();
            let resp = tollgate_gateway::rescue::respond(refusal, metrics.env(tollgate_gateway::Environment::Staging));
            let status = resp.status().as_u16();
            assert!(status == 401 || status == 403, "a refusal with {status}");
            if status == 401 {
                // RFC 6750 §3: the bare challenge without a token, `invalid_token` with one.
                let challenge = resp.headers().get(header::WWW_AUTHENTICATE).and_then(|v| v.to_str().ok());
                assert!(
                    matches!(challenge, Some("Bearer") | Some("Bearer error=\"invalid_token\"")),
                    "401 with {challenge:?}"
                );
            }
            assert_ne!(passable, Some(true), "an acceptable token refused with {status}: {token:?}");
            false
        }
    };
    // Only a request that passed goes on to the backend.
    if websocket && passed {
        policy.upstream_request(&mut parts, &ctx);
        for v in parts.headers.get_all(header::SEC_WEBSOCKET_PROTOCOL) {
            let v = v.to_str().unwrap_or_default();
            assert!(!v.split(',').any(|e| e.trim() == token && token.len() > 20), "the token went on to the backend");
        }
    }
});
