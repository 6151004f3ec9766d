//! The 3scale story through the admin API alone, from an empty store, on SQLite and on
//! PostgreSQL: backend (wss with a self-signed certificate), product, method, mapping
//! rule, websocket policy, plan with limits, account, application; staging works and
//! production answers 404 until promote; rollback; suspension; an open WebSocket that
//! survives three deploys; and the API's error paths.

mod support;

use http::StatusCode;
use serde_json::json;
use support::*;

const STAGING: &str = "chat-staging.localhost";
const PRODUCTION: &str = "chat.localhost";

/// Flushes analytics and reads the application's `connect` total.
async fn connects(server: &tollgate::serve::Server) -> i64 {
    server.flush_analytics().await.expect("flush");
    let (status, v) =
        api(server, "GET", "/analytics/usage?application=acme-chat&metric=connect&granularity=minute", None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v["total"].as_i64().expect("total")
}

async fn story(db: &str, url: &str, backend: &NodeBackend) {
    let server = store_server(url).await;
    let ok = |(status, body): (StatusCode, serde_json::Value), want: StatusCode, what: &str| {
        assert_eq!(status, want, "{db}: {what}: {body}");
        body
    };

    ok(
        api(
            &server,
            "POST",
            "/backends",
            Some(
                json!({ "system_name": "echo", "private_base_url": backend.url(), "tls": { "ca_file": backend.cert } }),
            ),
        )
        .await,
        StatusCode::CREATED,
        "backend",
    );
    let product = ok(
        api(
            &server,
            "POST",
            "/products",
            Some(json!({
                "system_name": "chat",
                "staging_public_base_url": format!("http://{STAGING}:8081"),
                "production_public_base_url": format!("http://{PRODUCTION}:8080"),
            })),
        )
        .await,
        StatusCode::CREATED,
        "product (a draft without backends)",
    );
    assert!(product["id"].as_i64().is_some());
    ok(
        api(&server, "POST", "/products/chat/backend_usages", Some(json!({ "backend": "echo", "path": "/" }))).await,
        StatusCode::CREATED,
        "usage",
    );
    ok(
        api(&server, "POST", "/products/chat/methods", Some(json!({ "system_name": "connect" }))).await,
        StatusCode::CREATED,
        "method",
    );
    let rule = ok(
        api(
            &server,
            "POST",
            "/products/chat/mapping_rules",
            Some(json!({ "http_method": "GET", "pattern": "/", "metric": "connect" })),
        )
        .await,
        StatusCode::CREATED,
        "rule",
    );
    assert_eq!(rule["delta"], 1);
    ok(
        api(
            &server,
            "PUT",
            "/products/chat/policy_chain",
            Some(json!([{ "name": "websocket" }, { "name": "tollgate" }])),
        )
        .await,
        StatusCode::OK,
        "chain",
    );
    ok(
        api(
            &server,
            "POST",
            "/products/chat/application_plans",
            Some(
                json!({ "system_name": "basic", "limits": [ { "metric": "hits", "period": "minute", "value": 100 } ] }),
            ),
        )
        .await,
        StatusCode::CREATED,
        "plan",
    );
    ok(api(&server, "POST", "/accounts", Some(json!({ "name": "acme" }))).await, StatusCode::CREATED, "account");
    let app = ok(
        api(
            &server,
            "POST",
            "/accounts/acme/applications",
            Some(json!({ "name": "acme-chat", "product": "chat", "plan": "basic" })),
        )
        .await,
        StatusCode::CREATED,
        "application",
    );
    let key = app["user_key"].as_str().expect("a user_key is generated").to_string();
    let path = format!("/?user_key={key}");

    // Nothing is deployed yet: both gateways answer 404.
    server.wait_applied().await;
    assert_eq!(ws_refused(server.staging, STAGING, &path).await.0, 404, "{db}");

    let v1 = ok(api(&server, "POST", "/products/chat/deploy", None).await, StatusCode::CREATED, "deploy");
    assert_eq!(v1["version"], 1);
    server.wait_applied().await;
    let mut open = ws(server.staging, STAGING, &path).await.expect("staging after deploy");
    assert_eq!(ask(&mut open, "hello").await, "reply from server : hello");
    assert_eq!(ws_refused(server.production, PRODUCTION, &path).await.0, 404, "{db}: production waits for promote");

    ok(api(&server, "POST", "/products/chat/promote", Some(json!({}))).await, StatusCode::CREATED, "promote");
    server.wait_applied().await;
    let mut prod = ws(server.production, PRODUCTION, &path).await.expect("production after promote");
    assert_eq!(ask(&mut prod, "hello").await, "reply from server : hello");

    // An unchanged draft is not a new version.
    let again = ok(api(&server, "POST", "/products/chat/deploy", Some(json!({}))).await, StatusCode::OK, "redeploy");
    assert_eq!((again["version"].clone(), again["unchanged"].clone()), (json!(1), json!(true)));

    // Version 2 maps /v2 only; three deploys in all while `open` stays open.
    ok(
        api(
            &server,
            "PUT",
            &format!("/products/chat/mapping_rules/{}", rule["id"]),
            Some(json!({ "http_method": "GET", "pattern": "/v2", "metric": "connect" })),
        )
        .await,
        StatusCode::OK,
        "edit rule",
    );
    assert_eq!(
        ok(api(&server, "POST", "/products/chat/deploy", None).await, StatusCode::CREATED, "deploy 2")["version"],
        2
    );
    ok(
        api(&server, "POST", "/products/chat/methods", Some(json!({ "system_name": "extra" }))).await,
        StatusCode::CREATED,
        "method 2",
    );
    assert_eq!(
        ok(api(&server, "POST", "/products/chat/deploy", None).await, StatusCode::CREATED, "deploy 3")["version"],
        3
    );
    server.wait_applied().await;
    assert_eq!(
        ask(&mut open, "still here").await,
        "reply from server : still here",
        "{db}: open WebSocket across deploys"
    );
    assert_eq!(ws_refused(server.staging, STAGING, &path).await.0, 404, "{db}: `/` is no longer mapped on staging");
    assert!(ws(server.staging, STAGING, &format!("/v2?user_key={key}")).await.is_ok());

    // Promote 3, then roll back to 1.
    ok(api(&server, "POST", "/products/chat/promote", None).await, StatusCode::CREATED, "promote 3");
    server.wait_applied().await;
    assert_eq!(ws_refused(server.production, PRODUCTION, &path).await.0, 404);
    ok(
        api(&server, "POST", "/products/chat/promote", Some(json!({ "version": 1 }))).await,
        StatusCode::CREATED,
        "rollback",
    );
    server.wait_applied().await;
    assert!(ws(server.production, PRODUCTION, &path).await.is_ok(), "{db}: version 1 is back on production");
    // Promoting what production serves already is no new entry in its history.
    let again = ok(
        api(&server, "POST", "/products/chat/promote", Some(json!({ "version": 1 }))).await,
        StatusCode::OK,
        "promote again",
    );
    assert_eq!((&again["version"], &again["unchanged"]), (&json!(1), &json!(true)), "{db}");
    let history = ok(api(&server, "GET", "/products/chat/configs/production", None).await, StatusCode::OK, "history");
    let versions: Vec<i64> = history.as_array().expect("list").iter().filter_map(|v| v["version"].as_i64()).collect();
    assert_eq!(versions, vec![1, 3, 1]);
    let one = ok(api(&server, "GET", "/products/chat/configs/staging/1", None).await, StatusCode::OK, "version 1");
    assert_eq!(one["content"]["product"]["mapping_rules"][0]["pattern"], "/");

    // Suspension applies at once, in both environments.
    ok(api(&server, "POST", "/applications/acme-chat/suspend", None).await, StatusCode::OK, "suspend");
    server.wait_applied().await;
    // Its open WebSockets close, in both environments.
    for socket in [&mut open, &mut prod] {
        match ws_message(socket).await {
            tokio_tungstenite::tungstenite::Message::Close(Some(f)) => {
                assert_eq!((u16::from(f.code), f.reason.as_str()), (1008, "application suspended"), "{db}")
            }
            other => panic!("{db}: expected close 1008, got {other:?}"),
        }
    }
    assert_eq!(ws_refused(server.production, PRODUCTION, &path).await.0, 403, "{db}");
    ok(api(&server, "POST", "/applications/acme-chat/resume", Some(json!({}))).await, StatusCode::OK, "resume");
    server.wait_applied().await;
    assert!(ws(server.production, PRODUCTION, &path).await.is_ok());

    // Analytics: usage is recorded per application and metric.
    let before = connects(&server).await;
    assert!(before >= 3, "{db}: connects so far: {before}");
    for _ in 0..2 {
        drop(ws(server.production, PRODUCTION, &path).await.expect("connect"));
    }
    assert_eq!(connects(&server).await, before + 2, "{db}: two more connects, counted on `connect`");

    // Export, then apply the export: nothing to do.
    let exported = ok(api(&server, "GET", "/config", None).await, StatusCode::OK, "export");
    let applied = ok(api(&server, "PUT", "/config", Some(exported)).await, StatusCode::OK, "apply export");
    assert_eq!(applied["changes"], json!([]), "{db}");

    // The audit log recorded who changed what.
    let audit = ok(api(&server, "GET", "/audit?limit=3", None).await, StatusCode::OK, "audit");
    assert_eq!(audit[0]["path"], "/api/v1/config");
    assert_eq!(audit[0]["token"], "initial");
    assert_eq!(audit[1]["path"], "/api/v1/applications/acme-chat/resume");
    assert_eq!(
        (audit[1]["before"]["state"].clone(), audit[1]["after"]["state"].clone()),
        (json!("suspended"), json!("live")),
        "{db}"
    );
    // Open WebSockets would hold the shutdown for its drain timeout.
    drop((open, prod));
    server.shutdown().await;
}

#[tokio::test]
async fn the_3scale_story_through_the_api_on_sqlite_and_postgres() {
    let backend = node_backend().await;
    let dir = TempDir::new();
    for (db, url) in store_urls(&dir).await {
        story(db, &url, &backend).await;
    }
}

#[tokio::test]
async fn errors_are_json_with_the_right_status() {
    let dir = TempDir::new();
    for (db, url) in store_urls(&dir).await {
        let server = store_server(&url).await;
        let (status, body) = api_as(&server, "wrong", "GET", "/backends", None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{db}");
        assert_eq!(body["error"]["code"], "unauthorized");

        let backend = json!({ "system_name": "echo", "private_base_url": "http://127.0.0.1:9" });
        assert_eq!(api(&server, "POST", "/backends", Some(backend.clone())).await.0, StatusCode::CREATED);
        let (status, body) = api(&server, "POST", "/backends", Some(backend)).await;
        assert_eq!((status, body["error"]["code"].clone()), (StatusCode::CONFLICT, json!("conflict")), "{db}: {body}");

        let (status, body) =
            api(&server, "POST", "/backends", Some(json!({ "system_name": "x", "private_base_ulr": "http://a" })))
                .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{db}: {body}");

        // A resource is an object: serde would read one from an array of its fields, so
        // `[]` passed as an empty configuration (and wrote nothing, silently).
        for (method, path, body) in [
            ("PUT", "/config", json!([])),
            ("POST", "/backends", json!(["z", "http://a"])),
            ("PUT", "/config", json!(7)),
        ] {
            let (status, answer) = api(&server, method, path, Some(body)).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{db}: {method} {path}: {answer}");
            assert!(answer["error"]["message"].as_str().unwrap_or("").contains("must be a JSON object"), "{answer}");
        }
        // Not JSON at all: the parser's error, not a guess at its kind from its first byte.
        let auth = format!("Bearer {}", server.admin_token.clone().expect("token"));
        for text in ["not json", "{\"a\":"] {
            let (status, _, answer) = request(
                server.admin,
                "localhost",
                "PUT",
                "/api/v1/config",
                full(text.to_string()),
                &[("authorization", auth.as_str()), ("content-type", "application/json")],
            )
            .await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{db}: {answer}");
            assert!(!answer.contains("must be a JSON"), "{db}: {text}: {answer}");
        }

        let (status, body) =
            api(&server, "POST", "/backends", Some(json!({ "system_name": "y", "private_base_url": "ftp://a" }))).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{db}: {body}");
        assert_eq!(body["error"]["field"], "private_base_url");

        assert_eq!(api(&server, "GET", "/products/nope", None).await.0, StatusCode::NOT_FOUND);
        let p = json!({ "system_name": "p", "staging_public_base_url": "http://p-s.localhost", "production_public_base_url": "http://p.localhost" });
        assert_eq!(api(&server, "POST", "/products", Some(p)).await.0, StatusCode::CREATED);
        let (status, body) = api(
            &server,
            "POST",
            "/products/p/mapping_rules",
            Some(json!({ "http_method": "GET", "pattern": "no-slash", "metric": "hits" })),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{db}: {body}");
        assert!(body["error"]["field"].as_str().unwrap_or("").ends_with("pattern"), "{body}");

        assert_eq!(
            api(&server, "POST", "/products/p/methods", Some(json!({ "system_name": "m" }))).await.0,
            StatusCode::CREATED
        );
        assert_eq!(
            api(
                &server,
                "POST",
                "/products/p/mapping_rules",
                Some(json!({ "http_method": "GET", "pattern": "/", "metric": "m" }))
            )
            .await
            .0,
            StatusCode::CREATED
        );
        let (status, body) = api(&server, "DELETE", "/products/p/methods/m", None).await;
        assert_eq!(status, StatusCode::CONFLICT, "{db}: deleting a method a rule uses: {body}");

        // Deploying a product without a backend usage is refused with the reason.
        let (status, body) = api(&server, "POST", "/products/p/deploy", None).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{db}: {body}");
        assert_eq!(body["error"]["field"], "backend_usages");
        let (status, _) = api(&server, "POST", "/products/p/promote", None).await;
        assert_eq!(status, StatusCode::CONFLICT, "nothing deployed yet");

        let (status, body) =
            api(&server, "PUT", "/products/p/policy_chain", Some(json!([{ "name": "websockets" }]))).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{db}: {body}");
        assert!(body["error"]["message"].as_str().unwrap_or("").contains("did you mean `websocket`"), "{body}");
        let (status, body) = api(&server, "PUT", "/products/p/policy_chain", Some(json!({}))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{db}: {body}");
        assert_eq!(body["error"]["message"], "the body must be a JSON array (`[…]`), not an object", "{db}");

        // A read-only token reads, and may change nothing.
        let (status, made) =
            api(&server, "POST", "/tokens", Some(json!({ "name": "viewer", "read_only": true }))).await;
        assert_eq!(status, StatusCode::CREATED, "{db}: {made}");
        let viewer = made["token"].as_str().expect("token shown once").to_string();
        assert_eq!(api_as(&server, &viewer, "GET", "/products", None).await.0, StatusCode::OK);
        let (status, body) = api_as(&server, &viewer, "POST", "/accounts", Some(json!({ "name": "x" }))).await;
        assert_eq!((status, body["error"]["code"].clone()), (StatusCode::FORBIDDEN, json!("read_only")));
        let tokens = api(&server, "GET", "/tokens", None).await.1;
        assert!(tokens.to_string().contains("viewer") && !tokens.to_string().contains(&viewer), "{tokens}");

        let policies = api(&server, "GET", "/policies", None).await.1;
        let names: Vec<&str> = policies.as_array().expect("list").iter().filter_map(|p| p["name"].as_str()).collect();
        for expected in [
            "tollgate",
            "websocket",
            "headers",
            "cors",
            "ip_check",
            "url_rewriting",
            "maintenance_mode",
            "default_credentials",
            "logging",
            "echo",
        ] {
            assert!(names.contains(&expected), "{expected} missing from {names:?}");
        }
        for p in policies.as_array().expect("list") {
            assert!(p["schema"]["properties"]["condition"].is_object(), "{p}");
        }
        server.shutdown().await;
    }
}

#[tokio::test]
async fn every_documented_operation_is_routed_and_answers_json() {
    let dir = TempDir::new();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let server = store_server(&url).await;
    let token = server.admin_token.clone().expect("token");
    let (status, doc) = api(&server, "GET", "/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    for (method, path) in tollgate_admin::openapi::operations() {
        let concrete =
            path.split('/').map(|seg| if seg.starts_with('{') { "nope" } else { seg }).collect::<Vec<_>>().join("/");
        assert!(doc["paths"][format!("/api/v1{path}")][method].is_object(), "{method} {path} is documented");
        let auth = format!("Bearer {token}");
        let (status, headers, body) = request(
            server.admin,
            "localhost",
            &method.to_uppercase(),
            &format!("/api/v1{concrete}"),
            boxed(http_body_util::Full::new(bytes::Bytes::from("{}"))),
            &[("authorization", auth.as_str()), ("content-type", "application/json")],
        )
        .await;
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path} is routed");
        if status != StatusCode::NO_CONTENT {
            assert_eq!(headers["content-type"], "application/json", "{method} {path}: {status} {body}");
        }
    }
    server.shutdown().await;
}

#[tokio::test]
async fn every_resource_on_both_stores_and_concurrent_edits() {
    let dir = TempDir::new();
    for (db, url) in store_urls(&dir).await {
        let server = store_server(&url).await;
        let call = |m: &'static str, p: String, b: Option<serde_json::Value>| {
            let server = &server;
            async move { api(server, m, &p, b).await }
        };
        let expect = |(status, body): (StatusCode, serde_json::Value), want: StatusCode| {
            assert_eq!(status, want, "{db}: {body}");
            body
        };
        expect(
            call(
                "POST",
                "/backends".into(),
                Some(json!({ "system_name": "api", "private_base_url": "http://127.0.0.1:9" })),
            )
            .await,
            StatusCode::CREATED,
        );
        let b = expect(
            call(
                "PUT",
                "/backends/api".into(),
                Some(json!({ "system_name": "api", "private_base_url": "http://127.0.0.1:10/v1" })),
            )
            .await,
            StatusCode::OK,
        );
        assert_eq!(b["private_base_url"], "http://127.0.0.1:10/v1");
        let renamed = call(
            "PUT",
            "/backends/api".into(),
            Some(json!({ "system_name": "other", "private_base_url": "http://a" })),
        )
        .await;
        assert_eq!(renamed.0, StatusCode::UNPROCESSABLE_ENTITY, "system_name is immutable");
        let p = json!({ "system_name": "shop", "staging_public_base_url": "http://s.localhost", "production_public_base_url": "http://p.localhost",
            "backend_usages": [ { "backend": "api", "path": "/" } ], "application_plans": [ { "system_name": "basic" } ] });
        let product = expect(call("POST", "/products".into(), Some(p)).await, StatusCode::CREATED);
        assert_eq!(product["application_plans"][0]["system_name"], "basic");
        let pid = product["id"].as_i64().expect("id");
        // The product by id and by name.
        assert_eq!(expect(call("GET", format!("/products/{pid}"), None).await, StatusCode::OK)["system_name"], "shop");
        assert_eq!(call("DELETE", "/backends/api".into(), None).await.0, StatusCode::CONFLICT, "used by shop");

        // Twenty mapping rules added concurrently: none is lost.
        let adds: Vec<_> = (0..20)
            .map(|i| {
                call(
                    "POST",
                    "/products/shop/mapping_rules".into(),
                    Some(json!({ "http_method": "GET", "pattern": format!("/r{i}"), "metric": "hits" })),
                )
            })
            .collect();
        for r in futures_util::future::join_all(adds).await {
            assert_eq!(r.0, StatusCode::CREATED, "{db}: {}", r.1);
        }
        let rules = expect(call("GET", "/products/shop/mapping_rules".into(), None).await, StatusCode::OK);
        assert_eq!(rules.as_array().map(Vec::len), Some(20), "{db}");
        let page =
            expect(call("GET", "/products/shop/mapping_rules?page=2&per_page=15".into(), None).await, StatusCode::OK);
        assert_eq!(page.as_array().map(Vec::len), Some(5), "pagination");
        // Rules run in order: put one first, then move it last.
        let front = expect(
            call(
                "POST",
                "/products/shop/mapping_rules?position=1".into(),
                Some(json!({ "http_method": "POST", "pattern": "/first", "metric": "hits" })),
            )
            .await,
            StatusCode::CREATED,
        );
        assert_eq!(front["position"], 1);
        let moved = expect(
            call(
                "PUT",
                format!("/products/shop/mapping_rules/{}?position=99", front["id"]),
                Some(json!({ "http_method": "POST", "pattern": "/last", "metric": "hits" })),
            )
            .await,
            StatusCode::OK,
        );
        assert_eq!((moved["position"].clone(), moved["pattern"].clone()), (json!(21), json!("/last")));
        assert_eq!(
            call("DELETE", format!("/products/shop/mapping_rules/{}", front["id"]), None).await.0,
            StatusCode::NO_CONTENT
        );
        let first = rules[0]["id"].clone();
        assert_eq!(
            call("DELETE", format!("/products/shop/mapping_rules/{first}"), None).await.0,
            StatusCode::NO_CONTENT
        );
        assert_eq!(call("GET", format!("/products/shop/mapping_rules/{first}"), None).await.0, StatusCode::NOT_FOUND);

        // Metrics by name; limits by id.
        expect(
            call("POST", "/products/shop/metrics".into(), Some(json!({ "system_name": "bytes", "unit": "byte" })))
                .await,
            StatusCode::CREATED,
        );
        assert_eq!(
            expect(call("GET", "/products/shop/metrics/bytes".into(), None).await, StatusCode::OK)["unit"],
            "byte"
        );
        assert_eq!(
            call("POST", "/products/shop/metrics".into(), Some(json!({ "system_name": "bytes" }))).await.0,
            StatusCode::CONFLICT
        );
        let limit = expect(
            call(
                "POST",
                "/products/shop/application_plans/basic/limits".into(),
                Some(json!({ "metric": "bytes", "period": "day", "value": 10 })),
            )
            .await,
            StatusCode::CREATED,
        );
        let lid = limit["id"].clone();
        assert_eq!(
            call("DELETE", "/products/shop/metrics/bytes".into(), None).await.0,
            StatusCode::CONFLICT,
            "a limit uses it"
        );
        let changed = expect(
            call(
                "PUT",
                format!("/products/shop/application_plans/basic/limits/{lid}"),
                Some(json!({ "metric": "bytes", "period": "day", "value": 20 })),
            )
            .await,
            StatusCode::OK,
        );
        assert_eq!(changed["value"], 20);
        let bad = call(
            "POST",
            "/products/shop/application_plans/basic/limits".into(),
            Some(json!({ "metric": "nope", "period": "day", "value": 1 })),
        )
        .await;
        assert_eq!(bad.0, StatusCode::UNPROCESSABLE_ENTITY, "{db}: {}", bad.1);
        assert_eq!(bad.1["error"]["field"], "limits[1].metric");
        assert_eq!(
            call("DELETE", format!("/products/shop/application_plans/basic/limits/{lid}"), None).await.0,
            StatusCode::NO_CONTENT
        );
        assert_eq!(call("DELETE", "/products/shop/metrics/bytes".into(), None).await.0, StatusCode::NO_CONTENT);

        // Applications: plans, keys.
        expect(
            call("POST", "/products/shop/application_plans".into(), Some(json!({ "system_name": "gold" }))).await,
            StatusCode::CREATED,
        );
        expect(call("POST", "/accounts".into(), Some(json!({ "name": "acme" }))).await, StatusCode::CREATED);
        let app = expect(
            call(
                "POST",
                "/accounts/acme/applications".into(),
                Some(json!({ "name": "web", "product": "shop", "plan": "basic", "user_key": "k1" })),
            )
            .await,
            StatusCode::CREATED,
        );
        assert_eq!(app["user_key"], "k1");
        assert_eq!(
            call("DELETE", "/products/shop/application_plans/basic".into(), None).await.0,
            StatusCode::CONFLICT,
            "web is on basic"
        );
        let moved = expect(
            call("POST", "/applications/web/change_plan".into(), Some(json!({ "plan": "gold" }))).await,
            StatusCode::OK,
        );
        assert_eq!(moved["plan"], "gold");
        assert_eq!(
            call("POST", "/applications/web/change_plan".into(), Some(json!({ "plan": "platinum" }))).await.0,
            StatusCode::UNPROCESSABLE_ENTITY
        );
        let rekeyed = expect(call("POST", "/applications/web/keys".into(), None).await, StatusCode::CREATED);
        assert_ne!(rekeyed["user_key"], "k1", "a new user_key");
        assert_eq!(
            call("DELETE", "/products/shop/application_plans/basic".into(), None).await.0,
            StatusCode::NO_CONTENT
        );
        assert_eq!(
            call("DELETE", "/products/shop".into(), None).await.0,
            StatusCode::CONFLICT,
            "an application uses it"
        );
        assert_eq!(call("DELETE", "/applications/web".into(), None).await.0, StatusCode::NO_CONTENT);
        assert_eq!(call("DELETE", "/accounts/acme".into(), None).await.0, StatusCode::NO_CONTENT);
        assert_eq!(call("DELETE", "/products/shop".into(), None).await.0, StatusCode::NO_CONTENT);
        assert_eq!(call("DELETE", "/backends/api".into(), None).await.0, StatusCode::NO_CONTENT);
        assert_eq!(
            expect(call("GET", "/config".into(), None).await, StatusCode::OK),
            json!({ "backends": [], "products": [], "accounts": [] })
        );
        server.shutdown().await;
    }
}
