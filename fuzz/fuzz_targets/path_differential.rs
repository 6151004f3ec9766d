//! `path_differential`: Tollgate's path canonicalisation against an independent
//! RFC 3986 implementation, the `iri-string` crate's normalisation (§6.2.2: case and
//! percent-encoding normalisation, then dot-segment removal), on `http://h` + path.
//!
//! Feeds: one byte of rules (bit 0 keeps `%2F`/`%5C` encoded, bit 1 merges `//`), then
//! the path as UTF-8. Only paths that are valid in a URI (`iri-string` accepts them)
//! are compared; the others still run through Tollgate for panics.
//!
//! The intended differences — where Tollgate refuses (400) or chooses otherwise, and
//! which this target accounts for instead of comparing:
//! 1. `%2F` and `%5C` are refused, unless the product keeps them encoded (then both
//!    keep them as they are, which the comparison covers).
//! 2. A backslash is refused (it is not valid in a URI, so never compared).
//! 3. A path that climbs above the root (`/a/../../b`) is refused; RFC 3986 clamps it
//!    at the root (`/b`). Climbing is found independently: the RFC normalisation of
//!    `/SENTINEL` + path loses the sentinel segment exactly when the path climbs.
//! 4. With `merge_slashes`, `//` runs merge before dot-segments are removed: the RFC
//!    side is given the path with its slash runs merged.
//! 5. Decoding of percent-encoded unreserved characters (`%7E` → `~`, `%2e` → `.`) and
//!    upper-casing of other escapes: both do it (RFC 3986 §6.2.2.1–2), compared.
//! 6. A path not starting with `/`, or with a `%` not followed by two hex digits: both
//!    refuse (Tollgate with 400, `iri-string` as an invalid URI).
//!
//! Asserts: outside those differences the outputs are equal; every refusal is one of
//! them; and what `iri-string` accepts (and is not a difference) Tollgate accepts.

#![no_main]

use iri_string::types::UriAbsoluteStr;
use libfuzzer_sys::fuzz_target;
use tollgate_gateway::path::{PathError, PathRules, canonical};

const SENTINEL: &str = "~sentinel~";

/// The RFC 3986 normal form of `path` (on an `http` URI with a host), or `None` when
/// `path` is not a valid URI path.
fn rfc(path: &str) -> Option<String> {
    let uri = format!("http://h{path}");
    let uri = UriAbsoluteStr::new(&uri).ok()?;
    let normal = uri.normalize().to_string();
    Some(normal.strip_prefix("http://h").expect("normalisation keeps scheme and host").to_string())
}

/// Runs of `/` merged into one.
fn merged(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if !(c == '/' && out.ends_with('/')) {
            out.push(c);
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else { return };
    let Ok(input) = std::str::from_utf8(rest) else { return };
    let rules = PathRules { keep_encoded_slashes: flags & 1 != 0, merge_slashes: flags & 2 != 0 };
    let ours = canonical(input, rules);
    if !input.starts_with('/') || input.contains(['?', '#']) {
        // Not a path alone: Tollgate is given paths without query (hyper splits it).
        return;
    }
    let theirs_input = if rules.merge_slashes { merged(input) } else { input.to_string() };
    let Some(theirs) = rfc(&theirs_input) else {
        // Not a valid URI: Tollgate may accept it (hyper lets some such bytes through),
        // but nothing to compare with.
        return;
    };
    if theirs.contains(SENTINEL) {
        // The path could pass for the sentinel: climbing cannot be told apart.
        return;
    }
    let climbs = rfc(&format!("/{SENTINEL}{theirs_input}"))
        .is_some_and(|with| !(with.starts_with(&format!("/{SENTINEL}/")) || with == format!("/{SENTINEL}")));
    let lower = input.to_ascii_lowercase();
    let encoded_slash = lower.contains("%2f") || lower.contains("%5c");
    match ours {
        Ok(out) => {
            assert!(!climbs, "{input:?}: climbs above the root but was accepted as {out:?}");
            assert!(rules.keep_encoded_slashes || !encoded_slash, "{input:?}: an encoded slash accepted");
            assert_eq!(*out, theirs, "{input:?} ({rules:?}): Tollgate and RFC 3986 differ");
        }
        Err(PathError::EncodedSlash) => assert!(encoded_slash && !rules.keep_encoded_slashes, "{input:?}"),
        Err(PathError::AboveRoot) => assert!(climbs, "{input:?}: refused as climbing, RFC 3986 gives {theirs:?}"),
        // Intended difference 6: `..;` / `.;` segments (read as `..` by Tomcat and Jetty).
        Err(PathError::DotSegmentParameters) => {}
        Err(e) => panic!("{input:?}: a valid URI path refused ({e}); RFC 3986 gives {theirs:?}"),
    }
});
