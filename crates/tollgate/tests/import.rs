//! `tollgate import openapi`: a pet store document written for this test and a large
//! generated one become products that `tollgate check` accepts and a gateway serves
//! with the operations' mapping rules.

mod support;

use http::StatusCode;
use std::process::Output;
use support::*;

const PETSTORE: &str = r#"
openapi: "3.0.3"
info:
  title: Pet Store
  description: Pets for sale.
  version: "1.0"
servers: [ { url: "http://petstore.example.com/v1" } ]
paths:
  /pets:
    get: { operationId: listPets, summary: List all pets, responses: { "200": { description: ok } } }
    post: { operationId: createPets, summary: Create a pet, responses: { "201": { description: made } } }
  /pets/{petId}:
    parameters: [ { name: petId, in: path, required: true, schema: { type: string } } ]
    get: { operationId: showPetById, summary: Info for a pet, responses: { "200": { description: ok } } }
    delete: { responses: { "204": { description: gone } } }
"#;

fn tollgate(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_tollgate")).args(args).output().expect("run tollgate")
}

fn import(dir: &TempDir, name: &str, doc: &str, extra: &[&str]) -> (String, String) {
    let path = dir.path().join(name);
    std::fs::write(&path, doc).expect("write");
    let mut args = vec!["import", "openapi", path.to_str().expect("utf-8")];
    args.extend_from_slice(extra);
    let out = tollgate(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn check(dir: &TempDir, yaml: &str) {
    let file = dir.path().join("imported.yaml");
    std::fs::write(&file, yaml).expect("write");
    let out = tollgate(&["check", "-f", file.to_str().expect("utf-8")]);
    assert!(
        out.status.success(),
        "tollgate check refused the import:\n{}\n{yaml}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_pet_store_becomes_a_product_with_anchored_rules_per_operation() {
    let dir = TempDir::new();
    let (yaml, warnings) = import(&dir, "petstore.yaml", PETSTORE, &[]);
    check(&dir, &yaml);
    assert!(warnings.contains("public base URLs are placeholders"), "{warnings}");
    let mut config: tollgate_model::Config = serde_norway::from_str(&yaml).expect("yaml");
    let product = &config.products[0];
    assert_eq!(product.system_name, "pet_store");
    assert_eq!(config.backends[0].private_base_url, "http://petstore.example.com/v1");
    let methods: Vec<&str> = product.methods.iter().map(|m| m.system_name.as_str()).collect();
    assert_eq!(methods, ["listpets", "createpets", "showpetbyid", "delete_pets_petid"]);
    assert_eq!(product.methods[0].friendly_name.as_deref(), Some("List all pets"));
    let rules: Vec<(&str, &str, &str)> =
        product.mapping_rules.iter().map(|r| (r.http_method.as_str(), r.pattern.as_str(), r.metric.as_str())).collect();
    assert_eq!(
        rules,
        [
            ("GET", "/pets$", "listpets"),
            ("POST", "/pets$", "createpets"),
            ("GET", "/pets/{petId}$", "showpetbyid"),
            ("DELETE", "/pets/{petId}$", "delete_pets_petid")
        ]
    );

    // Served: the backend is ours, an application is added.
    let backend = http_backend().await;
    config.backends[0].private_base_url = format!("http://{backend}");
    let mut with_app: serde_json::Value = serde_json::to_value(&config).expect("json");
    with_app["accounts"] = serde_json::json!([ { "name": "shop", "applications": [ { "name": "app", "product": "pet_store", "plan": "basic", "user_key": "k" } ] } ]);
    let gw = gateway(&serde_norway::to_string(&with_app).expect("yaml")).await;
    let host = "pet_store-staging.localhost";
    assert_eq!(get(gw.server.staging, host, "/pets/42?user_key=k").await.0, StatusCode::OK);
    assert_eq!(get(gw.server.staging, host, "/pets?user_key=k").await.0, StatusCode::OK);
    assert_eq!(get(gw.server.staging, host, "/pets/42/toys?user_key=k").await.0, StatusCode::NOT_FOUND, "anchored");

    // Options: the product's name, prefix matching.
    let (yaml, _) = import(&dir, "petstore.yaml", PETSTORE, &["--product", "Pets", "--prefix-matching"]);
    let config: tollgate_model::Config = serde_norway::from_str(&yaml).expect("yaml");
    assert_eq!(config.products[0].system_name, "pets");
    assert!(config.products[0].mapping_rules.iter().all(|r| !r.pattern.ends_with('$')));
}

#[test]
fn a_large_document_with_repeated_operation_ids_imports_and_checks() {
    let dir = TempDir::new();
    let mut paths = serde_json::Map::new();
    for i in 0..150 {
        let mut item = serde_json::Map::new();
        for m in ["get", "put", "delete"] {
            // Every tenth operation reuses an id: the import keeps names unique.
            let id = if i % 10 == 0 { format!("{m}Thing") } else { format!("{m}Resource{i}") };
            item.insert(
                m.into(),
                serde_json::json!({ "operationId": id, "responses": { "200": { "description": "ok" } } }),
            );
        }
        paths.insert(format!("/v2/resources{i}/{{id}}/items"), serde_json::Value::Object(item));
    }
    let doc = serde_json::json!({
        "openapi": "3.1.0",
        "info": { "title": "Big API", "version": "2" },
        "servers": [ { "url": "https://api.example.org" } ],
        "paths": paths,
    });
    let (yaml, _) = import(&dir, "big.json", &doc.to_string(), &[]);
    check(&dir, &yaml);
    let config: tollgate_model::Config = serde_norway::from_str(&yaml).expect("yaml");
    assert_eq!(config.products[0].mapping_rules.len(), 450);
    let names: std::collections::HashSet<&str> =
        config.products[0].methods.iter().map(|m| m.system_name.as_str()).collect();
    assert_eq!(names.len(), 450, "unique method names");
    assert!(names.contains("getthing_2") && names.contains("getthing_15"), "repeats are numbered");
}

#[test]
fn other_documents_are_refused_with_the_reason() {
    let dir = TempDir::new();
    for (doc, reason) in [
        (r#"{"swagger": "2.0", "paths": {}}"#, "a Swagger 2.0 document: only OpenAPI 3.x is imported"),
        ("just: yaml", "not an OpenAPI document"),
        (r#"{"openapi": "3.0.0", "paths": {}}"#, "no operations under `paths`"),
        ("{ unclosed", "not a JSON or YAML document"),
    ] {
        let path = dir.path().join("doc");
        std::fs::write(&path, doc).expect("write");
        let out = tollgate(&["import", "openapi", path.to_str().expect("utf-8")]);
        assert!(!out.status.success(), "{doc}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(reason), "{doc}: {err}");
    }
}

fn apicast(fixture: &str) -> (tollgate_model::Config, String) {
    let dir = TempDir::new();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/apicast").join(fixture);
    let out = tollgate(&["import", "apicast", path.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let yaml = String::from_utf8_lossy(&out.stdout).into_owned();
    check(&dir, &yaml);
    (serde_norway::from_str(&yaml).expect("yaml"), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn apicasts_example_configuration_imports() {
    // APIcast's own example (examples/plain-upstream and forward-proxy in its repository).
    let (config, warnings) = apicast("plain-upstream.json");
    assert_eq!(config.products.len(), 2);
    let p = &config.products[0];
    assert_eq!((p.system_name.as_str(), p.staging_public_base_url.as_str()), ("service_1", "http://get"));
    assert_eq!(config.backends[0].private_base_url, "http://upstream-rely:8080/get");
    assert_eq!(p.policy_chain[0].name, "tollgate");
    assert_eq!((p.mapping_rules[0].http_method.as_str(), p.mapping_rules[0].metric.as_str()), ("GET", "hits"));
    assert!(warnings.contains("`apicast.policy.http_proxy`: no Tollgate policy (Tollgate does not reach backends through an HTTP proxy yet)"), "{warnings}");
}

#[test]
fn a_full_service_keeps_its_authentication_errors_rules_and_policies() {
    let (config, warnings) = apicast("shop.json");
    let p = &config.products[0];
    assert_eq!(p.system_name, "shop");
    assert_eq!(
        (p.staging_public_base_url.as_str(), p.production_public_base_url.as_str()),
        ("https://shop-staging.example.com:443", "https://shop.example.com:443")
    );
    assert_eq!(serde_json::to_value(&p.authentication).expect("json")["mode"], "app_id_app_key");
    assert_eq!(p.authentication.app_id_param, "x-app-id");
    let failed = p.errors.auth_failed.as_ref().expect("auth_failed");
    assert_eq!(
        (failed.status, failed.body.as_str(), failed.content_type.as_str()),
        (401, "Who are you?", "text/plain; charset=us-ascii")
    );
    // Methods where the file says so (list_items under hits) or it does not say (search);
    // metrics where it says they are not (bytes).
    let methods: Vec<&str> = p.methods.iter().map(|m| m.system_name.as_str()).collect();
    let metrics: Vec<&str> = p.metrics.iter().map(|m| m.system_name.as_str()).collect();
    assert_eq!((methods, metrics), (vec!["list_items", "search"], vec!["hits", "bytes"]));
    assert!(p.mapping_rules[1].last && p.mapping_rules[2].delta == 10);
    assert_eq!(p.mapping_rules[3].pattern, "/v1/search?q={query}");
    let chain: Vec<&str> = p.policy_chain.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(chain, ["cors", "headers", "url_rewriting", "rate_limit", "routing", "tollgate"]);
    assert_eq!(p.policy_chain[3].configuration["limiters"][0]["key"], "{{ remote_addr }}");
    assert_eq!(
        p.policy_chain[4].configuration["rules"][0]["condition"]["operations"][0]["left"],
        "{{ headers['X-Beta'] }}"
    );
    let internal = &config.products[1];
    assert_eq!(internal.system_name, "service_43");
    assert_eq!(
        internal.policy_chain[0].configuration,
        serde_json::json!({ "check_type": "allow", "ips": ["10.0.0.0/8"], "error_message": "internal only" })
    );
    assert_eq!(internal.policy_chain[1].configuration["content_type"], "text/plain");
    for expected in [
        "hosts [\"shop-old.example.com\"]: only the first is used",
        "`apicast.policy.ip_check` does not translate",
        "`apicast.policy.soap`: no Tollgate policy (Tollgate has no SOAP policy yet)",
        "applications and plans are not in an APIcast configuration",
    ] {
        assert!(warnings.contains(expected), "missing {expected:?} in {warnings}");
    }
}

#[tokio::test]
async fn tollgates_own_admin_api_document_imports_as_a_product() {
    // A real document of some size: the admin API's own OpenAPI 3.1 description.
    let dir = TempDir::new();
    let server = store_server(&format!("sqlite://{}", dir.path().join("t.db").display())).await;
    let (status, _, doc) = get(server.admin, "localhost", "/api/v1/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    let parsed: serde_json::Value = serde_json::from_str(&doc).expect("json");
    let operations: usize = parsed["paths"]
        .as_object()
        .expect("paths")
        .values()
        .map(|item| {
            item.as_object()
                .map_or(0, |o| o.keys().filter(|k| ["get", "put", "post", "delete"].contains(&k.as_str())).count())
        })
        .sum();
    assert!(operations > 50, "{operations}");
    let path = dir.path().join("admin.json");
    std::fs::write(&path, &doc).expect("write");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["import", "openapi", path.to_str().expect("utf-8"), "--product", "tollgate-admin"])
        .output()
        .await
        .expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let yaml = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no absolute `servers[0].url`"),
        "the document names no server"
    );
    check(&dir, &yaml);
    let config: tollgate_model::Config = serde_norway::from_str(&yaml).expect("yaml");
    assert_eq!(config.products[0].mapping_rules.len(), operations);
    assert!(config.products[0].mapping_rules.iter().any(|r| r.pattern == "/api/v1/products/{p}/mapping_rules$"));
    server.shutdown().await;
}

#[test]
fn the_openapi_specifications_petstore_imports() {
    let dir = TempDir::new();
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/openapi/petstore.yaml"),
    )
    .expect("fixture");
    let (yaml, _) = import(&dir, "petstore.yaml", &doc, &[]);
    check(&dir, &yaml);
    let config: tollgate_model::Config = serde_norway::from_str(&yaml).expect("yaml");
    let p = &config.products[0];
    assert_eq!(p.system_name, "swagger_petstore");
    assert_eq!(config.backends[0].private_base_url, "http://petstore.swagger.io/v1");
    let rules: Vec<(&str, &str, &str)> =
        p.mapping_rules.iter().map(|r| (r.http_method.as_str(), r.pattern.as_str(), r.metric.as_str())).collect();
    assert_eq!(
        rules,
        [("GET", "/pets$", "listpets"), ("POST", "/pets$", "createpets"), ("GET", "/pets/{petId}$", "showpetbyid")]
    );
    assert_eq!(p.methods[2].friendly_name.as_deref(), Some("Info for a specific pet"));
}
