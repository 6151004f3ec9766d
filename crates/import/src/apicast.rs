//! The APIcast importer behind `tollgate import apicast FILE.json`: an APIcast configuration (`THREESCALE_CONFIG_FILE`,
//! `{"services": [...]}`, or one proxy configuration as 3scale's API returns it) becomes
//! Tollgate YAML. What cannot be translated is said, one warning each; the result
//! passes `tollgate check`.

use anyhow::{Context as _, bail};
use serde_json::{Map, Value, json};
use std::collections::{BTreeSet, HashSet};
use tollgate_gateway::policy::Registry;
use tollgate_gateway::policy::apicast::{self, Equivalent};

pub use crate::Imported;

fn slug(s: &str) -> String {
    let out: String = s
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' { c } else { '_' })
        .collect();
    if out.is_empty() { "service".into() } else { out }
}

/// `http(s)://host` from an endpoint URL or a bare host.
fn public_url(s: &str) -> String {
    let s = s.trim_end_matches('/');
    if s.starts_with("http://") || s.starts_with("https://") { s.to_string() } else { format!("http://{s}") }
}

/// The services of any of the accepted shapes.
fn services(doc: &Value) -> anyhow::Result<Vec<Value>> {
    if let Some(list) = doc["services"].as_array() {
        return Ok(list.clone());
    }
    if doc["proxy_config"]["content"].is_object() {
        return Ok(vec![doc["proxy_config"]["content"].clone()]);
    }
    if doc["proxy"].is_object() {
        return Ok(vec![doc.clone()]);
    }
    bail!("not an APIcast configuration: no `services`, `proxy_config.content` or `proxy`")
}

/// An APIcast condition operation (`match`: path, header, query_arg, jwt_claim, liquid)
/// as a Tollgate one (a template on the left).
fn operation(op: &Value) -> Option<Value> {
    let left = match op["match"].as_str()? {
        "path" => "{{ path }}".to_string(),
        "header" => format!("{{{{ headers['{}'] }}}}", op["header_name"].as_str()?),
        "query_arg" => format!("{{{{ query['{}'] }}}}", op["query_arg_name"].as_str()?),
        "jwt_claim" => format!("{{{{ jwt.{} }}}}", op["jwt_claim_name"].as_str()?),
        "liquid" => op["liquid_value"].as_str()?.to_string(),
        _ => return None,
    };
    let opname = match op["op"].as_str()? {
        "==" => "==",
        "!=" => "!=",
        "matches" => "matches",
        _ => return None,
    };
    Some(json!({ "left": left, "op": opname, "right": op["value"].as_str().unwrap_or_default() }))
}

fn condition(c: &Value) -> Option<Value> {
    let ops: Option<Vec<Value>> = c["operations"].as_array()?.iter().map(operation).collect();
    Some(json!({ "combine_op": c["combine_op"].as_str().unwrap_or("and"), "operations": ops? }))
}

/// Removes `keys` from every object of the list under `field` (if there is one).
fn strip(c: &mut Value, field: &str, keys: &[&str]) {
    if let Some(items) = c.get_mut(field).and_then(Value::as_array_mut) {
        for item in items {
            if let Some(o) = item.as_object_mut() {
                for k in keys {
                    o.remove(*k);
                }
            }
        }
    }
}

/// The keys [`translate`] renames, as (Tollgate's, APIcast's), for the warnings.
fn renamed_keys(policy: &str) -> &'static [(&'static str, &'static str)] {
    match policy {
        "status_code_overwrite" => &[("gateway", "apicast")],
        "ip_check" => &[("error_message", "error_msg")],
        "maintenance_mode" => &[("content_type", "message_content_type")],
        _ => &[],
    }
}

/// Translates one policy's configuration; `Err` says why it cannot be.
fn translate(name: &str, c: &Value, warn: &mut Vec<String>) -> Result<Value, String> {
    let mut c = if c.is_null() { json!({}) } else { c.clone() };
    match name {
        "headers" => {
            for side in ["request", "response"] {
                if c[side].as_array().is_some_and(|l| l.iter().any(|x| x["value_type"] == "liquid")) {
                    warn.push(format!("headers: a liquid value in `{side}` is kept as a Tollgate template; check its variables (docs/policies.md#templates)"));
                }
                strip(&mut c, side, &["value_type"]);
            }
        }
        "url_rewriting" => {
            strip(&mut c, "commands", &["options"]);
            strip(&mut c, "query_args_commands", &["value_type"]);
        }
        "ip_check" => {
            if let Some(o) = c.as_object_mut() {
                if let Some(m) = o.remove("error_msg") {
                    o.insert("error_message".into(), m);
                }
                // APIcast says whitelist and blacklist.
                let ours = match o.get("check_type").and_then(Value::as_str) {
                    Some("whitelist") => Some("allow"),
                    Some("blacklist") => Some("deny"),
                    _ => None,
                };
                if let Some(t) = ours {
                    o.insert("check_type".into(), t.into());
                }
            }
        }
        "status_code_overwrite" => {
            // APIcast: `{ upstream, apicast }`; Tollgate: `{ upstream, gateway }`.
            if let Some(pairs) = c.get_mut("http_statuses").and_then(Value::as_array_mut) {
                for pair in pairs {
                    if let Some(o) = pair.as_object_mut()
                        && let Some(to) = o.remove("apicast")
                    {
                        o.insert("gateway".into(), to);
                    }
                }
            }
        }
        "maintenance_mode" => {
            if let Some(o) = c.as_object_mut()
                && let Some(t) = o.remove("message_content_type")
            {
                o.insert("content_type".into(), t);
            }
        }
        "default_credentials" => {
            if let Some(o) = c.as_object_mut() {
                o.remove("auth_type");
            }
        }
        "echo" => {
            if let Some(o) = c.as_object_mut() {
                o.remove("exit");
            }
        }
        "logging" => {
            warn.push(
                "logging: APIcast's access-log options do not translate; Tollgate's defaults apply (JSON to stdout)"
                    .into(),
            );
            c = json!({});
        }
        "upstream" => strip(&mut c, "rules", &["http_method"]),
        "routing" => {
            let mut rules = Vec::new();
            for r in c["rules"].as_array().cloned().unwrap_or_default() {
                let url = r["url"].as_str().ok_or("a routing rule without url (owner-based rules do not translate)")?;
                let mut rule = json!({ "url": url });
                if let Some(cond) = r.get("condition").filter(|x| !x.is_null()) {
                    rule["condition"] = condition(cond).ok_or("a routing condition that does not translate")?;
                }
                for k in ["replace_path", "host_header"] {
                    if let Some(v) = r[k].as_str().filter(|v| !v.is_empty()) {
                        rule[k] = v.into();
                    }
                }
                rules.push(rule);
            }
            c = json!({ "rules": rules });
        }
        "rate_limit" => {
            // A liquid key such as `{{ remote_addr }}` is a Tollgate template as it is.
            let key = |k: &Value| -> Result<String, String> {
                k["name"].as_str().map(str::to_string).ok_or_else(|| "a limiter without key.name".to_string())
            };
            let mut limiters = Vec::new();
            let mut global = false;
            for l in c["fixed_window_limiters"].as_array().cloned().unwrap_or_default() {
                global |= l["key"]["scope"] == "global";
                limiters.push(json!({ "algorithm": "fixed_window", "key": key(&l["key"])?, "count": l["count"], "window": l["window"] }));
            }
            for l in c["leaky_bucket_limiters"].as_array().cloned().unwrap_or_default() {
                global |= l["key"]["scope"] == "global";
                limiters.push(json!({ "algorithm": "token_bucket", "key": key(&l["key"])?, "rate": l["rate"], "burst": l["burst"].as_u64().unwrap_or(0).max(1) }));
            }
            for l in c["connection_limiters"].as_array().cloned().unwrap_or_default() {
                global |= l["key"]["scope"] == "global";
                limiters.push(json!({ "algorithm": "connections", "key": key(&l["key"])?, "max": l["conn"] }));
            }
            let mut out = json!({ "limiters": limiters, "scope": if global { "global" } else { "product" } });
            if c["redis_url"].as_str().is_some_and(|u| !u.is_empty()) {
                out["store"] = "redis".into();
                warn.push("rate_limit: redis_url is replaced by the gateway's --counters Redis".into());
            }
            if let Some(s) = c["limits_exceeded_error"]["status_code"].as_u64() {
                out["status"] = s.into();
            }
            c = out;
        }
        _ => {}
    }
    Ok(c)
}

pub fn apicast(text: &str) -> anyhow::Result<Imported> {
    let doc: Value = serde_json::from_str(text).context("not JSON (an APIcast configuration file is JSON)")?;
    // Each translated policy is built to check it, as `tollgate check` does: offline, so
    // an import fetches nothing (a `jwt` policy's `jwks_url`) and makes no file.
    let registry = Registry::offline();
    let mut warnings = Vec::new();
    let mut backends: Vec<Value> = Vec::new();
    let mut products = Vec::new();
    let mut names = HashSet::new();
    for (i, service) in services(&doc)?.iter().enumerate() {
        let proxy = &service["proxy"];
        let id = service["id"].as_i64().map(|n| n.to_string()).or_else(|| service["id"].as_str().map(str::to_string));
        let mut name = slug(
            service["system_name"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| format!("service_{}", id.clone().unwrap_or_else(|| (i + 1).to_string())))
                .as_str(),
        );
        while !names.insert(name.clone()) {
            name += "_";
        }
        let at = format!("services[{i}] ({name})");
        let mut warn = |m: String| warnings.push(format!("{at}: {m}"));

        // Authentication.
        let version = match &service["backend_version"] {
            Value::String(v) => v.clone(),
            Value::Number(n) => n.to_string(),
            _ => "1".to_string(),
        };
        let mode = match version.as_str() {
            "2" => "app_id_app_key",
            "oauth" | "oidc" => {
                warn("OpenID Connect: add a `jwt` policy (issuer, jwks_url, client_id_claim) by hand".into());
                "app_id_app_key"
            }
            _ => "user_key",
        };
        let mut auth = json!({ "mode": mode });
        if let Some(loc) = proxy["credentials_location"].as_str() {
            match loc {
                "query" | "headers" | "authorization" => auth["credentials_location"] = loc.into(),
                other => warn(format!("credentials_location `{other}` is unknown; the query is used")),
            }
        }
        for (from, to) in
            [("auth_user_key", "user_key_param"), ("auth_app_id", "app_id_param"), ("auth_app_key", "app_key_param")]
        {
            if let Some(v) = proxy[from].as_str().filter(|v| !v.is_empty()) {
                auth[to] = v.into();
            }
        }

        // Public base URLs.
        let hosts: Vec<&str> =
            proxy["hosts"].as_array().map(|h| h.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
        if hosts.len() > 1 {
            warn(format!("hosts {:?}: only the first is used; a product has one host per environment", &hosts[1..]));
        }
        let fallback = hosts.first().map(|h| public_url(h));
        let staging = proxy["sandbox_endpoint"].as_str().map(public_url).or(fallback.clone());
        let production = proxy["endpoint"].as_str().map(public_url).or(fallback);
        let (Some(staging), Some(production)) = (staging, production) else {
            warn("no endpoint, sandbox_endpoint or hosts: skipped".into());
            continue;
        };

        // Backends: 3scale's backend API configs, or the single api_backend.
        let mut usages = Vec::new();
        match service["backend_api_configs"].as_array() {
            Some(list) if !list.is_empty() => {
                for b in list {
                    let api = &b["backend_api"];
                    let (Some(url), Some(bname)) = (api["private_endpoint"].as_str(), api["system_name"].as_str())
                    else {
                        warn("a backend API config without private_endpoint or system_name: skipped".into());
                        continue;
                    };
                    let bname = slug(bname);
                    if !backends.iter().any(|x| x["system_name"] == bname.as_str()) {
                        backends.push(json!({ "system_name": bname, "private_base_url": url }));
                    }
                    usages.push(json!({ "backend": bname, "path": b["path"].as_str().unwrap_or("/") }));
                }
            }
            _ => match proxy["api_backend"].as_str().filter(|u| !u.is_empty()) {
                Some(url) => {
                    let bname = format!("{name}-backend");
                    backends.push(json!({ "system_name": bname, "private_base_url": url }));
                    usages.push(json!({ "backend": bname, "path": "/" }));
                }
                None => warn("no api_backend: the product has no backend usage (a draft until you add one)".into()),
            },
        }

        // Metrics, methods and mapping rules.
        let known: Vec<(i64, String, Option<i64>)> = service["metrics"]
            .as_array()
            .map(|l| {
                l.iter()
                    .filter_map(|m| {
                        Some((m["id"].as_i64()?, m["system_name"].as_str()?.to_string(), m["parent_id"].as_i64()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let hits_id = known.iter().find(|(_, n, _)| n == "hits").map(|(id, _, _)| *id);
        let mut used = BTreeSet::new();
        let mut rules = Vec::new();
        for r in proxy["proxy_rules"].as_array().cloned().unwrap_or_default() {
            let metric = r["metric_system_name"].as_str().unwrap_or("hits").to_string();
            used.insert(metric.clone());
            let mut rule = json!({
                "http_method": r["http_method"].as_str().unwrap_or("GET"),
                "pattern": r["pattern"].as_str().unwrap_or("/"),
                "metric": metric,
                "delta": r["delta"].as_u64().unwrap_or(1),
            });
            if r["last"].as_bool() == Some(true) {
                rule["last"] = true.into();
            }
            rules.push(rule);
        }
        let mut metrics = vec![json!({ "system_name": "hits" })];
        let mut methods = Vec::new();
        let mut guessed = false;
        for m in used.iter().filter(|m| *m != "hits") {
            let parent = known.iter().find(|(_, n, _)| n == m).map(|(_, _, p)| *p);
            let is_method = match parent {
                Some(p) => p.is_some() && p == hits_id,
                None => {
                    guessed = true;
                    true
                }
            };
            if is_method {
                methods.push(json!({ "system_name": m }));
            } else {
                metrics.push(json!({ "system_name": m }));
            }
        }
        if guessed {
            warn("the file does not say which metrics are methods of hits: those the rules use were made methods (as in most 3scale products)".into());
        }

        // Errors.
        let mut errors = Map::new();
        for (kind, status) in [("auth_failed", 403), ("auth_missing", 401), ("no_match", 404), ("limits_exceeded", 429)]
        {
            if let Some(body) = proxy[format!("error_{kind}")].as_str() {
                errors.insert(
                    kind.into(),
                    json!({
                        "status": proxy[format!("error_status_{kind}")].as_u64().unwrap_or(status),
                        "body": body,
                        "content_type": proxy[format!("error_headers_{kind}")].as_str().unwrap_or("text/plain; charset=utf-8"),
                    }),
                );
            }
        }

        // The policy chain.
        let mut chain = Vec::new();
        for (j, p) in proxy["policy_chain"].as_array().cloned().unwrap_or_default().iter().enumerate() {
            let raw = p["name"].as_str().unwrap_or_default();
            let short = raw.strip_prefix("apicast.policy.").unwrap_or(raw);
            let ours = match apicast::equivalent(short) {
                // Named alike (`cors`, `rate_limit`…): the configuration translates below.
                None if registry.policies().iter().any(|p| p.name == short) => short,
                Some(Equivalent::Policy { name: "tollgate", .. }) => "tollgate",
                // Its configuration translates below.
                Some(Equivalent::Policy { name: "status_code_overwrite", .. }) => "status_code_overwrite",
                Some(Equivalent::Policy { name, note }) => {
                    warn(format!("policy_chain[{j}] `{raw}`: use `{name}` in Tollgate ({note}); left out"));
                    continue;
                }
                Some(Equivalent::None { note }) => {
                    warn(format!("policy_chain[{j}] `{raw}`: no Tollgate policy ({note}); left out"));
                    continue;
                }
                None => {
                    warn(format!("policy_chain[{j}] `{raw}`: Tollgate has no such policy; left out"));
                    continue;
                }
            };
            let mut notes = Vec::new();
            match translate(ours, &p["configuration"], &mut notes) {
                Ok(configuration) => match registry.build(&format!("policy_chain[{j}]"), ours, &configuration) {
                    Ok(_) => {
                        let mut entry = json!({ "name": ours });
                        if configuration.as_object().is_some_and(|o| !o.is_empty()) {
                            entry["configuration"] = configuration;
                        }
                        if p["enabled"].as_bool() == Some(false) {
                            entry["enabled"] = false.into();
                        }
                        chain.push(entry);
                    }
                    Err(e) => {
                        // The error names Tollgate's keys; the user edits APIcast's.
                        let renamed: Vec<String> = renamed_keys(ours)
                            .iter()
                            .filter(|(tollgate, _)| e.to_string().contains(tollgate))
                            .map(|(tollgate, apicast)| format!("`{tollgate}` is APIcast's `{apicast}`"))
                            .collect();
                        let names =
                            if renamed.is_empty() { String::new() } else { format!(" ({})", renamed.join(", ")) };
                        warn(format!("policy_chain[{j}] `{raw}` does not translate: {e}{names}; left out"))
                    }
                },
                Err(why) => warn(format!("policy_chain[{j}] `{raw}`: {why}; left out")),
            }
            for n in notes {
                warn(n);
            }
        }

        let mut product = json!({
            "system_name": name,
            "staging_public_base_url": staging,
            "production_public_base_url": production,
            "backend_usages": usages,
            "authentication": auth,
            "metrics": metrics,
            "methods": methods,
            "mapping_rules": rules,
            "policy_chain": chain,
            "application_plans": [ { "system_name": "default" } ],
        });
        if let Some(n) = service["name"].as_str() {
            product["name"] = n.into();
        }
        if !errors.is_empty() {
            product["errors"] = Value::Object(errors);
        }
        products.push(product);
    }
    if products.is_empty() {
        bail!("no service could be imported:\n  {}", warnings.join("\n  "));
    }
    warnings.push("applications and plans are not in an APIcast configuration: each product has a `default` plan; add accounts and applications".into());
    crate::checked(json!({ "backends": backends, "products": products }), warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuscode_overwrite_becomes_status_code_overwrite() {
        let doc = json!({ "services": [ { "id": 1, "proxy": {
            "endpoint": "http://api.example.com",
            "sandbox_endpoint": "http://api-staging.example.com",
            "api_backend": "http://127.0.0.1:9",
            "policy_chain": [ { "name": "apicast.policy.statuscode_overwrite", "configuration": {
                "http_statuses": [ { "upstream": 500, "apicast": 503 } ]
            } } ]
        } } ] });
        let imported = apicast(&doc.to_string()).expect("imports");
        let chain = &imported.config.products[0].policy_chain;
        assert_eq!(chain[0].name, "status_code_overwrite", "{:?}", imported.warnings);
        assert_eq!(chain[0].configuration, json!({ "http_statuses": [ { "upstream": 500, "gateway": 503 } ] }));
    }

    #[test]
    fn a_pair_that_does_not_translate_is_named_in_apicasts_words() {
        let doc = json!({ "services": [ { "id": 1, "proxy": {
            "endpoint": "http://api.example.com",
            "sandbox_endpoint": "http://api-staging.example.com",
            "api_backend": "http://127.0.0.1:9",
            "policy_chain": [ { "name": "apicast.policy.statuscode_overwrite", "configuration": {
                "http_statuses": [ { "upstream": 500 } ]
            } } ]
        } } ] });
        let imported = apicast(&doc.to_string()).expect("imports");
        assert!(imported.config.products[0].policy_chain.is_empty());
        let said = imported.warnings.join("\n");
        assert!(said.contains("`gateway` is APIcast's `apicast`"), "{said}");
    }

    #[test]
    fn policies_are_checked_offline_so_an_import_fetches_nothing() {
        // A `jwt` policy whose JWK Set URL nothing answers: an online build would try to
        // fetch it (and leave the policy out when that fails); the import checks it.
        let doc = json!({ "services": [ { "id": 1, "proxy": {
            "endpoint": "http://api.example.com",
            "sandbox_endpoint": "http://api-staging.example.com",
            "api_backend": "http://127.0.0.1:9",
            "policy_chain": [ { "name": "jwt", "configuration": { "jwks_url": "http://127.0.0.1:1/certs" } } ]
        } } ] });
        let imported = apicast(&doc.to_string()).expect("imports");
        let chain = &imported.config.products[0].policy_chain;
        assert_eq!(chain.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["jwt"], "{:?}", imported.warnings);
    }
}
