//! The store's contract, run against both real databases: SQLite (a file) and the
//! PostgreSQL server on 127.0.0.1:5432 (each test in a schema of its own).

use std::sync::atomic::{AtomicU64, Ordering};
use tollgate_model::{Backend, BackendTls, MappingRule, Product};
use tollgate_store::{Environment, Item, Key, ProductDoc, Row, Store, StoreError, Table};

static N: AtomicU64 = AtomicU64::new(0);

fn unique() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{}_{}_{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst), nanos % 1_000_000)
}

/// A fresh SQLite store in a temporary file.
async fn sqlite() -> (Store, String) {
    let path = std::env::temp_dir().join(format!("tollgate-store-{}.db", unique()));
    let url = format!("sqlite://{}", path.display());
    (Store::open(&url).await.expect("open sqlite"), url)
}

/// A fresh PostgreSQL store: a new schema in the `test` database.
async fn postgres() -> (Store, String) {
    let base =
        std::env::var("TOLLGATE_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let schema = format!("t_{}", unique());
    sqlx::any::install_default_drivers();
    let mut admin = <sqlx::AnyConnection as sqlx::Connection>::connect(&base)
        .await
        .expect("PostgreSQL on 127.0.0.1:5432 (scripts/test.sh starts it)");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut admin)
        .await
        .expect("create schema");
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
    (Store::open(&url).await.expect("open postgres"), url)
}

async fn both() -> Vec<(&'static str, Store, String)> {
    let (s, su) = sqlite().await;
    let (p, pu) = postgres().await;
    vec![("sqlite", s, su), ("postgres", p, pu)]
}

fn backend(name: &str) -> Backend {
    Backend {
        system_name: name.into(),
        name: None,
        description: None,
        private_base_url: "ws://127.0.0.1:9000".into(),
        tls: BackendTls::default(),
        connect_timeout_ms: None,
        endpoints: vec![],
        load_balancing: Default::default(),
        health_checks: Default::default(),
        circuit_breaker: Default::default(),
        drain_timeout_ms: None,
        dns_refresh_ms: None,
        protocol: Default::default(),
        metrics: vec![],
        methods: vec![],
        mapping_rules: vec![],
    }
}

fn product(name: &str) -> ProductDoc {
    let yaml = format!(
        "system_name: {name}\nstaging_public_base_url: http://{name}-staging.localhost\nproduction_public_base_url: http://{name}.localhost\nbackend_usages: [ {{ backend: echo, path: / }} ]\nmapping_rules: [ {{ http_method: GET, pattern: /, metric: hits }} ]\n"
    );
    let p: Product = serde_norway::from_str(&yaml).expect("product yaml");
    ProductDoc::from_product(&p, 0)
}

/// A plan named `basic` with no limits.
fn basic_plan() -> tollgate_store::PlanDoc {
    let plan = tollgate_model::ApplicationPlan {
        system_name: "basic".into(),
        name: None,
        limits: vec![],
        max_connections: None,
    };
    tollgate_store::PlanDoc::from_plan(&plan, 0)
}

#[tokio::test]
async fn entities_are_created_found_updated_and_deleted() {
    for (db, store, _) in both().await {
        let b = store.insert(Table::Backends, None, "echo", &backend("echo")).await.expect(db);
        assert_eq!((b.system_name.as_str(), b.revision), ("echo", 1));
        assert!(
            matches!(store.insert(Table::Backends, None, "echo", &backend("echo")).await, Err(StoreError::Conflict(_))),
            "{db}"
        );

        let by_name: Row<Backend> = store.get(Table::Backends, None, &Key::Name("echo")).await.expect(db);
        let by_id: Row<Backend> = store.get(Table::Backends, None, &Key::parse(&b.id.to_string())).await.expect(db);
        assert_eq!(by_name.id, by_id.id);
        assert!(matches!(
            store.get::<Backend>(Table::Backends, None, &Key::Name("nope")).await,
            Err(StoreError::NotFound)
        ));

        let mut changed = by_id.doc.clone();
        changed.private_base_url = "wss://127.0.0.1:9443".into();
        let updated = store.update(Table::Backends, b.id, 1, &changed).await.expect(db);
        assert_eq!(updated.revision, 2);
        // A writer holding the old revision loses, instead of overwriting.
        assert!(
            matches!(store.update(Table::Backends, b.id, 1, &backend("echo")).await, Err(StoreError::Stale)),
            "{db}"
        );

        store.delete(Table::Backends, b.id).await.expect(db);
        assert!(matches!(store.delete(Table::Backends, b.id).await, Err(StoreError::NotFound)));
        assert!(store.list::<Backend>(Table::Backends, None).await.expect(db).is_empty());
    }
}

#[tokio::test]
async fn children_are_scoped_to_their_parent_and_cascade() {
    for (db, store, _) in both().await {
        let a = store.insert(Table::Products, None, "a", &product("a")).await.expect(db);
        let b = store.insert(Table::Products, None, "b", &product("b")).await.expect(db);
        let plan = basic_plan();
        store.insert(Table::ApplicationPlans, Some(a.id), "basic", &plan).await.expect(db);
        store.insert(Table::ApplicationPlans, Some(b.id), "basic", &plan).await.expect("same name, other product");
        assert!(matches!(
            store.insert(Table::ApplicationPlans, Some(a.id), "basic", &plan).await,
            Err(StoreError::Conflict(_))
        ));
        assert!(
            matches!(store.insert(Table::ApplicationPlans, Some(999_999), "x", &plan).await, Err(StoreError::NotFound)),
            "{db}: unknown parent"
        );
        let found: Row<tollgate_store::PlanDoc> =
            store.get(Table::ApplicationPlans, Some(b.id), &Key::Name("basic")).await.expect(db);
        assert_eq!(found.parent_id, Some(b.id));
        store.delete(Table::Products, a.id).await.expect(db);
        assert!(
            store.list::<tollgate_store::PlanDoc>(Table::ApplicationPlans, Some(a.id)).await.expect(db).is_empty(),
            "{db}: cascade"
        );
        assert_eq!(
            store.list::<tollgate_store::PlanDoc>(Table::ApplicationPlans, Some(b.id)).await.expect(db).len(),
            1
        );
    }
}

#[tokio::test]
async fn concurrent_edits_lose_nothing() {
    for (db, store, _) in both().await {
        let p = store.insert(Table::Products, None, "chat", &product("chat")).await.expect(db);
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .modify::<ProductDoc, StoreError, _>(Table::Products, p.id, |doc| {
                            let id = doc.next_id();
                            let rule = MappingRule {
                                http_method: "GET".into(),
                                pattern: format!("/r{i}"),
                                metric: "hits".into(),
                                delta: 1,
                                last: false,
                            };
                            doc.mapping_rules.push(Item { id, value: rule });
                            Ok(())
                        })
                        .await
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("task").expect(db);
        }
        let doc: Row<ProductDoc> = store.get(Table::Products, None, &Key::Id(p.id)).await.expect(db);
        assert_eq!(doc.doc.mapping_rules.len(), 21, "{db}: every concurrent edit is kept");
        let mut ids: Vec<i64> = doc.doc.mapping_rules.iter().map(|r| r.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 21, "{db}: ids are unique");
        assert_eq!(doc.revision, 21);
    }
}

#[tokio::test]
async fn deploy_promote_and_rollback() {
    for (db, store, _) in both().await {
        let p = store.insert(Table::Products, None, "chat", &product("chat")).await.expect(db);
        let v1 = serde_json::json!({ "rules": 1 });
        let v2 = serde_json::json!({ "rules": 2 });
        assert_eq!(store.deploy(p.id, &v1).await.expect(db).map(|v| v.version), Some(1));
        assert_eq!(store.deploy(p.id, &v1).await.expect(db), None, "{db}: an unchanged draft is not a new version");
        assert_eq!(store.deploy(p.id, &v2).await.expect(db).map(|v| v.version), Some(2));
        assert!(store.current_config(p.id, Environment::Production).await.expect(db).is_none());

        assert_eq!(store.promote(p.id, None).await.expect(db).version, 2);
        assert_eq!(
            store.current_config(p.id, Environment::Production).await.expect(db).and_then(|c| c.content),
            Some(v2.clone())
        );
        // Rollback: promote version 1 again.
        assert_eq!(store.promote(p.id, Some(1)).await.expect(db).version, 1);
        let current = store.current_configs(Environment::Production).await.expect(db);
        assert_eq!(current.len(), 1);
        assert_eq!((current[0].version, current[0].content.clone()), (1, Some(v1.clone())));
        let history: Vec<i64> =
            store.config_versions(p.id, Environment::Production).await.expect(db).iter().map(|v| v.version).collect();
        assert_eq!(history, vec![1, 2], "{db}: newest first");
        assert!(matches!(store.promote(p.id, Some(9)).await, Err(StoreError::NotFound)));
        assert_eq!(store.config_version(p.id, Environment::Staging, 1).await.expect(db).content, Some(v1));
    }
}

#[tokio::test]
async fn a_batch_writes_all_or_nothing_and_sees_its_own_writes() {
    for (db, store, _) in both().await {
        // Dropped uncommitted: nothing of it stays.
        let mut batch = store.batch().await.expect(db);
        batch.insert(Table::Products, None, "gone", &product("gone")).await.expect(db);
        drop(batch);
        assert!(store.list::<ProductDoc>(Table::Products, None).await.expect(db).is_empty(), "{db}: rolled back");

        // Many rows across several statements (ROWS_PER_INSERT each), children under
        // parents inserted by the same batch.
        let n = tollgate_store::ROWS_PER_INSERT * 2 + 7;
        let names: Vec<String> = (0..n).map(|i| format!("p{i}")).collect();
        let docs: Vec<ProductDoc> = names.iter().map(|name| product(name)).collect();
        let rows: Vec<_> = names.iter().zip(&docs).map(|(name, d)| (None, name.as_str(), d)).collect();
        let mut batch = store.batch().await.expect(db);
        let inserted = batch.insert_many(Table::Products, &rows, 42).await.expect(db);
        assert_eq!(inserted.len(), n, "{db}");
        let plan = basic_plan();
        let plans: Vec<_> = inserted.iter().map(|(id, _, _)| (Some(*id), "basic", &plan)).collect();
        let children = batch.insert_many(Table::ApplicationPlans, &plans, 42).await.expect(db);
        assert!(children.iter().all(|(_, parent, name)| parent.is_some() && name == "basic"), "{db}");
        // A name taken within the batch is a conflict for the statement that repeats it.
        let again = [(None, "p0", &docs[0])];
        assert!(matches!(batch.insert_many(Table::Products, &again, 42).await, Err(StoreError::Conflict(_))), "{db}");
        drop(batch);
        assert!(store.list::<ProductDoc>(Table::Products, None).await.expect(db).is_empty(), "{db}: a failed batch");

        let mut batch = store.batch().await.expect(db);
        let inserted = batch.insert_many(Table::Products, &rows, 42).await.expect(db);
        let (id, _, name) = inserted.iter().find(|(_, _, name)| name == "p3").cloned().expect("p3");
        let content = serde_json::json!({ "rules": 1 });
        // Deploy and promote in the batch, from the versions the batch sees.
        let staging = batch.current_configs(Environment::Staging).await.expect(db);
        assert!(staging.is_empty());
        let v1 = batch.deploy(id, None, &content).await.expect(db).expect("a first version");
        assert_eq!(v1.version, 1);
        let seen = batch.current_configs(Environment::Staging).await.expect(db);
        assert_eq!(seen.len(), 1, "{db}: the batch reads its own deploy");
        assert_eq!(batch.deploy(id, seen.first(), &content).await.expect(db), None, "{db}: unchanged");
        let v2 = batch.deploy(id, seen.first(), &serde_json::json!({ "rules": 2 })).await.expect(db).expect("v2");
        assert_eq!(v2.version, 2);
        assert_eq!(batch.promote(&v2).await.expect(db).version, 2);
        batch.commit().await.expect(db);

        let row: Row<ProductDoc> = store.get(Table::Products, None, &Key::Name(&name)).await.expect(db);
        assert_eq!((row.id, row.revision, row.created_at, row.updated_at), (id, 1, 42, 42), "{db}");
        assert_eq!(row.doc, docs[3], "{db}: the document as given");
        assert_eq!(store.list::<ProductDoc>(Table::Products, None).await.expect(db).len(), n);
        let production = store.current_config(id, Environment::Production).await.expect(db).expect(db);
        assert_eq!((production.version, production.content), (2, Some(serde_json::json!({ "rules": 2 }))));
        // The next deploy outside the batch numbers on from it.
        assert_eq!(store.deploy(id, &serde_json::json!({ "rules": 3 })).await.expect(db).map(|v| v.version), Some(3));
    }
}

#[tokio::test]
async fn a_sqlite_batch_waits_for_the_write_lock_and_says_busy_past_the_timeout() {
    let (store, _) = sqlite().await;
    let mut holding = store.batch().await.expect("the lock");
    holding.insert(Table::Products, None, "a", &product("a")).await.expect("a write");
    // The lock is taken at the start, so the second batch waits the busy timeout (5 s)
    // and then says the store is busy — a 409 to retry, not a failure.
    assert!(matches!(store.batch().await.err(), Some(StoreError::Busy)));
    holding.commit().await.expect("commit");
    let mut next = store.batch().await.expect("the lock, free again");
    next.insert(Table::Products, None, "b", &product("b")).await.expect("a write");
    next.commit().await.expect("commit");
    assert_eq!(store.list::<ProductDoc>(Table::Products, None).await.expect("list").len(), 2);
}

#[tokio::test]
async fn state_survives_reopening_the_store() {
    for (db, store, url) in both().await {
        store.insert(Table::Backends, None, "echo", &backend("echo")).await.expect(db);
        drop(store);
        let again = Store::open(&url).await.expect(db);
        let rows: Vec<Row<Backend>> = again.list(Table::Backends, None).await.expect(db);
        assert_eq!(rows.len(), 1, "{db}");
    }
}

#[tokio::test]
async fn usage_adds_up_rolls_up_and_is_queried_by_granularity() {
    use tollgate_store::{Granularity, UsageQuery, UsageRow};
    const DAY0: i64 = 1_795_651_200; // 2026-11-26T00:00:00Z
    let row = |app: &str, metric: &str, minute: i64, value: i64| UsageRow {
        application: app.into(),
        product: "chat".into(),
        metric: metric.into(),
        minute,
        value,
    };
    for (db, store, _) in both().await {
        // Two writers add to the same bucket: values add up.
        store
            .add_usage(&[row("acme/app", "hits", DAY0 + 60, 2), row("acme/app", "connect", DAY0 + 60, 1)])
            .await
            .expect(db);
        store
            .add_usage(&[row("acme/app", "hits", DAY0 + 60, 3), row("acme/app", "hits", DAY0 + 3_700, 4)])
            .await
            .expect(db);
        store.add_usage(&[row("other/app", "hits", DAY0 + 120, 100)]).await.expect(db);
        let q = UsageQuery {
            application: Some("acme/app".into()),
            metric: Some("hits".into()),
            since: DAY0,
            until: DAY0 + 86_400,
            ..Default::default()
        };
        assert_eq!(
            store.usage_series(&q, Granularity::Minute).await.expect(db),
            vec![(DAY0 + 60, 5), (DAY0 + 3_660, 4)],
            "{db}"
        );
        assert_eq!(store.usage_series(&q, Granularity::Hour).await.expect(db), vec![(DAY0, 5), (DAY0 + 3_600, 4)]);

        // Roll everything older than "now" up: hour buckets keep the totals, minutes go.
        store.roll_up(DAY0 + 2 * 86_400, 3_600, 90 * 86_400).await.expect(db);
        assert_eq!(
            store.usage_series(&q, Granularity::Hour).await.expect(db),
            vec![(DAY0, 5), (DAY0 + 3_600, 4)],
            "{db}"
        );
        assert_eq!(store.usage_series(&q, Granularity::Day).await.expect(db), vec![(DAY0, 9)]);
        let minutes: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM usage_buckets WHERE granularity = 'minute'")
            .fetch_one(store.pool())
            .await
            .expect(db);
        assert_eq!(minutes, 0, "{db}: minute buckets were folded away");
        // Rolling up twice changes nothing.
        store.roll_up(DAY0 + 2 * 86_400, 3_600, 90 * 86_400).await.expect(db);
        assert_eq!(store.usage_series(&q, Granularity::Day).await.expect(db), vec![(DAY0, 9)]);
    }
}
