//! The whole stored state at one moment, as the declarative configuration it stands
//! for: what validation, export, deploy and the gateways' snapshots are built from.

use crate::error::{ApiError, ApiResult};
use tollgate_model::{Account, Backend, Config, Product};
use tollgate_store::{AccountDoc, ApplicationDoc, PlanDoc, ProductDoc, Row, Store, Table};

#[derive(Clone)]
pub struct World {
    pub backends: Vec<Row<Backend>>,
    pub products: Vec<Row<ProductDoc>>,
    pub plans: Vec<Row<PlanDoc>>,
    pub accounts: Vec<Row<AccountDoc>>,
    pub applications: Vec<Row<ApplicationDoc>>,
}

impl World {
    pub async fn load(store: &Store) -> ApiResult<World> {
        Ok(World {
            backends: store.list(Table::Backends, None).await?,
            products: store.list(Table::Products, None).await?,
            // Every plan and application in one query each (in id order: within each
            // parent, the order of the parent's own list).
            plans: store.list(Table::ApplicationPlans, None).await?,
            accounts: store.list(Table::Accounts, None).await?,
            applications: store.list(Table::Applications, None).await?,
        })
    }

    /// The product's declarative form: its draft with its (live) plans.
    pub fn product(&self, row: &Row<ProductDoc>) -> Product {
        let plans = self.plans.iter().filter(|p| p.parent_id == Some(row.id)).map(|p| p.doc.to_plan()).collect();
        row.doc.to_product(plans)
    }

    /// The declarative configuration the stored state stands for. Linear in the number
    /// of rows: plans and applications are grouped by their parent once (a store of
    /// 10,000 products and 100,000 applications was 10⁹ comparisons when each parent
    /// looked for its own).
    pub fn config(&self) -> Config {
        let plans = by_parent(&self.plans);
        let applications = by_parent(&self.applications);
        Config {
            backends: self.backends.iter().map(|b| b.doc.clone()).collect(),
            products: self
                .products
                .iter()
                .map(|p| {
                    let mine = plans.get(&p.id).map_or(&[][..], Vec::as_slice);
                    p.doc.to_product(mine.iter().map(|plan| plan.doc.to_plan()).collect())
                })
                .collect(),
            accounts: self
                .accounts
                .iter()
                .map(|a| Account {
                    name: a.doc.name.clone(),
                    applications: applications
                        .get(&a.id)
                        .map_or(&[][..], Vec::as_slice)
                        .iter()
                        .map(|x| x.doc.clone())
                        .collect(),
                })
                .collect(),
        }
    }

    /// The accounts with their applications, moved out of the world (which keeps the
    /// account rows and no application): what the gateways' snapshots need, without a
    /// copy of 100,000 applications beside the rows they came from.
    pub fn take_accounts(&mut self) -> Vec<Account> {
        let mut index: std::collections::HashMap<i64, usize> = std::collections::HashMap::new();
        let mut accounts: Vec<Account> = Vec::with_capacity(self.accounts.len());
        for a in &self.accounts {
            index.insert(a.id, accounts.len());
            accounts.push(Account { name: a.doc.name.clone(), applications: Vec::new() });
        }
        for row in std::mem::take(&mut self.applications) {
            if let Some(&i) = row.parent_id.and_then(|p| index.get(&p)) {
                accounts[i].applications.push(row.doc);
            }
        }
        accounts
    }

    /// Validates the drafts as they would be after a change — with
    /// [`tollgate_gateway::check`], as `tollgate check` does, so a save is refused for
    /// exactly what the command refuses (files read, nothing fetched); `prefix` names the
    /// changed resource so the error can point into it.
    pub fn check(&self, prefix: &str) -> ApiResult<()> {
        tollgate_gateway::check(&self.config(), true).map_err(|e| ApiError::from_config(e, prefix))
    }

    pub fn product_index(&self, id: i64) -> usize {
        self.products.iter().position(|p| p.id == id).unwrap_or(self.products.len())
    }

    pub fn backend_index(&self, id: i64) -> usize {
        self.backends.iter().position(|p| p.id == id).unwrap_or(self.backends.len())
    }

    pub fn account_index(&self, id: i64) -> usize {
        self.accounts.iter().position(|p| p.id == id).unwrap_or(self.accounts.len())
    }

    /// `application_plans[j]` of a product, as the configuration numbers them.
    pub fn plan_index(&self, product_id: i64, plan_id: i64) -> usize {
        let mine = self.plans.iter().filter(|p| p.parent_id == Some(product_id));
        mine.clone().position(|p| p.id == plan_id).unwrap_or(mine.count())
    }

    pub fn application_index(&self, account_id: i64, app_id: i64) -> usize {
        let mine = self.applications.iter().filter(|p| p.parent_id == Some(account_id));
        mine.clone().position(|p| p.id == app_id).unwrap_or(mine.count())
    }

    /// The backends a product's draft uses.
    pub fn backends_of(&self, product: &Product) -> Vec<Backend> {
        self.backends
            .iter()
            .filter(|b| product.backend_usages.iter().any(|u| u.backend == b.doc.system_name))
            .map(|b| b.doc.clone())
            .collect()
    }

    /// Replaces (or adds) a row in one of the lists.
    pub fn put<T: Clone>(list: &mut Vec<Row<T>>, row: Row<T>) {
        match list.iter_mut().find(|r| r.id == row.id) {
            Some(r) => *r = row,
            None => list.push(row),
        }
    }
}

/// Rows grouped by their parent's id, each group in the rows' order.
pub fn by_parent<T>(rows: &[Row<T>]) -> std::collections::HashMap<i64, Vec<&Row<T>>> {
    let mut out: std::collections::HashMap<i64, Vec<&Row<T>>> = std::collections::HashMap::new();
    for r in rows {
        out.entry(r.parent_id.unwrap_or_default()).or_default().push(r);
    }
    out
}

/// A placeholder row for a resource not stored yet (validation before insert).
pub fn pending<T>(parent_id: Option<i64>, system_name: &str, doc: T) -> Row<T> {
    Row { id: -1, parent_id, system_name: system_name.to_string(), revision: 0, created_at: 0, updated_at: 0, doc }
}

/// What `deploy` versions: the product's draft (without plans, which are live) and the
/// backends it uses.
pub fn proxy_config(world: &World, row: &Row<ProductDoc>) -> serde_json::Value {
    let mut product = world.product(row);
    let backends = world.backends_of(&product);
    product.application_plans.clear();
    serde_json::json!({ "product": product, "backends": backends })
}

/// The reverse of [`proxy_config`].
pub fn parse_proxy_config(content: &serde_json::Value) -> Option<(Product, Vec<Backend>)> {
    let product = serde_json::from_value(content.get("product")?.clone()).ok()?;
    let backends = serde_json::from_value(content.get("backends")?.clone()).ok()?;
    Some((product, backends))
}

/// The host a proxy configuration version publishes its product on in `env` (lower
/// case, without port: as the gateways find products), and the product's name.
fn served_host(content: &serde_json::Value, env: tollgate_store::Environment) -> Option<(String, &str)> {
    let product = content.get("product")?;
    let url = product.get(format!("{}_public_base_url", env.as_str()))?.as_str()?;
    let name = product.get("system_name")?.as_str()?;
    tollgate_model::BaseUrl::parse(url, &["http", "https"]).ok().map(|b| (b.host, name))
}

/// Refuses versions that would publish two products on one host of `env` once they are
/// current: `next` (product id → the content about to be current) over `current` (each
/// product's current version there). Drafts are checked against each other when saved;
/// this checks what the gateways would serve, which differs while a product's new host
/// waits in its draft — without it, deploying another product on the old host would
/// take that host's traffic. Clashes that involve none of `next` are left alone.
///
/// # Errors
/// 409 naming the host and the product serving it.
pub fn no_host_clash(
    env: tollgate_store::Environment,
    current: &[tollgate_store::ConfigVersion],
    next: &std::collections::HashMap<i64, &serde_json::Value>,
) -> ApiResult<()> {
    // Host → the products (id, name) that would serve it.
    let mut hosts: std::collections::HashMap<String, Vec<(i64, &str)>> = std::collections::HashMap::new();
    let unchanged = current.iter().filter(|v| !next.contains_key(&v.product_id));
    let contents =
        unchanged.filter_map(|v| Some((v.product_id, v.content.as_ref()?))).chain(next.iter().map(|(&id, c)| (id, *c)));
    for (id, content) in contents {
        if let Some((host, name)) = served_host(content, env) {
            hosts.entry(host).or_default().push((id, name));
        }
    }
    let mut clashes: Vec<_> =
        hosts.iter().filter(|(_, ids)| ids.len() > 1 && ids.iter().any(|(id, _)| next.contains_key(id))).collect();
    clashes.sort();
    let Some((host, products)) = clashes.first() else { return Ok(()) };
    let Some(&(id, mine)) = products.iter().find(|(id, _)| next.contains_key(id)) else { return Ok(()) };
    let Some(&(_, other)) = products.iter().find(|(other, _)| *other != id) else { return Ok(()) };
    let env = env.as_str();
    Err(ApiError::conflict(format!(
        "`{host}` is the {env} host of product `{other}` already: two products cannot be served on one host; give `{mine}` another {env}_public_base_url (or move `{other}` to another host and deploy it first)"
    )))
}
