//! The admin console over HTTP: every console route sends a visitor without a session
//! to the login page; login takes an admin token and sets a strict, HttpOnly cookie;
//! forms need their CSRF token and the console's own origin; a form's mistake comes
//! back with the API's message next to the field it names; what a form saves is what
//! the admin API then serves. (The browser story is in console_browser.rs.)

mod support;

use http::StatusCode;
use std::net::SocketAddr;
use support::*;

/// Every kind of console route (resources need not exist: the login comes first).
const ROUTES: [&str; 20] = [
    "/",
    "/backends",
    "/backends/new",
    "/backends/echo",
    "/products",
    "/products/new",
    "/products/chat",
    "/products/chat/backend_usages",
    "/products/chat/metrics",
    "/products/chat/mapping_rules",
    "/products/chat/mapping_rules/1",
    "/products/chat/policies",
    "/products/chat/policies/0",
    "/products/chat/plans/basic",
    "/products/chat/integration",
    "/products/chat/try",
    "/accounts/acme",
    "/applications/1",
    "/analytics",
    "/check/pattern?pattern=/",
];

fn form_body(fields: &[(&str, &str)]) -> BoxBody {
    let encoded: Vec<String> = fields.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect();
    full(encoded.join("&"))
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn post(
    addr: SocketAddr,
    path: &str,
    cookie: Option<&str>,
    fields: &[(&str, &str)],
    extra: &[(&str, &str)],
) -> (StatusCode, http::HeaderMap, String) {
    let mut headers = vec![("content-type", "application/x-www-form-urlencoded")];
    if let Some(c) = cookie {
        headers.push(("cookie", c));
    }
    headers.extend_from_slice(extra);
    request(addr, "localhost", "POST", path, form_body(fields), &headers).await
}

async fn get_with(addr: SocketAddr, path: &str, cookie: &str) -> (StatusCode, http::HeaderMap, String) {
    request(addr, "localhost", "GET", path, full(""), &[("cookie", cookie)]).await
}

fn location(headers: &http::HeaderMap) -> &str {
    headers.get("location").and_then(|v| v.to_str().ok()).unwrap_or_default()
}

/// The CSRF token a console page carries.
fn csrf(page: &str) -> String {
    let at = page.find(r#"name="csrf" content=""#).expect("csrf meta") + r#"name="csrf" content=""#.len();
    page[at..].split('"').next().expect("token").to_string()
}

#[tokio::test]
async fn the_console_needs_a_login_and_refuses_forged_forms() {
    let dir = TempDir::new();
    let url = format!("sqlite://{}", dir.path().join("tollgate.db").display());
    let server = store_server(&url).await;
    let admin = server.admin;

    for route in ROUTES {
        let (status, headers, _) = get(admin, "localhost", route).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{route}");
        assert!(location(&headers).starts_with("/login"), "{route}: {}", location(&headers));
        let (status, headers, _) = post(admin, route, None, &[("system_name", "x")], &[]).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "POST {route}");
        assert!(location(&headers).starts_with("/login"), "POST {route}");
    }
    let (_, headers, _) = get(admin, "localhost", "/backends/new").await;
    assert_eq!(location(&headers), "/login?next=%2Fbackends%2Fnew", "brought back after login");

    // A wrong token is refused; the right one opens a session with a strict cookie.
    let (status, _, page) = post(admin, "/login", None, &[("token", "nope"), ("next", "/")], &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(page.contains("not an admin token"), "{page}");
    let token = server.admin_token.clone().expect("token");
    // Another site cannot log a browser in (login CSRF).
    for cross in [("origin", "http://evil.example"), ("sec-fetch-site", "cross-site")] {
        let (status, headers, _) = post(admin, "/login", None, &[("token", &token), ("next", "/")], &[cross]).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{cross:?}");
        assert!(headers.get("set-cookie").is_none());
    }
    // Redirects stay on the console, whatever a browser would make of the text.
    for next in ["/\t/evil.example", "/\\evil.example", "https://evil.example/", "/ /evil.example"] {
        let (status, headers, _) = post(admin, "/login", None, &[("token", &token), ("next", next)], &[]).await;
        assert_eq!((status, location(&headers)), (StatusCode::SEE_OTHER, "/"), "{next:?}");
    }
    // Through a TLS-terminating proxy on this machine, the cookie is `Secure`.
    let (_, headers, _) =
        post(admin, "/login", None, &[("token", &token), ("next", "/")], &[("x-forwarded-proto", "https")]).await;
    let secure = headers.get("set-cookie").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    assert!(secure.contains("; Secure"), "{secure}");
    let (status, headers, _) =
        post(admin, "/login", None, &[("token", &token), ("next", "//evil.example/")], &[]).await;
    assert_eq!((status, location(&headers)), (StatusCode::SEE_OTHER, "/"), "no open redirect");
    let set_cookie = headers.get("set-cookie").and_then(|v| v.to_str().ok()).expect("set-cookie").to_string();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set_cookie.contains(flag), "{set_cookie}");
    }
    assert!(!set_cookie.contains("Secure"), "plain http: no Secure (the browser would drop the cookie)");
    assert!(!set_cookie.contains(&token), "the token itself never goes to the browser");
    let cookie = set_cookie.split(';').next().expect("cookie").to_string();

    let (status, _, page) = get_with(admin, "/backends/new", &cookie).await;
    assert_eq!(status, StatusCode::OK);
    let token_field = csrf(&page);
    let backend = [("system_name", "echo"), ("private_base_url", "wss://127.0.0.1:9/"), ("tls.verify", "true")];

    // Without the CSRF token, with a stale one, or from another origin: refused.
    let (status, _, _) = post(admin, "/backends", Some(&cookie), &backend, &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "no CSRF token");
    let mut stale = backend.to_vec();
    stale.push(("_csrf", "0000"));
    assert_eq!(post(admin, "/backends", Some(&cookie), &stale, &[]).await.0, StatusCode::FORBIDDEN);
    let mut good = backend.to_vec();
    good.push(("_csrf", &token_field));
    let (status, _, _) = post(admin, "/backends", Some(&cookie), &good, &[("origin", "https://evil.example")]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "cross-site POST");
    assert_eq!(api(&server, "GET", "/backends", None).await.1, serde_json::json!([]), "nothing was created");

    // A mistake comes back with the API's message at its field, the input kept.
    let mut bad = good.clone();
    bad[1] = ("private_base_url", "ftp://127.0.0.1/");
    let (status, _, page) = post(admin, "/backends", Some(&cookie), &bad, &[("origin", "http://localhost")]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{page}");
    assert!(page.contains(r#"aria-invalid="true""#) && page.contains("ftp://127.0.0.1/"), "{page}");

    // The real thing: created, then edited, and the API serves what the form said.
    let (status, headers, _) = post(admin, "/backends", Some(&cookie), &good, &[("origin", "http://localhost")]).await;
    assert_eq!((status, location(&headers)), (StatusCode::SEE_OTHER, "/backends/echo?saved=1"));
    let (status, _, page) = get_with(admin, "/backends/echo?saved=1", &cookie).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("Saved.") && page.contains("wss://127.0.0.1:9/"), "{page}");
    let edit = [
        ("_csrf", token_field.as_str()),
        ("name", "Echo <service>"),
        ("private_base_url", "wss://127.0.0.1:9/v2"),
        ("tls.server_name", "echo.internal"),
    ];
    let (status, _, _) = post(admin, "/backends/echo", Some(&cookie), &edit, &[]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (_, b) = api(&server, "GET", "/backends/echo", None).await;
    assert_eq!(b["private_base_url"], "wss://127.0.0.1:9/v2");
    assert_eq!(
        (b["tls"]["verify"].clone(), b["tls"]["server_name"].clone()),
        (serde_json::json!(false), serde_json::json!("echo.internal"))
    );
    let (_, _, page) = get_with(admin, "/backends", &cookie).await;
    assert!(page.contains("Echo &lt;service&gt;") && !page.contains("Echo <service>"), "escaped: {page}");
    let (_, _, page) = get_with(admin, "/backends/echo", &cookie).await;
    assert!(page.contains("Verification is off"), "the warning shows");

    // Every change is audited under the operator's token.
    let audit = api(&server, "GET", "/audit?limit=1", None).await.1;
    assert_eq!(
        (audit[0]["token"].clone(), audit[0]["path"].clone()),
        (serde_json::json!("initial"), serde_json::json!("/api/v1/backends/echo"))
    );

    // Logging out ends the session.
    let (status, headers, _) = post(admin, "/logout", Some(&cookie), &[("_csrf", &token_field)], &[]).await;
    assert_eq!((status, location(&headers)), (StatusCode::SEE_OTHER, "/login"));
    let (status, headers, _) = get_with(admin, "/backends", &cookie).await;
    assert_eq!((status, location(&headers)), (StatusCode::SEE_OTHER, "/login?next=%2Fbackends"));
    server.shutdown().await;
}

/// Creates `product` through the API and logs in to the console: the session cookie.
async fn with_product(server: &tollgate::serve::Server, product: serde_json::Value) -> String {
    assert_eq!(api(server, "POST", "/products", Some(product)).await.0, StatusCode::CREATED);
    let token = server.admin_token.clone().expect("token");
    let (_, headers, _) = post(server.admin, "/login", None, &[("token", &token)], &[]).await;
    let cookie = headers.get("set-cookie").and_then(|v| v.to_str().ok()).and_then(|c| c.split(';').next());
    cookie.expect("cookie").to_string()
}

#[tokio::test]
async fn policies_are_configured_through_forms_generated_from_their_schemas() {
    let dir = TempDir::new();
    let server = store_server(&format!("sqlite://{}", dir.path().join("tollgate.db").display())).await;
    let product = serde_json::json!({
        "system_name": "chat",
        "staging_public_base_url": "http://chat-staging.localhost",
        "production_public_base_url": "http://chat.localhost",
        "metrics": [ { "system_name": "messages" } ],
        "policy_chain": [ { "name": "websocket" }, { "name": "tollgate" } ],
    });
    let cookie = with_product(&server, product).await;

    let (status, _, page) = get_with(server.admin, "/products/chat/policies/0", &cookie).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    for field in [
        r#"name="max_message_bytes""#,
        r#"name="idle_timeout""#,
        r#"name="meter_messages.metric""#,
        r#"name="meter_messages.direction""#,
        r#"name="on_limit_exceeded""#,
    ] {
        assert!(page.contains(field), "{field} in {page}");
    }
    // An optional setting naming a metric starts at "(none)": saving the form as it
    // comes configures no metering.
    assert!(page.contains(r#"<option value="" selected>(none)</option>"#), "{page}");
    let csrf = csrf(&page);
    let untouched = [
        ("_csrf", csrf.as_str()),
        ("meter_messages.metric", ""),
        ("meter_messages.direction", ""),
        ("meter_bytes.metric", ""),
        ("on_limit_exceeded", ""),
    ];
    let (status, _, page) = post(server.admin, "/products/chat/policies/0", Some(&cookie), &untouched, &[]).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{page}");
    let chain = api(&server, "GET", "/products/chat/policy_chain", None).await.1;
    assert!(chain[0].get("configuration").is_none_or(|c| c == &serde_json::json!({})), "{chain}");
    let fields = [
        ("_csrf", csrf.as_str()),
        ("max_message_bytes", "4096"),
        ("meter_messages.metric", "messages"),
        ("meter_messages.direction", "client_to_server"),
        ("on_limit_exceeded", "drop"),
        ("idle_timeout", ""),
    ];
    let (status, headers, page) = post(server.admin, "/products/chat/policies/0", Some(&cookie), &fields, &[]).await;
    assert_eq!((status, location(&headers)), (StatusCode::SEE_OTHER, "/products/chat/policies"), "{page}");
    let chain = api(&server, "GET", "/products/chat/policy_chain", None).await.1;
    assert_eq!(
        chain[0]["configuration"],
        serde_json::json!({
            "max_message_bytes": 4096,
            "meter_messages": { "metric": "messages", "direction": "client_to_server" },
            "on_limit_exceeded": "drop",
        })
    );

    // A value the policy refuses comes back with the API's reason; nothing is saved.
    let bad = [("_csrf", csrf.as_str()), ("max_message_bytes", "lots")];
    let (status, _, page) = post(server.admin, "/products/chat/policies/0", Some(&cookie), &bad, &[]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.contains("max_message_bytes") && page.contains("lots"), "{page}");
    let after = api(&server, "GET", "/products/chat/policy_chain", None).await.1;
    assert_eq!(after, chain);

    // A metric the product does not have is named at once, not at deploy.
    let unknown = [("_csrf", csrf.as_str()), ("meter_messages.metric", "nope")];
    let (status, _, page) = post(server.admin, "/products/chat/policies/0", Some(&cookie), &unknown, &[]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{page}");
    assert!(page.contains("nope"), "{page}");

    // Integration settings: authentication and an error message of the product's own.
    let settings = [
        ("_csrf", csrf.as_str()),
        ("staging_public_base_url", "http://chat-staging.localhost"),
        ("production_public_base_url", "http://chat.localhost"),
        ("authentication.mode", "user_key"),
        ("authentication.credentials_location", "headers"),
        ("authentication.user_key_param", "x-api-key"),
        ("errors.limits_exceeded.status", "429"),
        ("errors.limits_exceeded.body", "slow down"),
        ("errors.auth_failed.status", ""),
    ];
    let (status, headers, page) = post(server.admin, "/products/chat", Some(&cookie), &settings, &[]).await;
    assert_eq!((status, location(&headers)), (StatusCode::SEE_OTHER, "/products/chat?saved=1"), "{page}");
    let product = api(&server, "GET", "/products/chat", None).await.1;
    assert_eq!(product["authentication"]["credentials_location"], "headers");
    assert_eq!(product["authentication"]["user_key_param"], "x-api-key");
    assert_eq!(product["errors"]["limits_exceeded"]["body"], "slow down");
    assert!(product["errors"]["auth_failed"].is_null(), "blank means the default: {product}");
    assert_eq!(product["policy_chain"][0]["name"], "websocket", "the chain is untouched by the settings form");

    // Order and state: the chain is reordered and a policy disabled from the list.
    let (status, _, _) =
        post(server.admin, "/products/chat/policies/1/up", Some(&cookie), &[("_csrf", &csrf)], &[]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (status, _, _) =
        post(server.admin, "/products/chat/policies/1/toggle", Some(&cookie), &[("_csrf", &csrf)], &[]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let chain = api(&server, "GET", "/products/chat/policy_chain", None).await.1;
    assert_eq!(
        (chain[0]["name"].clone(), chain[1]["name"].clone(), chain[1]["enabled"].clone()),
        (serde_json::json!("tollgate"), serde_json::json!("websocket"), serde_json::json!(false))
    );
    server.shutdown().await;
}

#[tokio::test]
async fn applications_are_suspended_rekeyed_and_moved_from_their_page() {
    let dir = TempDir::new();
    let server = store_server(&format!("sqlite://{}", dir.path().join("tollgate.db").display())).await;
    let product = serde_json::json!({
        "system_name": "chat",
        "staging_public_base_url": "http://chat-staging.localhost",
        "production_public_base_url": "http://chat.localhost",
        "application_plans": [ { "system_name": "basic" }, { "system_name": "gold" } ],
    });
    let cookie = with_product(&server, product).await;
    let (_, _, page) = get_with(server.admin, "/accounts", &cookie).await;
    let csrf = csrf(&page);

    // An account, then an application on chat/basic, through the forms.
    let (status, headers, _) =
        post(server.admin, "/accounts", Some(&cookie), &[("_csrf", &csrf), ("name", "acme")], &[]).await;
    assert_eq!((status, location(&headers)), (StatusCode::SEE_OTHER, "/accounts/acme"));
    let (_, _, page) = get_with(server.admin, "/accounts/acme", &cookie).await;
    assert!(page.contains(r#"<option value="chat/basic""#), "{page}");
    let app_form = [("_csrf", csrf.as_str()), ("name", "web"), ("plan", "chat/basic")];
    let (status, headers, _) = post(server.admin, "/accounts/acme", Some(&cookie), &app_form, &[]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let app_page = location(&headers).to_string();
    let (_, _, page) = get_with(server.admin, &app_page, &cookie).await;
    let key = api(&server, "GET", "/applications/web", None).await.1["user_key"].as_str().expect("key").to_string();
    assert!(page.contains(&key), "the key is shown");

    for (action, fields) in [
        ("suspend", vec![("_csrf", csrf.as_str())]),
        ("keys", vec![("_csrf", csrf.as_str())]),
        ("change_plan", vec![("_csrf", csrf.as_str()), ("plan", "gold")]),
    ] {
        let (status, _, page) = post(server.admin, &format!("{app_page}/{action}"), Some(&cookie), &fields, &[]).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{action}: {page}");
    }
    let app = api(&server, "GET", "/applications/web", None).await.1;
    assert_eq!(
        (app["state"].clone(), app["plan"].clone()),
        (serde_json::json!("suspended"), serde_json::json!("gold"))
    );
    assert_ne!(app["user_key"].as_str(), Some(key.as_str()), "regenerated");

    // A plan that does not exist comes back as the API's error on the page.
    let bad = [("_csrf", csrf.as_str()), ("plan", "platinum")];
    let (status, _, page) = post(server.admin, &format!("{app_page}/change_plan"), Some(&cookie), &bad, &[]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{page}");
    assert!(page.contains("platinum"), "{page}");
    server.shutdown().await;
}

#[tokio::test]
async fn every_catalogue_policy_gets_a_form_and_conditions_are_edited_there() {
    let dir = TempDir::new();
    let server = store_server(&format!("sqlite://{}", dir.path().join("tollgate.db").display())).await;
    let product = serde_json::json!({
        "system_name": "chat",
        "staging_public_base_url": "http://chat-staging.localhost",
        "production_public_base_url": "http://chat.localhost",
        "policy_chain": [
            { "name": "ip_check", "configuration": { "check_type": "deny", "ips": ["192.0.2.1"] } },
            { "name": "tollgate" }
        ],
    });
    let cookie = with_product(&server, product).await;
    let (status, _, page) = get_with(server.admin, "/products/chat/policies/0", &cookie).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    for field in [
        r#"name="check_type""#,
        r#"name="ips:json""#,
        r#"name="condition.combine_op""#,
        r#"name="condition.operations:json""#,
    ] {
        assert!(page.contains(field), "{field} in {page}");
    }
    let csrf = csrf(&page);
    let fields = [
        ("_csrf", csrf.as_str()),
        ("check_type", "allow"),
        ("ips:json", r#"["10.0.0.0/8", "::1"]"#),
        ("condition.operations:json", r#"[{"left": "{{ path }}", "op": "matches", "right": "^/internal"}]"#),
    ];
    let (status, headers, page) = post(server.admin, "/products/chat/policies/0", Some(&cookie), &fields, &[]).await;
    assert_eq!((status, location(&headers)), (StatusCode::SEE_OTHER, "/products/chat/policies"), "{page}");
    let chain = api(&server, "GET", "/products/chat/policy_chain", None).await.1;
    assert_eq!(
        chain[0]["configuration"],
        serde_json::json!({
            "check_type": "allow",
            "ips": ["10.0.0.0/8", "::1"],
            "condition": { "operations": [ { "left": "{{ path }}", "op": "matches", "right": "^/internal" } ] },
        })
    );
    // A bad range comes back with the policy's reason.
    let bad = [("_csrf", csrf.as_str()), ("check_type", "deny"), ("ips:json", r#"["10.0.0.0/40"]"#)];
    let (status, _, page) = post(server.admin, "/products/chat/policies/0", Some(&cookie), &bad, &[]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{page}");
    assert!(page.contains("prefix length"), "{page}");

    // Every policy of the catalogue can be added and opens a form.
    let catalogue = api(&server, "GET", "/policies", None).await.1;
    for p in catalogue.as_array().expect("list") {
        let name = p["name"].as_str().expect("name");
        let (status, _, page) =
            post(server.admin, "/products/chat/policies", Some(&cookie), &[("_csrf", &csrf), ("name", name)], &[])
                .await;
        match status {
            // Added: its form opens, the condition among its fields.
            StatusCode::SEE_OTHER => {
                let chain = api(&server, "GET", "/products/chat/policy_chain", None).await.1;
                let i = chain.as_array().expect("chain").iter().position(|c| c["name"] == name).expect("added");
                let (status, _, form) = get_with(server.admin, &format!("/products/chat/policies/{i}"), &cookie).await;
                assert_eq!(status, StatusCode::OK, "{name}: {form}");
                assert!(form.contains(r#"name="condition.combine_op""#), "{name}: {form}");
            }
            // Options are required: the empty configuration is refused with the field to fill.
            StatusCode::UNPROCESSABLE_ENTITY => {
                assert!(!page.contains(r#"<p class="error" role="alert"></p>"#), "{name}: {page}");
                assert!(page.contains(r#"<p class="error" role="alert">"#), "{name}: {page}")
            }
            other => panic!("{name}: {other} {page}"),
        }
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_backends_page_shows_its_endpoints_and_drains_one() {
    let dir = TempDir::new();
    let server = store_server(&format!("sqlite://{}", dir.path().join("tollgate.db").display())).await;
    let backend = serde_json::json!({
        "system_name": "fleet",
        "private_base_url": "http://fleet.internal",
        "endpoints": [ { "address": "127.0.0.1:1" }, { "address": "[::1]:2", "weight": 3 } ],
    });
    assert_eq!(api(&server, "POST", "/backends", Some(backend)).await.0, StatusCode::CREATED);
    let product = serde_json::json!({
        "system_name": "api",
        "staging_public_base_url": "http://api-staging.localhost",
        "production_public_base_url": "http://api.localhost",
        "backend_usages": [ { "backend": "fleet", "path": "/" } ],
        "mapping_rules": [ { "http_method": "ANY", "pattern": "/", "metric": "hits" } ],
    });
    let cookie = with_product(&server, product).await;
    assert_eq!(api(&server, "POST", "/products/api/deploy", None).await.0, StatusCode::CREATED);

    let (status, _, page) = get_with(server.admin, "/backends/fleet", &cookie).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("<caption>Endpoints</caption>"), "{page}");
    assert!(page.contains("<code>[::1]:2</code>") && page.contains("<td>3</td>"), "{page}");
    assert!(page.contains("healthy · 0 in flight, 0 WebSockets"), "staging serves it: {page}");
    assert!(page.contains("not served"), "production serves nothing yet: {page}");
    let csrf = csrf(&page);
    let drain = format!("/backends/fleet/endpoints/{}/drain", encode("[::1]:2"));
    assert!(page.contains(&format!(r#"action="{drain}""#)), "{page}");

    let (status, headers, _) = post(server.admin, &drain, Some(&cookie), &[("_csrf", &csrf)], &[]).await;
    assert_eq!((status, location(&headers)), (StatusCode::SEE_OTHER, "/backends/fleet?saved=1"));
    let (_, _, page) = get_with(server.admin, "/backends/fleet", &cookie).await;
    assert!(page.contains("draining · healthy"), "{page}");
    assert!(page.contains("Stop draining"), "{page}");
    let view = api(&server, "GET", "/backends/fleet/endpoints", None).await.1;
    assert_eq!(view["endpoints"][1]["drain"], true, "{view}");

    let undrain = drain.replace("/drain", "/undrain");
    let (status, _, _) = post(server.admin, &undrain, Some(&cookie), &[("_csrf", &csrf)], &[]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let view = api(&server, "GET", "/backends/fleet/endpoints", None).await.1;
    assert_eq!(view["endpoints"][1]["drain"], false, "{view}");
    // An address the backend does not list: the API's 404 as a page.
    let (status, _, page) =
        post(server.admin, "/backends/fleet/endpoints/127.0.0.1:9/drain", Some(&cookie), &[("_csrf", &csrf)], &[])
            .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{page}");
    assert!(page.contains("127.0.0.1:1"), "lists the endpoints: {page}");
    server.shutdown().await;
}

#[tokio::test]
async fn an_applications_client_certificate_fingerprints_are_edited_on_its_page() {
    let dir = TempDir::new();
    let server = store_server(&format!("sqlite://{}", dir.path().join("tollgate.db").display())).await;
    let (ca, _) = make_cert(dir.path());
    let product = serde_json::json!({
        "system_name": "partners",
        "staging_public_base_url": "https://partners-staging.localhost",
        "production_public_base_url": "https://partners.localhost",
        "authentication": { "mode": "client_certificate" },
        "tls": { "client_ca_pem": std::fs::read_to_string(&ca).expect("pem"), "client_certificates": "required" },
        "application_plans": [ { "system_name": "basic" } ],
    });
    let cookie = with_product(&server, product).await;
    assert_eq!(
        api(&server, "POST", "/accounts", Some(serde_json::json!({ "name": "acme" }))).await.0,
        StatusCode::CREATED
    );
    let first = "ab".repeat(32);
    let app =
        serde_json::json!({ "name": "shop", "product": "partners", "plan": "basic", "client_certificates": [first] });
    let (status, body) = api(&server, "POST", "/accounts/acme/applications", Some(app)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let page_path = format!("/applications/{}", body["id"]);

    let (_, _, page) = get_with(server.admin, &page_path, &cookie).await;
    assert!(page.contains("Client certificates") && page.contains(&first), "{page}");
    let csrf = csrf(&page);
    // Two fingerprints, one as openssl prints it (colons, capitals).
    let colons: Vec<String> =
        "cd".repeat(32).as_bytes().chunks(2).map(|c| String::from_utf8_lossy(c).to_uppercase()).collect();
    let two = format!("{first}\n{}\n", colons.join(":"));
    let form = [("_csrf", csrf.as_str()), ("client_certificates", two.as_str())];
    let (status, headers, page) =
        post(server.admin, &format!("{page_path}/client_certificates"), Some(&cookie), &form, &[]).await;
    assert_eq!((status, location(&headers)), (StatusCode::SEE_OTHER, page_path.as_str()), "{page}");
    let saved = api(&server, "GET", "/applications/shop", None).await.1;
    assert_eq!(saved["client_certificates"].as_array().map(Vec::len), Some(2), "{saved}");

    let bad = [("_csrf", csrf.as_str()), ("client_certificates", "not-a-fingerprint")];
    let (status, _, page) =
        post(server.admin, &format!("{page_path}/client_certificates"), Some(&cookie), &bad, &[]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{page}");
    assert!(page.contains("is not a SHA-256 fingerprint"), "the API's message on the page: {page}");
    server.shutdown().await;
}
