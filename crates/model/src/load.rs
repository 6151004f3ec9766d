//! From YAML text to a validated [`Config`]: parse once, turning each backend, product
//! and account into a generic value and then its type on its own as the parser reaches
//! it, so that one mistake does not hide the next, and validate references across them.

use crate::config::Config;
use crate::error::{ConfigError, ConfigErrors};
use crate::suggest::did_you_mean;
use serde::de::{DeserializeOwned, DeserializeSeed as _};
use serde_norway::Value;
use std::path::Path;

/// Reads, parses and validates a configuration file. Relative file paths inside it
/// (a backend's `tls.ca_file`, `tls.client_cert_file`, `tls.client_key_file`, a product's
/// `tls.cert_file`, `tls.key_file`, a `jwt` policy's `jwks_file`, a `logging` policy's
/// `file`) are taken
/// relative to the file's own directory, so a configuration works whatever directory
/// Tollgate is started from.
pub fn load_file(path: &Path) -> Result<Config, ConfigErrors> {
    let config = read_file(path)?;
    crate::validate::validate(&config).map(|()| config)
}

/// [`load_file`] without [`validate`](crate::validate): every item is read (its keys
/// and the types of its values checked) and relative paths are resolved — for a file
/// that is a part of a configuration whose other parts are elsewhere (`tollgate apply`
/// sends a file to a store that may hold the backends it names; the store validates
/// the whole).
pub fn read_file(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::new("", format!("cannot read {}: {e}", path.display()))
            .hint("check the path given to --config / -f")
    })?;
    let mut config = read_str(&text)?;
    // Absolute: the paths may travel to a process that runs elsewhere (`tollgate apply`
    // sends them to the store's server, whose working directory is its own).
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let base = absolute.parent().unwrap_or(Path::new(""));
    for b in &mut config.backends {
        for file in [&mut b.tls.ca_file, &mut b.tls.client_cert_file, &mut b.tls.client_key_file] {
            if let Some(f) = file.as_mut().filter(|f| f.is_relative()) {
                *f = base.join(&*f);
            }
        }
    }
    // The files policies read or write, likewise: `jwt`'s JWK Set, `logging`'s log;
    // and a product's certificate.
    for p in &mut config.products {
        if let Some(tls) = &mut p.tls {
            for f in [&mut tls.cert_file, &mut tls.key_file, &mut tls.client_ca_file, &mut tls.ocsp_file] {
                if let Some(f) = f.as_mut().filter(|f| f.is_relative()) {
                    *f = base.join(&*f);
                }
            }
        }
        for entry in &mut p.policy_chain {
            let key = match entry.name.as_str() {
                "jwt" => "jwks_file",
                "logging" => "file",
                _ => continue,
            };
            if let Some(v) = entry.configuration.get_mut(key)
                && let Some(file) = v.as_str().map(Path::new).filter(|f| f.is_relative())
            {
                *v = serde_json::Value::String(base.join(file).display().to_string());
            }
        }
    }
    Ok(config)
}

/// Parses and validates a configuration document (YAML, or JSON which is YAML too):
/// [`read_str`], then references across items are checked (they are only meaningful
/// once every item parsed).
pub fn parse_str(text: &str) -> Result<Config, ConfigErrors> {
    let config = read_str(text)?;
    crate::validate::validate(&config).map(|()| config)
}

/// Parses a configuration document (YAML, or JSON which is YAML too): each item's keys
/// and the types of its values are checked; the rules ([`validate`](crate::validate):
/// URLs, names, references across items) are not (see [`parse_str`]).
///
/// The parser (serde-saphyr) streams the document's events into the items as it reads
/// them: serde_norway's, used before, held every event of the document first, which
/// took most of the time and memory of a file of 100,000 applications. Booleans are
/// YAML 1.2's (`true`, `false`; `yes` is text), as before.
pub fn read_str(text: &str) -> Result<Config, ConfigErrors> {
    // First each item straight into its type, no generic value between: the document
    // is read once, at the parser's speed. A mistake stops that reading, and the
    // document is read again the careful way, each item through a generic value, so
    // every mistake is found and said (a valid file, the common case, is read once).
    let (config, errors) = match read(text, true) {
        Ok(read) => read,
        Err(_) => read(text, false).map_err(|e| syntax_error(e, text))?,
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(config)
}

/// The document read `direct`ly or carefully (see [`Document`]), with the mistakes of
/// its items; the parser's error when it stopped.
fn read(text: &str, direct: bool) -> Result<(Config, ConfigErrors), serde_saphyr::Error> {
    let mut errors = ConfigErrors::default();
    // The parser's default budgets (a million events, 250,000 nodes) stop at a file of
    // some 25,000 applications. Here they grow with the text: without aliases an event
    // or a node takes a byte of it or more, so only aliases can reach them, and those
    // keep the parser's own limits (anchors, aliases, replayed events).
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_events: text.len().max(1_000_000),
            max_nodes: text.len().max(250_000),
            max_total_scalar_bytes: text.len().max(64 << 20),
        },
        strict_booleans: true,
        // A text field given `12345` or `true` unquoted is refused, as the generic
        // values of the careful reading refuse it; number and boolean fields refuse
        // quoted text in both readings through their own visitors (`crate::typed`).
        no_schema: true,
        with_snippet: false,
    };
    let mut config = serde_saphyr::with_deserializer_from_str_with_options(text, options, |de| {
        Document { errors: &mut errors, direct }.deserialize(de)
    })?;
    shrink(&mut config);
    Ok((config, errors))
}

/// Gives back the room a reading left in the lists: the parser does not say how long a
/// sequence is, so a list grows as it is read, and read directly a product's one metric
/// or two mapping rules sat in room for four (3 MB of a file of 1,000 products; the
/// generic values of the careful reading are counted first, so only its top-level
/// lists had room to give back).
fn shrink(config: &mut Config) {
    config.backends.shrink_to_fit();
    config.products.shrink_to_fit();
    for p in &mut config.products {
        p.backend_usages.shrink_to_fit();
        p.metrics.shrink_to_fit();
        p.methods.shrink_to_fit();
        p.mapping_rules.shrink_to_fit();
        p.policy_chain.shrink_to_fit();
        p.application_plans.shrink_to_fit();
        for plan in &mut p.application_plans {
            plan.limits.shrink_to_fit();
        }
    }
    config.accounts.shrink_to_fit();
    for a in &mut config.accounts {
        a.applications.shrink_to_fit();
        for app in &mut a.applications {
            app.app_keys.shrink_to_fit();
            app.client_certificates.shrink_to_fit();
        }
    }
}

/// The document, read as it is parsed, one item of `backends`, `products` and
/// `accounts` at a time — the whole document is never held as a generic value (10,000
/// products and 100,000 applications would take hundreds of megabytes that way). Read
/// `direct`ly, an item goes straight into its type; read carefully, it becomes a
/// generic value and then its type on its own, so one mistake does not hide the next.
struct Document<'e> {
    errors: &'e mut ConfigErrors,
    /// Items straight into their types, the first error ending the reading (see
    /// [`parse_str`]); otherwise each through a generic value.
    direct: bool,
}

impl<'de> serde::de::DeserializeSeed<'de> for Document<'_> {
    type Value = Config;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Config, D::Error> {
        d.deserialize_any(self)
    }
}

impl Document<'_> {
    fn not_a_mapping(self) -> Config {
        self.errors.push(
            ConfigError::new("", "the document must be a mapping")
                .hint("start with `backends:`, `products:` and `accounts:`"),
        );
        Config::default()
    }
}

impl<'de> serde::de::Visitor<'de> for Document<'_> {
    type Value = Config;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a mapping of `backends`, `products` and `accounts`")
    }

    fn visit_unit<E>(self) -> Result<Config, E> {
        Ok(Config::default())
    }

    fn visit_none<E>(self) -> Result<Config, E> {
        Ok(Config::default())
    }

    fn visit_bool<E>(self, _: bool) -> Result<Config, E> {
        Ok(self.not_a_mapping())
    }

    fn visit_i64<E>(self, _: i64) -> Result<Config, E> {
        Ok(self.not_a_mapping())
    }

    fn visit_u64<E>(self, _: u64) -> Result<Config, E> {
        Ok(self.not_a_mapping())
    }

    fn visit_f64<E>(self, _: f64) -> Result<Config, E> {
        Ok(self.not_a_mapping())
    }

    fn visit_str<E>(self, _: &str) -> Result<Config, E> {
        Ok(self.not_a_mapping())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Config, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(self.not_a_mapping())
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Config, A::Error> {
        let mut config = Config::default();
        // A key given twice never reaches here: the parser refuses duplicates.
        while let Some(key) = map.next_key::<Value>()? {
            let Some(key) = key.as_str().map(str::to_owned) else {
                self.errors.push(ConfigError::new("", "top-level keys must be strings"));
                map.next_value::<serde::de::IgnoredAny>()?;
                continue;
            };
            let (errors, direct) = (&mut *self.errors, self.direct);
            match key.as_str() {
                "backends" => config.backends = map.next_value_seed(Items::new(&key, errors, direct))?,
                "products" => config.products = map.next_value_seed(Items::new(&key, errors, direct))?,
                "accounts" => config.accounts = map.next_value_seed(Items::new(&key, errors, direct))?,
                other => {
                    const TOP: [&str; 3] = ["backends", "products", "accounts"];
                    let mut e = ConfigError::new(other, "unknown key");
                    e = match did_you_mean(other, TOP) {
                        Some(s) => e.hint(format!("did you mean `{s}`?")),
                        None => e.hint("the top-level keys are `backends`, `products` and `accounts`"),
                    };
                    errors.push(e);
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(config)
    }
}

/// One top-level list, item by item (see [`Document`]).
struct Items<'a, T> {
    key: &'a str,
    errors: &'a mut ConfigErrors,
    direct: bool,
    item: std::marker::PhantomData<T>,
}

impl<'a, T> Items<'a, T> {
    fn new(key: &'a str, errors: &'a mut ConfigErrors, direct: bool) -> Self {
        Items { key, errors, direct, item: std::marker::PhantomData }
    }

    fn not_a_list(self) -> Vec<T> {
        let key = self.key;
        self.errors
            .push(ConfigError::new(key, "must be a list").hint(format!("write `{key}:` followed by `- …` items")));
        Vec::new()
    }
}

impl<'de, T: DeserializeOwned> serde::de::DeserializeSeed<'de> for Items<'_, T> {
    type Value = Vec<T>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Vec<T>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, T: DeserializeOwned> serde::de::Visitor<'de> for Items<'_, T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "a list of {}", self.key)
    }

    fn visit_unit<E>(self) -> Result<Vec<T>, E> {
        Ok(Vec::new())
    }

    fn visit_none<E>(self) -> Result<Vec<T>, E> {
        Ok(Vec::new())
    }

    fn visit_bool<E>(self, _: bool) -> Result<Vec<T>, E> {
        Ok(self.not_a_list())
    }

    fn visit_i64<E>(self, _: i64) -> Result<Vec<T>, E> {
        Ok(self.not_a_list())
    }

    fn visit_u64<E>(self, _: u64) -> Result<Vec<T>, E> {
        Ok(self.not_a_list())
    }

    fn visit_f64<E>(self, _: f64) -> Result<Vec<T>, E> {
        Ok(self.not_a_list())
    }

    fn visit_str<E>(self, _: &str) -> Result<Vec<T>, E> {
        Ok(self.not_a_list())
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Vec<T>, A::Error> {
        while map.next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?.is_some() {}
        Ok(self.not_a_list())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        if self.direct {
            while let Some(item) = seq.next_element::<T>()? {
                out.push(item);
            }
            return Ok(out);
        }
        let mut i = 0;
        while let Some(item) = seq.next_element::<Value>()? {
            match serde_path_to_error::deserialize::<_, T>(item) {
                Ok(v) => out.push(v),
                Err(e) => self.errors.push(describe(&format!("{}[{i}]", self.key), &e)),
            }
            i += 1;
        }
        Ok(out)
    }
}

/// A YAML syntax error, its position said once: the parser's message carries it
/// already (`… at line 3 column 5`) except for a few errors that only have a location.
/// A tab where indentation is expected gets its own hint (YAML forbids tabs there, and
/// the parser only says it found a character that cannot start a token).
fn syntax_error(e: serde_saphyr::Error, text: &str) -> ConfigError {
    let location = e.location().filter(|l| l.line() > 0);
    // The parser's own wording advises a parser option; the user has none to set.
    let message = match (root(&e), location) {
        (serde_saphyr::Error::DuplicateMappingKey { key, .. }, Some(l)) => format!(
            "`{}` appears twice in the same mapping at line {}, column {}",
            key.as_deref().unwrap_or("a key"),
            l.line(),
            l.column()
        ),
        _ => e.to_string(),
    };
    let at = match location {
        Some(l) if !message.contains(" line ") => format!(" at line {}, column {}", l.line(), l.column()),
        _ => String::new(),
    };
    let line = location.and_then(|l| text.lines().nth(usize::try_from(l.line()).unwrap_or(0).saturating_sub(1)));
    let hint = if line.is_some_and(|l| l.trim_start_matches(' ').starts_with('\t')) {
        "this line is indented with a tab: YAML indents with spaces only"
    } else if beyond_limits(&e) {
        "the document goes beyond the parser's limits (nesting 64 levels deep, or anchors and aliases `&a`/`*a` expanding it beyond its own size): flatten it, or write the repeated parts out"
    } else if matches!(root(&e), serde_saphyr::Error::DuplicateMappingKey { .. }) {
        "a key appears twice in the same mapping: keep one (merge their contents)"
    } else {
        "fix the syntax there: indentation, a missing `:` after a key, or an unclosed quote or bracket"
    };
    ConfigError::new("", format!("not valid YAML{at}: {message}")).hint(hint)
}

/// The parser's error itself, out of the wrappers that add where an alias was used.
fn root(mut e: &serde_saphyr::Error) -> &serde_saphyr::Error {
    while let serde_saphyr::Error::AliasError { error, .. } | serde_saphyr::Error::WithSnippet { error, .. } = e {
        e = error;
    }
    e
}

/// Whether the parser stopped at one of its resource limits (nesting depth, nodes,
/// events, alias expansion) rather than at a syntax error.
fn beyond_limits(e: &serde_saphyr::Error) -> bool {
    use serde_saphyr::Error as E;
    matches!(
        root(e),
        E::Budget { .. }
            | E::AliasReplayLimitExceeded { .. }
            | E::AliasExpansionLimitExceeded { .. }
            | E::AliasReplayStackDepthExceeded { .. }
    )
}

/// Turns a serde error into a [`ConfigError`] with a full path and, for unknown keys or
/// values, the closest valid one.
fn describe(prefix: &str, e: &serde_path_to_error::Error<serde_norway::Error>) -> ConfigError {
    let inner = e.inner().to_string();
    // serde_norway appends " at line N column M" for some errors; the path says more.
    let inner = inner.split(" at line ").next().unwrap_or(&inner);
    explain(prefix, &e.path().to_string(), inner)
}

/// Turns a serde message at `inner_path` (serde_path_to_error's notation, `.` for the
/// root) below `prefix` into a [`ConfigError`]; used for nested surfaces too, such as
/// a policy's configuration.
pub fn explain(prefix: &str, inner_path: &str, inner: &str) -> ConfigError {
    let inner = inner.to_string();
    let mut path = if inner_path == "." { prefix.to_string() } else { format!("{prefix}.{inner_path}") };
    if let Some(rest) = inner.strip_prefix("unknown field `") {
        let (field, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let choices = backticked(expected);
        // serde_path_to_error stops at the struct; name the key itself.
        if !path.ends_with(field) {
            path = format!("{path}.{field}");
        }
        let e = ConfigError::new(path, "unknown key");
        return match did_you_mean(field, choices.iter().copied()) {
            Some(s) => e.hint(format!("did you mean `{s}`?")),
            None => e.hint(format!("valid keys here: {}", choices.join(", "))),
        };
    }
    if let Some(rest) = inner.strip_prefix("unknown variant `") {
        let (value, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let choices = backticked(expected);
        let e = ConfigError::new(path, format!("`{value}` is not a valid value"));
        return match did_you_mean(value, choices.iter().copied()) {
            Some(s) => e.hint(format!("did you mean `{s}`?")),
            None => e.hint(format!("use one of: {}", choices.join(", "))),
        };
    }
    if let Some(rest) = inner.strip_prefix("missing field `") {
        let field = rest.split('`').next().unwrap_or(rest);
        return ConfigError::new(format!("{path}.{field}"), "is required").hint(format!("add `{field}:` here"));
    }
    if let Some(rest) = inner.strip_prefix("invalid type: ").or_else(|| inner.strip_prefix("invalid value: ")) {
        // serde says `string "sixty", expected u64`: say what is wanted in words.
        let (found, expected) = rest.split_once(", expected ").unwrap_or((rest, ""));
        return ConfigError::new(path, format!("{found} is not {}", in_words(expected)));
    }
    ConfigError::new(path, inner)
}

/// A serde "expected …" in words: `u64` → "a whole number (0 or more)".
fn in_words(expected: &str) -> String {
    match expected {
        "u8" | "u16" | "u32" | "u64" | "usize" => "a whole number (0 or more)".into(),
        "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number".into(),
        "f32" | "f64" => "a number".into(),
        "a boolean" => "`true` or `false`".into(),
        "a string" => "text (quote it if it looks like a number or `true`)".into(),
        "a sequence" => "a list (`- item` lines, or `[a, b]`)".into(),
        "" => "valid here".into(),
        other if other.starts_with("struct ") || other.starts_with("a map") => "a mapping (`key: value` lines)".into(),
        other => other.to_string(),
    }
}

fn backticked(s: &str) -> Vec<&str> {
    s.split('`').skip(1).step_by(2).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(yaml: &str) -> Vec<String> {
        parse_str(yaml).expect_err("should fail").0.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn unknown_keys_name_the_path_and_suggest() {
        let e = errors("backends:\n  - system_name: echo\n    private_base_ulr: ws://127.0.0.1:1\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("backends[0].private_base_ulr: unknown key"), "{e:?}");
        assert!(e[0].contains("did you mean `private_base_url`?"), "{e:?}");
        let e = errors("product:\n  - {}\n");
        assert!(e[0].contains("did you mean `products`?"), "{e:?}");
    }

    #[test]
    fn one_error_per_item_and_all_items_reported() {
        let e = errors(
            "backends:\n  - system_name: a\n  - system_name: b\n    private_base_url: ws://x\n    colour: red\n",
        );
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].starts_with("backends[0].private_base_url: is required"), "{e:?}");
        assert!(e[1].starts_with("backends[1].colour: unknown key"), "{e:?}");
    }

    #[test]
    fn bad_enum_values_suggest_the_closest() {
        let e = errors(
            "backends: [ { system_name: b, private_base_url: 'http://b' } ]\nproducts:\n  - system_name: p\n    staging_public_base_url: http://s\n    production_public_base_url: http://p\n    backend_usages: [ { backend: b, path: / } ]\n    application_plans:\n      - system_name: basic\n        limits: [ { metric: hits, period: minnute, value: 1 } ]\n",
        );
        assert!(e[0].starts_with("products[0].application_plans[0].limits[0].period:"), "{e:?}");
        assert!(e[0].contains("did you mean `minute`?"), "{e:?}");
    }

    /// Every `line N column M` (or `line N, column M`) of a message.
    fn positions(message: &str) -> Vec<(u32, u32)> {
        let number = |s: &str| s.trim_start().split(|c: char| !c.is_ascii_digit()).next().and_then(|n| n.parse().ok());
        message
            .split("line ")
            .skip(1)
            .filter_map(|rest| {
                let line = number(rest)?;
                let column = number(rest.split_once("column ")?.1)?;
                Some((line, column))
            })
            .collect()
    }

    #[test]
    fn syntax_errors_give_their_location_once_and_a_fix() {
        for yaml in ["backends: [\n", "products:\n  - system_name: p\n   bad indent: 1\n", "a: 'unclosed\n"] {
            let e = errors(yaml);
            assert_eq!(e.len(), 1, "{e:?}");
            assert!(e[0].starts_with("not valid YAML"), "{e:?}");
            // The error's own position once (the parser may add the enclosing block's).
            let at = positions(&e[0]);
            assert!(!at.is_empty(), "{e:?}");
            assert_eq!(at.iter().filter(|p| **p == at[0]).count(), 1, "the position is said once: {e:?}");
            assert!(e[0].contains("fix the syntax there"), "{e:?}");
            assert!(!e[0].contains("tollgate check"), "never advises running check from check: {e:?}");
        }
    }

    #[test]
    fn relative_files_are_relative_to_the_configuration_file() {
        let dir = std::env::temp_dir().join(format!("tollgate-load-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("t.yaml");
        std::fs::write(
            &file,
            "backends:\n  - { system_name: b, private_base_url: 'https://x', tls: { ca_file: ca.pem } }\nproducts:\n  - system_name: p\n    staging_public_base_url: http://s\n    production_public_base_url: http://p\n    backend_usages: [ { backend: b, path: / } ]\n    policy_chain:\n      - { name: jwt, configuration: { jwks_file: keys.json } }\n      - { name: logging, configuration: { file: /var/log/abs.log } }\n",
        )
        .expect("write");
        let c = load_file(&file).expect("loads");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(c.backends[0].tls.ca_file.as_deref(), Some(dir.join("ca.pem").as_path()));
        let chain = &c.products[0].policy_chain;
        assert_eq!(chain[0].configuration["jwks_file"], dir.join("keys.json").display().to_string());
        assert_eq!(chain[1].configuration["file"], "/var/log/abs.log", "absolute paths stay");
    }

    /// A file named by a relative path still gives absolute paths: `tollgate apply`
    /// sends them to a server whose working directory is not the caller's.
    #[test]
    fn relative_files_of_a_file_named_relatively_become_absolute() {
        let dir = std::path::PathBuf::from(format!(".tollgate-load-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("t.yaml");
        std::fs::write(
            &file,
            "backends:\n  - { system_name: b, private_base_url: 'https://x', tls: { ca_file: ca.pem } }\n",
        )
        .expect("write");
        let c = read_file(&file);
        let _ = std::fs::remove_dir_all(&dir);
        let ca = c.expect("reads").backends[0].tls.ca_file.clone().expect("ca_file");
        assert!(ca.is_absolute() && ca.ends_with(dir.join("ca.pem")), "{}", ca.display());
    }

    #[test]
    fn tabs_duplicates_and_types_are_said_in_words() {
        let e = errors("backends:\n\t- system_name: a\n");
        assert!(e[0].contains("indented with a tab"), "{e:?}");
        let e = errors("products: []\nproducts: []\n");
        assert!(e[0].contains("a key appears twice"), "{e:?}");
        let e = errors(
            "backends: [ { system_name: b, private_base_url: 'http://b' } ]\nproducts:\n  - system_name: p\n    staging_public_base_url: http://s\n    production_public_base_url: http://p\n    backend_usages: [ { backend: b, path: / } ]\n    application_plans:\n      - system_name: basic\n        limits: [ { metric: hits, period: minute, value: sixty } ]\n",
        );
        assert!(e[0].ends_with("value: string \"sixty\" is not a whole number (0 or more)"), "{e:?}");
    }

    #[test]
    fn large_documents_parse_and_alias_bombs_do_not() {
        // 30,000 applications: some 300,000 nodes, beyond the parser's default budget
        // of 250,000, which the budget scaled to the text lifts.
        let mut yaml = String::from(
            "backends: [ { system_name: b, private_base_url: 'http://b' } ]\nproducts:\n  - system_name: p\n    staging_public_base_url: http://s\n    production_public_base_url: http://p\n    backend_usages: [ { backend: b, path: / } ]\n    application_plans: [ { system_name: basic } ]\naccounts:\n",
        );
        for a in 0..30_000 {
            if a % 100 == 0 {
                yaml.push_str(&format!("  - name: a{a}\n    applications:\n"));
            }
            yaml.push_str(&format!("      - {{ name: app{a}, product: p, plan: basic, user_key: k{a} }}\n"));
        }
        let config = parse_str(&yaml).expect("a large document parses");
        assert_eq!(config.accounts.iter().map(|a| a.applications.len()).sum::<usize>(), 30_000);
        // Each level repeats the one before ten times: 10^9 nodes from a few hundred bytes.
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for level in 1..10 {
            let p = level - 1;
            bomb.push_str(&format!(
                "a{level}: &a{level} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let e = errors(&bomb);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].contains("beyond the parser's limits"), "{e:?}");
    }

    #[test]
    fn both_readings_read_a_valid_file_alike() {
        // The direct reading is what valid files get; the careful one what a file with
        // a mistake gets. They must not differ on what a valid file says.
        for text in [
            include_str!("../../../fuzz/corpus/config/rich.yaml"),
            include_str!("../../../fuzz/corpus/config/websocket-echo.yaml"),
            include_str!("../../../examples/websocket-echo/tollgate.yaml"),
        ] {
            let (direct, errors) = read(text, true).expect("direct");
            assert!(errors.is_empty(), "{errors:?}");
            let (careful, errors) = read(text, false).expect("careful");
            assert!(errors.is_empty(), "{errors:?}");
            assert_eq!(direct, careful);
            assert!(parse_str(text).is_ok());
        }
        // Unquoted numbers and booleans are not text, for either: the direct reading
        // stops, and the careful one names the field.
        let key = "accounts: [ { name: a, applications: [ { name: x, product: p, plan: b, user_key: 12345 } ] } ]\n";
        assert!(read(key, true).is_err());
        let e = errors(key);
        assert!(e[0].starts_with("accounts[0].applications[0].user_key"), "{e:?}");
        // Quoted text is not a number or a boolean, for either reading, and the
        // message is the one it always was.
        let plan = "backends: [ { system_name: b, private_base_url: 'http://b' } ]\nproducts:\n  - system_name: p\n    staging_public_base_url: http://s\n    production_public_base_url: http://p\n    backend_usages: [ { backend: b, path: / } ]\n    mapping_rules: [ { http_method: GET, pattern: /, metric: hits, last: LAST } ]\n    application_plans:\n      - system_name: basic\n        limits: [ { metric: hits, period: minute, value: VALUE } ]\n";
        let valid = plan.replace("LAST", "true").replace("VALUE", "60");
        assert!(parse_str(&valid).is_ok());
        let quoted = valid.replace("value: 60", "value: \"60\"");
        assert!(read(&quoted, true).is_err(), "the direct reading stops");
        let e = errors(&quoted);
        assert!(e[0].ends_with("value: string \"60\" is not a whole number (0 or more)"), "{e:?}");
        let quoted = plan.replace("LAST", "'true'").replace("VALUE", "60");
        assert!(read(&quoted, true).is_err(), "the direct reading stops");
        let e = errors(&quoted);
        assert!(e[0].starts_with("products[0].mapping_rules[0].last"), "{e:?}");
    }

    #[test]
    fn empty_document_is_an_empty_config() {
        assert_eq!(parse_str("").expect("empty ok"), Config::default());
    }
}
