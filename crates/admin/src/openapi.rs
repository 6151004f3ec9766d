//! The OpenAPI 3.1 document of the admin API, generated from the code: every schema
//! comes from the Rust types the handlers deserialize and serialize (via schemars,
//! JSON Schema 2020-12, which OpenAPI 3.1 uses), and every operation from the table
//! below, which sits beside the router and is checked against it by the tests.
//!
//! Request schemas are strict (unknown keys are refused, as the API refuses them);
//! response schemas (`…View`) are the same shapes plus `id`.

use schemars::{JsonSchema, SchemaGenerator, generate::SchemaSettings};
use serde_json::{Map, Value, json};
use tollgate_model::{
    ApplicationPlan, Backend, BackendUsage, Config, Limit, MappingRule, Method, Metric, PolicyConfig, Product,
};
use tollgate_store::{AccountDoc, ApplicationDoc, PlanDoc, ProductDoc};

/// What an operation answers on success.
enum Ok {
    /// 200/201 with one resource (a `…View`).
    One(u16, &'static str),
    /// 200 with a list of resources.
    List(&'static str),
    /// 200/201 with a free-form JSON object.
    Object(u16),
    /// 200 with a document that has no `id` (the export).
    Document(&'static str),
    /// 204.
    Empty,
}

struct Op {
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    body: Option<&'static str>,
    ok: Ok,
}

const fn op(method: &'static str, path: &'static str, summary: &'static str, body: Option<&'static str>, ok: Ok) -> Op {
    Op { method, path, summary, body, ok }
}

#[rustfmt::skip]
const OPS: &[Op] = &[
    op("get", "/backends", "List backends", None, Ok::List("Backend")),
    op("post", "/backends", "Create a backend", Some("Backend"), Ok::One(201, "Backend")),
    op("get", "/backends/{b}", "Read a backend", None, Ok::One(200, "Backend")),
    op("put", "/backends/{b}", "Replace a backend", Some("Backend"), Ok::One(200, "Backend")),
    op("delete", "/backends/{b}", "Delete a backend (409 while a product uses it)", None, Ok::Empty),
    op("get", "/backends/{b}/endpoints", "The backend's endpoints with their state on this node, per environment", None, Ok::Object(200)),
    op("post", "/backends/{b}/endpoints/{address}/drain", "Drain an endpoint in both environments at once (no deploy)", None, Ok::Object(200)),
    op("delete", "/backends/{b}/endpoints/{address}/drain", "Stop draining an endpoint", None, Ok::Object(200)),
    op("get", "/products", "List products", None, Ok::Object(200)),
    op("post", "/products", "Create a product (its draft, and plans)", Some("Product"), Ok::Object(201)),
    op("get", "/products/{p}", "Read a product", None, Ok::Object(200)),
    op("put", "/products/{p}", "Replace a product's draft", Some("Product"), Ok::Object(200)),
    op("delete", "/products/{p}", "Delete a product", None, Ok::Empty),
    op("get", "/products/{p}/backend_usages", "List backend usages", None, Ok::List("BackendUsage")),
    op("post", "/products/{p}/backend_usages", "Add a backend usage", Some("BackendUsage"), Ok::One(201, "BackendUsage")),
    op("get", "/products/{p}/backend_usages/{id}", "Read a backend usage", None, Ok::One(200, "BackendUsage")),
    op("put", "/products/{p}/backend_usages/{id}", "Replace a backend usage", Some("BackendUsage"), Ok::One(200, "BackendUsage")),
    op("delete", "/products/{p}/backend_usages/{id}", "Remove a backend usage", None, Ok::Empty),
    op("get", "/products/{p}/metrics", "List metrics", None, Ok::List("Metric")),
    op("post", "/products/{p}/metrics", "Add a metric", Some("Metric"), Ok::One(201, "Metric")),
    op("get", "/products/{p}/metrics/{id}", "Read a metric", None, Ok::One(200, "Metric")),
    op("put", "/products/{p}/metrics/{id}", "Replace a metric", Some("Metric"), Ok::One(200, "Metric")),
    op("delete", "/products/{p}/metrics/{id}", "Delete a metric (409 while used)", None, Ok::Empty),
    op("get", "/products/{p}/methods", "List methods", None, Ok::List("Method")),
    op("post", "/products/{p}/methods", "Add a method", Some("Method"), Ok::One(201, "Method")),
    op("get", "/products/{p}/methods/{id}", "Read a method", None, Ok::One(200, "Method")),
    op("put", "/products/{p}/methods/{id}", "Replace a method", Some("Method"), Ok::One(200, "Method")),
    op("delete", "/products/{p}/methods/{id}", "Delete a method (409 while used)", None, Ok::Empty),
    op("get", "/products/{p}/mapping_rules", "List mapping rules", None, Ok::List("MappingRule")),
    op("post", "/products/{p}/mapping_rules", "Add a mapping rule", Some("MappingRule"), Ok::One(201, "MappingRule")),
    op("get", "/products/{p}/mapping_rules/{id}", "Read a mapping rule", None, Ok::One(200, "MappingRule")),
    op("put", "/products/{p}/mapping_rules/{id}", "Replace a mapping rule", Some("MappingRule"), Ok::One(200, "MappingRule")),
    op("delete", "/products/{p}/mapping_rules/{id}", "Delete a mapping rule", None, Ok::Empty),
    op("get", "/products/{p}/policy_chain", "Read the policy chain", None, Ok::Object(200)),
    op("put", "/products/{p}/policy_chain", "Replace the policy chain (a bare array)", Some("PolicyChain"), Ok::Object(200)),
    op("get", "/products/{p}/application_plans", "List application plans", None, Ok::List("PlanDoc")),
    op("post", "/products/{p}/application_plans", "Create an application plan", Some("ApplicationPlan"), Ok::One(201, "PlanDoc")),
    op("get", "/products/{p}/application_plans/{plan}", "Read an application plan", None, Ok::One(200, "PlanDoc")),
    op("put", "/products/{p}/application_plans/{plan}", "Replace an application plan", Some("ApplicationPlan"), Ok::One(200, "PlanDoc")),
    op("delete", "/products/{p}/application_plans/{plan}", "Delete an application plan (409 while in use)", None, Ok::Empty),
    op("get", "/products/{p}/application_plans/{plan}/limits", "List limits", None, Ok::List("Limit")),
    op("post", "/products/{p}/application_plans/{plan}/limits", "Add a limit", Some("Limit"), Ok::One(201, "Limit")),
    op("get", "/products/{p}/application_plans/{plan}/limits/{id}", "Read a limit", None, Ok::One(200, "Limit")),
    op("put", "/products/{p}/application_plans/{plan}/limits/{id}", "Replace a limit", Some("Limit"), Ok::One(200, "Limit")),
    op("delete", "/products/{p}/application_plans/{plan}/limits/{id}", "Delete a limit", None, Ok::Empty),
    op("post", "/products/{p}/deploy", "Deploy the draft to staging as a new version (200 if unchanged)", None, Ok::Object(201)),
    op("post", "/products/{p}/promote", "Promote a staging version to production (200 if production serves it already)", None, Ok::Object(201)),
    op("get", "/products/{p}/configs/diff", "What a promote would change", None, Ok::Object(200)),
    op("get", "/products/{p}/configs/{env}", "List an environment's versions", None, Ok::Object(200)),
    op("get", "/products/{p}/configs/{env}/{version}", "Read one version with its content", None, Ok::Object(200)),
    op("get", "/accounts", "List accounts", None, Ok::List("AccountDoc")),
    op("post", "/accounts", "Create an account", Some("AccountDoc"), Ok::One(201, "AccountDoc")),
    op("get", "/accounts/{a}", "Read an account", None, Ok::One(200, "AccountDoc")),
    op("put", "/accounts/{a}", "Replace an account", Some("AccountDoc"), Ok::One(200, "AccountDoc")),
    op("delete", "/accounts/{a}", "Delete an account and its applications", None, Ok::Empty),
    op("get", "/accounts/{a}/applications", "List an account's applications", None, Ok::List("Application")),
    op("post", "/accounts/{a}/applications", "Create an application (missing keys are generated)", Some("Application"), Ok::One(201, "Application")),
    op("get", "/applications", "List applications", None, Ok::List("Application")),
    op("get", "/applications/{app}", "Read an application", None, Ok::One(200, "Application")),
    op("put", "/applications/{app}", "Replace an application", Some("Application"), Ok::One(200, "Application")),
    op("delete", "/applications/{app}", "Delete an application", None, Ok::Empty),
    op("post", "/applications/{app}/suspend", "Suspend an application", None, Ok::One(200, "Application")),
    op("post", "/applications/{app}/resume", "Resume an application", None, Ok::One(200, "Application")),
    op("post", "/applications/{app}/change_plan", "Move an application to another plan", None, Ok::One(200, "Application")),
    op("post", "/applications/{app}/keys", "A new user_key, or one more app_key", None, Ok::One(201, "Application")),
    op("delete", "/applications/{app}/keys/{key}", "Remove an app_key", None, Ok::Empty),
    op("get", "/applications/{app}/usage", "Where the application stands on each limit of its plan, now", None, Ok::Object(200)),
    op("get", "/config", "Export the whole configuration", None, Ok::Document("Config")),
    op("put", "/config", "Apply a configuration (create and update by name)", Some("Config"), Ok::Object(200)),
    op("get", "/policies", "Every policy with its configuration schema", None, Ok::Object(200)),
    op("get", "/analytics/usage", "Usage per minute, hour or day", None, Ok::Object(200)),
    op("get", "/analytics/totals", "Usage per metric over a period (WebSocket messages, bytes, seconds, closes by code included)", None, Ok::Object(200)),
    op("get", "/analytics/dashboard", "A product's last hour: traffic by environment and status class, WebSockets, top applications, limits nearly reached", None, Ok::Object(200)),
    op("get", "/audit", "The audit log, newest first", None, Ok::Object(200)),
    op("get", "/tokens", "Admin tokens (names and rights)", None, Ok::Object(200)),
    op("post", "/tokens", "Create an admin token (shown once)", None, Ok::Object(201)),
    op("delete", "/tokens/{name}", "Revoke an admin token", None, Ok::Empty),
];

/// Request schemas are strict; their `…View` copies (responses) accept more and carry `id`.
fn relax(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.remove("additionalProperties");
            if let Some(Value::String(r)) = map.get_mut("$ref")
                && let Some(name) = r.strip_prefix("#/components/schemas/")
            {
                *r = format!("#/components/schemas/{name}View");
            }
            map.values_mut().for_each(relax);
        }
        Value::Array(items) => items.iter_mut().for_each(relax),
        _ => {}
    }
}

fn add<T: JsonSchema>(generator: &mut SchemaGenerator, name: &str, out: &mut Map<String, Value>) {
    let schema = generator.subschema_for::<T>();
    out.insert(name.to_string(), schema.to_value());
}

fn error_response(description: &str) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } })
}

pub fn document() -> Value {
    let settings = SchemaSettings::draft2020_12().with(|s| s.definitions_path = "/components/schemas".into());
    let mut generator = SchemaGenerator::new(settings);
    let mut named = Map::new();
    add::<Backend>(&mut generator, "Backend", &mut named);
    add::<Product>(&mut generator, "Product", &mut named);
    add::<ProductDoc>(&mut generator, "ProductDoc", &mut named);
    add::<BackendUsage>(&mut generator, "BackendUsage", &mut named);
    add::<Metric>(&mut generator, "Metric", &mut named);
    add::<Method>(&mut generator, "Method", &mut named);
    add::<MappingRule>(&mut generator, "MappingRule", &mut named);
    add::<Vec<PolicyConfig>>(&mut generator, "PolicyChain", &mut named);
    add::<ApplicationPlan>(&mut generator, "ApplicationPlan", &mut named);
    add::<PlanDoc>(&mut generator, "PlanDoc", &mut named);
    add::<Limit>(&mut generator, "Limit", &mut named);
    add::<AccountDoc>(&mut generator, "AccountDoc", &mut named);
    add::<ApplicationDoc>(&mut generator, "Application", &mut named);
    add::<Config>(&mut generator, "Config", &mut named);

    let mut schemas: Map<String, Value> = generator.take_definitions(true).into_iter().collect();
    for (name, schema) in named {
        // `subschema_for` answers with a `$ref` for named types; keep the alias only
        // where the name differs (e.g. `PolicyChain`, `Application`).
        let points_to_itself =
            schema.get("$ref").and_then(Value::as_str) == Some(&format!("#/components/schemas/{name}"));
        if !points_to_itself {
            schemas.insert(name, schema);
        }
    }
    schemas.insert(
        "Error".into(),
        json!({ "type": "object", "required": ["error"], "properties": { "error": { "type": "object", "required": ["code", "message"],
            "properties": { "code": { "type": "string" }, "message": { "type": "string" }, "field": { "type": "string" } } } } }),
    );
    let views: Vec<(String, Value)> = schemas
        .iter()
        .filter(|(k, _)| k.as_str() != "Error")
        .map(|(k, v)| {
            let mut v = v.clone();
            relax(&mut v);
            (format!("{k}View"), v)
        })
        .collect();
    schemas.extend(views);

    let mut paths = Map::new();
    for o in OPS {
        let params: Vec<Value> = o
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| {
                // Examples name the resources of the example configuration, so a tool
                // (or a reader) trying the operations reaches real ones.
                let example = match name {
                    "p" => "chat",
                    "b" => "echo",
                    "plan" => "basic",
                    "a" => "acme",
                    "app" => "acme-chat",
                    "env" => "staging",
                    "name" => "viewer",
                    "address" => "127.0.0.1:3001",
                    _ => "1",
                };
                json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" }, "example": example,
                    "description": "an id or a system_name (an account's or application's name)" })
            })
            .collect();
        let view = |name: &str| {
            json!({ "allOf": [ { "$ref": format!("#/components/schemas/{name}View") },
            { "type": "object", "required": ["id"], "properties": { "id": { "type": "integer" } } } ] })
        };
        let (status, content) = match &o.ok {
            Ok::One(s, name) => (*s, Some(view(name))),
            Ok::List(name) => (200, Some(json!({ "type": "array", "items": view(name) }))),
            Ok::Object(s) => (*s, Some(json!({}))),
            Ok::Document(name) => (200, Some(json!({ "$ref": format!("#/components/schemas/{name}View") }))),
            Ok::Empty => (204, None),
        };
        let mut responses = Map::new();
        let ok = match content {
            Some(schema) => {
                json!({ "description": "success", "content": { "application/json": { "schema": schema } } })
            }
            None => json!({ "description": "done" }),
        };
        responses.insert(status.to_string(), ok);
        if matches!(o.ok, Ok::Object(201)) {
            responses.insert(
                "200".into(),
                json!({ "description": "nothing changed", "content": { "application/json": { "schema": {} } } }),
            );
        }
        for (code, text) in [
            ("400", "malformed request"),
            ("401", "missing or unknown token"),
            ("403", "read-only token"),
            ("404", "not found"),
            ("409", "conflict"),
            ("422", "invalid; `field` names the key"),
            ("413", "body too large"),
        ] {
            responses.insert(code.into(), error_response(text));
        }
        let mut params = params;
        if o.path.contains("/mapping_rules") && matches!(o.method, "post" | "put") {
            params.push(json!({ "name": "position", "in": "query", "required": false, "schema": { "type": "integer", "minimum": 1 },
                "description": "1-based place of the rule: rules run in this order" }));
        }
        if o.path == "/config" && o.method == "put" {
            for (name, about) in [
                ("dry_run", "list the changes, write nothing"),
                ("deploy", "then deploy every product of the body to staging, in the same transaction"),
                ("promote", "then deploy and promote every product of the body to production, in the same transaction"),
            ] {
                params.push(json!({ "name": name, "in": "query", "required": false, "schema": { "type": "boolean" }, "description": about }));
            }
        }
        if o.path == "/analytics/dashboard" || o.path == "/analytics/totals" {
            params.push(json!({ "name": "product", "in": "query", "required": true, "schema": { "type": "string" },
                "description": "a product's system_name" }));
        }
        if o.path == "/analytics/totals" {
            params
                .push(json!({ "name": "application", "in": "query", "required": false, "schema": { "type": "string" },
                "description": "an application's name or id" }));
            for (name, about) in [
                ("since", "Unix seconds (default: a day before until)"),
                ("until", "Unix seconds, exclusive (default: the end of the current second)"),
            ] {
                params.push(json!({ "name": name, "in": "query", "required": false, "schema": { "type": "integer" }, "description": about }));
            }
        }
        if o.path == "/analytics/usage" {
            for (name, kind, about) in [
                ("product", "string", "a product's system_name"),
                ("application", "string", "an application's name or id"),
                ("metric", "string", "a metric or method (default hits)"),
                ("since", "integer", "Unix seconds (default: a day before until)"),
                ("until", "integer", "Unix seconds, exclusive (default: the end of the current second)"),
            ] {
                params.push(json!({ "name": name, "in": "query", "required": false, "schema": { "type": kind }, "description": about }));
            }
            params.push(json!({ "name": "granularity", "in": "query", "required": false,
                "schema": { "enum": ["minute", "hour", "day"] } }));
            params.push(
                json!({ "name": "format", "in": "query", "required": false, "schema": { "enum": ["json", "csv"] },
                "description": "csv: one row per bucket (at, unix, metric, value); also chosen by Accept: text/csv" }),
            );
            responses.insert(
                "200".into(),
                json!({ "description": "success", "content": {
                    "application/json": { "schema": {} },
                    "text/csv": { "schema": { "type": "string" } } } }),
            );
        }
        let mut operation = json!({ "summary": o.summary, "parameters": params, "responses": responses,
            "security": [ { "bearer": [] } ] });
        if let Some(body) = o.body {
            operation["requestBody"] = json!({ "required": true, "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{body}") } } } });
        }
        let entry = paths.entry(format!("/api/v1{}", o.path)).or_insert_with(|| json!({}));
        entry[o.method] = operation;
    }

    json!({
        "openapi": "3.1.0",
        "info": { "title": "Tollgate admin API", "version": env!("CARGO_PKG_VERSION"),
            "description": "Backends, products, metrics, mapping rules, policy chains, application plans, accounts and applications; deploy to staging and promote to production. See docs/admin-api.md." },
        "paths": paths,
        "components": { "schemas": schemas, "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } } },
    })
}

/// The `(method, path)` of every documented operation, for the router check.
pub fn operations() -> impl Iterator<Item = (&'static str, &'static str)> {
    OPS.iter().map(|o| (o.method, o.path))
}
