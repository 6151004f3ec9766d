//! `config`: a configuration document (YAML, or JSON which is YAML too) through the
//! offline validation path of `tollgate check` and the admin API's saves:
//! `tollgate_model::parse_str` → `tollgate_gateway::check` (validation, then a
//! compilation with `Registry::offline()`: every policy built, nothing fetched, no file
//! made).
//!
//! Feeds: the document's bytes (UTF-8).
//!
//! Asserts, beyond "no panic" (errors are the expected answer to most inputs):
//! - every refusal carries at least one error, with a message;
//! - a configuration that passes as complete also passes as a draft (a draft is only
//!   allowed to lack backend usages);
//! - a configuration that parsed is the same once printed as YAML and parsed again
//!   (`tollgate export`, then `tollgate check` or `apply`), and it validates the same.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let config = match tollgate_model::parse_str(text) {
        Ok(c) => c,
        Err(errors) => {
            assert!(!errors.0.is_empty(), "a refusal without an error");
            assert!(!errors.to_string().is_empty());
            return;
        }
    };
    let complete = tollgate_gateway::check(&config, false);
    let draft = tollgate_gateway::check(&config, true);
    if let Err(errors) = &complete {
        assert!(!errors.0.is_empty(), "a refusal without an error");
    }
    if complete.is_ok() {
        assert!(draft.is_ok(), "valid as complete, refused as a draft: {:?}", draft.err().map(|e| e.to_string()));
    }

    let yaml = serde_norway::to_string(&config).expect("a configuration prints as YAML");
    let again = match tollgate_model::parse_str(&yaml) {
        Ok(c) => c,
        Err(e) => panic!("the configuration printed as YAML does not parse: {e}\n{yaml}"),
    };
    assert_eq!(again, config, "printed and parsed again, the configuration changed\n{yaml}");
    assert_eq!(tollgate_gateway::check(&again, false).is_ok(), complete.is_ok(), "{yaml}");
});
