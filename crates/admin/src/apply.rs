//! `PUT /api/v1/config`: make the store match a declarative configuration, entity by
//! entity and by name, creating what is missing and updating what differs. Nothing
//! absent from the file is deleted. Applying an export changes nothing. With `deploy`
//! (and `promote`), every product of the file is then deployed to staging (and
//! promoted to production) in the same transaction.
//!
//! Linear in the size of the store and of the file — lookups by name are hashed, the
//! writes are one transaction ([`tollgate_store::Batch`]) and the gateways recompile
//! once — so a file of 10,000 products and 100,000 applications applies in seconds
//! (it took the per-product endpoints hours: each deploy reloaded and recompiled all).

use crate::AdminState;
use crate::error::{ApiError, ApiResult};
use crate::world::World;
#[cfg(doc)]
use crate::world::proxy_config;
use axum::http::StatusCode;
use serde_json::{Value, json};
use std::collections::HashMap;
use tollgate_model::{Account, Config};
use tollgate_store::{AccountDoc, Batch, ConfigVersion, Environment, PlanDoc, ProductDoc, Row, Table};

// A short-lived list of pending writes: boxing would only add noise.
#[allow(clippy::large_enum_variant)]
enum Change {
    Backend(Option<Row<tollgate_model::Backend>>, tollgate_model::Backend),
    Product(Option<Row<ProductDoc>>, ProductDoc),
    Plan { product: String, row: Option<Row<PlanDoc>>, doc: PlanDoc },
    Account(AccountDoc),
    Application { account: String, row: Option<Row<tollgate_model::Application>>, doc: tollgate_model::Application },
}

impl Change {
    fn describe(&self) -> Value {
        let (action, kind, name) = match self {
            Change::Backend(row, b) => (row.is_some(), "backend", b.system_name.clone()),
            Change::Product(row, p) => (row.is_some(), "product", p.system_name.clone()),
            Change::Plan { product, row, doc } => {
                (row.is_some(), "application_plan", format!("{product}/{}", doc.system_name))
            }
            Change::Account(a) => (false, "account", a.name.clone()),
            Change::Application { account, row, doc } => {
                (row.is_some(), "application", format!("{account}/{}", doc.name))
            }
        };
        json!({ "action": if action { "update" } else { "create" }, "kind": kind, "name": name })
    }
}

/// What `PUT /config` is asked to do beside making the store match the file.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApplyOptions {
    /// List the changes only.
    pub dry_run: bool,
    /// Then deploy every product of the file to staging (when its draft changed).
    pub deploy: bool,
    /// Then promote every product of the file to production (implies `deploy`).
    pub promote: bool,
}

fn index_of<T>(list: &[T], name: impl Fn(&T) -> &str) -> HashMap<String, usize> {
    list.iter().enumerate().map(|(i, x)| (name(x).to_string(), i)).collect()
}

/// The stored configuration with the file's entities put over it, by name: a product's
/// plans absent from the file stay, as do applications absent from it. The file's
/// entities come first, in its order — so a validation error names `products[i]` of the
/// file — then the store's others, in the store's order.
fn merged(current: Config, file: &Config) -> Config {
    use std::collections::HashSet;
    let mut out = Config { backends: file.backends.clone(), products: Vec::new(), accounts: Vec::new() };
    let mine: HashSet<&str> = file.backends.iter().map(|b| b.system_name.as_str()).collect();
    out.backends.extend(current.backends.into_iter().filter(|b| !mine.contains(b.system_name.as_str())));

    let index = index_of(&current.products, |p| &p.system_name);
    let mut stored: Vec<Option<tollgate_model::Product>> = current.products.into_iter().map(Some).collect();
    for p in &file.products {
        let mut product = p.clone();
        if let Some(old) = index.get(&p.system_name).and_then(|&i| stored[i].take()) {
            let mine: HashSet<&str> = p.application_plans.iter().map(|x| x.system_name.as_str()).collect();
            let kept = old.application_plans.into_iter().filter(|x| !mine.contains(x.system_name.as_str()));
            product.application_plans.extend(kept);
        }
        out.products.push(product);
    }
    out.products.extend(stored.into_iter().flatten());

    let index = index_of(&current.accounts, |a| &a.name);
    let mut stored: Vec<Option<Account>> = current.accounts.into_iter().map(Some).collect();
    for a in &file.accounts {
        let mut account = a.clone();
        if let Some(old) = index.get(&a.name).and_then(|&i| stored[i].take()) {
            let mine: HashSet<&str> = a.applications.iter().map(|x| x.name.as_str()).collect();
            account.applications.extend(old.applications.into_iter().filter(|x| !mine.contains(x.name.as_str())));
        }
        out.accounts.push(account);
    }
    out.accounts.extend(stored.into_iter().flatten());
    out
}

/// The first name the file gives twice (backends, products, a product's plans, accounts,
/// an account's applications), as a 422 naming where: the store holds one entity per
/// name, so the second could only overwrite the first.
fn named_twice(file: &Config) -> ApiResult<()> {
    fn once<'a>(items: impl Iterator<Item = (String, &'a str)>) -> ApiResult<()> {
        let mut seen: HashMap<&str, String> = HashMap::new();
        for (path, name) in items {
            if let Some(first) = seen.insert(name, path.clone()) {
                return Err(ApiError::invalid(format!(
                    "`{name}` is given twice in this file (also at {first}); names are unique"
                ))
                .field(path));
            }
        }
        Ok(())
    }
    once(
        file.backends.iter().enumerate().map(|(i, b)| (format!("backends[{i}].system_name"), b.system_name.as_str())),
    )?;
    once(
        file.products.iter().enumerate().map(|(i, p)| (format!("products[{i}].system_name"), p.system_name.as_str())),
    )?;
    for (i, p) in file.products.iter().enumerate() {
        let plans = p.application_plans.iter().enumerate();
        once(
            plans.map(|(j, x)| (format!("products[{i}].application_plans[{j}].system_name"), x.system_name.as_str())),
        )?;
    }
    once(file.accounts.iter().enumerate().map(|(i, a)| (format!("accounts[{i}].name"), a.name.as_str())))?;
    for (i, a) in file.accounts.iter().enumerate() {
        once(
            a.applications
                .iter()
                .enumerate()
                .map(|(j, x)| (format!("accounts[{i}].applications[{j}].name"), x.name.as_str())),
        )?;
    }
    Ok(())
}

/// The rows of the stored state by name, for the changes' lookups.
struct Names<'w> {
    backends: HashMap<&'w str, &'w Row<tollgate_model::Backend>>,
    products: HashMap<&'w str, &'w Row<ProductDoc>>,
    plans: HashMap<(i64, &'w str), &'w Row<PlanDoc>>,
    accounts: HashMap<&'w str, &'w Row<AccountDoc>>,
    applications: HashMap<(i64, &'w str), &'w Row<tollgate_model::Application>>,
}

/// A child row's key: its parent's id and its name.
fn child<T>(r: &Row<T>) -> (i64, &str) {
    (r.parent_id.unwrap_or_default(), r.system_name.as_str())
}

impl<'w> Names<'w> {
    fn new(world: &'w World) -> Self {
        Names {
            backends: world.backends.iter().map(|r| (r.system_name.as_str(), r)).collect(),
            products: world.products.iter().map(|r| (r.system_name.as_str(), r)).collect(),
            plans: world.plans.iter().map(|r| (child(r), r)).collect(),
            accounts: world.accounts.iter().map(|r| (r.system_name.as_str(), r)).collect(),
            applications: world.applications.iter().map(|r| (child(r), r)).collect(),
        }
    }
}

/// The writes that make the store match the file.
fn changes(world: &World, config: Config) -> Vec<Change> {
    let names = Names::new(world);
    let mut changes = Vec::new();
    for b in config.backends {
        let row = names.backends.get(b.system_name.as_str()).copied();
        if row.is_none_or(|r| r.doc != b) {
            changes.push(Change::Backend(row.cloned(), b));
        }
    }
    for mut draft in config.products {
        let row = names.products.get(draft.system_name.as_str()).copied();
        let plans = std::mem::take(&mut draft.application_plans);
        let product = draft.system_name.clone();
        if row.is_none_or(|r| r.doc.to_product(vec![]) != draft) {
            let doc = ProductDoc::from_product(&draft, row.map_or(0, |r| r.doc.last_id));
            changes.push(Change::Product(row.cloned(), doc));
        }
        for plan in &plans {
            let existing = row.and_then(|r| names.plans.get(&(r.id, plan.system_name.as_str())).copied());
            if existing.is_none_or(|x| x.doc.to_plan() != *plan) {
                let doc = PlanDoc::from_plan(plan, existing.map_or(0, |x| x.doc.last_id));
                changes.push(Change::Plan { product: product.clone(), row: existing.cloned(), doc });
            }
        }
    }
    for a in config.accounts {
        let row = names.accounts.get(a.name.as_str()).copied();
        if row.is_none() {
            changes.push(Change::Account(AccountDoc { name: a.name.clone() }));
        }
        for app in a.applications {
            let existing = row.and_then(|r| names.applications.get(&(r.id, app.name.as_str())).copied());
            if existing.is_none_or(|x| x.doc != app) {
                changes.push(Change::Application { account: a.name.clone(), row: existing.cloned(), doc: app });
            }
        }
    }
    changes
}

/// Makes the store match `config` (see the module), then deploys and promotes as
/// `options` ask. Answers `{dry_run, changes: [{action, kind, name}], deployed:
/// [{product, version, unchanged}], promoted: [{product, version, unchanged}]}`
/// (`deployed` and `promoted` only when asked for).
///
/// # Errors
/// 422 with the field at fault when the merged configuration does not validate, or —
/// to deploy — a product of the file is incomplete or does not compile; 409 when a
/// concurrent write or deploy got there first (nothing is written; run it again);
/// 503 when the store does not answer.
pub async fn apply(s: &AdminState, config: Config, options: ApplyOptions) -> ApiResult<Value> {
    named_twice(&config)?;
    let world = World::load(&s.store).await?;
    let candidate = merged(world.config(), &config);
    tollgate_gateway::check(&candidate, true).map_err(|e| ApiError::from_config(e, ""))?;
    let deploy = options.deploy || options.promote;
    let products: Vec<String> = config.products.iter().map(|p| p.system_name.clone()).collect();
    if deploy {
        // A dry run says whether the deploy would be refused, too.
        deployable(s, candidate, &config).await?;
    } else {
        drop(candidate);
    }
    // The file's entities move into the changes: a large file is not held twice.
    let changes = changes(&world, config);
    let described: Vec<Value> = changes.iter().map(Change::describe).collect();
    if options.dry_run {
        return Ok(json!({ "dry_run": true, "changes": described }));
    }
    let mut after = After::new(&world);
    let mut batch = s.store.batch().await?;
    let wrote = !changes.is_empty();
    write(&mut batch, &mut after, changes).await?;
    let mut out = json!({ "dry_run": false, "changes": described });
    let mut versions = false;
    if deploy {
        let (deployed, promoted) = release(&mut batch, &after, &products, options.promote).await?;
        versions = deployed.iter().chain(&promoted).any(|v| v["unchanged"] == false);
        out["deployed"] = Value::Array(deployed);
        if options.promote {
            out["promoted"] = Value::Array(promoted);
        }
    }
    batch.commit().await?;
    if wrote || versions {
        s.changed();
    }
    Ok(out)
}

/// Refuses, before anything is written, a deploy the per-product endpoint would refuse:
/// each product of the file, with its plans as they will be, must be complete and must
/// compile as the gateways will compile it. Errors name `products[i]` of the file.
async fn deployable(s: &AdminState, candidate: Config, file: &Config) -> ApiResult<()> {
    let mut products: HashMap<String, tollgate_model::Product> =
        candidate.products.into_iter().map(|p| (p.system_name.clone(), p)).collect();
    let alone = Config {
        backends: candidate
            .backends
            .into_iter()
            .filter(|b| file.products.iter().any(|p| p.backend_usages.iter().any(|u| u.backend == b.system_name)))
            .collect(),
        products: file.products.iter().filter_map(|p| products.remove(&p.system_name)).collect(),
        accounts: vec![],
    };
    drop(products);
    tollgate_model::validate(&alone).map_err(|e| ApiError::from_config(e, ""))?;
    // Compiled off the async workers, as the deploy endpoint does.
    let registry = s.registry.clone();
    tokio::task::spawn_blocking(move || tollgate_gateway::compile(&alone, &registry).map(drop))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("compiling failed: {e}")))?
        .map_err(|e| ApiError::from_config(e, ""))
}

/// The rows a deploy reads once the batch's writes are made: products by name, and the
/// backends in id order (the order [`proxy_config`] lists a product's backends in).
struct After {
    products: HashMap<String, Row<ProductDoc>>,
    backends: Vec<Row<tollgate_model::Backend>>,
    accounts: HashMap<String, i64>,
}

impl After {
    fn new(world: &World) -> Self {
        After {
            products: world.products.iter().map(|r| (r.system_name.clone(), r.clone())).collect(),
            backends: world.backends.clone(),
            accounts: world.accounts.iter().map(|r| (r.system_name.clone(), r.id)).collect(),
        }
    }

    /// What `deploy` versions for `row`: as [`proxy_config`] builds it from the world.
    fn proxy_config(&self, row: &Row<ProductDoc>) -> Value {
        let product = row.doc.to_product(vec![]);
        let backends: Vec<&tollgate_model::Backend> = self
            .backends
            .iter()
            .filter(|b| product.backend_usages.iter().any(|u| u.backend == b.doc.system_name))
            .map(|b| &b.doc)
            .collect();
        json!({ "product": product, "backends": backends })
    }
}

/// Deploys (and promotes) every product of the file in the batch: staging versions
/// made for the drafts that changed, production rows for those whose staging version
/// production does not serve yet; each listed with whether it was `unchanged`.
async fn release(
    batch: &mut Batch,
    after: &After,
    products: &[String],
    promote: bool,
) -> ApiResult<(Vec<Value>, Vec<Value>)> {
    let by_product = |list: Vec<ConfigVersion>| -> HashMap<i64, ConfigVersion> {
        list.into_iter().map(|v| (v.product_id, v)).collect()
    };
    let staging_now = batch.current_configs(Environment::Staging).await?;
    let production_now = if promote { batch.current_configs(Environment::Production).await? } else { Vec::new() };
    let mut rows = Vec::with_capacity(products.len());
    for name in products {
        let row = after.products.get(name).ok_or_else(|| ApiError::not_found(&format!("product `{name}`")))?;
        rows.push((name, row, after.proxy_config(row)));
    }
    let next: HashMap<i64, &Value> = rows.iter().map(|(_, row, content)| (row.id, content)).collect();
    crate::world::no_host_clash(Environment::Staging, &staging_now, &next)?;
    let staging = by_product(staging_now);
    let (mut deployed, mut promoted) = (Vec::new(), Vec::new());
    let mut releases = Vec::with_capacity(rows.len());
    for (name, row, content) in &rows {
        let latest = staging.get(&row.id);
        let (version, unchanged) = match batch.deploy(row.id, latest, content).await? {
            Some(v) => (v, false),
            None => (latest.cloned().ok_or_else(|| ApiError::not_found("staging version"))?, true),
        };
        deployed.push(json!({ "product": name, "version": version.version, "unchanged": unchanged }));
        releases.push((name, version));
    }
    if promote {
        let next: HashMap<i64, &Value> =
            releases.iter().filter_map(|(_, v)| Some((v.product_id, v.content.as_ref()?))).collect();
        crate::world::no_host_clash(Environment::Production, &production_now, &next)?;
        let production = by_product(production_now);
        for (name, version) in &releases {
            let current = production.get(&version.product_id);
            let serving = current.is_some_and(|c| c.version == version.version && c.content == version.content);
            if !serving {
                batch.promote(version).await?;
            }
            promoted.push(json!({ "product": name, "version": version.version, "unchanged": serving }));
        }
    }
    Ok((deployed, promoted))
}

/// Writes the changes in the batch: updates one by one (each checks the revision it
/// read), creations many rows to a statement ([`Batch::insert_many`]), parents before
/// their children.
async fn write(batch: &mut Batch, after: &mut After, changes: Vec<Change>) -> ApiResult<()> {
    let now = tollgate_store::now_millis();
    let (mut products, mut plans, mut accounts, mut applications) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for change in changes {
        match change {
            Change::Backend(row, doc) => {
                let row = match row {
                    Some(row) => batch.update(Table::Backends, row.id, row.revision, &doc).await?,
                    None => batch.insert(Table::Backends, None, &doc.system_name, &doc).await?,
                };
                match after.backends.iter_mut().find(|b| b.id == row.id) {
                    Some(b) => *b = row,
                    None => after.backends.push(row),
                }
            }
            Change::Product(Some(row), doc) => {
                let row = batch.update(Table::Products, row.id, row.revision, &doc).await?;
                after.products.insert(row.system_name.clone(), row);
            }
            Change::Product(None, doc) => products.push(doc),
            Change::Plan { row: Some(row), doc, .. } => {
                batch.update(Table::ApplicationPlans, row.id, row.revision, &doc).await?;
            }
            Change::Plan { product, row: None, doc } => plans.push((product, doc)),
            Change::Account(doc) => accounts.push(doc),
            Change::Application { row: Some(row), doc, .. } => {
                batch.update(Table::Applications, row.id, row.revision, &doc).await?;
            }
            Change::Application { account, row: None, doc } => applications.push((account, doc)),
        }
    }
    let rows: Vec<_> = products.iter().map(|d| (None, d.system_name.as_str(), d)).collect();
    let mut docs: HashMap<&str, &ProductDoc> = products.iter().map(|d| (d.system_name.as_str(), d)).collect();
    for (id, _, name) in batch.insert_many(Table::Products, &rows, now).await? {
        let doc = docs.remove(name.as_str()).ok_or_else(|| ApiError::not_found("product"))?.clone();
        let row =
            Row { id, parent_id: None, system_name: name.clone(), revision: 1, created_at: now, updated_at: now, doc };
        after.products.insert(name, row);
    }
    let parent = |names: &HashMap<String, i64>, name: &str, kind: &str| {
        names.get(name).copied().ok_or_else(|| ApiError::not_found(&format!("{kind} `{name}`")))
    };
    let ids: HashMap<String, i64> = after.products.iter().map(|(name, r)| (name.clone(), r.id)).collect();
    let rows = plans
        .iter()
        .map(|(product, d)| Ok((Some(parent(&ids, product, "product")?), d.system_name.as_str(), d)))
        .collect::<ApiResult<Vec<_>>>()?;
    batch.insert_many(Table::ApplicationPlans, &rows, now).await?;
    let rows: Vec<_> = accounts.iter().map(|d| (None, d.name.as_str(), d)).collect();
    for (id, _, name) in batch.insert_many(Table::Accounts, &rows, now).await? {
        after.accounts.insert(name, id);
    }
    let rows = applications
        .iter()
        .map(|(account, d)| Ok((Some(parent(&after.accounts, account, "account")?), d.name.as_str(), d)))
        .collect::<ApiResult<Vec<_>>>()?;
    batch.insert_many(Table::Applications, &rows, now).await?;
    Ok(())
}
