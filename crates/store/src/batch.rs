//! Many writes in one transaction: what `apply` of a large declarative file needs.
//!
//! Each [`Store`] call is a transaction of its own, and with SQLite's `synchronous =
//! FULL` every commit waits for the disk: a file of 10,000 products and 100,000
//! applications made 110,000 of them. A [`Batch`] commits once — all of its writes or,
//! dropped before [`Batch::commit`] or after an error, none — and its reads see its own
//! writes.

use crate::configs::{current_configs_on, insert_version_on};
use crate::{ConfigVersion, Environment, Result, Row, Store, StoreError, Table, insert_on, update_on};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::{AssertSqlSafe, Row as _};
use std::fmt::Write as _;

/// The most rows [`Batch::insert_many`] writes in one statement (4 parameters each).
/// sqlx finds each parameter of a SQLite statement by its name among all of them, so a
/// row costs more the longer the statement: with 500 rows a statement, that search was
/// a quarter of a large `apply`'s time; with 100 it is negligible, and 1,100 statements
/// write 110,000 rows.
pub const ROWS_PER_INSERT: usize = 100;

/// Writes that commit together (see the module). Rolled back when dropped uncommitted.
pub struct Batch {
    tx: sqlx::Transaction<'static, sqlx::Any>,
}

impl Store {
    /// Starts a [`Batch`]. On SQLite it takes the database's write lock at once
    /// (`BEGIN IMMEDIATE`) and holds it until it commits or is dropped: another batch or
    /// write waits for it (up to the busy timeout, 5 s), readers do not. A deferred
    /// transaction that read first could not take the lock later if another writer had
    /// committed meanwhile (`SQLITE_BUSY_SNAPSHOT`), and would fail instead of waiting.
    ///
    /// # Errors
    /// [`StoreError::Busy`] when the lock is not had within the busy timeout;
    /// [`StoreError::Database`] when no connection can be had or the transaction cannot
    /// begin.
    pub async fn batch(&self) -> Result<Batch> {
        let tx = match self.dialect() {
            crate::Dialect::Sqlite => self.pool().begin_with("BEGIN IMMEDIATE").await,
            crate::Dialect::Postgres => self.pool().begin().await,
        };
        Ok(Batch { tx: tx? })
    }
}

impl Batch {
    /// [`Store::insert`], in the batch.
    ///
    /// # Errors
    /// As [`Store::insert`]: a taken `system_name` is [`StoreError::Conflict`], a parent
    /// that does not exist [`StoreError::NotFound`].
    pub async fn insert<T: Serialize + DeserializeOwned>(
        &mut self,
        table: Table,
        parent: Option<i64>,
        system_name: &str,
        doc: &T,
    ) -> Result<Row<T>> {
        insert_on(&mut *self.tx, table, parent, system_name, doc).await
    }

    /// Inserts many rows of one table — `(parent, system_name, doc)`; parents for child
    /// tables only — in statements of up to [`ROWS_PER_INSERT`] rows: one statement per
    /// row cost SQLite's worker thread two context switches each, most of the time of a
    /// large `apply`. Answers each new row's `(id, parent, system_name)`, in no
    /// particular order; the rows are at revision 1, created and updated at `now`.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when a name is taken (which one is not said: the database
    /// refuses the statement as a whole); [`StoreError::NotFound`] for a parent that does
    /// not exist; [`StoreError::Database`].
    pub async fn insert_many<T: Serialize>(
        &mut self,
        table: Table,
        rows: &[(Option<i64>, &str, &T)],
        now: i64,
    ) -> Result<Vec<(i64, Option<i64>, String)>> {
        let child = table.has_parent();
        let per_row = if child { 4 } else { 3 };
        let mut out = Vec::with_capacity(rows.len());
        for chunk in rows.chunks(ROWS_PER_INSERT) {
            let mut sql = String::with_capacity(64 + chunk.len() * 24);
            let columns = if child { "parent_id, system_name" } else { "system_name" };
            let _ =
                write!(sql, "INSERT INTO {} ({columns}, doc, revision, created_at, updated_at) VALUES ", table.name());
            for i in 0..chunk.len() {
                let n = i * per_row;
                let sep = if i == 0 { "" } else { ", " };
                let _ = match child {
                    true => write!(sql, "{sep}(${}, ${}, ${}, 1, ${}, ${})", n + 1, n + 2, n + 3, n + 4, n + 4),
                    false => write!(sql, "{sep}(${}, ${}, 1, ${}, ${})", n + 1, n + 2, n + 3, n + 3),
                };
            }
            sql.push_str(if child { " RETURNING id, parent_id, system_name" } else { " RETURNING id, system_name" });
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for (parent, name, doc) in chunk {
                let json = serde_json::to_string(doc).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                if child {
                    q = q.bind(parent.unwrap_or_default());
                }
                q = q.bind(name.to_string()).bind(json).bind(now);
            }
            let inserted = q.fetch_all(&mut *self.tx).await.map_err(|e| match e {
                e if crate::is_unique_violation(&e) => {
                    StoreError::Conflict(format!("a {} of the same name was created meanwhile", table.singular()))
                }
                e if crate::is_foreign_key_violation(&e) => StoreError::NotFound,
                e => e.into(),
            })?;
            for r in &inserted {
                let parent = if child { Some(r.try_get("parent_id")?) } else { None };
                out.push((r.try_get("id")?, parent, r.try_get("system_name")?));
            }
        }
        Ok(out)
    }

    /// [`Store::update`], in the batch.
    ///
    /// # Errors
    /// As [`Store::update`]: [`StoreError::Stale`] when the row's revision is no longer
    /// `revision` (someone else wrote it since it was read).
    pub async fn update<T: Serialize + DeserializeOwned>(
        &mut self,
        table: Table,
        id: i64,
        revision: i64,
        doc: &T,
    ) -> Result<Row<T>> {
        update_on(&mut *self.tx, table, id, revision, doc).await
    }

    /// [`Store::current_configs`] as the batch sees them.
    ///
    /// # Errors
    /// [`StoreError::Database`]; [`StoreError::Corrupt`] for a stored version that does
    /// not parse.
    pub async fn current_configs(&mut self, env: Environment) -> Result<Vec<ConfigVersion>> {
        current_configs_on(&mut *self.tx, env).await
    }

    /// Records `content` as staging version `latest + 1` of a product unless it equals
    /// `latest` (its current staging version, from [`Batch::current_configs`]), as
    /// [`Store::deploy`] does; `None` when nothing changed.
    ///
    /// # Errors
    /// [`StoreError::Stale`] when a concurrent deploy took the number (the batch cannot
    /// retry: the database aborts it; run it again); [`StoreError::Database`].
    pub async fn deploy(
        &mut self,
        product_id: i64,
        latest: Option<&ConfigVersion>,
        content: &serde_json::Value,
    ) -> Result<Option<ConfigVersion>> {
        if let Some(l) = latest.filter(|l| l.content.as_ref() == Some(content)) {
            debug_assert_eq!(l.product_id, product_id);
            return Ok(None);
        }
        let version = latest.map_or(0, |l| l.version) + 1;
        match insert_version_on(&mut *self.tx, product_id, Environment::Staging, version, content).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.as_database_error().is_some_and(|d| d.is_unique_violation()) => Err(StoreError::Stale),
            Err(e) => Err(e.into()),
        }
    }

    /// Puts a staging version (with its content) on production, as [`Store::promote`].
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn promote(&mut self, staging: &ConfigVersion) -> Result<ConfigVersion> {
        let content = staging.content.clone().unwrap_or_default();
        Ok(insert_version_on(&mut *self.tx, staging.product_id, Environment::Production, staging.version, &content)
            .await?)
    }

    /// Makes every write of the batch durable at once.
    ///
    /// # Errors
    /// [`StoreError::Database`]: nothing of the batch was written.
    pub async fn commit(self) -> Result<()> {
        Ok(self.tx.commit().await?)
    }
}
