//! The canonical request path against RFC 3986 itself, over generated paths: the
//! gateway's result equals §5.2.4's remove_dot_segments, written here literally from the
//! RFC's steps A–E (a second implementation, by the letter), applied after decoding the
//! unreserved characters (§6.2.2.2); it has no dot-segment left, so what goes after a
//! backend's base path can never leave it; and it is its own canonical form.

use proptest::prelude::*;
use tollgate_gateway::path::{PathError, PathRules, canonical};

/// RFC 3986 §5.2.4, on an input that has already been percent-decoded where allowed.
fn remove_dot_segments(input: &str) -> String {
    let mut input = input.to_string();
    let mut output = String::new();
    while !input.is_empty() {
        if let Some(rest) = input.strip_prefix("../").or_else(|| input.strip_prefix("./")) {
            input = rest.to_string(); // A
        } else if input.starts_with("/./") {
            input = input[2..].to_string(); // B
        } else if input == "/." {
            input = "/".to_string(); // B
        } else if input.starts_with("/../") || input == "/.." {
            input = if input == "/.." { "/".to_string() } else { input[3..].to_string() }; // C
            match output.rfind('/') {
                Some(i) => output.truncate(i),
                None => output.clear(),
            }
        } else if input == "." || input == ".." {
            input.clear(); // D
        } else {
            // E: the first segment, with its leading `/`, moves to the output.
            let start = usize::from(input.starts_with('/'));
            let end = input[start..].find('/').map_or(input.len(), |i| i + start);
            output.push_str(&input[..end]);
            input = input[end..].to_string();
        }
    }
    output
}

/// Decodes percent-encoded unreserved characters and upper-cases the other escapes.
fn decode_unreserved(path: &str) -> String {
    let b = path.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = &path[i + 1..i + 3];
            let v = u8::from_str_radix(hex, 16).expect("valid escape");
            if v.is_ascii_alphanumeric() || b"-._~".contains(&v) {
                out.push(char::from(v));
            } else {
                out.push('%');
                out.push_str(&hex.to_uppercase());
            }
            i += 3;
        } else {
            out.push(char::from(b[i]));
            i += 1;
        }
    }
    out
}

/// Whether the dot-segments of `path` would climb above the root.
fn climbs(path: &str) -> bool {
    let mut depth: i64 = 0;
    for s in path.split('/').skip(1) {
        match s {
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return true;
                }
            }
            "." => {}
            _ => depth += 1,
        }
    }
    false
}

fn segment() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "a", "b", "api", ".", "..", "%2e", "%2E", "%2e%2e", "%2E%2e", ".%2e", "", "%41", "x%20y", "%7e", "%7E", "..x",
        ".hidden", "%C3%A9",
    ])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn the_canonical_path_is_rfc_3986s_and_has_no_dot_segment(parts in prop::collection::vec(segment(), 0..8)) {
        let path = format!("/{}", parts.join("/"));
        let decoded = decode_unreserved(&path);
        match canonical(&path, PathRules::default()) {
            Ok(c) => {
                prop_assert!(!climbs(&decoded), "{path} climbs but was accepted");
                let mut expected = remove_dot_segments(&decoded);
                if expected.is_empty() {
                    expected.push('/');
                }
                prop_assert_eq!(&*c, expected.as_str(), "{}", path);
                prop_assert!(c.starts_with('/'));
                prop_assert!(!c.split('/').any(|s| s == "." || s == ".."), "{c}");
                let again = canonical(&c, PathRules::default()).expect("canonical again");
                prop_assert_eq!(&*again, &*c, "not its own canonical form");
            }
            Err(PathError::AboveRoot) => prop_assert!(climbs(&decoded), "{path} refused but stays under the root"),
            Err(e) => prop_assert!(false, "{path}: unexpected {e}"),
        }
    }

    #[test]
    fn any_text_is_made_canonical_or_refused_without_panicking(path in "/[ -~]{0,40}") {
        if let Ok(c) = canonical(&path, PathRules::default()) {
            prop_assert!(!c.split('/').any(|s| s == "." || s == ".."));
        }
    }
}
