//! The `tollgate` policy (3scale's `apicast`): credentials → application → mapping
//! rules → usage. The limits check that follows is run by the gateway after the access
//! phase of every policy (see the module docs of `policy`).

use super::{Context, Credential, Flow, Policy};
use crate::auth::{self, Credentials};
use crate::mapping::Usage;
use crate::refusal::Refusal;
use http::request::Parts;
use serde::Deserialize;
use std::borrow::Cow;
use tollgate_model::ApplicationState;
use tollgate_model::pattern::QueryArgs;

/// The `tollgate` policy takes no options: authentication, mapping rules and limits are
/// the product's and its plans'.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Config {}

/// The `tollgate` policy (3scale's `apicast`): identifies the application by its
/// credentials and maps the request to usage by the mapping rules.
pub struct TollgatePolicy;

impl Policy for TollgatePolicy {
    fn name(&self) -> &'static str {
        "tollgate"
    }

    fn access(&self, req: &Parts, ctx: &mut Context<'_>) -> Flow {
        let product = ctx.product;
        // The query is parsed at most once, and only when credentials or rules need it.
        let needs_query = product.credentials_in_query() || product.mapper.needs_query();
        let query = if needs_query { QueryArgs::parse(req.uri.query()) } else { QueryArgs::default() };

        // The connection's certificate is the credential (mutual TLS, verified against
        // the product's authorities before any policy ran).
        if product.authentication.mode == tollgate_model::AuthMode::ClientCertificate {
            let Some(cert) = ctx.client_certificate.clone() else {
                return Flow::Refuse(Refusal::AuthenticationMissing(product.errors.auth_missing.clone()));
            };
            let application = product.applications.by_certificate.get(cert.fingerprint()).cloned();
            return self.identified(
                req,
                &query,
                ctx,
                application,
                Credential::ClientCertificate(cert.fingerprint().into()),
            );
        }
        let fallback = ctx.default_credentials.clone();
        let found = auth::extract(&product.authentication, req, &query);
        // A client id from a verified token names the application without a key.
        let (application, credential) = match (found, fallback.as_deref()) {
            (None, Some(Credential::ClientId(id))) => {
                (product.applications.by_app_id.get(&**id), Credential::ClientId(id.clone()))
            }
            (found, fallback) => {
                let credentials = found.or_else(|| {
                    fallback.and_then(|c| match c {
                        Credential::UserKey(k) => Some(Credentials::UserKey(Cow::Owned(k.to_string()))),
                        Credential::AppId { app_id, app_key } => Some(Credentials::AppId {
                            app_id: Cow::Owned(app_id.to_string()),
                            app_key: Some(Cow::Owned(app_key.to_string())),
                        }),
                        Credential::ClientId(id) => {
                            Some(Credentials::AppId { app_id: Cow::Owned(id.to_string()), app_key: None })
                        }
                        // Not a default credential (`default_credentials` makes keys only).
                        Credential::ClientCertificate(_) => None,
                    })
                });
                let Some(credentials) = credentials else {
                    return Flow::Refuse(Refusal::AuthenticationMissing(product.errors.auth_missing.clone()));
                };
                let application = match &credentials {
                    Credentials::UserKey(key) => product.applications.by_user_key.get(&**key),
                    Credentials::AppId { app_id, app_key } => {
                        product.applications.by_app_id.get(&**app_id).filter(|app| match app_key {
                            Some(k) => {
                                app.app_keys.iter().any(|known| constant_time_eq(known.as_bytes(), k.as_bytes()))
                            }
                            None => false,
                        })
                    }
                };
                let credential = match credentials {
                    Credentials::UserKey(k) => Credential::UserKey((*k).into()),
                    Credentials::AppId { app_id, app_key } => Credential::AppId {
                        app_id: (*app_id).into(),
                        app_key: app_key.as_deref().unwrap_or_default().into(),
                    },
                };
                (application, credential)
            }
        };
        let application = application.cloned();
        self.identified(req, &query, ctx, application, credential)
    }
}

impl TollgatePolicy {
    /// The application the credentials named (if any and live), then the usage the
    /// mapping rules give the request.
    fn identified(
        &self,
        req: &Parts,
        query: &QueryArgs<'_>,
        ctx: &mut Context<'_>,
        application: Option<std::sync::Arc<crate::snapshot::Application>>,
        credential: Credential,
    ) -> Flow {
        let product = ctx.product;
        let Some(application) = application else {
            return Flow::Refuse(Refusal::AuthenticationFailed(product.errors.auth_failed.clone()));
        };
        if application.state == ApplicationState::Suspended {
            return Flow::Refuse(Refusal::AuthenticationFailed(product.errors.auth_failed.clone()));
        }

        let mut usage = Usage::default();
        if !product.mapper.map(&req.method, req.uri.path(), query, &mut usage) {
            return Flow::Refuse(Refusal::NoMappingRule(product.errors.no_match.clone()));
        }
        ctx.usage = usage.with_ancestors(&product.metrics);
        ctx.application = Some(application);
        ctx.credential = Some(credential);
        Flow::Continue
    }
}

/// Compares keys without leaking, through timing, how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
