#![warn(missing_docs)]
//! Tollgate's persistent store: SQLite (the embedded default) or PostgreSQL, one schema
//! and one migration history for both, reached through sqlx's `Any` driver so every query
//! is written once.
//!
//! Entities (backends, products, application plans, accounts, applications) are rows
//! holding a JSON document in the keys of the declarative YAML — so the admin API, the
//! export and `apply` all speak the same shapes — plus the columns the store needs:
//! id, parent, `system_name` (immutable, unique in its scope) and a `revision` that
//! makes concurrent edits safe (optimistic locking). Proxy-configuration versions are
//! immutable rows. This crate knows nothing of HTTP or of the gateway.

mod batch;
mod changes;
mod configs;
mod docs;
mod migrate;
mod traffic;
mod usage;

pub use batch::{Batch, ROWS_PER_INSERT};
pub use changes::{CHANNEL, Changes};
pub use configs::{ConfigVersion, Environment};
pub use docs::{AccountDoc, ApplicationDoc, Item, PlanDoc, ProductDoc};
pub use traffic::{NodeReport, TrafficRow};
pub use usage::{Granularity, UsageQuery, UsageRow};

use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, AssertSqlSafe, Row as _};
use std::time::{SystemTime, UNIX_EPOCH};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No row has that id or name (on insert: the parent row does not exist).
    #[error("not found")]
    NotFound,
    /// A unique name is taken, or a reference prevents the change.
    #[error("{0}")]
    Conflict(String),
    /// The row changed since it was read; read it again and retry.
    #[error("the resource was changed concurrently; retry")]
    Stale,
    /// A store URL that is neither `sqlite:` nor `postgres://`, or a SQLite directory that
    /// cannot be created.
    #[error("invalid store URL: {0}")]
    BadUrl(String),
    /// Another write holds the database (SQLite's lock, beyond the busy timeout); retry.
    #[error("the store is busy with another write; retry")]
    Busy,
    /// The database failed or could not be reached.
    #[error("database error: {0}")]
    Database(sqlx::Error),
    /// A stored value cannot be read back, or a document cannot be serialized.
    #[error("stored document is unreadable: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for StoreError {
    /// SQLite's `SQLITE_BUSY` and `SQLITE_LOCKED`, with their extended codes (such as
    /// 517, `SQLITE_BUSY_SNAPSHOT`), are [`StoreError::Busy`]; anything else is
    /// [`StoreError::Database`].
    fn from(e: sqlx::Error) -> Self {
        let code = e.as_database_error().and_then(|d| d.code()).and_then(|c| c.parse::<i32>().ok());
        match code {
            Some(c) if matches!(c & 0xff, 5 | 6) => StoreError::Busy,
            _ => StoreError::Database(e),
        }
    }
}

/// The result of a store operation.
pub type Result<T> = std::result::Result<T, StoreError>;

/// The entity tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// Backends; no parent.
    Backends,
    /// Products; no parent.
    Products,
    /// Parent: a product.
    ApplicationPlans,
    /// Accounts; no parent.
    Accounts,
    /// Parent: an account.
    Applications,
}

impl Table {
    fn name(self) -> &'static str {
        match self {
            Table::Backends => "backends",
            Table::Products => "products",
            Table::ApplicationPlans => "application_plans",
            Table::Accounts => "accounts",
            Table::Applications => "applications",
        }
    }

    /// One row's kind in words: `product`, `application plan`, ….
    fn singular(self) -> &'static str {
        match self {
            Table::Backends => "backend",
            Table::Products => "product",
            Table::ApplicationPlans => "application plan",
            Table::Accounts => "account",
            Table::Applications => "application",
        }
    }

    fn has_parent(self) -> bool {
        matches!(self, Table::ApplicationPlans | Table::Applications)
    }
}

/// One stored entity.
#[derive(Debug, Clone, Serialize)]
pub struct Row<T> {
    /// Row id, unique in its table.
    pub id: i64,
    /// Id of the parent row (a product or an account); `None` in tables without parents.
    pub parent_id: Option<i64>,
    /// Immutable name, unique in its scope.
    pub system_name: String,
    /// 1 at insert, incremented by each update (optimistic locking).
    pub revision: i64,
    /// Unix milliseconds of the insert.
    pub created_at: i64,
    /// Unix milliseconds of the last update.
    pub updated_at: i64,
    /// The entity's JSON document.
    pub doc: T,
}

/// How a path segment names an entity: its id, or its `system_name`.
#[derive(Debug, Clone)]
pub enum Key<'a> {
    /// An id only.
    Id(i64),
    /// A `system_name` only.
    Name(&'a str),
    /// Digits: an id if one exists, else a name.
    Either(i64, &'a str),
}

impl<'a> Key<'a> {
    /// Reads a path segment: an integer is [`Key::Either`], anything else a [`Key::Name`].
    pub fn parse(s: &'a str) -> Key<'a> {
        match s.parse::<i64>() {
            Ok(id) => Key::Either(id, s),
            Err(_) => Key::Name(s),
        }
    }
}

/// Which database a store is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite (the embedded default).
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// Unix time in milliseconds; 0 if the system clock is before 1970.
pub fn now_millis() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// A migrated store: a connection pool and its dialect. Clones share the pool.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    dialect: Dialect,
    /// For connections outside the pool (PostgreSQL notifications).
    url: String,
    /// Read-modify-write cycles of one process on the same row take turns (striped by
    /// table and id), so they never starve each other; revisions still guard against
    /// other processes.
    edits: std::sync::Arc<[tokio::sync::Mutex<()>; 64]>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("dialect", &self.dialect).finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating if needed) and migrates the store at `url`:
    /// `sqlite://PATH` or `postgres://USER@HOST:PORT/DB`.
    pub async fn open(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let dialect = if url.starts_with("sqlite:") {
            Dialect::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Dialect::Postgres
        } else {
            return Err(StoreError::BadUrl(format!("`{url}`: use sqlite://PATH or postgres://USER@HOST:PORT/DB")));
        };
        let url = match dialect {
            Dialect::Sqlite => {
                let path = url.trim_start_matches("sqlite://").trim_start_matches("sqlite:");
                let path = path.split('?').next().unwrap_or(path);
                if let Some(dir) = std::path::Path::new(path).parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| StoreError::BadUrl(format!("cannot create {}: {e}", dir.display())))?;
                }
                format!("sqlite://{path}?mode=rwc")
            }
            Dialect::Postgres => url.to_string(),
        };
        let pool = AnyPoolOptions::new()
            .max_connections(if dialect == Dialect::Sqlite { 4 } else { 16 })
            // A PostgreSQL that does not answer fails a call within seconds (the admin
            // API says 503) rather than after sqlx's default half minute.
            .acquire_timeout(std::time::Duration::from_secs(if dialect == Dialect::Sqlite { 30 } else { 5 }))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if dialect == Dialect::Sqlite {
                        // WAL lets readers run beside the writer; FULL sync means an
                        // acknowledged write survives a crash; foreign keys enforce cascades.
                        for pragma in [
                            "PRAGMA journal_mode = WAL",
                            "PRAGMA synchronous = FULL",
                            "PRAGMA foreign_keys = ON",
                            "PRAGMA busy_timeout = 5000",
                        ] {
                            sqlx::raw_sql(pragma).execute(&mut *conn).await?;
                        }
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        let store = Store {
            pool,
            dialect,
            url: url.clone(),
            edits: std::sync::Arc::new(std::array::from_fn(|_| Default::default())),
        };
        migrate::run(&store.pool, dialect).await?;
        Ok(store)
    }

    /// Which database the store is.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The connection pool.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    fn row<T: DeserializeOwned>(r: &AnyRow, table: Table) -> Result<Row<T>> {
        let doc: String = r.try_get("doc")?;
        Ok(Row {
            id: r.try_get("id")?,
            parent_id: if table.has_parent() { Some(r.try_get("parent_id")?) } else { None },
            system_name: r.try_get("system_name")?,
            revision: r.try_get("revision")?,
            created_at: r.try_get("created_at")?,
            updated_at: r.try_get("updated_at")?,
            doc: serde_json::from_str(&doc).map_err(|e| StoreError::Corrupt(format!("{} row: {e}", table.name())))?,
        })
    }

    fn columns(table: Table) -> &'static str {
        if table.has_parent() {
            "id, parent_id, system_name, doc, revision, created_at, updated_at"
        } else {
            "id, system_name, doc, revision, created_at, updated_at"
        }
    }

    /// Every row of `table` (under `parent`, for child tables; with `None`, all of a
    /// child table's rows), in id order.
    pub async fn list<T: DeserializeOwned>(&self, table: Table, parent: Option<i64>) -> Result<Vec<Row<T>>> {
        let cols = Self::columns(table);
        let rows = match parent {
            Some(p) => {
                sqlx::query(AssertSqlSafe(format!(
                    "SELECT {cols} FROM {} WHERE parent_id = $1 ORDER BY id",
                    table.name()
                )))
                .bind(p)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(AssertSqlSafe(format!("SELECT {cols} FROM {} ORDER BY id", table.name())))
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter().map(|r| Self::row(r, table)).collect()
    }

    /// One row by id or `system_name` (within `parent` for child tables).
    pub async fn get<T: DeserializeOwned>(&self, table: Table, parent: Option<i64>, key: &Key<'_>) -> Result<Row<T>> {
        let cols = Self::columns(table);
        let scope = if parent.is_some() { " AND parent_id = $2" } else { "" };
        let by_id = format!("SELECT {cols} FROM {} WHERE id = $1{scope}", table.name());
        let by_name = format!("SELECT {cols} FROM {} WHERE system_name = $1{scope}", table.name());
        let found = match key {
            Key::Id(id) => self.fetch_opt(&by_id, Bind::Int(*id), parent).await?,
            Key::Name(n) => self.fetch_opt(&by_name, Bind::Text(n), parent).await?,
            Key::Either(id, n) => match self.fetch_opt(&by_id, Bind::Int(*id), parent).await? {
                Some(r) => Some(r),
                None => self.fetch_opt(&by_name, Bind::Text(n), parent).await?,
            },
        };
        found.as_ref().map(|r| Self::row(r, table)).transpose()?.ok_or(StoreError::NotFound)
    }

    async fn fetch_opt(&self, sql: &str, key: Bind<'_>, parent: Option<i64>) -> Result<Option<AnyRow>> {
        let q = sqlx::query(AssertSqlSafe(sql.to_string()));
        let q = match key {
            Bind::Int(i) => q.bind(i),
            Bind::Text(t) => q.bind(t.to_string()),
        };
        let q = match parent {
            Some(p) => q.bind(p),
            None => q,
        };
        Ok(q.fetch_optional(&self.pool).await?)
    }

    /// Inserts a row; a taken `system_name` is a conflict.
    pub async fn insert<T: Serialize + DeserializeOwned>(
        &self,
        table: Table,
        parent: Option<i64>,
        system_name: &str,
        doc: &T,
    ) -> Result<Row<T>> {
        insert_on(&self.pool, table, parent, system_name, doc).await
    }

    /// Replaces a row's document if its revision is still `revision`.
    pub async fn update<T: Serialize + DeserializeOwned>(
        &self,
        table: Table,
        id: i64,
        revision: i64,
        doc: &T,
    ) -> Result<Row<T>> {
        update_on(&self.pool, table, id, revision, doc).await
    }

    /// Reads a row, applies `change` to its document and writes it back, retrying when a
    /// concurrent edit got there first. `change` may refuse with any error.
    pub async fn modify<T, E, F>(&self, table: Table, id: i64, mut change: F) -> std::result::Result<Row<T>, E>
    where
        T: Serialize + DeserializeOwned,
        E: From<StoreError>,
        F: FnMut(&mut T) -> std::result::Result<(), E>,
    {
        let stripe = (id as usize).wrapping_mul(31).wrapping_add(table as usize) % self.edits.len();
        let _turn = self.edits[stripe].lock().await;
        for attempt in 0..16u32 {
            if attempt > 0 {
                // Another process wrote the row meanwhile: back off a little, growing.
                tokio::time::sleep(std::time::Duration::from_millis(u64::from(attempt) * 5)).await;
            }
            let mut row: Row<T> = self.get(table, None, &Key::Id(id)).await?;
            change(&mut row.doc)?;
            match self.update(table, id, row.revision, &row.doc).await {
                Err(StoreError::Stale) => continue,
                other => return other.map_err(E::from),
            }
        }
        Err(StoreError::Stale.into())
    }

    /// Deletes the row `id` of `table`.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] when no row has that id; [`StoreError::Database`] when the
    /// database refuses or fails.
    pub async fn delete(&self, table: Table, id: i64) -> Result<()> {
        let done = sqlx::query(AssertSqlSafe(format!("DELETE FROM {} WHERE id = $1", table.name())))
            .bind(id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 { Err(StoreError::NotFound) } else { Ok(()) }
    }
}

/// [`Store::insert`] on any connection: the pool's, or a [`Batch`]'s transaction.
async fn insert_on<'e, T, E>(exec: E, table: Table, parent: Option<i64>, system_name: &str, doc: &T) -> Result<Row<T>>
where
    T: Serialize + DeserializeOwned,
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let now = now_millis();
    let json = serde_json::to_string(doc).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let cols = Store::columns(table);
    let result = match parent {
        Some(p) => {
            sqlx::query(AssertSqlSafe(format!(
                "INSERT INTO {} (parent_id, system_name, doc, revision, created_at, updated_at) VALUES ($1, $2, $3, 1, $4, $4) RETURNING {cols}",
                table.name()
            )))
            .bind(p)
            .bind(system_name.to_string())
            .bind(json)
            .bind(now)
            .fetch_one(exec)
            .await
        }
        None => {
            sqlx::query(AssertSqlSafe(format!(
                "INSERT INTO {} (system_name, doc, revision, created_at, updated_at) VALUES ($1, $2, 1, $3, $3) RETURNING {cols}",
                table.name()
            )))
            .bind(system_name.to_string())
            .bind(json)
            .bind(now)
            .fetch_one(exec)
            .await
        }
    };
    match result {
        Ok(r) => Store::row(&r, table),
        Err(e) if is_unique_violation(&e) => Err(StoreError::Conflict(format!("`{system_name}` already exists"))),
        Err(e) if is_foreign_key_violation(&e) => Err(StoreError::NotFound),
        Err(e) => Err(e.into()),
    }
}

/// [`Store::update`] on any connection.
async fn update_on<'e, T, E>(exec: E, table: Table, id: i64, revision: i64, doc: &T) -> Result<Row<T>>
where
    T: Serialize + DeserializeOwned,
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let json = serde_json::to_string(doc).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let cols = Store::columns(table);
    let row = sqlx::query(AssertSqlSafe(format!(
        "UPDATE {} SET doc = $1, revision = revision + 1, updated_at = $2 WHERE id = $3 AND revision = $4 RETURNING {cols}",
        table.name()
    )))
    .bind(json)
    .bind(now_millis())
    .bind(id)
    .bind(revision)
    .fetch_optional(exec)
    .await?;
    match row {
        Some(r) => Store::row(&r, table),
        None => Err(StoreError::Stale),
    }
}

enum Bind<'a> {
    Int(i64),
    Text(&'a str),
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error().is_some_and(|d| d.is_unique_violation())
}

fn is_foreign_key_violation(e: &sqlx::Error) -> bool {
    e.as_database_error().is_some_and(|d| d.is_foreign_key_violation())
}
