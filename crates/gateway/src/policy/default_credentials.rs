//! The `default_credentials` policy (3scale's anonymous access): a request that carries
//! no credentials is treated as if it carried the configured ones, so it is counted and
//! limited as that application. Requests with credentials are untouched (wrong ones are
//! still refused).
//!
//! ```yaml
//! - name: default_credentials
//!   configuration: { user_key: anonymous-key }     # or { app_id: …, app_key: … }
//! - name: tollgate
//! ```

use super::{Context, Credential, Flow, Policy, PolicyError};
use http::request;
use schemars::JsonSchema;
use serde::Deserialize;
use std::sync::Arc;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Config {
    /// The key of the application anonymous requests count as.
    #[serde(default)]
    user_key: Option<String>,
    /// Or its app_id (with `app_key`).
    #[serde(default)]
    app_id: Option<String>,
    #[serde(default)]
    app_key: Option<String>,
}

pub struct DefaultCredentialsPolicy {
    credential: Arc<Credential>,
}

impl DefaultCredentialsPolicy {
    pub(super) fn new(c: Config) -> Result<Self, PolicyError> {
        let credential = match (c.user_key, c.app_id, c.app_key) {
            (Some(k), None, None) if !k.is_empty() => Credential::UserKey(k.into()),
            (None, Some(id), Some(key)) if !id.is_empty() && !key.is_empty() => {
                Credential::AppId { app_id: id.into(), app_key: key.into() }
            }
            (None, Some(_), None) => return Err(PolicyError::new("app_key", "is required with app_id")),
            (None, None, Some(_)) => return Err(PolicyError::new("app_id", "is required with app_key")),
            (None, None, None) => return Err(PolicyError::new("user_key", "give user_key, or app_id and app_key")),
            _ => {
                return Err(PolicyError::new(
                    "user_key",
                    "give either user_key, or app_id and app_key (not empty, not both)",
                ));
            }
        };
        Ok(DefaultCredentialsPolicy { credential: Arc::new(credential) })
    }
}

impl Policy for DefaultCredentialsPolicy {
    fn name(&self) -> &'static str {
        "default_credentials"
    }

    fn rewrite(&self, _req: &mut request::Parts, ctx: &mut Context<'_>) -> Flow {
        ctx.default_credentials = Some(self.credential.clone());
        Flow::Continue
    }
}
