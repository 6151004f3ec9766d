//! `templates`: the `{{ variable }}` templates of header values, rate-limit keys and
//! conditions (`tollgate_gateway::policy::template::Template`), parsed and rendered
//! against a request, and the `headers` policy that sets them.
//!
//! Feeds: a first line, the template; the rest, a request head (`METHOD TARGET`, then
//! `Name: value` lines).
//!
//! Asserts, beyond "no panic":
//! - text without `{{` always parses, as a static template;
//! - a static template renders to its own text; rendering is repeatable;
//! - a template's text outside its placeholders is in its rendering, in order (each
//!   variable renders to a value, never eats the text around it);
//! - the `headers` policy built from the template either refuses the configuration
//!   (exactly when the template does not parse, or is static and no header value) or,
//!   run on the request, sets the header to the rendering whenever that is a valid
//!   header value, and leaves it unset otherwise.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate_gateway::policy::Registry;
use tollgate_gateway::policy::template::Template;

/// The texts between placeholders (as the parser would split them, for a template
/// that parsed).
fn texts(source: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = source;
    while let Some(open) = rest.find("{{") {
        out.push(&rest[..open]);
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else { return out };
        rest = &after[close + 2..];
    }
    out.push(rest);
    out
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (source, head) = text.split_once('\n').unwrap_or((text, "GET /"));
    let Some(mut parts) = tollgate_fuzz::request_parts(head) else { return };
    let product = tollgate_fuzz::product();
    let ctx = tollgate_fuzz::context(product);

    let parsed = Template::parse(source);
    if !source.contains("{{") {
        let t = parsed.as_ref().expect("text without `{{` parses");
        assert!(t.is_static());
    }
    let rendered = parsed.as_ref().ok().map(|t| {
        let r = t.render(&parts, &ctx).into_owned();
        assert_eq!(r, t.render(&parts, &ctx), "rendering is not repeatable");
        if t.is_static() {
            assert_eq!(r, source, "a static template renders to something else");
        }
        let mut at = 0;
        for piece in texts(source) {
            let found = r[at..].find(piece);
            assert!(found.is_some(), "{source:?} → {r:?}: the text {piece:?} is missing");
            at += found.unwrap_or(0) + piece.len();
        }
        r
    });

    let config = serde_json::json!({ "request": [ { "op": "set", "header": "x-fuzz", "value": source } ] });
    let built = Registry::offline().build("policy_chain[0]", "headers", &config);
    match (&parsed, &built) {
        (Err(_), Ok(_)) => panic!("{source:?}: a template that does not parse was accepted"),
        (Ok(t), Err(e)) => assert!(
            t.is_static() && http::HeaderValue::from_str(source).is_err(),
            "{source:?}: a valid template refused: {e}"
        ),
        _ => {}
    }
    if let (Ok(policy), Some(value)) = (built, rendered) {
        parts.headers.remove("x-fuzz");
        policy.upstream_request(&mut parts, &ctx);
        let set = parts.headers.get("x-fuzz").map(|v| v.as_bytes().to_vec());
        match http::HeaderValue::from_str(&value) {
            Ok(v) => assert_eq!(set.as_deref(), Some(v.as_bytes()), "{source:?}: the header is not the rendering"),
            Err(_) => assert_eq!(set, None, "{source:?}: an invalid rendering was set"),
        }
    }
});
