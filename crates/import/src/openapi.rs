//! The OpenAPI importer behind `tollgate import openapi FILE`: an OpenAPI 3.x document (JSON or YAML) becomes a
//! product — one method per operation, one mapping rule per operation — as the 3scale
//! toolbox makes it, printed as Tollgate YAML for `tollgate check` and `tollgate apply`.

use anyhow::{Context as _, bail};
use serde_json::Value;
use std::collections::HashSet;

const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

/// Lower-case letters, digits, `_` and `-`, runs of anything else as one `_`.
fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() || c == '-' {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    let out = out.trim_matches('_').to_string();
    if out.is_empty() { "api".into() } else { out }
}

pub use crate::Imported;

pub fn openapi(text: &str, product: Option<&str>, prefix_matching: bool) -> anyhow::Result<Imported> {
    let doc: Value = serde_norway::from_str(text).context("not a JSON or YAML document")?;
    let version = doc["openapi"].as_str().unwrap_or_default();
    if !version.starts_with("3.") {
        match doc["swagger"].as_str() {
            Some(v) => bail!(
                "a Swagger {v} document: only OpenAPI 3.x is imported (convert it first, e.g. with swagger2openapi)"
            ),
            None => bail!("not an OpenAPI document: no `openapi: 3.x` field"),
        }
    }
    let mut warnings = Vec::new();
    let title = doc["info"]["title"].as_str().unwrap_or("api");
    let name = match product {
        Some(p) => slug(p),
        None => slug(title),
    };
    let server = doc["servers"][0]["url"].as_str().unwrap_or_default();
    let backend_url = if server.starts_with("http://") || server.starts_with("https://") {
        server.trim_end_matches('/').to_string()
    } else {
        warnings.push(format!(
            "no absolute `servers[0].url` (found `{server}`): the backend points at http://127.0.0.1:8000; set its private_base_url"
        ));
        "http://127.0.0.1:8000".to_string()
    };
    let Some(paths) = doc["paths"].as_object() else { bail!("the document has no `paths`") };

    let mut methods = Vec::new();
    let mut rules = Vec::new();
    let mut seen = HashSet::new();
    for (path, item) in paths {
        if !path.starts_with('/') {
            warnings.push(format!("path `{path}` does not start with `/`: skipped"));
            continue;
        }
        for m in METHODS {
            let Some(op) = item.get(m).filter(|o| o.is_object()) else { continue };
            let base = match op["operationId"].as_str() {
                Some(id) if !id.is_empty() => slug(id),
                _ => slug(&format!("{m}{path}")),
            };
            let mut system_name = base.clone();
            let mut n = 2;
            while !seen.insert(system_name.clone()) {
                system_name = format!("{base}_{n}");
                n += 1;
            }
            let mut method = serde_json::json!({ "system_name": system_name });
            if let Some(summary) = op["summary"].as_str().filter(|s| !s.is_empty()) {
                method["friendly_name"] = Value::from(summary);
            }
            if let Some(description) = op["description"].as_str().filter(|s| !s.is_empty()) {
                method["description"] = Value::from(description);
            }
            methods.push(method);
            // Path parameters keep their `{name}` form: a mapping-rule wildcard.
            let pattern = if prefix_matching { path.clone() } else { format!("{path}$") };
            rules.push(
                serde_json::json!({ "http_method": m.to_ascii_uppercase(), "pattern": pattern, "metric": system_name }),
            );
        }
    }
    if rules.is_empty() {
        bail!("the document has no operations under `paths`");
    }
    let mut config = serde_json::json!({
        "backends": [ { "system_name": format!("{name}-backend"), "private_base_url": backend_url } ],
        "products": [ {
            "system_name": name,
            "name": title,
            "staging_public_base_url": format!("http://{name}-staging.localhost"),
            "production_public_base_url": format!("http://{name}.localhost"),
            "backend_usages": [ { "backend": format!("{name}-backend"), "path": "/" } ],
            "metrics": [ { "system_name": "hits", "friendly_name": "Hits" } ],
            "methods": methods,
            "mapping_rules": rules,
            "application_plans": [ { "system_name": "basic", "name": "Basic" } ],
        } ],
    });
    if let Some(d) = doc["info"]["description"].as_str().filter(|d| !d.is_empty()) {
        config["products"][0]["description"] = d.into();
    }
    warnings.push(format!(
        "public base URLs are placeholders (http://{name}-staging.localhost, http://{name}.localhost): set the hosts your clients use"
    ));
    crate::checked(config, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_system_names() {
        assert_eq!(slug("Swagger Petstore - OpenAPI 3.0"), "swagger_petstore_-_openapi_3_0");
        assert_eq!(slug("listPets"), "listpets");
        assert_eq!(slug("get/pets/{petId}"), "get_pets_petid");
        assert_eq!(slug("***"), "api");
    }

    /// Found by the `import` fuzz target: a server URL whose host is no host name for
    /// TLS passed validation, and the import printed a configuration that `tollgate
    /// check` refused (`backends[0].tls.server_name`).
    #[test]
    fn what_the_import_prints_passes_tollgate_check() {
        let doc = r#"{"openapi": "3.1.0", "servers": [{"url": "https://api&example.com/"}],
                      "paths": {"/a/{id}": {"get": {"operationId": "getA"}}}}"#;
        let e = openapi(doc, None, false).err().expect("refused").to_string();
        assert!(e.contains("not valid"), "{e}");
        let fine = doc.replace("api&example", "api.example");
        let imported = openapi(&fine, None, false).expect("imports");
        assert!(tollgate_gateway::check(&imported.config, false).is_ok());
    }
}
