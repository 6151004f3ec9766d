//! Property tests of the template language and the condition evaluator: they never
//! panic, text without placeholders is itself, placeholders render their values, and
//! each operator means what it says for any input.

use proptest::prelude::*;
use std::sync::Arc;
use tollgate_gateway::policy::condition::{Condition, ConditionConfig};
use tollgate_gateway::policy::template::Template;
use tollgate_gateway::policy::{Context, Registry};
use tollgate_gateway::snapshot::Product;

fn product() -> Arc<Product> {
    let config = tollgate_model::parse_str(
        r#"
backends: [ { system_name: b, private_base_url: "http://127.0.0.1:9" } ]
products:
  - system_name: p
    staging_public_base_url: http://s.localhost
    production_public_base_url: http://p.localhost
    backend_usages: [ { backend: b, path: / } ]
    mapping_rules: [ { http_method: GET, pattern: /, metric: hits } ]
"#,
    )
    .expect("config");
    let snapshots = tollgate_gateway::compile(&config, &Registry::default()).expect("compiles");
    snapshots.staging.product_for_host("s.localhost").expect("product").clone()
}

fn context(product: &Product) -> Context<'_> {
    Context::new(product, "192.0.2.7:5555".parse().expect("addr"), false, false, 1_795_750_800)
}

fn request(path: &str, header: &str) -> http::request::Parts {
    let mut b = http::Request::builder().uri(path);
    if let Ok(v) = http::HeaderValue::from_str(header) {
        b = b.header("x-test", v);
    }
    b.body(()).map(|r| r.into_parts().0).unwrap_or_else(|_| http::Request::new(()).into_parts().0)
}

fn condition(left: &str, op: &str, right: &str) -> Result<Condition, tollgate_gateway::policy::PolicyError> {
    let c: ConditionConfig = serde_json::from_value(serde_json::json!({
        "operations": [ { "left": left, "op": op, "right": right } ]
    }))
    .expect("shape");
    Condition::new(c)
}

proptest! {
    #[test]
    fn parsing_any_text_never_panics(s in ".{0,64}") {
        let _ = Template::parse(&s);
    }

    #[test]
    fn text_without_placeholders_is_itself(s in "[^{}]{0,64}") {
        let p = product();
        let t = Template::parse(&s).expect("plain text parses");
        prop_assert!(t.is_static());
        let (req, ctx) = (request("/", ""), context(&p));
        let got = t.render(&req, &ctx).into_owned();
        prop_assert_eq!(got, s);
    }

    #[test]
    fn placeholders_render_their_values(
        before in "[^{}]{0,16}",
        after in "[^{}]{0,16}",
        segment in "[a-z0-9]{1,12}",
        header in "[a-zA-Z0-9]{0,20}",
    ) {
        let p = product();
        let path = format!("/{segment}");
        let req = request(&path, &header);
        let t = Template::parse(&format!("{before}{{{{ path }}}}|{{{{headers['X-Test']}}}}|{{{{ remote_addr }}}}{after}"))
            .expect("parses");
        let want = format!("{before}{path}|{header}|192.0.2.7{after}");
        let ctx = context(&p);
        let got = t.render(&req, &ctx).into_owned();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn equality_and_regex_operators_mean_what_they_say(a in "[a-z/]{0,12}", b in "[a-z/]{0,12}") {
        let p = product();
        let ctx = context(&p);
        let req = request("/", &a);
        let left = "{{ headers['x-test'] }}";
        prop_assert_eq!(condition(left, "==", &b).expect("valid").holds(&req, &ctx), a == b);
        prop_assert_eq!(condition(left, "!=", &b).expect("valid").holds(&req, &ctx), a != b);
        let exactly = format!("^{}$", regex::escape(&a));
        prop_assert!(condition(left, "matches", &exactly).expect("valid").holds(&req, &ctx));
        prop_assert!(!condition(left, "not_matches", &exactly).expect("valid").holds(&req, &ctx));
        let other = format!("^{}$", regex::escape(&b));
        prop_assert_eq!(condition(left, "matches", &other).expect("valid").holds(&req, &ctx), a == b);
    }

    #[test]
    fn combining_is_all_or_any(x in any::<bool>(), y in any::<bool>()) {
        let p = product();
        let ctx = context(&p);
        let req = request("/", "yes");
        let op = |t: bool| serde_json::json!({ "left": "{{ headers['x-test'] }}", "op": if t { "==" } else { "!=" }, "right": "yes" });
        for (combine, want) in [("and", x && y), ("or", x || y)] {
            let c: ConditionConfig = serde_json::from_value(serde_json::json!({ "combine_op": combine, "operations": [op(x), op(y)] })).expect("shape");
            prop_assert_eq!(Condition::new(c).expect("valid").holds(&req, &ctx), want);
        }
    }
}

#[test]
fn bad_conditions_are_config_errors_with_their_path() {
    assert_eq!(condition("{{ nope }}", "==", "").err().map(|e| e.field), Some("operations[0].left".into()));
    assert_eq!(condition("{{ path }}", "matches", "(").err().map(|e| e.field), Some("operations[0].right".into()));
    let empty: ConditionConfig = serde_json::from_value(serde_json::json!({ "operations": [] })).expect("shape");
    assert_eq!(Condition::new(empty).err().map(|e| e.field), Some("operations".into()));
}
