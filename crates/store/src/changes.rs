//! How gateway processes learn that the configuration changed, whoever changed it: the
//! store keeps a revision that every change bumps (a trigger, in the same transaction),
//! and on PostgreSQL also notifies channel `tollgate_config` at commit.

use crate::{Dialect, Result, Store, StoreError};
use sqlx::postgres::PgListener;

/// The PostgreSQL channel configuration changes are announced on.
pub const CHANNEL: &str = "tollgate_config";

/// A live subscription to [`CHANNEL`].
pub struct Changes {
    listener: PgListener,
}

impl Changes {
    /// Waits for the next announcement. `Ok(None)`: the connection was lost (and is
    /// re-established by the next call); announcements made meanwhile are lost, so the
    /// caller should compare revisions.
    pub async fn next(&mut self) -> Result<Option<i64>> {
        match self.listener.try_recv().await? {
            Some(n) => Ok(Some(n.payload().parse().unwrap_or_default())),
            None => Ok(None),
        }
    }
}

impl Store {
    /// The configuration revision: it grows with every change gateways must see.
    pub async fn config_revision(&self) -> Result<i64> {
        let (value,): (i64,) =
            sqlx::query_as("SELECT value FROM config_revision WHERE id = 1").fetch_one(&self.pool).await?;
        Ok(value)
    }

    /// Subscribes to change announcements (PostgreSQL only; `None` on SQLite, where
    /// processes poll [`Store::config_revision`]).
    pub async fn changes(&self) -> Result<Option<Changes>> {
        if self.dialect != Dialect::Postgres {
            return Ok(None);
        }
        let mut listener = PgListener::connect(&self.url).await.map_err(StoreError::Database)?;
        listener.listen(CHANNEL).await?;
        Ok(Some(Changes { listener }))
    }
}
