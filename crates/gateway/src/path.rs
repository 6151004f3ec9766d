//! One canonical request path, made once when a request enters, before any policy,
//! mapping rule, routing decision, limit or the forwarded request reads it — so what was
//! matched is what the backend receives (the kind of fault of Envoy's CVE-2019-9901).
//!
//! RFC 3986: percent-encoded unreserved characters are decoded (§2.3, §6.2.2.2), the
//! remaining escapes are upper-cased (§6.2.2.1), dot-segments are removed (§5.2.4, also
//! when written `%2e`). Refused (400): an escape that is not `%` and two hex digits, a
//! backslash, an encoded `/` or `\` (`%2F`, `%5C`: a backend may decode them and see
//! another path than the one matched) unless the product keeps them encoded, and a path
//! that would climb above the root. `//` is kept unless the product merges it.

use std::borrow::Cow;

/// How a product wants its paths made canonical (its `request_path` settings).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PathRules {
    /// Keep `%2F` and `%5C` encoded, inside their segment, instead of refusing them.
    pub keep_encoded_slashes: bool,
    /// Merge `//` into `/`.
    pub merge_slashes: bool,
}

/// Why a path cannot be made canonical.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// A `%` not followed by two hexadecimal digits.
    #[error("the path has a `%` that is not followed by two hexadecimal digits")]
    BadEscape,
    /// A `\` in the path.
    #[error("the path has a backslash")]
    Backslash,
    /// An encoded `/` or `\` (`%2F`, `%5C`) while they are refused.
    #[error("the path has an encoded `/` or `\\` (%2F, %5C)")]
    EncodedSlash,
    /// A `..` that climbs above the root.
    #[error("the path climbs above the root with `..`")]
    AboveRoot,
    /// A path that does not start with `/`.
    #[error("the path does not start with `/`")]
    NotAbsolute,
    /// A dot-segment with parameters (`..;`, `.;`).
    #[error("the path has a dot-segment with parameters (`..;` or `.;`), which some servers read as `..` or `.`")]
    DotSegmentParameters,
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Whether `path` is canonical already: the common case, checked without allocating,
/// in one pass over the bytes (it runs twice on every request).
fn is_canonical(path: &str, rules: PathRules) -> bool {
    let b = path.as_bytes();
    if b.first() != Some(&b'/') {
        return false;
    }
    let mut segment = 1;
    for (i, &c) in b.iter().enumerate().skip(1) {
        match c {
            b'%' | b'\\' => return false,
            b'/' => {
                if (rules.merge_slashes && i == segment) || is_dot_segment(&path[segment..i]) {
                    return false;
                }
                segment = i + 1;
            }
            _ => {}
        }
    }
    !is_dot_segment(&path[segment..])
}

/// `.`, `..`, or one of them with parameters (see [`is_dot_with_parameters`]).
fn is_dot_segment(s: &str) -> bool {
    s.starts_with('.') && (s == "." || s == ".." || is_dot_with_parameters(s))
}

/// `..;x` or `.;x`: a dot-segment with path parameters (RFC 3986 §3.3 leaves `;` to the
/// server). Tomcat and Jetty drop the parameters and read `..`, so such a segment would
/// climb past what the gateway matched: refused.
fn is_dot_with_parameters(segment: &str) -> bool {
    segment.starts_with("..;") || segment.starts_with(".;")
}

/// The canonical form of `path` (the path only, no query), borrowed when it is already
/// canonical.
///
/// # Errors
/// A [`PathError`] for a path the gateway refuses (the client gets 400 `bad_path`).
pub fn canonical(path: &str, rules: PathRules) -> Result<Cow<'_, str>, PathError> {
    if is_canonical(path, rules) {
        return Ok(Cow::Borrowed(path));
    }
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    // Decode what needs no escape; keep (upper-cased) what does.
    let bytes = path.as_bytes();
    let mut decoded = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let (Some(h), Some(l)) =
                    (bytes.get(i + 1).and_then(|b| hex(*b)), bytes.get(i + 2).and_then(|b| hex(*b)))
                else {
                    return Err(PathError::BadEscape);
                };
                let v = h << 4 | l;
                if unreserved(v) {
                    decoded.push(char::from(v));
                } else if matches!(v, b'/' | b'\\') && !rules.keep_encoded_slashes {
                    return Err(PathError::EncodedSlash);
                } else {
                    decoded.push('%');
                    decoded.push(char::from(b"0123456789ABCDEF"[usize::from(h)]));
                    decoded.push(char::from(b"0123456789ABCDEF"[usize::from(l)]));
                }
                i += 3;
            }
            b'\\' => return Err(PathError::Backslash),
            _ => {
                // Copy the run up to the next `%` or `\` (UTF-8 stays whole).
                let end = bytes[i..].iter().position(|b| matches!(b, b'%' | b'\\')).map_or(bytes.len(), |n| i + n);
                decoded.push_str(&path[i..end]);
                i = end;
            }
        }
    }
    // RFC 3986 §5.2.4, on segments; a `..` with nothing left to remove climbs above
    // the root, which is refused rather than silently dropped.
    let mut segments: Vec<&str> = Vec::new();
    let mut parts = decoded[1..].split('/').peekable();
    let mut trailing = false;
    while let Some(s) = parts.next() {
        let last = parts.peek().is_none();
        match s {
            "." => trailing = last,
            ".." => {
                if segments.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
                trailing = last;
            }
            "" if rules.merge_slashes && !last => {}
            s if is_dot_with_parameters(s) => return Err(PathError::DotSegmentParameters),
            _ => {
                segments.push(s);
                trailing = false;
            }
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if trailing || out.is_empty() {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    /// The check as it was first written (three scans and a split): the one-pass
    /// [`super::is_canonical`] must agree with it on every path.
    fn is_canonical_by_split(path: &str, rules: super::PathRules) -> bool {
        let b = path.as_bytes();
        if b.first() != Some(&b'/') || b.contains(&b'%') || b.contains(&b'\\') {
            return false;
        }
        if rules.merge_slashes && path.contains("//") {
            return false;
        }
        !path.split('/').any(|s| s == "." || s == ".." || super::is_dot_with_parameters(s))
    }

    proptest::proptest! {
        #[test]
        fn the_one_pass_check_agrees_with_the_split(path in "[/.;aé%\\\\]{0,12}", merge in proptest::bool::ANY) {
            let rules = super::PathRules { merge_slashes: merge, keep_encoded_slashes: false };
            proptest::prop_assert_eq!(super::is_canonical(&path, rules), is_canonical_by_split(&path, rules), "{:?}", path);
        }

        /// The router checks a backend's part of a path again only when a policy changed
        /// the path: a canonical path's every part from a `/` on must be canonical too.
        #[test]
        fn every_part_of_a_canonical_path_from_a_slash_is_canonical(path in "[/.;a%]{0,14}", merge in proptest::bool::ANY) {
            let rules = super::PathRules { merge_slashes: merge, keep_encoded_slashes: false };
            if super::is_canonical(&path, rules) {
                for (at, _) in path.match_indices('/') {
                    proptest::prop_assert!(super::is_canonical(&path[at..], rules), "{:?} from {}", path, at);
                }
            }
        }
    }

    use super::*;

    fn c(p: &str) -> Result<String, PathError> {
        canonical(p, PathRules::default()).map(Cow::into_owned)
    }

    #[test]
    fn dot_segments_with_parameters_are_refused() {
        for p in ["/x/..;/admin", "/..;/secret", "/a/.;x/b", "/a/%2e%2e;/b"] {
            assert_eq!(c(p), Err(PathError::DotSegmentParameters), "{p}");
        }
        assert_eq!(c("/a/b;c/d").as_deref(), Ok("/a/b;c/d"), "parameters elsewhere stay");
        assert_eq!(c("/a/...;/d").as_deref(), Ok("/a/...;/d"));
    }

    #[test]
    fn dot_segments_are_removed_also_when_encoded() {
        for (input, want) in [
            ("/public/../admin/users", "/admin/users"),
            ("/public/%2e%2e/admin", "/admin"),
            ("/public/%2E%2E/admin", "/admin"),
            ("/public/./../admin", "/admin"),
            ("/a/b/..", "/a/"),
            ("/a/b/.", "/a/b/"),
            ("/a/./b", "/a/b"),
            ("/.", "/"),
            ("/a/..", "/"),
            ("/a/.hidden/..x", "/a/.hidden/..x"),
        ] {
            assert_eq!(c(input).as_deref(), Ok(want), "{input}");
        }
    }

    #[test]
    fn unreserved_escapes_are_decoded_and_the_others_upper_cased() {
        assert_eq!(c("/%7euser/%41bc").as_deref(), Ok("/~user/Abc"));
        assert_eq!(c("/a%20b/%e2%82%ac").as_deref(), Ok("/a%20b/%E2%82%AC"));
        assert_eq!(c("/ok/plain"), Ok("/ok/plain".into()));
        assert!(matches!(canonical("/ok/plain", PathRules::default()), Ok(Cow::Borrowed(_))), "no copy when canonical");
    }

    #[test]
    fn what_could_be_read_two_ways_is_refused() {
        assert_eq!(c("/../etc"), Err(PathError::AboveRoot));
        assert_eq!(c("/a/../../b"), Err(PathError::AboveRoot));
        assert_eq!(c("/a%2Fb"), Err(PathError::EncodedSlash));
        assert_eq!(c("/a%5cb"), Err(PathError::EncodedSlash));
        assert_eq!(c("/a\\b"), Err(PathError::Backslash));
        assert_eq!(c("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(c("/a%2"), Err(PathError::BadEscape));
        let keep = PathRules { keep_encoded_slashes: true, ..PathRules::default() };
        assert_eq!(canonical("/a%2fb/../c", keep).as_deref(), Ok("/c"));
        assert_eq!(canonical("/x/a%2fb", keep).as_deref(), Ok("/x/a%2Fb"));
    }

    #[test]
    fn double_slashes_are_kept_unless_merged() {
        assert_eq!(c("/a//b").as_deref(), Ok("/a//b"));
        let merge = PathRules { merge_slashes: true, ..PathRules::default() };
        assert_eq!(canonical("/a//b///c/", merge).as_deref(), Ok("/a/b/c/"));
    }
}
