//! The GitOps commands against a spawned `tollgate serve` in store mode: `apply`
//! (dry run, then with --promote, then again with nothing to do), `export` whose
//! `apply` is a no-op, `diff`, `promote --version`, and state that survives a restart
//! of the process; `PUT /config` with `promote` for a body over the API's usual 1 MiB,
//! and a deploy it refuses, which writes nothing.

mod support;

use std::net::SocketAddr;
use std::process::Stdio;
use support::*;
use tokio::io::{AsyncBufReadExt, BufReader};

struct Spawned {
    child: tokio::process::Child,
    admin_url: String,
    production: SocketAddr,
    token: Option<String>,
}

async fn spawn(store: &str) -> Spawned {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["serve", "--store", store])
        .args(PORT0)
        .env_remove("TOLLGATE_ADMIN_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn serve");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let (mut admin_url, mut production, mut token) = (None, None, None);
    while let Some(line) = lines.next_line().await.expect("stdout") {
        if let Some(rest) = line.strip_prefix("tollgate: production gateway") {
            production = rest.trim().trim_start_matches("http://").parse().ok();
        } else if let Some(rest) = line.split("keep it): ").nth(1) {
            token = Some(rest.trim().to_string());
        } else if let Some(rest) = line.strip_prefix("tollgate: admin API") {
            // The last line of the start-up banner.
            admin_url = rest.split_whitespace().next().map(|u| u.trim_end_matches("/api/v1").to_string());
            break;
        }
    }
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Spawned {
        child,
        admin_url: admin_url.expect("admin URL"),
        production: production.expect("production address"),
        token,
    }
}

fn tollgate(admin_url: &str, token: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(args)
        .env("TOLLGATE_ADMIN_URL", admin_url)
        .env("TOLLGATE_ADMIN_TOKEN", token)
        .output()
        .expect("run tollgate")
}

fn stdout(out: &std::process::Output) -> String {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn apply_export_diff_promote_and_restart() {
    let backend = http_backend().await;
    let dir = TempDir::new();
    let store = format!("sqlite://{}", dir.path().join("state/tollgate.db").display());
    let file = dir.path().join("tollgate.yaml");
    std::fs::write(
        &file,
        format!(
            r#"
backends: [ {{ system_name: api, private_base_url: "http://{backend}" }} ]
products:
  - system_name: shop
    staging_public_base_url: http://shop-staging.localhost
    production_public_base_url: http://shop.localhost
    backend_usages: [ {{ backend: api, path: / }} ]
    mapping_rules: [ {{ http_method: GET, pattern: /, metric: hits }} ]
    application_plans: [ {{ system_name: basic }} ]
accounts:
  - name: acme
    applications: [ {{ name: app, product: shop, plan: basic, user_key: k1 }} ]
"#
        ),
    )
    .expect("write");
    let file = file.display().to_string();

    let server = spawn(&store).await;
    let token = server.token.clone().expect("the first start prints a token");
    let url = server.admin_url.clone();

    let dry = stdout(&tollgate(&url, &token, &["apply", "-f", &file, "--dry-run"]));
    assert!(dry.contains("would create backend api") && dry.contains("would create application acme/app"), "{dry}");
    let done = stdout(&tollgate(&url, &token, &["apply", "-f", &file, "--promote"]));
    assert!(done.contains("did create product shop"), "{done}");
    assert!(
        done.contains("deployed shop staging version 1") && done.contains("promoted shop version 1 to production"),
        "{done}"
    );
    // The gateways follow the store within a moment; poll the production gateway a
    // bounded number of times (the spawned process offers no event to wait on).
    let mut status = http::StatusCode::NOT_FOUND;
    for _ in 0..200 {
        status = get(server.production, "shop.localhost", "/x?user_key=k1").await.0;
        if status == 200 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(status, 200);
    // Again: every product is already deployed and promoted; nothing new is versioned,
    // and the per-product deploy agrees that the draft is what staging runs.
    let again = stdout(&tollgate(&url, &token, &["apply", "-f", &file, "--promote"]));
    assert!(again.contains("no changes"), "{again}");
    assert!(
        again.contains("unchanged: shop staging version 1")
            && again.contains("unchanged: shop production serves version 1"),
        "{again}"
    );
    let deployed = stdout(&tollgate(&url, &token, &["deploy", "shop"]));
    assert!(deployed.contains("the draft equals staging version 1"), "{deployed}");
    let promoted = stdout(&tollgate(&url, &token, &["promote", "shop"]));
    assert!(promoted.contains("production serves version 1 already; nothing promoted"), "{promoted}");

    // A file may use what only the store holds: this product's backend is not in it.
    let part = dir.path().join("part.yaml");
    let text = r#"
products:
  - system_name: shop2
    staging_public_base_url: http://shop2-staging.localhost
    production_public_base_url: http://shop2.localhost
    backend_usages: [ { backend: api, path: / } ]
    mapping_rules: [ { http_method: GET, pattern: /, metric: hits } ]
    application_plans: [ { system_name: basic } ]
"#;
    std::fs::write(&part, text).expect("write");
    let part = part.display().to_string();
    let done = stdout(&tollgate(&url, &token, &["apply", "-f", &part, "--deploy"]));
    assert!(done.contains("did create product shop2") && done.contains("deployed shop2 staging version 1"), "{done}");
    // A reference that neither holds is the store's 422, naming its place in the file;
    // nothing is written.
    std::fs::write(&part, text.replace("backend: api", "backend: nowhere").replace("shop2", "shop3")).expect("write");
    let out = tollgate(&url, &token, &["apply", "-f", &part]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("HTTP 422") && err.contains("products[0].backend_usages[0]"),
        "{err}"
    );
    assert!(!stdout(&tollgate(&url, &token, &["export"])).contains("shop3"), "nothing of it was written");

    let exported = stdout(&tollgate(&url, &token, &["export"]));
    let export_file = dir.path().join("export.yaml");
    std::fs::write(&export_file, &exported).expect("write export");
    let again = stdout(&tollgate(&url, &token, &["apply", "-f", &export_file.display().to_string()]));
    assert!(again.contains("no changes"), "applying an export changes nothing: {again}");

    assert!(
        stdout(&tollgate(&url, &token, &["diff", "shop"]))
            .contains("production already runs the latest staging version")
    );
    let out = tollgate(&url, &token, &["promote", "shop", "--version", "7"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("HTTP 404"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = tollgate(&url, "wrong-token", &["deploy", "shop"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("HTTP 401"));

    // Restart on the same store: everything is still there, nothing is re-created.
    drop(server);
    let restarted = spawn(&store).await;
    assert!(restarted.token.is_none(), "the token is created once");
    assert_eq!(
        get(restarted.production, "shop.localhost", "/x?user_key=k1").await.0,
        200,
        "served right after the restart"
    );
    let again = stdout(&tollgate(&restarted.admin_url, &token, &["apply", "-f", &file]));
    assert!(again.contains("no changes"), "{again}");
    drop(restarted.child);
}

#[tokio::test]
async fn a_large_configuration_is_applied_and_promoted_in_one_request_or_not_at_all() {
    let backend = http_backend().await;
    let dir = TempDir::new();
    let server = store_server(&format!("sqlite://{}", dir.path().join("t.db").display())).await;
    let product = |name: &str, usages: serde_json::Value| {
        serde_json::json!({
            "system_name": name,
            "staging_public_base_url": format!("http://{name}-staging.localhost"),
            "production_public_base_url": format!("http://{name}.localhost"),
            "backend_usages": usages,
            "mapping_rules": [ { "http_method": "GET", "pattern": "/", "metric": "hits" } ],
            "application_plans": [ { "system_name": "basic" } ]
        })
    };
    let usages = serde_json::json!([ { "backend": "api", "path": "/" } ]);
    // 1.3 MB of JSON: over the admin API's 1 MiB for other bodies.
    let note = "x".repeat(600);
    let applications: Vec<serde_json::Value> = (0..2_000)
        .map(|i| {
            let product = if i % 2 == 0 { "shop" } else { "store" };
            serde_json::json!({ "name": format!("app-{i}"), "product": product, "plan": "basic",
                                "user_key": format!("k{i}"), "description": note })
        })
        .collect();
    let config = serde_json::json!({
        "backends": [ { "system_name": "api", "private_base_url": format!("http://{backend}") } ],
        "products": [ product("shop", usages.clone()), product("store", usages.clone()) ],
        "accounts": [ { "name": "acme", "applications": applications } ]
    });
    assert!(config.to_string().len() > 1 << 20);
    let (status, body) = api(&server, "PUT", "/config?promote=true", Some(config)).await;
    assert_eq!(status, http::StatusCode::OK, "{body}");
    assert_eq!(body["changes"].as_array().map(Vec::len), Some(1 + 2 + 2 + 1 + 2_000), "{body}");
    for (key, expected) in [("deployed", 1), ("promoted", 1)] {
        let listed = body[key].as_array().cloned().unwrap_or_default();
        let seen: Vec<(&str, i64, bool)> = listed
            .iter()
            .map(|v| (v["product"].as_str().unwrap_or(""), v["version"].as_i64().unwrap_or(0), v["unchanged"] == true))
            .collect();
        assert_eq!(seen, [("shop", expected, false), ("store", expected, false)], "{key}: {body}");
    }
    server.wait_applied().await;
    assert_eq!(get(server.production, "store.localhost", "/x?user_key=k1999").await.0, 200);
    assert_eq!(get(server.staging, "shop-staging.localhost", "/x?user_key=k0").await.0, 200);

    // A product that cannot be deployed (no backend usage: a draft may lack one, a
    // deployed product may not) refuses the whole request: neither the new product nor
    // the other changes of the file are written.
    let config = serde_json::json!({
        "backends": [ { "system_name": "api", "private_base_url": format!("http://{backend}") } ],
        "products": [ product("shop", usages.clone()), product("draft", serde_json::json!([])) ],
        "accounts": [ { "name": "other", "applications": [
            { "name": "a", "product": "shop", "plan": "basic", "user_key": "new-key" } ] } ]
    });
    let (status, body) = api(&server, "PUT", "/config?deploy=true", Some(config.clone())).await;
    assert_eq!(status, http::StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body["error"]["field"].as_str().unwrap_or("").starts_with("products[1]"), "{body}");
    let (_, exported) = api(&server, "GET", "/config", None).await;
    let products: Vec<&str> =
        exported["products"].as_array().into_iter().flatten().filter_map(|p| p["system_name"].as_str()).collect();
    assert_eq!(products, ["shop", "store"]);
    assert_eq!(exported["accounts"].as_array().map(Vec::len), Some(1), "nothing of the refused file: {exported}");
    // Without deploying, the same file is a valid set of drafts.
    let (status, body) = api(&server, "PUT", "/config", Some(config.clone())).await;
    assert_eq!(status, http::StatusCode::OK, "{body}");
    assert!(body.get("deployed").is_none(), "{body}");
    // A dry run says so too, and writes nothing either.
    let (status, body) = api(&server, "PUT", "/config?promote=true&dry_run=true", Some(config.clone())).await;
    assert_eq!(status, http::StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    // Errors name positions in the body, not in the store merged with it.
    let mut wrong = config.clone();
    wrong["accounts"][0]["applications"][0]["plan"] = "nope".into();
    let (status, body) = api(&server, "PUT", "/config", Some(wrong)).await;
    assert_eq!(status, http::StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["field"], "accounts[0].applications[0].plan", "{body}");
    // A name given twice would overwrite itself: refused, naming the second.
    let mut twice = config.clone();
    twice["products"][1] = twice["products"][0].clone();
    let (status, body) = api(&server, "PUT", "/config", Some(twice)).await;
    assert_eq!(status, http::StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["field"], "products[1].system_name", "{body}");
    // Two applies at once, over the same products: one after the other, never a 500.
    let mut first = config.clone();
    first["products"][1] = product("draft", usages.clone());
    let mut second = first.clone();
    second["products"][0]["mapping_rules"][0]["pattern"] = "/other".into();
    let (a, b) = tokio::join!(
        api(&server, "PUT", "/config?promote=true", Some(first)),
        api(&server, "PUT", "/config?promote=true", Some(second))
    );
    for (status, body) in [a, b] {
        assert!(matches!(status.as_u16(), 200 | 409), "{status}: {body}");
    }
    // `store` moves to a new production host in its draft only: production still serves
    // it on store.localhost, and a new product may not take that host over — neither by
    // an apply that promotes, nor by the per-product promote.
    let mut moved = product("store", usages.clone());
    moved["production_public_base_url"] = "http://store-new.localhost".into();
    let mut thief = product("thief", usages.clone());
    thief["production_public_base_url"] = "http://store.localhost".into();
    let backends = serde_json::json!([ { "system_name": "api", "private_base_url": format!("http://{backend}") } ]);
    let file = serde_json::json!({ "backends": backends, "products": [ moved ] });
    assert_eq!(api(&server, "PUT", "/config", Some(file)).await.0, http::StatusCode::OK);
    let file = serde_json::json!({ "backends": backends, "products": [ thief ] });
    let (status, body) = api(&server, "PUT", "/config?promote=true", Some(file.clone())).await;
    assert_eq!(status, http::StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("`store.localhost` is the production host of product `store`"),
        "{body}"
    );
    let (status, body) = api(&server, "PUT", "/config?deploy=true", Some(file)).await;
    assert_eq!(status, http::StatusCode::OK, "staging hosts differ: {body}");
    let (status, body) = api(&server, "POST", "/products/thief/promote", None).await;
    assert_eq!(status, http::StatusCode::CONFLICT, "{body}");
    server.wait_applied().await;
    assert_eq!(get(server.production, "store.localhost", "/x?user_key=k1999").await.0, 200, "still `store`'s");
    // A misspelt option is refused, not ignored.
    let (status, body) = api(&server, "PUT", "/config?promte=true", Some(serde_json::json!({}))).await;
    assert_eq!(status, http::StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test]
async fn usage_prints_a_table_and_csv_and_the_api_answers_csv() {
    let backend = http_backend().await;
    let dir = TempDir::new();
    let server = store_server(&format!("sqlite://{}", dir.path().join("t.db").display())).await;
    let config = serde_json::json!({
        "backends": [ { "system_name": "api", "private_base_url": format!("http://{backend}") } ],
        "products": [ {
            "system_name": "shop",
            "staging_public_base_url": "http://shop-staging.localhost",
            "production_public_base_url": "http://shop.localhost",
            "backend_usages": [ { "backend": "api", "path": "/" } ],
            "mapping_rules": [ { "http_method": "GET", "pattern": "/", "metric": "hits" } ],
            "application_plans": [ { "system_name": "basic" } ]
        } ],
        "accounts": [ { "name": "acme", "applications": [ { "name": "app", "product": "shop", "plan": "basic", "user_key": "k1" } ] } ]
    });
    assert_eq!(api(&server, "PUT", "/config", Some(config)).await.0, http::StatusCode::OK);
    assert!(api(&server, "POST", "/products/shop/deploy", None).await.0.is_success());
    server.wait_applied().await;
    for _ in 0..3 {
        assert_eq!(get(server.staging, "shop-staging.localhost", "/x?user_key=k1").await.0, 200);
    }
    server.flush_analytics().await.expect("flush");

    // The API: CSV by parameter or by Accept.
    let token = server.admin_token.clone().expect("token");
    let auth = format!("Bearer {token}");
    let (status, headers, csv) = request(
        server.admin,
        "localhost",
        "GET",
        "/api/v1/analytics/usage?product=shop&granularity=minute&format=csv",
        full(""),
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(status, http::StatusCode::OK, "{csv}");
    assert_eq!(headers["content-type"], "text/csv; charset=utf-8");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "at,unix,metric,value");
    assert!(lines[1..].iter().all(|l| l.split(',').count() == 4 && l.contains(",hits,")), "{csv}");
    let sum: i64 =
        lines[1..].iter().map(|l| l.rsplit(',').next().and_then(|v| v.parse::<i64>().ok()).expect("value")).sum();
    assert_eq!(sum, 3);
    let (_, headers, _) = request(
        server.admin,
        "localhost",
        "GET",
        "/api/v1/analytics/usage?product=shop",
        full(""),
        &[("authorization", &auth), ("accept", "text/csv")],
    )
    .await;
    assert_eq!(headers["content-type"], "text/csv; charset=utf-8");
    let (status, body) = api(&server, "GET", "/analytics/usage?since=-5", None).await;
    assert_eq!((status, body["error"]["field"].as_str()), (http::StatusCode::BAD_REQUEST, Some("since")), "{body}");

    // The CLI.
    let url = format!("http://{}", server.admin);
    let run = |args: Vec<&'static str>| {
        let (url, token) = (url.clone(), token.clone());
        async move {
            let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
                .args(args)
                .args(["--admin-url", &url])
                .env("TOLLGATE_ADMIN_TOKEN", &token)
                .output()
                .await
                .expect("run");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
    };
    let table = run(vec!["usage", "shop", "--since", "2h", "--granularity", "minute"]).await;
    assert!(table.starts_with("shop · hits · per minute (UTC)"), "{table}");
    let total = table.lines().last().expect("total line");
    assert!(total.starts_with("total") && total.trim_end().ends_with(" 3"), "{table}");
    let csv = run(vec!["usage", "shop", "--application", "app", "--csv"]).await;
    assert!(csv.starts_with("at,unix,metric,value\n"), "{csv}");
    server.shutdown().await;
}
