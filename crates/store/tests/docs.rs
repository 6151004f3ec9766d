//! A product's draft (`ProductDoc`) and the declarative `Product` cannot drift apart:
//! `from_product` names every field of `Product` (adding one does not compile until the
//! draft keeps it), and a product with every field set survives the round trip.

use tollgate_store::ProductDoc;

#[test]
fn a_product_with_every_field_set_survives_the_round_trip_through_its_draft() {
    let yaml = r#"
backends:
  - { system_name: b, private_base_url: "http://127.0.0.1:9" }
products:
  - system_name: api
    name: The API
    description: everything set
    staging_public_base_url: http://api-staging.test
    production_public_base_url: http://api.test
    authentication: { mode: app_id_app_key, credentials_location: headers, app_id_param: x-app, app_key_param: x-key }
    errors:
      auth_missing: { status: 401, body: "who?", content_type: text/plain }
      auth_failed: { status: 403, body: "no" }
      no_match: { status: 404, body: "none" }
      limits_exceeded: { status: 429, body: "slow down" }
    backend_usages: [ { backend: b, path: /v1 } ]
    metrics: [ { system_name: hits }, { system_name: reads } ]
    methods: [ { system_name: list, friendly_name: List, description: "reads the list" } ]
    mapping_rules: [ { http_method: GET, pattern: "/items$", metric: list, delta: 2, last: true } ]
    policy_chain: [ { name: cors, configuration: { allow_origin: "*" } }, { name: tollgate, enabled: false } ]
    request_path: { encoded_slashes: keep, merge_slashes: false }
    rewrite_redirects: false
    tls: { cert_file: /etc/tollgate/api.pem, key_file: /etc/tollgate/api-key.pem }
    application_plans: [ { system_name: basic, limits: [ { metric: hits, period: minute, value: 5 } ] } ]
"#;
    let config = tollgate_model::parse_str(yaml).expect("the product parses");
    let product = &config.products[0];
    let doc = ProductDoc::from_product(product, 7);
    assert_eq!(doc.last_id, 7 + 1 + 2 + 1 + 1, "every nested item numbered after the last id");
    assert_eq!(&doc.to_product(product.application_plans.clone()), product);
}
