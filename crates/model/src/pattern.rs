//! Mapping-rule patterns, with 3scale's semantics:
//!
//! - the path part is matched against the request path only (never its query string);
//! - it is a prefix match (`/foo` matches `/foo/bar` and `/foobar`) unless it ends in `$`;
//! - `{name}` matches one or more characters within one path segment (no `/`), and may
//!   sit inside a segment (`/words/{word}.json`);
//! - the query part (`?a=1&b={x}`) lists parameters the request must carry: a literal
//!   value must be equal, a `{name}` value only requires presence.
//!
//! Patterns are compiled once when a snapshot is built; matching allocates nothing
//! beyond the caller's parsed query.

use std::borrow::Cow;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(Box<str>),
    Param,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct QueryParam {
    name: Box<str>,
    /// `None` for a `{placeholder}`: the parameter must only be present.
    value: Option<Box<str>>,
}

/// A compiled mapping-rule pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    tokens: Vec<Token>,
    /// Whether more than one token is a placeholder (the matcher that tries every
    /// split), counted once here rather than at each match.
    several_params: bool,
    exact: bool,
    query: Vec<QueryParam>,
}

fn is_placeholder_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Parses `{name}` if `s` is exactly one placeholder.
fn placeholder(s: &str) -> Option<&str> {
    s.strip_prefix('{')?.strip_suffix('}').filter(|n| is_placeholder_name(n))
}

impl Pattern {
    /// Compiles a pattern, or says what is wrong with it.
    pub fn parse(source: &str) -> Result<Pattern, String> {
        if !source.starts_with('/') {
            return Err("a pattern must start with `/`".into());
        }
        if source.contains('#') {
            return Err("a pattern cannot contain `#`".into());
        }
        let (path, query) = match source.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (source, None),
        };
        let (path, exact) = match path.strip_suffix('$') {
            Some(p) => (p, true),
            None => (path, false),
        };
        if path.contains('$') {
            return Err("`$` may only end the path part of a pattern".into());
        }
        let mut tokens = Vec::new();
        let mut rest = path;
        while !rest.is_empty() {
            match rest.find('{') {
                Some(0) => {
                    let close = rest.find('}').ok_or("a `{` has no matching `}`")?;
                    let name = &rest[1..close];
                    if !is_placeholder_name(name) {
                        return Err(format!(
                            "`{{{name}}}` is not a valid placeholder: use letters, digits, `_` or `-`"
                        ));
                    }
                    if tokens.last() == Some(&Token::Param) {
                        return Err("two placeholders must be separated by text".into());
                    }
                    tokens.push(Token::Param);
                    rest = &rest[close + 1..];
                }
                found => {
                    let end = found.unwrap_or(rest.len());
                    let lit = &rest[..end];
                    if lit.contains('}') {
                        return Err("a `}` has no matching `{`".into());
                    }
                    tokens.push(Token::Literal(lit.into()));
                    rest = &rest[end..];
                }
            }
        }
        let mut params = Vec::new();
        if let Some(q) = query {
            for pair in q.split('&').filter(|p| !p.is_empty()) {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                if name.is_empty() || name.contains(['{', '}']) {
                    return Err(format!("`{pair}`: a query parameter needs a literal name"));
                }
                let value = match placeholder(value) {
                    Some(_) => None,
                    None if value.contains(['{', '}']) => {
                        return Err(format!("`{pair}`: write the value as text or as one `{{name}}`"));
                    }
                    None => Some(value.into()),
                };
                params.push(QueryParam { name: name.into(), value });
            }
        }
        let several_params = tokens.iter().filter(|t| **t == Token::Param).count() > 1;
        Ok(Pattern { tokens, several_params, exact, query: params })
    }

    /// This pattern with `prefix` (a backend usage path) put before its path part.
    pub fn under(&self, prefix: &str) -> Pattern {
        let prefix = prefix.trim_end_matches('/');
        let mut p = self.clone();
        if prefix.is_empty() {
            return p;
        }
        match p.tokens.first_mut() {
            Some(Token::Literal(l)) => *l = format!("{prefix}{l}").into(),
            _ => p.tokens.insert(0, Token::Literal(prefix.into())),
        }
        p
    }

    /// Whether the request `path` (without its query) and query arguments match.
    pub fn matches(&self, path: &str, query: &QueryArgs<'_>) -> bool {
        self.matches_path(path) && self.matches_query(query)
    }

    /// Whether the request `path` (without its query) matches the path part: as a prefix,
    /// or whole when the pattern ends in `$`.
    pub fn matches_path(&self, path: &str) -> bool {
        // Trying every split is exponential in the placeholders of one segment
        // (`/{a}-{b}-{c}-{d}` against a long run of `-`): with two or more, the path is
        // followed position by position instead (one allocation, linear per token).
        match self.several_params {
            false => match_tokens(&self.tokens, path, self.exact),
            true => match_positions(&self.tokens, path, self.exact),
        }
    }

    /// The text every matching path starts with: the pattern's leading literal (`/v1/items/`
    /// of `/v1/items/{id}`), empty when it starts with a placeholder. A matcher skips a
    /// rule whose prefix the path lacks with one comparison.
    #[inline]
    pub fn literal_prefix(&self) -> &str {
        match self.tokens.first() {
            Some(Token::Literal(l)) => l,
            _ => "",
        }
    }

    /// Whether `query` carries every parameter of the query part, with the literal value
    /// where the pattern gives one.
    pub fn matches_query(&self, query: &QueryArgs<'_>) -> bool {
        self.query.iter().all(|p| match &p.value {
            None => query.get_all(&p.name).next().is_some(),
            Some(v) => query.get_all(&p.name).any(|got| got == &**v),
        })
    }

    /// Whether the pattern needs the query parsed at all.
    pub fn has_query(&self) -> bool {
        !self.query.is_empty()
    }
}

fn match_tokens(tokens: &[Token], s: &str, exact: bool) -> bool {
    match tokens.split_first() {
        None => !exact || s.is_empty(),
        Some((Token::Literal(l), rest)) => s.starts_with(&**l) && match_tokens(rest, &s[l.len()..], exact),
        Some((Token::Param, rest)) => {
            // One or more characters of the current segment; try the longest first.
            let seg_end = s.find('/').unwrap_or(s.len());
            (1..=seg_end).rev().filter(|&end| s.is_char_boundary(end)).any(|end| match_tokens(rest, &s[end..], exact))
        }
    }
}

/// What [`match_tokens`] answers, in time linear in `s` for each token: the positions
/// of `s` reachable after each token, rather than every way of getting there.
fn match_positions(tokens: &[Token], s: &str, exact: bool) -> bool {
    let bytes = s.as_bytes();
    let n = s.len();
    let mut at = vec![false; n + 1];
    let mut next = vec![false; n + 1];
    at[0] = true;
    for token in tokens {
        next.fill(false);
        match token {
            Token::Literal(l) => {
                for p in (0..=n).filter(|&p| at[p] && s[p..].starts_with(&**l)) {
                    next[p + l.len()] = true;
                }
            }
            Token::Param => {
                // q is reachable from a reachable p < q when s[p..q] has no `/`.
                let mut open = false;
                for q in 1..=n {
                    if bytes[q - 1] == b'/' {
                        open = false;
                    } else if at[q - 1] {
                        open = true;
                    }
                    next[q] = open && s.is_char_boundary(q);
                }
            }
        }
        std::mem::swap(&mut at, &mut next);
    }
    if exact { at[n] } else { at.contains(&true) }
}

/// The query string of a request, split and percent-decoded once per request.
#[derive(Debug, Default)]
pub struct QueryArgs<'a> {
    args: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

impl<'a> QueryArgs<'a> {
    /// Splits a query string (without `?`) on `&` and `=` and percent-decodes names and
    /// values (`+` as a space); `None` has no arguments.
    pub fn parse(query: Option<&'a str>) -> Self {
        let Some(q) = query else {
            return QueryArgs::default();
        };
        // memchr's searches: `str::split` with a `char` walks the bytes one by one,
        // and a request's query holds a key of tens of bytes.
        let bytes = q.as_bytes();
        let mut args = Vec::new();
        let mut start = 0;
        while start <= q.len() {
            let end = memchr::memchr(b'&', &bytes[start..]).map_or(q.len(), |i| start + i);
            // Cut at ASCII bytes: the slices are whole characters.
            let pair = &q[start..end];
            if !pair.is_empty() {
                let (k, v) = match memchr::memchr(b'=', pair.as_bytes()) {
                    Some(i) => (&pair[..i], &pair[i + 1..]),
                    None => (pair, ""),
                };
                args.push((percent_decode(k), percent_decode(v)));
            }
            start = end + 1;
        }
        QueryArgs { args }
    }

    /// Every value of the argument `name`, in query order.
    pub fn get_all<'s, 'n>(&'s self, name: &'n str) -> impl Iterator<Item = &'s str> + use<'s, 'n, 'a> {
        self.args.iter().filter(move |(k, _)| k == name).map(|(_, v)| &**v)
    }

    /// The first value of the argument `name`.
    pub fn get<'s>(&'s self, name: &str) -> Option<&'s str> {
        self.get_all(name).next()
    }
}

/// Decodes `%XX` and `+` (form encoding); invalid escapes are kept as they are.
pub fn percent_decode(s: &str) -> Cow<'_, str> {
    // A byte loop, not a `char` pattern nor memchr2 (whose set-up costs more than an
    // argument of tens of bytes): this runs on each argument of every request's query.
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_is_split_as_str_split_would_split_it() {
        // The reference: `&` between arguments, the first `=` between name and value,
        // empty arguments skipped.
        let reference = |q: &str| -> Vec<(String, String)> {
            q.split('&')
                .filter(|p| !p.is_empty())
                .map(|p| p.split_once('=').unwrap_or((p, "")))
                .map(|(k, v)| (percent_decode(k).into_owned(), percent_decode(v).into_owned()))
                .collect()
        };
        for q in ["", "&", "&&", "a", "a=", "=b", "a=b=c", "a=1&b=2", "&a=1&&b&", "k%3Dx=v%26w", "é=ü&ß", "a+b=c+d&"]
        {
            let parsed = QueryArgs::parse(Some(q));
            let got: Vec<(String, String)> = parsed.args.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            assert_eq!(got, reference(q), "{q:?}");
        }
    }

    /// (pattern, request path, request query, expected)
    const CASES: &[(&str, &str, Option<&str>, bool)] = &[
        ("/", "/", None, true),
        ("/", "/anything/at/all", None, true),
        ("/foo", "/foo", None, true),
        ("/foo", "/foo/bar", None, true),
        ("/foo", "/foobar", None, true), // prefix match is by characters, as in 3scale
        ("/foo", "/fo", None, false),
        ("/foo", "/bar/foo", None, false),
        ("/foo$", "/foo", None, true),
        ("/foo$", "/foo/", None, false),
        ("/foo$", "/foo/bar", None, false),
        ("/foo/$", "/foo/", None, true),
        ("/foo/{id}", "/foo/42", None, true),
        ("/foo/{id}", "/foo/42/more", None, true),
        ("/foo/{id}$", "/foo/42/more", None, false),
        ("/foo/{id}$", "/foo/42", None, true),
        ("/foo/{id}", "/foo/", None, false), // a placeholder needs one character at least
        ("/foo/{id}/bar", "/foo/42/bar", None, true),
        ("/foo/{id}/bar", "/foo/4/2/bar", None, false), // one segment only
        ("/words/{word}.json", "/words/hello.json", None, true),
        ("/words/{word}.json", "/words/a.b.json", None, true),
        ("/words/{word}.json$", "/words/hello.xml", None, false),
        ("/a/{x}-{y}", "/a/1-2", None, true),
        ("/a/{x}-{y}$", "/a/12", None, false),
        ("/rooms?format=json", "/rooms", Some("format=json"), true),
        ("/rooms?format=json", "/rooms", Some("format=xml"), false),
        ("/rooms?format=json", "/rooms", None, false),
        ("/rooms?format=json", "/rooms", Some("a=1&format=json"), true),
        ("/rooms?since={ts}", "/rooms", Some("since=12"), true),
        ("/rooms?since={ts}", "/rooms", Some("until=12"), false),
        ("/rooms?since={ts}", "/rooms", Some("since="), true), // present, even if empty
        ("/rooms?q=a b", "/rooms", Some("q=a+b"), true),
        ("/rooms?q=é", "/rooms", Some("q=%C3%A9"), true),
        ("/rooms/{room}/messages?since={ts}&format=json", "/rooms/7/messages", Some("format=json&since=3"), true),
        ("/rooms/{room}/messages?since={ts}&format=json", "/rooms/7/messages", Some("since=3"), false),
        ("/rooms$?x=1", "/rooms", Some("x=1"), true),
        ("/rooms$?x=1", "/rooms/1", Some("x=1"), false),
        ("/ünï/{x}", "/ünï/ç", None, true),
    ];

    #[test]
    fn table() {
        for (i, &(pattern, path, query, expected)) in CASES.iter().enumerate() {
            let p = Pattern::parse(pattern).unwrap_or_else(|e| panic!("case {i} `{pattern}`: {e}"));
            let q = QueryArgs::parse(query);
            assert_eq!(p.matches(path, &q), expected, "case {i}: `{pattern}` vs {path}?{query:?}");
        }
        assert!(CASES.len() >= 25);
    }

    /// Found by the `mapping_rules` fuzz target: a pattern with many placeholders in
    /// one segment took exponential time on a long segment (a 630-byte input ran for
    /// more than 10 s); the request path is the client's to choose.
    #[test]
    fn many_placeholders_in_one_segment_match_in_linear_time() {
        let p = Pattern::parse("/f/{a}-{b}-{c}-{d}-{e}-{f}-{g}-{h}$").expect("valid");
        let started = std::time::Instant::now();
        assert!(!p.matches_path(&format!("/f/{}/", "-".repeat(3000))));
        assert!(p.matches_path(&format!("/f/{}x", "-".repeat(3000))));
        assert!(started.elapsed() < std::time::Duration::from_secs(1), "{:?}", started.elapsed());
        // Both ways of matching agree on the table and around it.
        for &(pattern, path, _, _) in CASES {
            let p = Pattern::parse(pattern).expect("valid");
            let half = path.char_indices().map(|(i, _)| i).nth(path.chars().count() / 2).unwrap_or(0);
            for path in [path, &format!("{path}/x"), &path[..half], ""] {
                for exact in [false, true] {
                    let want = match_tokens(&p.tokens, path, exact);
                    assert_eq!(match_positions(&p.tokens, path, exact), want, "{pattern} vs {path} ({exact})");
                }
            }
        }
    }

    #[test]
    fn a_path_that_matches_starts_with_the_literal_prefix() {
        // The mapper skips a rule on its prefix alone: that must never skip a match.
        for &(pattern, path, _, _) in CASES {
            let p = Pattern::parse(pattern).expect("valid");
            for p in [p.clone(), p.under("/api")] {
                for path in [path.to_string(), format!("/api{path}"), format!("{path}/x"), String::new()] {
                    if p.matches_path(&path) {
                        assert!(path.starts_with(p.literal_prefix()), "{pattern} vs {path}");
                    }
                }
            }
        }
    }

    #[test]
    fn query_strings_never_take_part_in_the_path_match() {
        let p = Pattern::parse("/foo$").expect("valid");
        // The caller passes the path without its query; a `?` in the path never matches.
        assert!(p.matches("/foo", &QueryArgs::parse(Some("x=1"))));
    }

    #[test]
    fn under_prefixes_the_path_part() {
        let p = Pattern::parse("/v1/{x}$").expect("valid");
        let q = QueryArgs::default();
        assert!(p.under("/api").matches("/api/v1/7", &q));
        assert!(!p.under("/api").matches("/v1/7", &q));
        assert!(p.under("/").matches("/v1/7", &q));
        assert!(Pattern::parse("/{x}").expect("valid").under("/api/").matches("/api/7", &q));
    }

    #[test]
    fn invalid_patterns_say_why() {
        for bad in ["foo", "/a$b", "/{x", "/x}", "/{}", "/{a b}", "/{a}{b}", "/a#b", "/a?{x}=1", "/a?x={y}z"] {
            assert!(Pattern::parse(bad).is_err(), "`{bad}` should be rejected");
        }
    }

    #[test]
    fn percent_decoding_keeps_invalid_escapes() {
        assert_eq!(percent_decode("a%2Fb"), "a/b");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("%4"), "%4");
    }
}
