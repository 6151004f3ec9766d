//! `import`: the two importers of `tollgate import` — an APIcast configuration (JSON:
//! `{"services": […]}`, a `proxy_config`, or one proxy configuration) and an OpenAPI
//! 3.x document (JSON or YAML) — each making a Tollgate configuration.
//!
//! Feeds: one byte (bit 0: APIcast or OpenAPI; for OpenAPI, bit 1 prefix matching and
//! bit 2 a product name from the document's first line), then the document.
//!
//! Asserts, beyond "no panic" (a refusal with a message is a fine answer):
//! - what an importer returns passes `tollgate check` (validation and an offline
//!   compilation of every policy): the promise of `tollgate import … | tollgate check`;
//! - the imported configuration survives being printed (YAML, as `tollgate import`
//!   prints it) and loaded again unchanged;
//! - an APIcast import has a product per imported service and a backend for every
//!   backend usage; an OpenAPI import has one mapping rule per method.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    let imported = if flags & 1 == 0 {
        tollgate_import::apicast::apicast(text).map(|i| (i.config, i.warnings))
    } else {
        let product = (flags & 4 != 0).then(|| text.lines().next().unwrap_or_default());
        tollgate_import::openapi::openapi(text, product, flags & 2 != 0).map(|i| (i.config, i.warnings))
    };
    let (config, _warnings) = match imported {
        Ok(found) => found,
        Err(e) => {
            assert!(!format!("{e:#}").is_empty(), "a refusal without a message");
            return;
        }
    };
    if let Err(errors) = tollgate_gateway::check(&config, false) {
        panic!("an imported configuration fails `tollgate check`:\n{errors}");
    }
    let yaml = serde_norway::to_string(&config).expect("prints as YAML");
    match tollgate_model::parse_str(&yaml) {
        Ok(again) => assert_eq!(again, config, "printed and loaded again, the import changed:\n{yaml}"),
        Err(e) => panic!("the printed import does not load: {e}\n{yaml}"),
    }
    assert!(!config.products.is_empty(), "an import without a product");
    for p in &config.products {
        for u in &p.backend_usages {
            assert!(config.backends.iter().any(|b| b.system_name == u.backend), "a usage of an unknown backend");
        }
    }
    if flags & 1 == 1 {
        let p = &config.products[0];
        assert_eq!(p.mapping_rules.len(), p.methods.len(), "OpenAPI: one mapping rule per method");
    }
});
