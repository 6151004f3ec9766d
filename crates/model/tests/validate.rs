//! Validation of a configuration (`tollgate_model::validate`, run by `parse_str`),
//! tested directly: every problem is found in one pass, each with its path and a fix.

fn errors(yaml: &str) -> Vec<String> {
    match tollgate_model::parse_str(yaml) {
        Ok(_) => Vec::new(),
        Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
    }
}

const BACKEND: &str = "backends: [ { system_name: b, private_base_url: \"http://127.0.0.1:9\" } ]\n";

fn product(extra: &str) -> String {
    format!(
        "{BACKEND}products:\n  - system_name: api\n    staging_public_base_url: http://s.test\n    production_public_base_url: http://p.test\n    backend_usages: [ {{ backend: b, path: / }} ]\n    metrics: [ {{ system_name: hits }} ]\n{extra}"
    )
}

#[test]
fn a_valid_configuration_has_no_error() {
    let yaml = product(
        "    mapping_rules: [ { http_method: GET, pattern: \"/items/{id}$\", metric: hits } ]\n    application_plans: [ { system_name: basic, limits: [ { metric: hits, period: minute, value: 5 } ] } ]\naccounts:\n  - name: acme\n    applications: [ { name: app, product: api, plan: basic, user_key: k } ]\n",
    );
    assert_eq!(errors(&yaml), Vec::<String>::new());
}

#[test]
fn every_problem_is_reported_at_once_with_its_path_and_fix() {
    let yaml = product(
        "    mapping_rules:\n      - { http_method: GTE, pattern: /a, metric: hits }\n      - { http_method: GET, pattern: /b, metric: hist }\n    application_plans: [ { system_name: basic, limits: [ { metric: nope, period: minute, value: 5 } ] } ]\naccounts:\n  - name: acme\n    applications: [ { name: app, product: apx, plan: basic, user_key: k } ]\n",
    );
    let all = errors(&yaml).join("\n");
    for expected in [
        "products[0].mapping_rules[0].http_method: `GTE` is not an HTTP method",
        "did you mean `GET`?",
        "products[0].mapping_rules[1].metric",
        "did you mean `hits`?",
        "products[0].application_plans[0].limits[0].metric",
        "accounts[0].applications[0].product",
    ] {
        assert!(all.contains(expected), "missing `{expected}` in:\n{all}");
    }
}

#[test]
fn names_are_unique_and_well_formed() {
    let yaml = "backends:\n  - { system_name: b, private_base_url: \"http://127.0.0.1:9\" }\n  - { system_name: b, private_base_url: \"http://127.0.0.1:10\" }\n  - { system_name: \"bad name\", private_base_url: \"http://127.0.0.1:11\" }\n";
    let all = errors(yaml).join("\n");
    assert!(all.contains("backends[1].system_name: another backend is already named `b`"), "{all}");
    assert!(all.contains("backends[2].system_name: `bad name` is not a valid system_name"), "{all}");
}

#[test]
fn a_name_is_at_most_255_characters_and_long_ones_are_not_repeated_whole() {
    let long = "x".repeat(10_000);
    let yaml = format!(
        "backends:\n  - {{ system_name: {}, private_base_url: \"http://127.0.0.1:9\" }}\n  - {{ system_name: {long}, private_base_url: \"http://127.0.0.1:10\" }}\n",
        "y".repeat(255)
    );
    let all = errors(&yaml);
    assert_eq!(all.len(), 1, "{all:?}");
    assert!(all[0].starts_with("backends[1].system_name: `xxxx"), "{all:?}");
    assert!(all[0].contains("…` (10000 characters) is not a valid system_name"), "{all:?}");
    assert!(all[0].contains("at most 255"), "{all:?}");
    assert!(all[0].len() < 300, "{all:?}");
}

#[test]
fn a_hint_lists_ten_known_names_and_counts_the_rest() {
    let mut yaml = String::from(BACKEND);
    yaml.push_str("products:\n");
    for i in 0..25 {
        yaml.push_str(&format!(
            "  - {{ system_name: zz{i}, staging_public_base_url: http://s{i}.test, production_public_base_url: http://p{i}.test, backend_usages: [ {{ backend: b, path: / }} ], application_plans: [ {{ system_name: basic }} ] }}\n"
        ));
    }
    yaml.push_str(
        "accounts:\n  - name: acme\n    applications: [ { name: app, product: nothing, plan: basic, user_key: k } ]\n",
    );
    let all = errors(&yaml).join("\n");
    assert!(all.contains("no product named `nothing`"), "{all}");
    assert!(all.contains("known: zz0, zz1, zz2, zz3, zz4, zz5, zz6, zz7, zz8, zz9, and 15 more"), "{all}");
}

#[test]
fn credentials_fit_the_products_authentication_mode() {
    let yaml = product(
        "    authentication: { mode: app_id_app_key }\n    application_plans: [ { system_name: basic } ]\naccounts:\n  - name: acme\n    applications: [ { name: app, product: api, plan: basic, user_key: k } ]\n",
    );
    let all = errors(&yaml).join("\n");
    assert!(all.contains("accounts[0].applications[0]"), "{all}");
}

#[test]
fn urls_must_name_a_host_a_port_and_no_secrets() {
    for (url, says) in [
        ("http://127.0.0.1:99999", "port"),
        ("http://user:pw@127.0.0.1:9", "user information"),
        ("ftp://127.0.0.1", "scheme `ftp` is not allowed here"),
        ("http://a..b", "not a host name"),
    ] {
        let yaml = format!("backends: [ {{ system_name: b, private_base_url: \"{url}\" }} ]\n");
        let all = errors(&yaml).join("\n");
        assert!(all.contains("backends[0].private_base_url") && all.contains(says), "{url}: {all}");
    }
}

#[test]
fn a_client_certificate_comes_with_its_key() {
    let yaml = "backends: [ { system_name: b, private_base_url: \"https://127.0.0.1:9\", tls: { client_cert_file: /etc/c.pem } } ]\n";
    let all = errors(yaml).join("\n");
    assert!(all.contains("backends[0].tls.client_key_file: a certificate needs its private key"), "{all}");
    // The certificate inline, the key in both forms.
    let yaml = "backends: [ { system_name: b, private_base_url: \"https://127.0.0.1:9\", tls: { client_cert_pem: x, client_key_file: /k.pem, client_key_pem: y } } ]\n";
    let all = errors(yaml).join("\n");
    assert!(
        all.contains("backends[0].tls.client_key_pem: both `client_key_file` and `client_key_pem` are set"),
        "{all}"
    );
    assert!(!all.contains("needs its private key"), "{all}");
}

#[test]
fn a_bound_token_needs_the_products_client_certificates() {
    let chain =
        "    policy_chain: [ { name: jwt, configuration: { secret: s, require_certificate_binding: true } } ]\n";
    let product = "products:\n  - system_name: p\n    staging_public_base_url: https://p.test\n    production_public_base_url: https://p-production.test\n";
    let all = errors(&format!("{product}{chain}")).join("\n");
    assert!(all.contains("products[0].policy_chain[0].configuration.require_certificate_binding"), "{all}");
    let with_ca = format!("{product}    tls: {{ client_ca_pem: x }}\n{chain}");
    assert!(!errors(&with_ca).join("\n").contains("require_certificate_binding"));
}

#[test]
fn a_fleet_is_checked_key_by_key() {
    let backend =
        |keys: &str| format!("backends:\n  - system_name: b\n    private_base_url: http://api.internal\n{keys}");
    let good = backend(
        "    endpoints: [ { address: \"10.0.0.1:80\", weight: 3 }, { address: \"[fd00::1]:80\" }, { address: \"api-2.internal:8080\", drain: true } ]\n    load_balancing: { algorithm: consistent_hash, hash_on: { cookie: sid } }\n    health_checks: { active: { type: websocket, path: /ws, interval_ms: 1000, timeout_ms: 500 }, passive: { consecutive_failures: 3 }, when_all_unhealthy: refuse }\n    circuit_breaker: { max_connections: 100, max_pending_requests: 10 }\n    drain_timeout_ms: 5000\n    dns_refresh_ms: 30000\n",
    );
    assert_eq!(errors(&good), Vec::<String>::new());
    for hash_on in ["remote_addr", "application_id", "{ header: X-Session }"] {
        let yaml = backend(&format!(
            "    endpoints: [ {{ address: \"10.0.0.1:80\" }} ]\n    load_balancing: {{ algorithm: consistent_hash, hash_on: {hash_on} }}\n"
        ));
        assert_eq!(errors(&yaml), Vec::<String>::new(), "{hash_on}");
    }

    let bad = backend(
        "    endpoints: [ { address: \"10.0.0.1\" }, { address: \"http://10.0.0.2:80\" }, { address: \"10.0.0.3:99999\" }, { address: \"fd00::1:80\" }, { address: \"10.0.0.4:80\", weight: 0 }, { address: \"10.0.0.4:80\" } ]\n    load_balancing: { algorithm: round_robin, hash_on: { header: X-Session } }\n    health_checks: { active: { path: health, interval_ms: 50, timeout_ms: 100, expected_statuses: [ 700 ], healthy_threshold: 0 }, passive: { consecutive_failures: 0, ejection_ms: 1000, max_ejection_ms: 10 } }\n    circuit_breaker: { max_connections: 0 }\n    drain_timeout_ms: 0\n    dns_refresh_ms: 999\n",
    );
    let all = errors(&bad).join("\n");
    for expected in [
        "backends[0].endpoints[0].address: `10.0.0.1` has no port",
        "backends[0].endpoints[1].address: `http://10.0.0.2:80` is not an address",
        "backends[0].endpoints[2].address: `99999` is not a port",
        "backends[0].endpoints[3].address: `fd00::1:80`: write an IPv6 address in brackets",
        "backends[0].endpoints[4].weight: 0 is out of range",
        "set `drain: true`",
        "backends[0].endpoints[5].address: `10.0.0.4:80` is the same endpoint as endpoints[4]",
        "backends[0].load_balancing.hash_on: `hash_on` applies to `consistent_hash` only",
        "backends[0].health_checks.active.path: `health` cannot be sent as a request path",
        "backends[0].health_checks.active.interval_ms: 50 is out of range",
        "backends[0].health_checks.active.timeout_ms",
        "backends[0].health_checks.active.expected_statuses: 700 is not an HTTP status",
        "backends[0].health_checks.active.healthy_threshold: 0 is out of range",
        "backends[0].health_checks.passive.consecutive_failures: 0 is out of range",
        "backends[0].health_checks.passive.max_ejection_ms: 10 is not between ejection_ms (1000)",
        "backends[0].circuit_breaker.max_connections: must be at least 1",
        "backends[0].drain_timeout_ms: 0 is out of range",
        "backends[0].dns_refresh_ms: 999 is out of range",
    ] {
        assert!(all.contains(expected), "missing `{expected}` in:\n{all}");
    }

    let typo = backend("    load_balancing: { algorithm: least_request }\n");
    let all = errors(&typo).join("\n");
    assert!(all.contains("backends[0].load_balancing") && all.contains("least_requests"), "{all}");

    // Found by a breaker: what `check` let through and the gateway could not use.
    let odd = backend(
        "    endpoints: [ { address: \"a..b:80\" }, { address: \"-x-:80\" }, { address: \"999.1.1.1:80\" }, { address: \"127.0.0.1:80\" }, { address: \"127.0.0.1:080\" }, { address: \"[::1]:80\" }, { address: \"[0:0::1]:80\" }, { address: \"api.internal:80\" }, { address: \"API.internal.:80\" }, { address: \":80\" } ]\n    health_checks: { active: { path: \"/he alth\", healthy_threshold: 4294967295 }, passive: { ejection_ms: 18446744073709551615 } }\n    drain_timeout_ms: 18446744073709551615\n",
    );
    let all = errors(&odd).join("\n");
    for expected in [
        "endpoints[0].address: `a..b` is not a host name",
        "endpoints[1].address: `-x-` is not a host name",
        "endpoints[2].address: `999.1.1.1` is not a host name",
        "endpoints[4].address: `127.0.0.1:080` is the same endpoint as endpoints[3]",
        "endpoints[6].address: `[0:0::1]:80` is the same endpoint as endpoints[5]",
        "endpoints[8].address: `API.internal.:80` is the same endpoint as endpoints[7]",
        "endpoints[9].address: `:80` has no host",
        "health_checks.active.path: `/he alth` cannot be sent",
        "health_checks.active.healthy_threshold: 4294967295 is out of range",
        "health_checks.passive.ejection_ms: 18446744073709551615 is out of range",
        "drain_timeout_ms: 18446744073709551615 is out of range",
    ] {
        assert!(all.contains(expected), "missing `{expected}` in:\n{all}");
    }
    // Defaults adapt to what is set: a short interval shortens the probe timeout, a
    // long first ejection lengthens the longest.
    let short = backend("    health_checks: { active: { interval_ms: 1000 }, passive: { ejection_ms: 400000 } }\n");
    assert_eq!(errors(&short), Vec::<String>::new());
}

#[test]
fn client_certificate_authentication_needs_authorities_and_fingerprints() {
    let yaml = format!(
        "{BACKEND}products:\n  - system_name: api\n    staging_public_base_url: https://s.test\n    production_public_base_url: https://p.test\n    authentication: {{ mode: client_certificate }}\n    backend_usages: [ {{ backend: b, path: / }} ]\n    application_plans: [ {{ system_name: basic }} ]\naccounts:\n  - name: acme\n    applications:\n      - {{ name: a, product: api, plan: basic }}\n      - {{ name: b, product: api, plan: basic, client_certificates: [ \"nothex\", \"{fp}\" ] }}\n      - {{ name: c, product: api, plan: basic, client_certificates: [ \"{upper}\" ] }}\n",
        fp = "ab".repeat(32),
        upper = "AB:".repeat(31) + "AB",
    );
    let all = errors(&yaml).join("\n");
    for expected in [
        "products[0].authentication.mode: `client_certificate` authentication needs the certificates verified",
        "accounts[0].applications[0].client_certificates: product `api` authenticates with client certificates",
        "accounts[0].applications[1].client_certificates[0]: `nothex` is not a SHA-256 fingerprint",
        "accounts[0].applications[2].client_certificates[0]: another application of this product has the same certificate",
    ] {
        assert!(all.contains(expected), "missing `{expected}` in:\n{all}");
    }
}
