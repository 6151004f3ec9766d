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
    assert!(all.contains("backends[0].tls.client_key_file: a client certificate needs its private key"), "{all}");
}
