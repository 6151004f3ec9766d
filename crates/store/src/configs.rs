//! Versioned proxy configurations: `deploy` records the draft as staging version N+1
//! (only when it differs from the latest), `promote` puts a staging version on
//! production. Rows are immutable; the current version of an environment is its latest
//! row, so a rollback is a promotion of an older version.

use crate::{Result, Store, StoreError, now_millis};
use serde::Serialize;
use sqlx::Row as _;

pub use tollgate_model::Environment;

/// One immutable version of a product's proxy configuration in one environment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConfigVersion {
    /// Id of the product's row; not serialized.
    #[serde(skip)]
    pub product_id: i64,
    /// Version number: staging versions count 1, 2, … per product; a production row carries
    /// the number of the staging version it promotes.
    pub version: i64,
    /// The environment the version is on.
    pub environment: Environment,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
    /// The product's configuration as deployed; `None` when listed without content.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<serde_json::Value>,
}

impl Store {
    fn config_row(r: &sqlx::any::AnyRow, with_content: bool) -> Result<ConfigVersion> {
        let env: String = r.try_get("environment")?;
        let content = if with_content {
            let text: String = r.try_get("content")?;
            Some(serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(format!("proxy config: {e}")))?)
        } else {
            None
        };
        Ok(ConfigVersion {
            product_id: r.try_get("product_id")?,
            version: r.try_get("version")?,
            environment: Environment::parse(&env).ok_or_else(|| StoreError::Corrupt(format!("environment `{env}`")))?,
            created_at: r.try_get("created_at")?,
            content,
        })
    }

    /// The current version of a product in an environment, with its content.
    pub async fn current_config(&self, product_id: i64, env: Environment) -> Result<Option<ConfigVersion>> {
        let row = sqlx::query(
            "SELECT product_id, environment, version, content, created_at FROM proxy_configs WHERE product_id = $1 AND environment = $2 ORDER BY id DESC LIMIT 1",
        )
        .bind(product_id)
        .bind(env.as_str())
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(|r| Self::config_row(r, true)).transpose()
    }

    /// Records `content` as staging version N+1 unless it equals the latest staging
    /// version; returns the new version, or `None` when nothing changed.
    pub async fn deploy(&self, product_id: i64, content: &serde_json::Value) -> Result<Option<ConfigVersion>> {
        for _ in 0..8 {
            let latest = self.current_config(product_id, Environment::Staging).await?;
            if latest.as_ref().and_then(|l| l.content.as_ref()) == Some(content) {
                return Ok(None);
            }
            let max: Option<i64> = sqlx::query_scalar(
                "SELECT MAX(version) FROM proxy_configs WHERE product_id = $1 AND environment = 'staging'",
            )
            .bind(product_id)
            .fetch_one(self.pool())
            .await?;
            let version = max.unwrap_or(0) + 1;
            match insert_version_on(self.pool(), product_id, Environment::Staging, version, content).await {
                Ok(v) => return Ok(Some(v)),
                // A concurrent deploy took this number: look again.
                Err(e) if e.as_database_error().is_some_and(|d| d.is_unique_violation()) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Stale)
    }

    /// Puts staging version `version` (default: the latest) on production.
    pub async fn promote(&self, product_id: i64, version: Option<i64>) -> Result<ConfigVersion> {
        let source = match version {
            Some(v) => self.config_version(product_id, Environment::Staging, v).await?,
            None => self.current_config(product_id, Environment::Staging).await?.ok_or(StoreError::NotFound)?,
        };
        let content = source.content.clone().unwrap_or_default();
        Ok(insert_version_on(self.pool(), product_id, Environment::Production, source.version, &content).await?)
    }

    /// The versions of an environment, newest first, without content. For production,
    /// one entry per promotion.
    pub async fn config_versions(&self, product_id: i64, env: Environment) -> Result<Vec<ConfigVersion>> {
        let rows = sqlx::query(
            "SELECT product_id, environment, version, created_at FROM proxy_configs WHERE product_id = $1 AND environment = $2 ORDER BY id DESC",
        )
        .bind(product_id)
        .bind(env.as_str())
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(|r| Self::config_row(r, false)).collect()
    }

    /// One version with its content (for production, its latest promotion).
    pub async fn config_version(&self, product_id: i64, env: Environment, version: i64) -> Result<ConfigVersion> {
        let row = sqlx::query(
            "SELECT product_id, environment, version, content, created_at FROM proxy_configs WHERE product_id = $1 AND environment = $2 AND version = $3 ORDER BY id DESC LIMIT 1",
        )
        .bind(product_id)
        .bind(env.as_str())
        .bind(version)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(|r| Self::config_row(r, true)).transpose()?.ok_or(StoreError::NotFound)
    }

    /// The current version of every product in an environment, with content.
    pub async fn current_configs(&self, env: Environment) -> Result<Vec<ConfigVersion>> {
        current_configs_on(self.pool(), env).await
    }
}

/// [`Store::current_configs`] on any connection: the pool's, or a batch's transaction.
pub(crate) async fn current_configs_on<'e, E>(exec: E, env: Environment) -> Result<Vec<ConfigVersion>>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let rows = sqlx::query(
        "SELECT c.product_id, c.environment, c.version, c.content, c.created_at FROM proxy_configs c \
         WHERE c.environment = $1 AND c.id = (SELECT MAX(id) FROM proxy_configs m WHERE m.product_id = c.product_id AND m.environment = c.environment) \
         ORDER BY c.product_id",
    )
    .bind(env.as_str())
    .fetch_all(exec)
    .await?;
    rows.iter().map(|r| Store::config_row(r, true)).collect()
}

/// Records version `version` of a product's proxy configuration on `env`; a staging
/// number already taken is the database's unique violation.
pub(crate) async fn insert_version_on<'e, E>(
    exec: E,
    product_id: i64,
    env: Environment,
    version: i64,
    content: &serde_json::Value,
) -> std::result::Result<ConfigVersion, sqlx::Error>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let text = serde_json::to_string(content).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let now = now_millis();
    sqlx::query(
        "INSERT INTO proxy_configs (product_id, environment, version, content, created_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(product_id)
    .bind(env.as_str())
    .bind(version)
    .bind(text)
    .bind(now)
    .execute(exec)
    .await?;
    Ok(ConfigVersion { product_id, version, environment: env, created_at: now, content: Some(content.clone()) })
}
