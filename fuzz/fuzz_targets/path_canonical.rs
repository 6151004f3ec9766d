//! `path_canonical`: the request-path canonicalisation every request goes through
//! before any policy, mapping rule or routing decision reads its path
//! (`tollgate_gateway::path::canonical`, RFC 3986 §5.2.4 and §6.2.2).
//!
//! Feeds: one byte of rules (bit 0 keeps `%2F`/`%5C` encoded, bit 1 merges `//`), then
//! the path as UTF-8.
//!
//! Asserts, beyond "no panic":
//! - an accepted path comes out starting with `/`, with no `.` or `..` segment (so no
//!   `/./` or `/../`), no backslash, only upper-case escapes of characters that need
//!   one (never an unreserved one, never `%2F`/`%5C` unless the rules keep them), and
//!   no `//` when the rules merge them;
//! - canonicalisation is idempotent: the output is canonical already, and borrowed
//!   (no copy) when the input was canonical;
//! - keeping encoded slashes only widens what is accepted: a path accepted without it
//!   is accepted with it, with the same result;
//! - each refusal names something the input really has.

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::borrow::Cow;
use tollgate_gateway::path::{PathError, PathRules, canonical};

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

fn check_output(input: &str, out: &str, rules: PathRules) {
    assert!(out.starts_with('/'), "{input:?} → {out:?}: not absolute");
    assert!(!out.split('/').any(|s| s == "." || s == ".."), "{input:?} → {out:?}: a dot-segment is left");
    assert!(!out.contains('\\'), "{input:?} → {out:?}: a backslash");
    if rules.merge_slashes {
        assert!(!out.contains("//"), "{input:?} → {out:?}: `//` with merge_slashes");
    }
    let b = out.as_bytes();
    for (i, _) in out.match_indices('%') {
        let (h, l) = (b.get(i + 1).copied(), b.get(i + 2).copied());
        let (Some(h), Some(l)) = (h, l) else { panic!("{input:?} → {out:?}: a cut escape") };
        assert!(
            matches!(h, b'0'..=b'9' | b'A'..=b'F') && matches!(l, b'0'..=b'9' | b'A'..=b'F'),
            "{input:?} → {out:?}: an escape that is not two upper-case hex digits"
        );
        let v = hex(h).unwrap_or(0) << 4 | hex(l).unwrap_or(0);
        assert!(!unreserved(v), "{input:?} → {out:?}: an unreserved character left encoded");
        if !rules.keep_encoded_slashes {
            assert!(!matches!(v, b'/' | b'\\'), "{input:?} → {out:?}: an encoded slash let through");
        }
    }
}

fn has_bad_escape(input: &str) -> bool {
    let b = input.as_bytes();
    b.iter().enumerate().any(|(i, &c)| {
        c == b'%'
            && !(b.get(i + 1).is_some_and(|x| hex(*x).is_some()) && b.get(i + 2).is_some_and(|x| hex(*x).is_some()))
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else { return };
    let Ok(input) = std::str::from_utf8(rest) else { return };
    let rules = PathRules { keep_encoded_slashes: flags & 1 != 0, merge_slashes: flags & 2 != 0 };
    match canonical(input, rules) {
        Ok(out) => {
            check_output(input, &out, rules);
            match canonical(&out, rules) {
                Ok(Cow::Borrowed(again)) => assert_eq!(again, &*out, "not idempotent"),
                Ok(Cow::Owned(again)) => {
                    // Escapes that stay escaped make a copy, but the same text.
                    assert!(out.contains('%'), "{out:?}: canonical output copied again");
                    assert_eq!(again, *out, "{input:?}: not idempotent");
                }
                Err(e) => panic!("{input:?} → {out:?}, which is refused: {e}"),
            }
            if let Cow::Borrowed(same) = &out {
                assert_eq!(*same, input, "borrowed but changed");
            }
            if !rules.keep_encoded_slashes {
                let kept = canonical(input, PathRules { keep_encoded_slashes: true, ..rules });
                assert_eq!(kept.as_deref(), Ok(&*out), "{input:?}: keep_encoded_slashes refused or changed it");
            }
        }
        Err(PathError::NotAbsolute) => assert!(!input.starts_with('/'), "{input:?}: NotAbsolute"),
        Err(PathError::Backslash) => assert!(input.contains('\\'), "{input:?}: Backslash"),
        Err(PathError::BadEscape) => assert!(has_bad_escape(input), "{input:?}: BadEscape"),
        Err(PathError::EncodedSlash) => {
            let lower = input.to_ascii_lowercase();
            assert!(!rules.keep_encoded_slashes && (lower.contains("%2f") || lower.contains("%5c")), "{input:?}");
        }
        Err(PathError::AboveRoot) => {
            let lower = input.to_ascii_lowercase();
            assert!(lower.contains("..") || lower.contains("%2e"), "{input:?}: AboveRoot without a `..`");
        }
        Err(PathError::DotSegmentParameters) => {
            let lower = input.to_ascii_lowercase();
            assert!(lower.contains(';') || lower.contains("%3b"), "{input:?}: DotSegmentParameters without a `;`");
        }
    }
});
