//! What the gateways serve in store mode: for each environment, the current proxy
//! configuration version of every product, with the product's live plans and the live
//! applications (which are not versioned, as in 3scale).

use crate::error::ApiResult;
use crate::world::{World, by_parent, parse_proxy_config};
use std::collections::HashMap;
use tollgate_gateway::policy::Registry;
use tollgate_gateway::{BackendSource, Environment, ProductSource, Snapshot, Upstreams, compile_environment};
use tollgate_model::{Backend, Product};
use tollgate_store::{ProductDoc, Row, Store};

/// Builds both environments' snapshots from the store. A product whose stored version
/// no longer compiles (say, its CA file was removed) is left out and logged; the rest
/// is served.
pub async fn snapshots(store: &Store, registry: &Registry) -> ApiResult<(Snapshot, Snapshot)> {
    let mut world = World::load(store).await?;
    let accounts = world.take_accounts();
    // Indexes, so that the work is linear in the number of products.
    let products: HashMap<i64, &Row<ProductDoc>> = world.products.iter().map(|p| (p.id, p)).collect();
    let plans = by_parent(&world.plans);
    let live: HashMap<&str, &Backend> = world.backends.iter().map(|b| (b.system_name.as_str(), &b.doc)).collect();
    let mut upstreams = Upstreams::default();
    let mut out = Vec::with_capacity(2);
    for env in [Environment::Staging, Environment::Production] {
        let versions = store.current_configs(env).await?;
        let mut units: Vec<(String, Product, Vec<Backend>)> = Vec::new();
        for v in &versions {
            let Some(row) = products.get(&v.product_id) else { continue };
            let Some((mut product, backends)) = v.content.as_ref().and_then(parse_proxy_config) else {
                tracing::error!(product = %row.system_name, version = v.version, "stored proxy configuration is unreadable; skipped");
                continue;
            };
            let mine = plans.get(&row.id).map_or(&[][..], Vec::as_slice);
            product.application_plans = mine.iter().map(|p| p.doc.to_plan()).collect();
            let backends = backends.into_iter().map(|b| with_live_drains(b, &live)).collect();
            units.push((format!("{}@{} v{}", row.system_name, env.as_str(), v.version), product, backends));
        }
        let sources: Vec<ProductSource<'_>> = units
            .iter()
            .map(|(label, product, backends)| ProductSource {
                path: label.clone(),
                product,
                backends: backends
                    .iter()
                    .map(|b| BackendSource { path: format!("{label}.backends.{}", b.system_name), backend: b })
                    .collect(),
            })
            .collect();
        let (snapshot, errors) = compile_environment(env, &sources, &accounts, registry, &mut upstreams);
        for e in &errors.0 {
            tracing::error!(environment = env.as_str(), "{e}");
        }
        out.push(snapshot);
    }
    let production = out.pop().unwrap_or_else(|| Snapshot::empty(Environment::Production));
    let staging = out.pop().unwrap_or_else(|| Snapshot::empty(Environment::Staging));
    Ok((staging, production))
}

/// A serving version of a backend with the drain flags of the stored (live) backend:
/// draining is operational state, applied to every environment and version at once
/// (`POST /backends/{b}/endpoints/{address}/drain`), not configuration that waits for a
/// deploy. Endpoints the live backend no longer lists keep the version's flag.
fn with_live_drains(mut backend: Backend, live: &HashMap<&str, &Backend>) -> Backend {
    let Some(live) = live.get(backend.system_name.as_str()) else { return backend };
    for e in &mut backend.endpoints {
        let key = e.canonical();
        if let Some(l) = live.endpoints.iter().find(|l| key.is_some() && l.canonical() == key) {
            e.drain = l.drain;
        }
    }
    backend
}
