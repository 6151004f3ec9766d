//! APIcast's policy names, for people coming from 3scale: what each is called here, or
//! why there is no such policy. Used where a name is refused (the chain's validation)
//! and by `tollgate import apicast`, so both say the same thing.
//!
//! Source: the policies APIcast ships (`gateway/src/apicast/policy/*` in the APIcast
//! repository, 3scale API Management 2.x documentation, "APIcast policies").

/// What Tollgate offers for an APIcast policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Equivalent {
    /// This Tollgate policy does the same job; `note` says how, when the configuration
    /// differs.
    Policy {
        /// The Tollgate policy's name.
        name: &'static str,
        /// How it does the job, where its configuration differs.
        note: &'static str,
    },
    /// No Tollgate policy: `note` says why (not needed, done elsewhere, or not yet).
    None {
        /// Why there is none.
        note: &'static str,
    },
}

/// APIcast policies whose name is not a Tollgate policy's (those named alike, such as
/// `cors` or `rate_limit`, are not listed).
const NAMES: [(&str, Equivalent); 24] = [
    (
        "apicast",
        Equivalent::Policy {
            name: "tollgate",
            note: "credentials, mapping rules and the plan's limits (it runs last if absent)",
        },
    ),
    (
        "jwt_claim_check",
        Equivalent::Policy { name: "jwt", note: "claim checks are the `claim_checks` of the `jwt` policy" },
    ),
    (
        "keycloak_role_check",
        Equivalent::Policy {
            name: "jwt",
            note: "role checks are `claim_checks` on the roles claim of the `jwt` policy",
        },
    ),
    (
        "liquid_context_debug",
        Equivalent::Policy { name: "echo", note: "`echo` answers with the request as the gateway sees it" },
    ),
    (
        "rewrite_url_captures",
        Equivalent::Policy {
            name: "url_rewriting",
            note: "`url_rewriting` commands rewrite the path with regular-expression groups",
        },
    ),
    (
        "conditional",
        Equivalent::None { note: "every Tollgate policy takes a `condition` of its own (docs/policies.md#conditions)" },
    ),
    (
        "token_introspection",
        Equivalent::None {
            note: "Tollgate has no token introspection yet; the `jwt` policy validates tokens with the JWK Set",
        },
    ),
    ("3scale_referrer", Equivalent::None { note: "Tollgate has no referrer filtering yet" }),
    (
        "statuscode_overwrite",
        Equivalent::Policy {
            name: "status_code_overwrite",
            note: "the same pairs, `{ upstream, gateway }` for APIcast's `{ upstream, apicast }`",
        },
    ),
    (
        "3scale_batcher",
        Equivalent::None {
            note: "not needed: usage is counted in the gateway (memory or Redis), not reported to 3scale",
        },
    ),
    (
        "caching",
        Equivalent::None {
            note: "not needed: authorizations are decided in the gateway, there is no backend to cache",
        },
    ),
    (
        "request_unbuffered",
        Equivalent::None { note: "not needed: Tollgate streams request and response bodies without buffering" },
    ),
    (
        "on_failed",
        Equivalent::None {
            note: "not needed: a policy that does not build is refused when the configuration is saved",
        },
    ),
    (
        "tls",
        Equivalent::None {
            note: "TLS termination is the listener's: `tls://` listeners with --tls-cert and --tls-key",
        },
    ),
    ("tls_validation", Equivalent::None { note: "Tollgate does not check client certificates yet" }),
    ("upstream_mtls", Equivalent::None { note: "Tollgate does not present client certificates to backends yet" }),
    ("oauth_mtls", Equivalent::None { note: "Tollgate has no OAuth 2.0 mutual TLS yet" }),
    ("content_caching", Equivalent::None { note: "Tollgate has no response cache yet" }),
    ("custom_metrics", Equivalent::None { note: "Tollgate has no metrics counted by response yet" }),
    ("rate_limit_headers", Equivalent::None { note: "Tollgate has no RateLimit headers on admitted responses yet" }),
    ("grpc", Equivalent::None { note: "Tollgate does not speak HTTP/2 to backends yet, so no gRPC" }),
    ("http_proxy", Equivalent::None { note: "Tollgate does not reach backends through an HTTP proxy yet" }),
    ("camel", Equivalent::None { note: "Tollgate does not reach backends through an HTTP proxy yet" }),
    ("soap", Equivalent::None { note: "Tollgate has no SOAP policy yet" }),
];

/// What Tollgate has for the APIcast policy `name` (with or without APIcast's
/// `apicast.policy.` prefix), when it is not a Tollgate policy's name as well.
pub fn equivalent(name: &str) -> Option<Equivalent> {
    let short = name.strip_prefix("apicast.policy.").unwrap_or(name);
    NAMES.iter().find(|(n, _)| *n == short).map(|(_, e)| *e)
}

/// The hint for a chain entry that names an APIcast policy.
pub fn hint(name: &str) -> Option<String> {
    equivalent(name).map(|e| match e {
        Equivalent::Policy { name: ours, note } => format!("APIcast's `{name}` is `{ours}` in Tollgate: {note}"),
        Equivalent::None { note } => format!("APIcast's `{name}` has no Tollgate policy: {note}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apicast_names_get_a_hint_with_or_without_their_prefix() {
        assert_eq!(
            equivalent("apicast.policy.apicast"),
            Some(Equivalent::Policy {
                name: "tollgate",
                note: "credentials, mapping rules and the plan's limits (it runs last if absent)"
            })
        );
        assert!(hint("jwt_claim_check").is_some_and(|h| h.contains("`jwt`") && h.contains("claim_checks")));
        assert!(hint("3scale_referrer").is_some_and(|h| h.contains("no Tollgate policy")));
        assert_eq!(hint("cors"), None, "named alike: no hint needed");
    }

    #[test]
    fn no_listed_name_is_also_a_tollgate_policy() {
        let registry = super::super::Registry::default();
        for (name, e) in NAMES {
            assert!(registry.policies().iter().all(|p| p.name != name), "{name} is a Tollgate policy too");
            if let Equivalent::Policy { name: ours, .. } = e {
                assert!(registry.policies().iter().any(|p| p.name == ours), "{name} → {ours}, unknown");
            }
        }
    }
}
