//! Compiling a configuration into the snapshots a gateway serves from
//! (`tollgate_gateway::compile`), tested directly rather than through a server: hosts
//! to products, the chain's rules, WebSocket settings, routing by prefix, and errors
//! that name where they are.

use tollgate_gateway::policy::Registry;
use tollgate_gateway::{Environment, compile};

fn config(chain: &str) -> tollgate_model::Config {
    let yaml = format!(
        r#"
backends:
  - {{ system_name: v1, private_base_url: "http://127.0.0.1:9/base" }}
  - {{ system_name: v2, private_base_url: "http://127.0.0.1:10" }}
products:
  - system_name: api
    staging_public_base_url: http://api-staging.test
    production_public_base_url: https://API.test:8443
    backend_usages: [ {{ backend: v1, path: / }}, {{ backend: v2, path: /v2 }} ]
    metrics: [ {{ system_name: hits }}, {{ system_name: messages }} ]
    mapping_rules: [ {{ http_method: ANY, pattern: /, metric: hits }} ]
    policy_chain: {chain}
    application_plans: [ {{ system_name: basic }} ]
accounts:
  - name: acme
    applications: [ {{ name: app, product: api, plan: basic, user_key: k }} ]
"#
    );
    tollgate_model::parse_str(&yaml).expect("parses")
}

fn names(chain: &[std::sync::Arc<dyn tollgate_gateway::policy::Policy>]) -> Vec<&'static str> {
    chain.iter().map(|p| p.name()).collect()
}

#[test]
fn each_environment_serves_its_hosts_and_routes_by_the_longest_prefix() {
    let snapshots = compile(&config("[]"), &Registry::offline()).expect("compiles");
    assert_eq!(snapshots.staging.environment, Environment::Staging);
    let staging = snapshots.staging.product_for_host("api-staging.test").expect("staging host");
    assert!(snapshots.staging.product_for_host("api.test").is_none(), "production's host is not staging's");
    let production = snapshots.production.product_for_host("api.test").expect("host lower-cased, without port");
    assert_eq!(&*production.system_name, "api");
    let (usage, rest) = staging.route("/v2/items").expect("a usage");
    assert_eq!((&*usage.backend, rest), ("v2", "/items"));
    let (usage, rest) = staging.route("/v2x").expect("a usage");
    assert_eq!((&*usage.backend, rest), ("v1", "/v2x"), "a prefix matches on a segment boundary only");
    assert!(staging.applications.by_user_key.contains_key("k"));
    let shared = snapshots.production.product_for_host("api.test").expect("production");
    assert!(
        std::sync::Arc::ptr_eq(&staging.applications, &shared.applications),
        "one compilation holds a product's applications once for both environments"
    );
}

#[test]
fn products_that_answer_refusals_alike_share_the_answers() {
    let mut config = config("[]");
    let mut other = config.products[0].clone();
    other.system_name = "other".into();
    other.staging_public_base_url = "http://other-staging.test".into();
    other.production_public_base_url = "http://other.test".into();
    let mut own = other.clone();
    own.system_name = "own".into();
    own.staging_public_base_url = "http://own-staging.test".into();
    own.production_public_base_url = "http://own.test".into();
    own.errors.auth_failed =
        Some(serde_json::from_value(serde_json::json!({ "status": 403, "body": "no" })).expect("an error message"));
    config.products.extend([other, own]);
    let snapshots = compile(&config, &Registry::offline()).expect("compiles");
    let product = |host| snapshots.staging.product_for_host(host).expect(host);
    let (api, other, own) = (product("api-staging.test"), product("other-staging.test"), product("own-staging.test"));
    assert!(std::sync::Arc::ptr_eq(&api.errors.auth_failed, &other.errors.auth_failed), "one JSON answer for both");
    assert!(std::sync::Arc::ptr_eq(&api.errors.limits_exceeded, &own.errors.limits_exceeded));
    assert!(!std::sync::Arc::ptr_eq(&api.errors.auth_failed, &own.errors.auth_failed), "its own answer");
    assert_eq!(&own.errors.auth_failed.body[..], b"no");
    let production = snapshots.production.product_for_host("api.test").expect("production");
    assert!(std::sync::Arc::ptr_eq(&api.errors.no_match, &production.errors.no_match), "and both environments");
}

#[test]
fn the_chain_rules_tollgate_last_if_absent_once_only_policies_and_disabled_entries() {
    let registry = Registry::offline();
    // Without `tollgate`, it runs last.
    let s = compile(&config("[ { name: cors } ]"), &registry).expect("compiles");
    let p = s.staging.product_for_host("api-staging.test").expect("product");
    assert_eq!(names(&p.chain), ["cors", "tollgate"]);
    assert!(!p.websocket, "no websocket policy: upgrades refused");
    // Where it is named, it runs there; a disabled entry is left out.
    let s = compile(&config("[ { name: tollgate }, { name: cors, enabled: false }, { name: echo } ]"), &registry)
        .expect("compiles");
    let p = s.staging.product_for_host("api-staging.test").expect("product");
    assert_eq!(names(&p.chain), ["tollgate", "echo"]);
    // `tollgate` and `websocket` may appear once; the error names the second entry.
    for twice in ["[ { name: tollgate }, { name: tollgate } ]", "[ { name: websocket }, { name: websocket } ]"] {
        let errors = compile(&config(twice), &registry).err().expect("refused").to_string();
        assert!(
            errors.contains("products[0].policy_chain[1].name: ") && errors.contains("already in the chain at [0]"),
            "{errors}"
        );
    }
}

#[test]
fn the_websocket_policy_allows_upgrades_and_its_metrics_must_exist() {
    let registry = Registry::offline();
    let chain =
        "[ { name: websocket, configuration: { max_message_bytes: 100, meter_messages: { metric: messages } } } ]";
    let s = compile(&config(chain), &registry).expect("compiles");
    let p = s.staging.product_for_host("api-staging.test").expect("product");
    assert!(p.websocket);
    assert_eq!(p.websocket_config.max_message_bytes, Some(100));
    assert!(p.websocket_config.meter.is_some());
    let unknown = "[ { name: websocket, configuration: { meter_messages: { metric: nope } } } ]";
    let errors = compile(&config(unknown), &registry).err().expect("refused").to_string();
    assert!(
        errors.contains(
            "products[0].policy_chain[0].configuration.meter_messages.metric: no metric or method named `nope`"
        ),
        "{errors}"
    );
}

#[test]
fn policy_errors_name_the_chain_entry_the_option_and_the_fix() {
    let errors = compile(
        &config("[ { name: rate_limit, configuration: { limiters: [ { key: x, algorithm: token_bucket } ] } } ]"),
        &Registry::offline(),
    )
    .err()
    .expect("refused")
    .to_string();
    assert!(errors.contains("products[0].policy_chain[0].configuration.limiters[0].rate"), "{errors}");
    let errors =
        compile(&config("[ { name: rate_limits } ]"), &Registry::offline()).err().expect("refused").to_string();
    assert!(
        errors.contains("no policy named `rate_limits`") && errors.contains("did you mean `rate_limit`?"),
        "{errors}"
    );
}

/// Store mode compiles each environment from its own version of a product: the
/// applications are shared only when the plans' limits count the same metrics.
#[test]
fn applications_are_shared_between_environments_only_when_their_plans_compile_alike() {
    use tollgate_gateway::{BackendSource, ProductSource, Upstreams, compile_environment};
    let base = config("[]");
    let mut limited = base.clone();
    limited.products[0].methods = vec![serde_json::from_str(r#"{ "system_name": "reads" }"#).expect("method")];
    limited.products[0].application_plans[0].limits =
        vec![serde_json::from_str(r#"{ "metric": "messages", "period": "minute", "value": 5 }"#).expect("limit")];
    // The same limit's metric id names another metric once the table differs.
    let mut renamed = limited.clone();
    renamed.products[0].metrics[1].system_name = "frames".into();
    renamed.products[0].methods = vec![];
    renamed.products[0].application_plans[0].limits[0].metric = "frames".into();
    fn sources(c: &tollgate_model::Config) -> Vec<ProductSource<'_>> {
        let backends =
            c.backends.iter().enumerate().map(|(i, b)| BackendSource { path: format!("backends[{i}]"), backend: b });
        vec![ProductSource { path: "products[0]".into(), product: &c.products[0], backends: backends.collect() }]
    }
    let registry = Registry::offline();
    let accounts = &base.accounts;
    let compiled = |staging: &tollgate_model::Config, production: &tollgate_model::Config| {
        let mut upstreams = Upstreams::default();
        let (s, e) = compile_environment(Environment::Staging, &sources(staging), accounts, &registry, &mut upstreams);
        assert!(e.is_empty(), "{e:?}");
        let (p, e) =
            compile_environment(Environment::Production, &sources(production), accounts, &registry, &mut upstreams);
        assert!(e.is_empty(), "{e:?}");
        let s = s.product_for_host("api-staging.test").expect("staging").applications.clone();
        let p = p.product_for_host("api.test").expect("production").applications.clone();
        (std::sync::Arc::ptr_eq(&s, &p), s, p)
    };
    assert!(compiled(&limited, &limited).0, "the same version in both: shared");
    let (shared, s, p) = compiled(&limited, &renamed);
    assert!(!shared, "the limit counts `messages` in staging and `frames` in production");
    let limit = |a: &tollgate_gateway::Applications| a.by_user_key["k"].plan.limits[0].metric;
    assert_eq!((limit(&s), limit(&p)), (1, 1), "the same id, for another metric in each table");
}
