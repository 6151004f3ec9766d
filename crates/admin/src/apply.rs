//! `PUT /api/v1/config`: make the store match a declarative configuration, entity by
//! entity and by name, creating what is missing and updating what differs. Nothing
//! absent from the file is deleted. Applying an export changes nothing.

use crate::AdminState;
use crate::error::{ApiError, ApiResult};
use crate::world::World;
use serde_json::{Value, json};
use tollgate_model::{Account, Config};
use tollgate_store::{AccountDoc, PlanDoc, ProductDoc, Row, Table};

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

/// The stored configuration with the file's entities put over it, by name.
fn merged(current: &Config, file: &Config) -> Config {
    let mut out = current.clone();
    for b in &file.backends {
        match out.backends.iter_mut().find(|x| x.system_name == b.system_name) {
            Some(x) => *x = b.clone(),
            None => out.backends.push(b.clone()),
        }
    }
    for p in &file.products {
        match out.products.iter_mut().find(|x| x.system_name == p.system_name) {
            Some(x) => {
                let mut plans = x.application_plans.clone();
                for plan in &p.application_plans {
                    match plans.iter_mut().find(|y| y.system_name == plan.system_name) {
                        Some(y) => *y = plan.clone(),
                        None => plans.push(plan.clone()),
                    }
                }
                *x = p.clone();
                x.application_plans = plans;
            }
            None => out.products.push(p.clone()),
        }
    }
    for a in &file.accounts {
        let account = match out.accounts.iter_mut().position(|x| x.name == a.name) {
            Some(i) => &mut out.accounts[i],
            None => {
                out.accounts.push(Account { name: a.name.clone(), applications: vec![] });
                out.accounts.last_mut().expect("just pushed")
            }
        };
        for app in &a.applications {
            match account.applications.iter_mut().find(|x| x.name == app.name) {
                Some(x) => *x = app.clone(),
                None => account.applications.push(app.clone()),
            }
        }
    }
    out
}

pub async fn apply(s: &AdminState, config: Config, dry_run: bool) -> ApiResult<Value> {
    let world = World::load(&s.store).await?;
    let candidate = merged(&world.config(), &config);
    tollgate_gateway::check(&candidate, true).map_err(|e| ApiError::from_config(e, ""))?;

    let mut changes = Vec::new();
    for b in &config.backends {
        let row = world.backends.iter().find(|r| r.system_name == b.system_name);
        if row.is_none_or(|r| r.doc != *b) {
            changes.push(Change::Backend(row.cloned(), b.clone()));
        }
    }
    for p in &config.products {
        let row = world.products.iter().find(|r| r.system_name == p.system_name);
        let mut draft = p.clone();
        draft.application_plans.clear();
        if row.is_none_or(|r| r.doc.to_product(vec![]) != draft) {
            let doc = ProductDoc::from_product(&draft, row.map_or(0, |r| r.doc.last_id));
            changes.push(Change::Product(row.cloned(), doc));
        }
        for plan in &p.application_plans {
            let existing = row.and_then(|r| {
                world.plans.iter().find(|x| x.parent_id == Some(r.id) && x.system_name == plan.system_name)
            });
            if existing.is_none_or(|x| x.doc.to_plan() != *plan) {
                let doc = PlanDoc::from_plan(plan, existing.map_or(0, |x| x.doc.last_id));
                changes.push(Change::Plan { product: p.system_name.clone(), row: existing.cloned(), doc });
            }
        }
    }
    for a in &config.accounts {
        let row = world.accounts.iter().find(|r| r.system_name == a.name);
        if row.is_none() {
            changes.push(Change::Account(AccountDoc { name: a.name.clone() }));
        }
        for app in &a.applications {
            let existing = row.and_then(|r| {
                world.applications.iter().find(|x| x.parent_id == Some(r.id) && x.system_name == app.name)
            });
            if existing.is_none_or(|x| x.doc != *app) {
                changes.push(Change::Application { account: a.name.clone(), row: existing.cloned(), doc: app.clone() });
            }
        }
    }

    let described: Vec<Value> = changes.iter().map(Change::describe).collect();
    if !dry_run && !changes.is_empty() {
        for change in changes {
            write(s, change).await?;
        }
        s.changed();
    }
    Ok(json!({ "dry_run": dry_run, "changes": described }))
}

async fn write(s: &AdminState, change: Change) -> ApiResult<()> {
    let store = &s.store;
    match change {
        Change::Backend(Some(row), doc) => drop(store.update(Table::Backends, row.id, row.revision, &doc).await?),
        Change::Backend(None, doc) => drop(store.insert(Table::Backends, None, &doc.system_name, &doc).await?),
        Change::Product(Some(row), doc) => drop(store.update(Table::Products, row.id, row.revision, &doc).await?),
        Change::Product(None, doc) => drop(store.insert(Table::Products, None, &doc.system_name, &doc).await?),
        Change::Plan { product, row, doc } => {
            let p: Row<ProductDoc> = store.get(Table::Products, None, &tollgate_store::Key::Name(&product)).await?;
            match row {
                Some(row) => drop(store.update(Table::ApplicationPlans, row.id, row.revision, &doc).await?),
                None => drop(store.insert(Table::ApplicationPlans, Some(p.id), &doc.system_name, &doc).await?),
            }
        }
        Change::Account(doc) => drop(store.insert(Table::Accounts, None, &doc.name, &doc).await?),
        Change::Application { account, row, doc } => {
            let a: Row<AccountDoc> = store.get(Table::Accounts, None, &tollgate_store::Key::Name(&account)).await?;
            match row {
                Some(row) => drop(store.update(Table::Applications, row.id, row.revision, &doc).await?),
                None => drop(store.insert(Table::Applications, Some(a.id), &doc.name, &doc).await?),
            }
        }
    }
    Ok(())
}
