//! Schema migrations: one ordered history, each step written in both dialects, applied
//! once per database inside a transaction and recorded in `schema_migrations`.

use crate::{Dialect, Result, now_millis};
use sqlx::AnyPool;

struct Migration {
    version: i64,
    description: &'static str,
    sqlite: &'static str,
    postgres: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "initial schema",
        sqlite: include_str!("../migrations/sqlite/0001_initial.sql"),
        postgres: include_str!("../migrations/postgres/0001_initial.sql"),
    },
    Migration {
        version: 2,
        description: "configuration revision and change notifications",
        sqlite: include_str!("../migrations/sqlite/0002_config_revision.sql"),
        postgres: include_str!("../migrations/postgres/0002_config_revision.sql"),
    },
    Migration {
        version: 3,
        description: "traffic by status class and environment, gateway node reports",
        sqlite: include_str!("../migrations/sqlite/0003_traffic.sql"),
        postgres: include_str!("../migrations/postgres/0003_traffic.sql"),
    },
];

pub(crate) async fn run(pool: &AnyPool, dialect: Dialect) -> Result<()> {
    let mut tx = pool.begin().await?;
    if dialect == Dialect::Postgres {
        // Several processes may start at once (gateway nodes): one migrates, the
        // others wait here and then find nothing left to do.
        sqlx::raw_sql("SELECT pg_advisory_xact_lock(7270617)").execute(&mut *tx).await?;
    }
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL, applied_at BIGINT NOT NULL)",
    )
    .execute(&mut *tx)
    .await?;
    for m in MIGRATIONS {
        let done: Option<(i64,)> = sqlx::query_as("SELECT version FROM schema_migrations WHERE version = $1")
            .bind(m.version)
            .fetch_optional(&mut *tx)
            .await?;
        if done.is_some() {
            continue;
        }
        let sql = match dialect {
            Dialect::Sqlite => m.sqlite,
            Dialect::Postgres => m.postgres,
        };
        sqlx::raw_sql(sql).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO schema_migrations (version, description, applied_at) VALUES ($1, $2, $3)")
            .bind(m.version)
            .bind(m.description)
            .bind(now_millis())
            .execute(&mut *tx)
            .await?;
        tracing::info!(version = m.version, description = m.description, "store migrated");
    }
    tx.commit().await?;
    Ok(())
}
