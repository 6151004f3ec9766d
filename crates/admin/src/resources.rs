//! The admin API's resources, as listed in DESIGN §5. Path keys accept an id or a
//! `system_name` (an account's or application's `name`).

use crate::AdminState;
use crate::error::{ApiError, ApiResult, body_error};
use crate::world::{World, pending, proxy_config};
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use tollgate_model::{
    ApplicationPlan, ApplicationState, AuthMode, Backend, BackendUsage, Config, Limit, MappingRule, Method, Metric,
    PolicyConfig, Product,
};
use tollgate_store::{
    AccountDoc, ApplicationDoc, ConfigVersion, Environment, Item, Key, PlanDoc, ProductDoc, Row, Table,
};

type St = State<Arc<AdminState>>;

/// A JSON body whose parse errors are 400s with the offending field. It is a JSON
/// object, or with `LIST` an array (a policy chain): serde would read a resource from an
/// array of its fields in order, so `[]` passed as an empty configuration.
pub struct Body<T, const LIST: bool = false>(pub T);

/// Why a body's top-level JSON value is not of the kind expected (an object, or with
/// `list` an array); `None` when it is, or is not JSON at all (the parser says why).
fn wrong_kind(bytes: &[u8], list: bool) -> Option<ApiError> {
    let value: Value = serde_json::from_slice(bytes).ok()?;
    let found = match value {
        Value::Object(_) if !list => return None,
        Value::Array(_) if list => return None,
        Value::Object(_) => "an object",
        Value::Array(_) => "an array",
        Value::String(_) => "a string",
        Value::Number(_) => "a number",
        Value::Bool(_) => "a boolean",
        Value::Null => "null",
    };
    let name = if list { "array (`[…]`)" } else { "object (`{…}`)" };
    Some(ApiError::bad_request(format!("the body must be a JSON {name}, not {found}")))
}

impl<S: Send + Sync, T: DeserializeOwned, const LIST: bool> FromRequest<S> for Body<T, LIST> {
    type Rejection = ApiError;
    /// JSON first (content type, syntax), then the resource's shape, with the key at
    /// fault named as configuration files name it (`period`, `limits[0].value`) and the
    /// same words (`` `fortnight` is not a valid value (did you mean …) ``).
    ///
    /// A valid body is read straight into its type; only a body that fails is read again
    /// through a generic JSON value, for the errors' words. (Through the value every time,
    /// a configuration of 100,000 applications sent to `PUT /config` held a tree of a
    /// few hundred megabytes.)
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let json = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| {
            let essence = v.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
            essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
        });
        let Json(value) = if json {
            let bytes =
                axum::body::Bytes::from_request(req, state).await.map_err(|e| ApiError::bad_request(e.body_text()))?;
            // The kind is told from the first byte of a body that parsed (valid JSON),
            // and from the whole value of one that did not (it may not be JSON at all).
            let first = bytes.iter().find(|b| !b.is_ascii_whitespace()).copied();
            if let Ok(direct) = serde_json::from_slice::<T>(&bytes) {
                if first == Some(if LIST { b'[' } else { b'{' }) {
                    return Ok(Body(direct));
                }
                return Err(wrong_kind(&bytes, LIST).unwrap_or_else(|| ApiError::bad_request("unexpected body")));
            }
            if let Some(e) = wrong_kind(&bytes, LIST) {
                return Err(e);
            }
            Json::<Value>::from_bytes(&bytes).map_err(body_error)?
        } else {
            // Axum's own refusal of the content type.
            Json::<Value>::from_request(req, state).await.map_err(body_error)?
        };
        serde_path_to_error::deserialize(value).map(Body).map_err(|e| {
            let e = tollgate_model::explain("", &e.path().to_string(), &e.inner().to_string());
            let field = e.path.trim_start_matches('.').to_string();
            let message = match &e.hint {
                Some(h) => format!("{} ({h})", e.message),
                None => e.message.clone(),
            };
            let err = ApiError::bad_request(message);
            if field.is_empty() { err } else { err.field(field) }
        })
    }
}

/// Query parameters whose parse errors are JSON 400s like every other error.
pub struct Q<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> axum::extract::FromRequestParts<S> for Q<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| Q(v))
            .map_err(|e| ApiError::bad_request(e.body_text()))
    }
}

/// An optional JSON body: empty means the default (action endpoints accept `{}` or nothing).
pub struct OptBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptBody<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes =
            axum::body::Bytes::from_request(req, state).await.map_err(|e| ApiError::bad_request(e.body_text()))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptBody(T::default()));
        }
        serde_json::from_slice(&bytes)
            .map(OptBody)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
    }
}

/// `{id, …document}` with store bookkeeping (`last_id`) left out.
fn view<T: Serialize>(id: i64, doc: &T) -> Value {
    let mut v = serde_json::to_value(doc).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut v {
        map.remove("last_id");
        let mut out = serde_json::Map::with_capacity(map.len() + 1);
        out.insert("id".into(), json!(id));
        out.extend(std::mem::take(map));
        return Value::Object(out);
    }
    v
}

fn created(v: Value) -> Response {
    (StatusCode::CREATED, Json(v)).into_response()
}

#[derive(Deserialize, Default)]
pub struct Page {
    page: Option<usize>,
    per_page: Option<usize>,
}

impl Page {
    fn apply(&self, items: Vec<Value>) -> Json<Value> {
        let per = self.per_page.unwrap_or(500).clamp(1, 500);
        let page = self.page.unwrap_or(1).max(1);
        Json(Value::Array(items.into_iter().skip((page - 1) * per).take(per).collect()))
    }
}

async fn find<T: DeserializeOwned>(
    s: &AdminState,
    table: Table,
    parent: Option<i64>,
    key: &str,
    what: &str,
) -> ApiResult<Row<T>> {
    s.store.get(table, parent, &Key::parse(key)).await.map_err(|e| match e {
        tollgate_store::StoreError::NotFound => ApiError::not_found(&format!("{what} `{key}`")),
        other => other.into(),
    })
}

/// 409 when `name` is taken in `table` (within `parent`).
async fn ensure_free(s: &AdminState, table: Table, parent: Option<i64>, name: &str, what: &str) -> ApiResult<()> {
    match s.store.get::<Value>(table, parent, &Key::Name(name)).await {
        Ok(_) => Err(ApiError::conflict(format!("{what} `{name}` already exists"))
            .field(if matches!(table, Table::Accounts | Table::Applications) { "name" } else { "system_name" })),
        Err(tollgate_store::StoreError::NotFound) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn same_name(stored: &str, given: &str, field: &str) -> ApiResult<()> {
    if stored == given {
        Ok(())
    } else {
        Err(ApiError::invalid(format!("`{field}` cannot change (it is `{stored}`); create a new resource instead"))
            .field(field))
    }
}

pub fn open_routes() -> Router<Arc<AdminState>> {
    Router::new()
        .route("/status/live", get(|| async { Json(json!({ "status": "live" })) }))
        .route("/status/ready", get(ready))
        .route("/metrics", get(metrics))
}

async fn ready(State(s): St) -> Response {
    match sqlx::query("SELECT 1").execute(s.store.pool()).await {
        Ok(_) => Json(json!({ "status": "ready" })).into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "store unavailable" }))).into_response(),
    }
}

async fn metrics(State(s): St) -> Response {
    render_metrics(s.metrics.as_deref())
}

/// The Prometheus text exposition of the gateways' metrics.
fn render_metrics(metrics: Option<&tollgate_gateway::Metrics>) -> Response {
    let mut out = String::new();
    if let Some(m) = metrics {
        m.render(&mut out);
        tollgate_gateway::upstream::fleet::render_endpoints(&mut out);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// The admin listener of DB-less mode and of gateway nodes: health and metrics only
/// (nothing to administer here), answering anything else with a JSON 404. A node whose
/// store or counters do not answer is still ready (it serves its last configuration and
/// its counters' failure mode) and says it is degraded. `with_store`: whether there is
/// a store to report on (a node's); DB-less mode has none, and its answer names none.
pub fn health_router(
    metrics: Arc<tollgate_gateway::Metrics>,
    health: Arc<tollgate_gateway::Health>,
    with_store: bool,
) -> Router {
    let gauges = health.clone();
    let ready = move || {
        let (store, counters) = health.get();
        let state = |up: bool| if up { "ok" } else { "unreachable" };
        async move {
            let status = if (store || !with_store) && counters { "ready" } else { "degraded" };
            let mut answer = json!({ "status": status, "counters": state(counters) });
            if with_store {
                answer["store"] = json!(state(store));
            }
            Json(answer)
        }
    };
    Router::new()
        .route("/status/live", get(|| async { Json(json!({ "status": "live" })) }))
        .route("/status/ready", get(ready))
        .route(
            "/metrics",
            get(move || {
                let mut out = String::new();
                metrics.render(&mut out);
                gauges.render(&mut out);
                tollgate_gateway::upstream::fleet::render_endpoints(&mut out);
                async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response() }
            }),
        )
        .fallback(|| async { ApiError::not_found("endpoint") })
}

pub fn routes() -> Router<Arc<AdminState>> {
    Router::new()
        .route("/backends", get(backends_list).post(backend_create))
        .route("/backends/{b}", get(backend_get).put(backend_put).delete(backend_delete))
        .route("/backends/{b}/endpoints", get(backend_endpoints))
        .route("/backends/{b}/endpoints/{address}/drain", post(endpoint_drain).delete(endpoint_undrain))
        .route("/products", get(products_list).post(product_create))
        .route("/products/{p}", get(product_get).put(product_put).delete(product_delete))
        .route("/products/{p}/backend_usages", get(nested_list::<Usages>).post(nested_create::<Usages>))
        .route(
            "/products/{p}/backend_usages/{id}",
            get(nested_get::<Usages>).put(nested_put::<Usages>).delete(nested_delete::<Usages>),
        )
        .route("/products/{p}/metrics", get(nested_list::<Metrics>).post(nested_create::<Metrics>))
        .route(
            "/products/{p}/metrics/{id}",
            get(nested_get::<Metrics>).put(nested_put::<Metrics>).delete(nested_delete::<Metrics>),
        )
        .route("/products/{p}/methods", get(nested_list::<Methods>).post(nested_create::<Methods>))
        .route(
            "/products/{p}/methods/{id}",
            get(nested_get::<Methods>).put(nested_put::<Methods>).delete(nested_delete::<Methods>),
        )
        .route("/products/{p}/mapping_rules", get(nested_list::<Rules>).post(nested_create::<Rules>))
        .route(
            "/products/{p}/mapping_rules/{id}",
            get(nested_get::<Rules>).put(nested_put::<Rules>).delete(nested_delete::<Rules>),
        )
        .route("/products/{p}/policy_chain", get(chain_get).put(chain_put))
        .route("/products/{p}/application_plans", get(plans_list).post(plan_create))
        .route("/products/{p}/application_plans/{plan}", get(plan_get).put(plan_put).delete(plan_delete))
        .route("/products/{p}/application_plans/{plan}/limits", get(limits_list).post(limit_create))
        .route("/products/{p}/application_plans/{plan}/limits/{id}", get(limit_get).put(limit_put).delete(limit_delete))
        .route("/products/{p}/deploy", post(deploy))
        .route("/products/{p}/promote", post(promote))
        .route("/products/{p}/configs/diff", get(configs_diff))
        .route("/products/{p}/configs/{env}", get(configs_list))
        .route("/products/{p}/configs/{env}/{version}", get(config_get))
        .route("/accounts", get(accounts_list).post(account_create))
        .route("/accounts/{a}", get(account_get).put(account_put).delete(account_delete))
        .route("/accounts/{a}/applications", get(account_apps).post(app_create))
        .route("/applications", get(apps_list))
        .route("/applications/{app}", get(app_get).put(app_put).delete(app_delete))
        .route("/applications/{app}/suspend", post(app_suspend))
        .route("/applications/{app}/resume", post(app_resume))
        .route("/applications/{app}/change_plan", post(app_change_plan))
        .route("/applications/{app}/keys", post(app_key_add))
        .route("/applications/{app}/keys/{key}", axum::routing::delete(app_key_delete))
        .route(
            "/config",
            get(export).put(apply).layer(axum::extract::DefaultBodyLimit::max(crate::auth::CONFIG_BODY_LIMIT)),
        )
        .route("/policies", get(policies))
        .route("/analytics/usage", get(analytics_usage))
}

// ---------------------------------------------------------------- backends

async fn backends_list(State(s): St, Q(page): Q<Page>) -> ApiResult<Json<Value>> {
    let rows: Vec<Row<Backend>> = s.store.list(Table::Backends, None).await?;
    Ok(page.apply(rows.iter().map(|r| view(r.id, &r.doc)).collect()))
}

async fn backend_get(State(s): St, Path(b): Path<String>) -> ApiResult<Json<Value>> {
    let row: Row<Backend> = find(&s, Table::Backends, None, &b, "backend").await?;
    Ok(Json(view(row.id, &row.doc)))
}

async fn backend_create(State(s): St, Body(backend): Body<Backend>) -> ApiResult<Response> {
    ensure_free(&s, Table::Backends, None, &backend.system_name, "backend").await?;
    let mut world = World::load(&s.store).await?;
    let index = world.backends.len();
    world.backends.push(pending(None, &backend.system_name, backend.clone()));
    world.check(&format!("backends[{index}]"))?;
    let row = s.store.insert(Table::Backends, None, &backend.system_name, &backend).await?;
    s.changed();
    Ok(created(view(row.id, &row.doc)))
}

async fn backend_put(State(s): St, Path(b): Path<String>, Body(backend): Body<Backend>) -> ApiResult<Json<Value>> {
    let row: Row<Backend> = find(&s, Table::Backends, None, &b, "backend").await?;
    same_name(&row.system_name, &backend.system_name, "system_name")?;
    let mut world = World::load(&s.store).await?;
    let index = world.backend_index(row.id);
    World::put(&mut world.backends, Row { doc: backend.clone(), ..row.clone() });
    world.check(&format!("backends[{index}]"))?;
    let row = s.store.update(Table::Backends, row.id, row.revision, &backend).await?;
    s.changed();
    Ok(Json(view(row.id, &row.doc)))
}

async fn backend_delete(State(s): St, Path(b): Path<String>) -> ApiResult<StatusCode> {
    let row: Row<Backend> = find(&s, Table::Backends, None, &b, "backend").await?;
    let world = World::load(&s.store).await?;
    if let Some(p) =
        world.products.iter().find(|p| p.doc.backend_usages.iter().any(|u| u.value.backend == row.system_name))
    {
        return Err(ApiError::conflict(format!(
            "product `{}` uses backend `{}`; remove its backend usage first",
            p.system_name, row.system_name
        )));
    }
    s.store.delete(Table::Backends, row.id).await?;
    s.changed();
    Ok(StatusCode::NO_CONTENT)
}

/// The backend's endpoints as configured (its live row), each with the state this
/// node's gateways keep of it per environment (`null` where that environment serves no
/// version naming it). A host name, once resolved, has its state per address under
/// `addresses` (`[{address, staging, production}]`) and `null` for itself. Endpoints the
/// serving versions still use but the backend no longer lists come last, with
/// `configured: false`.
pub(crate) fn endpoints_view(backend: &Backend) -> Value {
    let reports = tollgate_gateway::upstream::endpoint_reports(&backend.system_name);
    let configured: Vec<tollgate_model::Endpoint> = match backend.endpoints.is_empty() {
        false => backend.endpoints.clone(),
        // Without `endpoints`, the base URL's host is the one endpoint.
        true => tollgate_model::BaseUrl::parse(&backend.private_base_url, &["http", "https", "ws", "wss"])
            .ok()
            .map(|u| {
                let host = if u.host.contains(':') { format!("[{}]", u.host) } else { u.host.clone() };
                tollgate_model::Endpoint { address: format!("{host}:{}", u.port), weight: 1, drain: false }
            })
            .into_iter()
            .collect(),
    };
    let canonical =
        |address: &str| tollgate_model::Endpoint { address: address.to_owned(), weight: 1, drain: false }.canonical();
    let mut used = vec![false; reports.len()];
    // The reports `matches` picks (not shown yet), one entry per address with its state
    // in each environment.
    let group = |used: &mut Vec<bool>, matches: &dyn Fn(&tollgate_gateway::upstream::EndpointReport) -> bool| {
        let mut entries: Vec<Value> = Vec::new();
        for (i, r) in reports.iter().enumerate() {
            if used[i] || !matches(r) {
                continue;
            }
            used[i] = true;
            let at = match entries.iter().position(|e| e["address"] == r.address.as_str()) {
                Some(at) => at,
                None => {
                    entries.push(json!({ "address": r.address, "staging": null, "production": null }));
                    entries.len() - 1
                }
            };
            entries[at][r.environment] = serde_json::to_value(r).unwrap_or(Value::Null);
        }
        entries
    };
    let mut out = Vec::new();
    for e in &configured {
        let key = e.canonical();
        let own = group(&mut used, &|r| key.is_some() && r.resolved_from.is_none() && canonical(&r.address) == key);
        let own = own.into_iter().next().unwrap_or_else(|| json!({ "staging": null, "production": null }));
        let mut entry = json!({
            "address": e.address, "weight": e.weight, "drain": e.drain, "configured": true,
            "staging": own["staging"], "production": own["production"],
        });
        // A host name's addresses, each an endpoint with its own state.
        let addresses = group(&mut used, &|r| key.is_some() && r.resolved_from.as_deref().and_then(canonical) == key);
        if !addresses.is_empty() {
            entry["addresses"] = Value::Array(addresses);
        }
        out.push(entry);
    }
    for mut rest in group(&mut used, &|_| true) {
        rest["weight"] = Value::Null;
        rest["drain"] = Value::Null;
        rest["configured"] = json!(false);
        out.push(rest);
    }
    json!({ "backend": backend.system_name, "endpoints": out })
}

async fn backend_endpoints(State(s): St, Path(b): Path<String>) -> ApiResult<Json<Value>> {
    let row: Row<Backend> = find(&s, Table::Backends, None, &b, "backend").await?;
    Ok(Json(endpoints_view(&row.doc)))
}

async fn endpoint_drain(State(s): St, Path((b, address)): Path<(String, String)>) -> ApiResult<Json<Value>> {
    set_drain(&s, &b, &address, true).await
}

async fn endpoint_undrain(State(s): St, Path((b, address)): Path<(String, String)>) -> ApiResult<Json<Value>> {
    set_drain(&s, &b, &address, false).await
}

/// Starts or stops draining one endpoint of a backend: its `drain` flag in the stored
/// backend, which gateways apply to every serving version of it at once, without a
/// deploy (see `live::snapshots`). Answers the endpoints' view once this node serves it.
async fn set_drain(s: &AdminState, b: &str, address: &str, drain: bool) -> ApiResult<Json<Value>> {
    let row: Row<Backend> = find(s, Table::Backends, None, b, "backend").await?;
    if row.doc.endpoints.is_empty() {
        return Err(ApiError::conflict(format!(
            "backend `{}` has no `endpoints` list: its base URL's host is its only endpoint, which cannot drain; list its instances in `endpoints`",
            row.system_name
        )));
    }
    let wanted = tollgate_model::Endpoint { address: address.to_owned(), weight: 1, drain }.canonical();
    // Drains of several endpoints at once each read, change and write the backend:
    // a write that lost the race reads again (as limits do), so none is lost.
    for _ in 0..16 {
        let row: Row<Backend> = s.store.get(Table::Backends, None, &Key::Id(row.id)).await?;
        let Some(i) = row.doc.endpoints.iter().position(|e| wanted.is_some() && e.canonical() == wanted) else {
            let known: Vec<&str> = row.doc.endpoints.iter().map(|e| e.address.as_str()).collect();
            return Err(ApiError::not_found(&format!(
                "endpoint `{address}` of backend `{}` (its endpoints: {})",
                row.system_name,
                known.join(", ")
            ))
            .field("address"));
        };
        if row.doc.endpoints[i].drain == drain {
            return Ok(Json(endpoints_view(&row.doc)));
        }
        let mut backend = row.doc.clone();
        backend.endpoints[i].drain = drain;
        let mut world = World::load(&s.store).await?;
        let index = world.backend_index(row.id);
        World::put(&mut world.backends, Row { doc: backend.clone(), ..row.clone() });
        world.check(&format!("backends[{index}]"))?;
        match s.store.update(Table::Backends, row.id, row.revision, &backend).await {
            Err(tollgate_store::StoreError::Stale) => continue,
            Err(e) => return Err(e.into()),
            Ok(_) => {}
        }
        s.changed();
        // The view below shows the drain once this node's gateways serve it.
        s.settle().await;
        return Ok(Json(endpoints_view(&backend)));
    }
    Err(ApiError::conflict("the backend keeps changing concurrently; retry"))
}

// ---------------------------------------------------------------- products

fn product_view(world: &World, row: &Row<ProductDoc>) -> Value {
    let mut v = view(row.id, &row.doc);
    let plans: Vec<Value> =
        world.plans.iter().filter(|p| p.parent_id == Some(row.id)).map(|p| view(p.id, &p.doc)).collect();
    v["application_plans"] = Value::Array(plans);
    v
}

async fn products_list(State(s): St, Q(page): Q<Page>) -> ApiResult<Json<Value>> {
    let world = World::load(&s.store).await?;
    Ok(page.apply(world.products.iter().map(|r| product_view(&world, r)).collect()))
}

async fn product_get(State(s): St, Path(p): Path<String>) -> ApiResult<Json<Value>> {
    let row: Row<ProductDoc> = find(&s, Table::Products, None, &p, "product").await?;
    let world = World::load(&s.store).await?;
    Ok(Json(product_view(&world, &row)))
}

async fn product_create(State(s): St, Body(product): Body<Product>) -> ApiResult<Response> {
    ensure_free(&s, Table::Products, None, &product.system_name, "product").await?;
    let mut world = World::load(&s.store).await?;
    let index = world.products.len();
    let doc = ProductDoc::from_product(&product, 0);
    world.products.push(pending(None, &product.system_name, doc.clone()));
    let plans: Vec<PlanDoc> = product.application_plans.iter().map(|p| PlanDoc::from_plan(p, 0)).collect();
    for plan in &plans {
        world.plans.push(pending(Some(-1), &plan.system_name, plan.clone()));
    }
    world.check(&format!("products[{index}]"))?;
    let row = s.store.insert(Table::Products, None, &product.system_name, &doc).await?;
    for plan in &plans {
        if let Err(e) = s.store.insert(Table::ApplicationPlans, Some(row.id), &plan.system_name, plan).await {
            // All or nothing: take the product back out (its plans go with it).
            let _ = s.store.delete(Table::Products, row.id).await;
            return Err(e.into());
        }
    }
    s.changed();
    let world = World::load(&s.store).await?;
    Ok(created(product_view(&world, &row)))
}

async fn product_put(State(s): St, Path(p): Path<String>, Body(product): Body<Product>) -> ApiResult<Json<Value>> {
    let row: Row<ProductDoc> = find(&s, Table::Products, None, &p, "product").await?;
    same_name(&row.system_name, &product.system_name, "system_name")?;
    let mut world = World::load(&s.store).await?;
    let index = world.product_index(row.id);
    // The draft is replaced; plans are managed under application_plans.
    let doc = ProductDoc::from_product(&product, row.doc.last_id);
    World::put(&mut world.products, Row { doc: doc.clone(), ..row.clone() });
    world.check(&format!("products[{index}]"))?;
    let row = s.store.update(Table::Products, row.id, row.revision, &doc).await?;
    s.changed();
    Ok(Json(product_view(&world, &row)))
}

async fn product_delete(State(s): St, Path(p): Path<String>) -> ApiResult<StatusCode> {
    let row: Row<ProductDoc> = find(&s, Table::Products, None, &p, "product").await?;
    let world = World::load(&s.store).await?;
    if let Some(app) = world.applications.iter().find(|a| a.doc.product == row.system_name) {
        return Err(ApiError::conflict(format!(
            "application `{}` uses product `{}`; delete it first",
            app.doc.name, row.system_name
        )));
    }
    s.store.delete(Table::Products, row.id).await?;
    s.changed();
    Ok(StatusCode::NO_CONTENT)
}

// ------------------------------------------------ product items (usages, metrics, methods, rules)

trait Nested: Send + Sync + 'static {
    type T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static;
    const FIELD: &'static str;
    const WHAT: &'static str;
    fn items(doc: &mut ProductDoc) -> &mut Vec<Item<Self::T>>;
    fn name(_item: &Self::T) -> Option<&str> {
        None
    }
    /// Refuses to delete an item something else still refers to.
    fn in_use(_world: &World, _product: &Row<ProductDoc>, _item: &Self::T) -> Option<String> {
        None
    }
}

struct Usages;
impl Nested for Usages {
    type T = BackendUsage;
    const FIELD: &'static str = "backend_usages";
    const WHAT: &'static str = "backend usage";
    fn items(doc: &mut ProductDoc) -> &mut Vec<Item<BackendUsage>> {
        &mut doc.backend_usages
    }
}

fn metric_in_use(world: &World, product: &Row<ProductDoc>, name: &str) -> Option<String> {
    if let Some(r) = product.doc.mapping_rules.iter().find(|r| r.value.metric == name) {
        return Some(format!("mapping rule {} ({} {}) counts on `{name}`", r.id, r.value.http_method, r.value.pattern));
    }
    world
        .plans
        .iter()
        .filter(|p| p.parent_id == Some(product.id))
        .find(|p| p.doc.limits.iter().any(|l| l.value.metric == name))
        .map(|p| format!("application plan `{}` has a limit on `{name}`", p.system_name))
}

struct Metrics;
impl Nested for Metrics {
    type T = Metric;
    const FIELD: &'static str = "metrics";
    const WHAT: &'static str = "metric";
    fn items(doc: &mut ProductDoc) -> &mut Vec<Item<Metric>> {
        &mut doc.metrics
    }
    fn name(item: &Metric) -> Option<&str> {
        Some(&item.system_name)
    }
    fn in_use(world: &World, product: &Row<ProductDoc>, item: &Metric) -> Option<String> {
        metric_in_use(world, product, &item.system_name)
    }
}

struct Methods;
impl Nested for Methods {
    type T = Method;
    const FIELD: &'static str = "methods";
    const WHAT: &'static str = "method";
    fn items(doc: &mut ProductDoc) -> &mut Vec<Item<Method>> {
        &mut doc.methods
    }
    fn name(item: &Method) -> Option<&str> {
        Some(&item.system_name)
    }
    fn in_use(world: &World, product: &Row<ProductDoc>, item: &Method) -> Option<String> {
        metric_in_use(world, product, &item.system_name)
    }
}

struct Rules;
impl Nested for Rules {
    type T = MappingRule;
    const FIELD: &'static str = "mapping_rules";
    const WHAT: &'static str = "mapping rule";
    fn items(doc: &mut ProductDoc) -> &mut Vec<Item<MappingRule>> {
        &mut doc.mapping_rules
    }
}

fn position<N: Nested>(doc: &mut ProductDoc, key: &str) -> Option<usize> {
    let items = N::items(doc);
    let by_id = key.parse::<i64>().ok().and_then(|id| items.iter().position(|i| i.id == id));
    by_id.or_else(|| items.iter().position(|i| N::name(&i.value) == Some(key)))
}

/// Applies `change` to the product's draft, validates the result and stores it.
/// `prefix_of(product index, changed draft)` names the changed part in errors.
async fn edit_product<F>(
    s: &AdminState,
    p: &str,
    prefix_of: impl Fn(usize, &mut ProductDoc) -> String,
    mut change: F,
) -> ApiResult<Row<ProductDoc>>
where
    F: FnMut(&mut ProductDoc) -> ApiResult<()>,
{
    let row: Row<ProductDoc> = find(s, Table::Products, None, p, "product").await?;
    let world = World::load(&s.store).await?;
    let index = world.product_index(row.id);
    let updated = s
        .store
        .modify::<ProductDoc, ApiError, _>(Table::Products, row.id, |doc| {
            change(doc)?;
            let prefix = prefix_of(index, doc);
            let mut candidate = world.clone();
            World::put(&mut candidate.products, Row { doc: doc.clone(), ..row.clone() });
            candidate.check(&prefix)
        })
        .await?;
    s.changed();
    Ok(updated)
}

/// An item with its `position` (1-based): the order in which mapping rules run.
fn item_view<T: Serialize>(items: &[Item<T>], i: usize) -> Value {
    let mut v = view(items[i].id, &items[i].value);
    v["position"] = json!(i + 1);
    v
}

#[derive(Deserialize, Default)]
struct Placement {
    /// 1-based place to put the item at; past the end means last.
    position: Option<usize>,
}

/// Moves the item at `from` to 1-based `position`.
fn place<T>(items: &mut Vec<Item<T>>, from: usize, position: Option<usize>) -> usize {
    let Some(position) = position else { return from };
    let item = items.remove(from);
    let to = position.saturating_sub(1).min(items.len());
    items.insert(to, item);
    to
}

async fn nested_list<N: Nested>(State(s): St, Path(p): Path<String>, Q(page): Q<Page>) -> ApiResult<Json<Value>> {
    let mut row: Row<ProductDoc> = find(&s, Table::Products, None, &p, "product").await?;
    let items = N::items(&mut row.doc);
    Ok(page.apply((0..items.len()).map(|i| item_view(items, i)).collect()))
}

async fn nested_get<N: Nested>(State(s): St, Path((p, key)): Path<(String, String)>) -> ApiResult<Json<Value>> {
    let mut row: Row<ProductDoc> = find(&s, Table::Products, None, &p, "product").await?;
    let i = position::<N>(&mut row.doc, &key).ok_or_else(|| ApiError::not_found(&format!("{} `{key}`", N::WHAT)))?;
    Ok(Json(item_view(N::items(&mut row.doc), i)))
}

/// `POST …?position=N` inserts at that place (mapping rules run in this order).
async fn nested_create<N: Nested>(
    State(s): St,
    Path(p): Path<String>,
    Q(at): Q<Placement>,
    Body(value): Body<N::T>,
) -> ApiResult<Response> {
    // Shared by the two closures (atomics: the handler's future must be Send).
    let new_id = AtomicI64::new(0);
    let mut row = edit_product(
        &s,
        &p,
        // Errors name the new item's own fields (`pattern`), as for an item's PUT.
        |i, doc| item_prefix::<N>(i, doc, new_id.load(Relaxed)),
        |doc| {
            if let Some(name) = N::name(&value)
                && N::items(doc).iter().any(|i| N::name(&i.value) == Some(name))
            {
                return Err(ApiError::conflict(format!("{} `{name}` already exists", N::WHAT)));
            }
            new_id.store(doc.next_id(), Relaxed);
            let items = N::items(doc);
            items.push(Item { id: new_id.load(Relaxed), value: value.clone() });
            place(items, items.len() - 1, at.position);
            Ok(())
        },
    )
    .await?;
    let items = N::items(&mut row.doc);
    let i = items.iter().position(|i| i.id == new_id.load(Relaxed)).unwrap_or_default();
    Ok(created(if items.is_empty() { Value::Null } else { item_view(items, i) }))
}

/// Where item `id` of a product's `N` collection stands in the configuration, for
/// errors: `products[0].mapping_rules[2]`.
fn item_prefix<N: Nested>(product: usize, doc: &mut ProductDoc, id: i64) -> String {
    let j = N::items(doc).iter().position(|x| x.id == id).unwrap_or_default();
    format!("products[{product}].{}[{j}]", N::FIELD)
}

/// `PUT …?position=N` also moves the item.
async fn nested_put<N: Nested>(
    State(s): St,
    Path((p, key)): Path<(String, String)>,
    Q(at): Q<Placement>,
    Body(value): Body<N::T>,
) -> ApiResult<Json<Value>> {
    let found = AtomicI64::new(i64::MIN);
    let mut row = edit_product(
        &s,
        &p,
        |i, doc| item_prefix::<N>(i, doc, found.load(Relaxed)),
        |doc| {
            let i = position::<N>(doc, &key).ok_or_else(|| ApiError::not_found(&format!("{} `{key}`", N::WHAT)))?;
            let items = N::items(doc);
            if let (Some(old), Some(new)) = (N::name(&items[i].value), N::name(&value)) {
                same_name(old, new, "system_name")?;
            }
            items[i].value = value.clone();
            found.store(items[i].id, Relaxed);
            place(items, i, at.position);
            Ok(())
        },
    )
    .await?;
    let items = N::items(&mut row.doc);
    let i = items.iter().position(|i| i.id == found.load(Relaxed)).unwrap_or_default();
    Ok(Json(if items.is_empty() { Value::Null } else { item_view(items, i) }))
}

async fn nested_delete<N: Nested>(State(s): St, Path((p, key)): Path<(String, String)>) -> ApiResult<StatusCode> {
    let row: Row<ProductDoc> = find(&s, Table::Products, None, &p, "product").await?;
    let world = World::load(&s.store).await?;
    edit_product(
        &s,
        &p,
        |i, _| format!("products[{i}]"),
        |doc| {
            let i = position::<N>(doc, &key).ok_or_else(|| ApiError::not_found(&format!("{} `{key}`", N::WHAT)))?;
            let value = N::items(doc)[i].value.clone();
            if let Some(reason) = N::in_use(&world, &Row { doc: doc.clone(), ..row.clone() }, &value) {
                return Err(ApiError::conflict(format!("cannot delete: {reason}")));
            }
            N::items(doc).remove(i);
            Ok(())
        },
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn chain_get(State(s): St, Path(p): Path<String>) -> ApiResult<Json<Vec<PolicyConfig>>> {
    let row: Row<ProductDoc> = find(&s, Table::Products, None, &p, "product").await?;
    Ok(Json(row.doc.policy_chain))
}

async fn chain_put(
    State(s): St,
    Path(p): Path<String>,
    Body(chain): Body<Vec<PolicyConfig>, true>,
) -> ApiResult<Json<Vec<PolicyConfig>>> {
    let row = edit_product(
        &s,
        &p,
        |i, _| format!("products[{i}].policy_chain"),
        |doc| {
            doc.policy_chain = chain.clone();
            Ok(())
        },
    )
    .await?;
    Ok(Json(row.doc.policy_chain))
}

// ---------------------------------------------------------------- application plans

async fn plans_list(State(s): St, Path(p): Path<String>) -> ApiResult<Json<Value>> {
    let product: Row<ProductDoc> = find(&s, Table::Products, None, &p, "product").await?;
    let rows: Vec<Row<PlanDoc>> = s.store.list(Table::ApplicationPlans, Some(product.id)).await?;
    Ok(Json(Value::Array(rows.iter().map(|r| view(r.id, &r.doc)).collect())))
}

async fn plan_get(State(s): St, Path((p, plan)): Path<(String, String)>) -> ApiResult<Json<Value>> {
    let product: Row<ProductDoc> = find(&s, Table::Products, None, &p, "product").await?;
    let row: Row<PlanDoc> = find(&s, Table::ApplicationPlans, Some(product.id), &plan, "application plan").await?;
    Ok(Json(view(row.id, &row.doc)))
}

/// Validates a plan change in the context of the whole configuration.
async fn check_plan(s: &AdminState, product_id: i64, row: Row<PlanDoc>, suffix: &str) -> ApiResult<()> {
    let mut world = World::load(&s.store).await?;
    let pi = world.product_index(product_id);
    World::put(&mut world.plans, row.clone());
    let j = world.plan_index(product_id, row.id);
    world.check(&format!("products[{pi}].application_plans[{j}]{suffix}"))
}

async fn plan_create(State(s): St, Path(p): Path<String>, Body(plan): Body<ApplicationPlan>) -> ApiResult<Response> {
    let product: Row<ProductDoc> = find(&s, Table::Products, None, &p, "product").await?;
    ensure_free(&s, Table::ApplicationPlans, Some(product.id), &plan.system_name, "application plan").await?;
    let doc = PlanDoc::from_plan(&plan, 0);
    check_plan(&s, product.id, pending(Some(product.id), &plan.system_name, doc.clone()), "").await?;
    let row = s.store.insert(Table::ApplicationPlans, Some(product.id), &plan.system_name, &doc).await?;
    s.changed();
    Ok(created(view(row.id, &row.doc)))
}

async fn plan_put(
    State(s): St,
    Path((p, plan)): Path<(String, String)>,
    Body(body): Body<ApplicationPlan>,
) -> ApiResult<Json<Value>> {
    let product: Row<ProductDoc> = find(&s, Table::Products, None, &p, "product").await?;
    let row: Row<PlanDoc> = find(&s, Table::ApplicationPlans, Some(product.id), &plan, "application plan").await?;
    same_name(&row.system_name, &body.system_name, "system_name")?;
    let doc = PlanDoc::from_plan(&body, row.doc.last_id);
    check_plan(&s, product.id, Row { doc: doc.clone(), ..row.clone() }, "").await?;
    let row = s.store.update(Table::ApplicationPlans, row.id, row.revision, &doc).await?;
    s.changed();
    Ok(Json(view(row.id, &row.doc)))
}

async fn plan_delete(State(s): St, Path((p, plan)): Path<(String, String)>) -> ApiResult<StatusCode> {
    let product: Row<ProductDoc> = find(&s, Table::Products, None, &p, "product").await?;
    let row: Row<PlanDoc> = find(&s, Table::ApplicationPlans, Some(product.id), &plan, "application plan").await?;
    let world = World::load(&s.store).await?;
    if let Some(app) =
        world.applications.iter().find(|a| a.doc.product == product.system_name && a.doc.plan == row.system_name)
    {
        return Err(ApiError::conflict(format!(
            "application `{}` is on plan `{}`; change its plan first",
            app.doc.name, row.system_name
        )));
    }
    s.store.delete(Table::ApplicationPlans, row.id).await?;
    s.changed();
    Ok(StatusCode::NO_CONTENT)
}

/// Limits are addressed by id only; anything else is simply not found.
fn limit_id(id: &str) -> ApiResult<i64> {
    id.parse().map_err(|_| ApiError::not_found(&format!("limit `{id}`")))
}

async fn limits_list(State(s): St, Path((p, plan)): Path<(String, String)>) -> ApiResult<Json<Value>> {
    let product: Row<ProductDoc> = find(&s, Table::Products, None, &p, "product").await?;
    let row: Row<PlanDoc> = find(&s, Table::ApplicationPlans, Some(product.id), &plan, "application plan").await?;
    Ok(Json(Value::Array(row.doc.limits.iter().map(|l| view(l.id, &l.value)).collect())))
}

async fn limit_get(State(s): St, Path((p, plan, id)): Path<(String, String, String)>) -> ApiResult<Json<Value>> {
    let id = limit_id(&id)?;
    let product: Row<ProductDoc> = find(&s, Table::Products, None, &p, "product").await?;
    let row: Row<PlanDoc> = find(&s, Table::ApplicationPlans, Some(product.id), &plan, "application plan").await?;
    let l = row.doc.limits.iter().find(|l| l.id == id).ok_or_else(|| ApiError::not_found(&format!("limit {id}")))?;
    Ok(Json(view(l.id, &l.value)))
}

/// Edits a plan's limits, validated; returns the plan row.
async fn edit_plan<F>(s: &AdminState, p: &str, plan: &str, mut change: F) -> ApiResult<Row<PlanDoc>>
where
    F: FnMut(&mut PlanDoc) -> ApiResult<()>,
{
    let product: Row<ProductDoc> = find(s, Table::Products, None, p, "product").await?;
    let row: Row<PlanDoc> = find(s, Table::ApplicationPlans, Some(product.id), plan, "application plan").await?;
    for _ in 0..16 {
        let current: Row<PlanDoc> = s.store.get(Table::ApplicationPlans, Some(product.id), &Key::Id(row.id)).await?;
        let mut doc = current.doc.clone();
        change(&mut doc)?;
        check_plan(s, product.id, Row { doc: doc.clone(), ..current.clone() }, "").await?;
        match s.store.update(Table::ApplicationPlans, row.id, current.revision, &doc).await {
            Err(tollgate_store::StoreError::Stale) => continue,
            other => {
                s.changed();
                return other.map_err(ApiError::from);
            }
        }
    }
    Err(ApiError::conflict("the plan keeps changing concurrently; retry"))
}

async fn limit_create(
    State(s): St,
    Path((p, plan)): Path<(String, String)>,
    Body(limit): Body<Limit>,
) -> ApiResult<Response> {
    let mut id = 0;
    edit_plan(&s, &p, &plan, |doc| {
        id = doc.next_id();
        doc.limits.push(Item { id, value: limit.clone() });
        Ok(())
    })
    .await?;
    Ok(created(view(id, &limit)))
}

async fn limit_put(
    State(s): St,
    Path((p, plan, id)): Path<(String, String, String)>,
    Body(limit): Body<Limit>,
) -> ApiResult<Json<Value>> {
    let id = limit_id(&id)?;
    edit_plan(&s, &p, &plan, |doc| {
        let l =
            doc.limits.iter_mut().find(|l| l.id == id).ok_or_else(|| ApiError::not_found(&format!("limit {id}")))?;
        l.value = limit.clone();
        Ok(())
    })
    .await?;
    Ok(Json(view(id, &limit)))
}

async fn limit_delete(State(s): St, Path((p, plan, id)): Path<(String, String, String)>) -> ApiResult<StatusCode> {
    let id = limit_id(&id)?;
    edit_plan(&s, &p, &plan, |doc| {
        let before = doc.limits.len();
        doc.limits.retain(|l| l.id != id);
        if doc.limits.len() == before { Err(ApiError::not_found(&format!("limit {id}"))) } else { Ok(()) }
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------- deploy, promote, configs

async fn deploy(State(s): St, Path(p): Path<String>) -> ApiResult<Response> {
    let row: Row<ProductDoc> = find(&s, Table::Products, None, &p, "product").await?;
    let world = World::load(&s.store).await?;
    let product = world.product(&row);
    // A deployed configuration must be complete and must compile, not just be a draft.
    let alone = Config { backends: world.backends_of(&product), products: vec![product.clone()], accounts: vec![] };
    tollgate_model::validate(&alone).map_err(|e| ApiError::from_config(e, "products[0]"))?;
    // Compiled as the gateways will, JWK Sets fetched: off the async workers, which a
    // slow identity provider must not hold (nor other requests behind them).
    let registry = s.registry.clone();
    tokio::task::spawn_blocking(move || tollgate_gateway::compile(&alone, &registry).map(drop))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("compiling failed: {e}")))?
        .map_err(|e| ApiError::from_config(e, "products[0]"))?;
    let content = proxy_config(&world, &row);
    let current = s.store.current_configs(Environment::Staging).await?;
    let next = std::collections::HashMap::from([(row.id, &content)]);
    crate::world::no_host_clash(Environment::Staging, &current, &next)?;
    match s.store.deploy(row.id, &content).await? {
        Some(v) => {
            s.changed();
            Ok(created(version_view(&v, false)))
        }
        None => {
            let latest = s
                .store
                .current_config(row.id, Environment::Staging)
                .await?
                .ok_or_else(|| ApiError::not_found("staging version"))?;
            let mut v = version_view(&latest, false);
            v["unchanged"] = json!(true);
            Ok(Json(v).into_response())
        }
    }
}

fn version_view(v: &ConfigVersion, with_content: bool) -> Value {
    let mut out = json!({ "version": v.version, "environment": v.environment, "created_at": v.created_at });
    if with_content && let Some(c) = &v.content {
        out["content"] = c.clone();
    }
    out
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PromoteBody {
    version: Option<i64>,
}

async fn promote(State(s): St, Path(p): Path<String>, OptBody(body): OptBody<PromoteBody>) -> ApiResult<Response> {
    let row: Row<ProductDoc> = find(&s, Table::Products, None, &p, "product").await?;
    // What production would serve next must not take a host another product serves.
    let source = match body.version {
        Some(n) => s.store.config_version(row.id, Environment::Staging, n).await.ok(),
        None => s.store.current_config(row.id, Environment::Staging).await?,
    };
    // Promoting what production serves already writes nothing (as a deploy of an
    // unchanged draft): production's history gets an entry per real change only.
    let serving = s.store.current_config(row.id, Environment::Production).await?;
    if let (Some(source), Some(serving)) = (&source, &serving)
        && (source.version, &source.content) == (serving.version, &serving.content)
    {
        let mut v = version_view(serving, false);
        v["unchanged"] = json!(true);
        return Ok(Json(v).into_response());
    }
    if let Some(content) = source.as_ref().and_then(|v| v.content.as_ref()) {
        let current = s.store.current_configs(Environment::Production).await?;
        let next = std::collections::HashMap::from([(row.id, content)]);
        crate::world::no_host_clash(Environment::Production, &current, &next)?;
    }
    let v = s.store.promote(row.id, body.version).await.map_err(|e| match e {
        tollgate_store::StoreError::NotFound => match body.version {
            Some(n) => ApiError::not_found(&format!("staging version {n}")).field("version"),
            None => ApiError::conflict("nothing to promote: deploy the product to staging first"),
        },
        other => other.into(),
    })?;
    s.changed();
    Ok(created(version_view(&v, false)))
}

fn parse_env(env: &str) -> ApiResult<Environment> {
    Environment::parse(env)
        .ok_or_else(|| ApiError::not_found(&format!("environment `{env}` (use staging or production)")))
}

async fn configs_list(State(s): St, Path((p, env)): Path<(String, String)>) -> ApiResult<Json<Value>> {
    let row: Row<ProductDoc> = find(&s, Table::Products, None, &p, "product").await?;
    let versions = s.store.config_versions(row.id, parse_env(&env)?).await?;
    Ok(Json(Value::Array(versions.iter().map(|v| version_view(v, false)).collect())))
}

async fn config_get(State(s): St, Path((p, env, version)): Path<(String, String, String)>) -> ApiResult<Json<Value>> {
    let version: i64 = version.parse().map_err(|_| ApiError::not_found(&format!("version `{version}`")))?;
    let row: Row<ProductDoc> = find(&s, Table::Products, None, &p, "product").await?;
    let v = s.store.config_version(row.id, parse_env(&env)?, version).await?;
    Ok(Json(version_view(&v, true)))
}

#[derive(Deserialize)]
struct DiffQuery {
    from: Option<String>,
    to: Option<String>,
}

/// `from`/`to`: `production` (current), `staging` (latest), `draft`, or a staging
/// version number.
async fn resolve_config(s: &AdminState, row: &Row<ProductDoc>, which: &str) -> ApiResult<Value> {
    match which {
        "draft" => Ok(proxy_config(&World::load(&s.store).await?, row)),
        "staging" | "production" => {
            let env = parse_env(which)?;
            Ok(s.store.current_config(row.id, env).await?.and_then(|c| c.content).unwrap_or(Value::Null))
        }
        n => {
            let v: i64 = n.parse().map_err(|_| {
                ApiError::bad_request(format!("`{n}`: use draft, staging, production or a version number"))
            })?;
            let found = s
                .store
                .config_version(row.id, Environment::Staging, v)
                .await
                .map_err(|_| ApiError::not_found(&format!("staging version {v}")))?;
            Ok(found.content.unwrap_or(Value::Null))
        }
    }
}

/// What a promote would change: `GET products/{p}/configs/diff?from=production&to=staging`
/// (the defaults) lists every changed value by path.
async fn configs_diff(State(s): St, Path(p): Path<String>, Q(q): Q<DiffQuery>) -> ApiResult<Json<Value>> {
    let row: Row<ProductDoc> = find(&s, Table::Products, None, &p, "product").await?;
    let from_name = q.from.unwrap_or_else(|| "production".into());
    let to_name = q.to.unwrap_or_else(|| "staging".into());
    let from = resolve_config(&s, &row, &from_name).await?;
    let to = resolve_config(&s, &row, &to_name).await?;
    // Nothing on one side (say, production before the first promote) reads as an empty
    // configuration, so every value shows by its path instead of as one blob.
    let empty = |v: Value| if v.is_null() { json!({}) } else { v };
    let (from, to) = (empty(from), empty(to));
    let mut changes = Vec::new();
    diff_values("", &from, &to, &mut changes);
    // The sections with no change, for a reader to fold away: the product's keys
    // (`product.mapping_rules`, …) and the other top-level ones (`backends`).
    let mut unchanged = Vec::new();
    for key in keys_of(&from, &to) {
        let (a, b) = (&from[key.as_str()], &to[key.as_str()]);
        if a.is_object() || b.is_object() {
            unchanged.extend(keys_of(a, b).into_iter().filter(|k| a.get(k) == b.get(k)).map(|k| format!("{key}.{k}")));
        } else if a == b {
            unchanged.push(key.clone());
        }
    }
    Ok(Json(json!({ "from": from_name, "to": to_name, "changes": changes, "unchanged": unchanged })))
}

/// The keys of two objects, sorted, each once.
fn keys_of(a: &Value, b: &Value) -> Vec<String> {
    let mut keys: Vec<String> = [a, b].iter().filter_map(|v| v.as_object()).flat_map(|o| o.keys().cloned()).collect();
    keys.sort();
    keys.dedup();
    keys
}

/// A structural diff: one `{path, from, to}` per leaf that differs; a sub-tree present
/// on one side only is listed leaf by leaf against nothing.
pub(crate) fn diff_values(path: &str, a: &Value, b: &Value, out: &mut Vec<Value>) {
    match (a, b) {
        (Value::Null, Value::Object(_)) => diff_values(path, &json!({}), b, out),
        (Value::Object(_), Value::Null) => diff_values(path, a, &json!({}), out),
        (Value::Null, Value::Array(_)) => diff_values(path, &json!([]), b, out),
        (Value::Array(_), Value::Null) => diff_values(path, a, &json!([]), out),
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                diff_values(&p, x.get(k).unwrap_or(&Value::Null), y.get(k).unwrap_or(&Value::Null), out);
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            for i in 0..x.len().max(y.len()) {
                diff_values(
                    &format!("{path}[{i}]"),
                    x.get(i).unwrap_or(&Value::Null),
                    y.get(i).unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        _ if a != b => out.push(json!({ "path": path, "from": a, "to": b })),
        _ => {}
    }
}

// ---------------------------------------------------------------- accounts and applications

async fn accounts_list(State(s): St, Q(page): Q<Page>) -> ApiResult<Json<Value>> {
    let rows: Vec<Row<AccountDoc>> = s.store.list(Table::Accounts, None).await?;
    Ok(page.apply(rows.iter().map(|r| view(r.id, &r.doc)).collect()))
}

async fn account_get(State(s): St, Path(a): Path<String>) -> ApiResult<Json<Value>> {
    let row: Row<AccountDoc> = find(&s, Table::Accounts, None, &a, "account").await?;
    Ok(Json(view(row.id, &row.doc)))
}

async fn account_create(State(s): St, Body(doc): Body<AccountDoc>) -> ApiResult<Response> {
    if doc.name.trim().is_empty() {
        return Err(ApiError::invalid("is empty").field("name"));
    }
    ensure_free(&s, Table::Accounts, None, &doc.name, "account").await?;
    let row = s.store.insert(Table::Accounts, None, &doc.name, &doc).await?;
    Ok(created(view(row.id, &row.doc)))
}

async fn account_put(State(s): St, Path(a): Path<String>, Body(doc): Body<AccountDoc>) -> ApiResult<Json<Value>> {
    let row: Row<AccountDoc> = find(&s, Table::Accounts, None, &a, "account").await?;
    same_name(&row.system_name, &doc.name, "name")?;
    let row = s.store.update(Table::Accounts, row.id, row.revision, &doc).await?;
    Ok(Json(view(row.id, &row.doc)))
}

async fn account_delete(State(s): St, Path(a): Path<String>) -> ApiResult<StatusCode> {
    let row: Row<AccountDoc> = find(&s, Table::Accounts, None, &a, "account").await?;
    s.store.delete(Table::Accounts, row.id).await?;
    s.changed();
    Ok(StatusCode::NO_CONTENT)
}

fn app_view(row: &Row<ApplicationDoc>) -> Value {
    let mut v = view(row.id, &row.doc);
    v["account_id"] = json!(row.parent_id);
    v["state"] = json!(row.doc.state);
    v
}

async fn account_apps(State(s): St, Path(a): Path<String>) -> ApiResult<Json<Value>> {
    let account: Row<AccountDoc> = find(&s, Table::Accounts, None, &a, "account").await?;
    let rows: Vec<Row<ApplicationDoc>> = s.store.list(Table::Applications, Some(account.id)).await?;
    Ok(Json(Value::Array(rows.iter().map(app_view).collect())))
}

async fn apps_list(State(s): St, Q(page): Q<Page>) -> ApiResult<Json<Value>> {
    let world = World::load(&s.store).await?;
    Ok(page.apply(world.applications.iter().map(app_view).collect()))
}

/// An application by id, by `account/name`, or by name when that name is unique
/// across accounts.
pub(crate) async fn find_app(s: &AdminState, key: &str) -> ApiResult<Row<ApplicationDoc>> {
    let world = World::load(&s.store).await?;
    if let Ok(id) = key.parse::<i64>()
        && let Some(r) = world.applications.iter().find(|a| a.id == id)
    {
        return Ok(r.clone());
    }
    if let Some((account, name)) = key.split_once('/') {
        let owner = world.accounts.iter().find(|a| a.system_name == account).map(|a| a.id);
        return world
            .applications
            .iter()
            .find(|a| owner.is_some() && a.parent_id == owner && a.system_name == name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&format!("application `{key}`")));
    }
    let mut named = world.applications.iter().filter(|a| a.system_name == key);
    match (named.next(), named.next()) {
        (Some(r), None) => Ok(r.clone()),
        (Some(_), Some(_)) => {
            Err(ApiError::conflict(format!("several accounts have an application named `{key}`; use its id")))
        }
        _ => Err(ApiError::not_found(&format!("application `{key}`"))),
    }
}

fn random_key() -> ApiResult<String> {
    crate::random::random_hex(16)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("no randomness: {e}")))
}

/// Fills in credentials the product's authentication mode needs but the body left out.
fn complete_credentials(world: &World, app: &mut ApplicationDoc) -> ApiResult<()> {
    let mode = world.products.iter().find(|p| p.system_name == app.product).map(|p| p.doc.authentication.mode);
    match mode {
        Some(AuthMode::UserKey) if app.user_key.is_none() => app.user_key = Some(random_key()?),
        Some(AuthMode::AppIdAppKey) => {
            if app.app_id.is_none() {
                app.app_id = Some(random_key()?[..16].to_string());
            }
            if app.app_keys.is_empty() {
                app.app_keys.push(random_key()?);
            }
        }
        _ => {}
    }
    Ok(())
}

async fn save_app(s: &AdminState, row: Row<ApplicationDoc>) -> ApiResult<Row<ApplicationDoc>> {
    let mut world = World::load(&s.store).await?;
    let account = row.parent_id.unwrap_or_default();
    let ai = world.account_index(account);
    World::put(&mut world.applications, row.clone());
    let j = world.application_index(account, row.id);
    world.check(&format!("accounts[{ai}].applications[{j}]"))?;
    let saved = if row.id < 0 {
        s.store.insert(Table::Applications, Some(account), &row.doc.name, &row.doc).await?
    } else {
        s.store.update(Table::Applications, row.id, row.revision, &row.doc).await?
    };
    s.changed();
    Ok(saved)
}

async fn app_create(State(s): St, Path(a): Path<String>, Body(mut app): Body<ApplicationDoc>) -> ApiResult<Response> {
    let account: Row<AccountDoc> = find(&s, Table::Accounts, None, &a, "account").await?;
    ensure_free(&s, Table::Applications, Some(account.id), &app.name, "application").await?;
    let world = World::load(&s.store).await?;
    complete_credentials(&world, &mut app)?;
    let row = save_app(&s, pending(Some(account.id), &app.name.clone(), app)).await?;
    Ok(created(app_view(&row)))
}

async fn app_get(State(s): St, Path(app): Path<String>) -> ApiResult<Json<Value>> {
    Ok(Json(app_view(&find_app(&s, &app).await?)))
}

async fn app_put(State(s): St, Path(app): Path<String>, Body(doc): Body<ApplicationDoc>) -> ApiResult<Json<Value>> {
    let row = find_app(&s, &app).await?;
    same_name(&row.system_name, &doc.name, "name")?;
    Ok(Json(app_view(&save_app(&s, Row { doc, ..row }).await?)))
}

async fn app_delete(State(s): St, Path(app): Path<String>) -> ApiResult<StatusCode> {
    let row = find_app(&s, &app).await?;
    s.store.delete(Table::Applications, row.id).await?;
    s.changed();
    Ok(StatusCode::NO_CONTENT)
}

async fn app_state(s: &AdminState, app: &str, state: ApplicationState) -> ApiResult<Json<Value>> {
    let mut row = find_app(s, app).await?;
    row.doc.state = state;
    Ok(Json(app_view(&save_app(s, row).await?)))
}

async fn app_suspend(State(s): St, Path(app): Path<String>) -> ApiResult<Json<Value>> {
    app_state(&s, &app, ApplicationState::Suspended).await
}

async fn app_resume(State(s): St, Path(app): Path<String>) -> ApiResult<Json<Value>> {
    app_state(&s, &app, ApplicationState::Live).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangePlan {
    plan: String,
}

async fn app_change_plan(
    State(s): St,
    Path(app): Path<String>,
    Body(body): Body<ChangePlan>,
) -> ApiResult<Json<Value>> {
    let mut row = find_app(&s, &app).await?;
    row.doc.plan = body.plan;
    Ok(Json(app_view(&save_app(&s, row).await?)))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct NewKey {
    user_key: Option<String>,
    app_key: Option<String>,
}

/// `user_key` applications get a new `user_key` (the given one, or a random one);
/// `app_id` applications get one more `app_key`.
async fn app_key_add(State(s): St, Path(app): Path<String>, OptBody(body): OptBody<NewKey>) -> ApiResult<Response> {
    let mut row = find_app(&s, &app).await?;
    if row.doc.app_id.is_some() {
        let key = match body.app_key {
            Some(k) => k,
            None => random_key()?,
        };
        if row.doc.app_keys.contains(&key) {
            return Err(ApiError::conflict("the application already has this app_key").field("app_key"));
        }
        row.doc.app_keys.push(key);
    } else {
        row.doc.user_key = Some(match body.user_key {
            Some(k) => k,
            None => random_key()?,
        });
    }
    Ok(created(app_view(&save_app(&s, row).await?)))
}

async fn app_key_delete(State(s): St, Path((app, key)): Path<(String, String)>) -> ApiResult<StatusCode> {
    let mut row = find_app(&s, &app).await?;
    if !row.doc.app_keys.contains(&key) {
        return Err(ApiError::not_found("app_key"));
    }
    if row.doc.app_keys.len() == 1 {
        return Err(ApiError::conflict("an application keeps at least one app_key; add another first"));
    }
    row.doc.app_keys.retain(|k| *k != key);
    save_app(&s, row).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------- export / apply, policies

async fn export(State(s): St) -> ApiResult<Json<Config>> {
    Ok(Json(World::load(&s.store).await?.config()))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ApplyQuery {
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    deploy: bool,
    #[serde(default)]
    promote: bool,
}

async fn apply(State(s): St, Q(q): Q<ApplyQuery>, Body(config): Body<Config>) -> ApiResult<Json<Value>> {
    let options = crate::apply::ApplyOptions { dry_run: q.dry_run, deploy: q.deploy, promote: q.promote };
    crate::apply::apply(&s, config, options).await.map(Json)
}

async fn policies(State(s): St) -> Json<Value> {
    Json(Value::Array(
        s.registry
            .policies()
            .iter()
            .map(|p| json!({ "name": p.name, "summary": p.summary, "schema": p.schema() }))
            .collect(),
    ))
}

#[derive(Deserialize)]
struct UsageParams {
    product: Option<String>,
    application: Option<String>,
    metric: Option<String>,
    /// Unix seconds; default: a day before `until`.
    since: Option<i64>,
    /// Unix seconds, exclusive; default: the end of the current second.
    until: Option<i64>,
    granularity: Option<String>,
    /// `json` (default) or `csv`.
    format: Option<String>,
}

/// Unix seconds a usage query may name: from 1970 to the year 36812.
const TIME_RANGE: std::ops::RangeInclusive<i64> = 0..=(1 << 40);

/// An analytics period: `since` and `until` in Unix seconds (default: the day before
/// now, by the admin state's clock), each a time from 1970 on, `since` first.
pub(crate) fn period(s: &AdminState, since: Option<i64>, until: Option<i64>) -> ApiResult<(i64, i64)> {
    period_at(since, until, s.clock.now())
}

/// [`period`] at `now` (Unix seconds). `until` is exclusive and a bucket counts when it
/// starts before it, so the default is the end of the current second, `now + 1`: with
/// `now` itself, usage recorded in the second a minute starts (bucket `== now`) was
/// left out until the next second.
fn period_at(since: Option<i64>, until: Option<i64>, now: i64) -> ApiResult<(i64, i64)> {
    let not_a_time =
        |t: i64, field| ApiError::bad_request(format!("`{t}` is not a Unix time in seconds from 1970")).field(field);
    let until = until.unwrap_or(now + 1);
    // `until` first: a default `since` is computed from it.
    if !TIME_RANGE.contains(&until) {
        return Err(not_a_time(until, "until"));
    }
    let since = since.unwrap_or(until.saturating_sub(86_400).max(0));
    if !TIME_RANGE.contains(&since) {
        return Err(not_a_time(since, "since"));
    }
    if since >= until {
        return Err(ApiError::bad_request("`since` must be before `until`").field("since"));
    }
    Ok((since, until))
}

/// `GET /api/v1/analytics/usage`: usage summed per minute, hour or day, as JSON or
/// (`format=csv`, or `Accept: text/csv`) CSV.
async fn analytics_usage(State(s): St, headers: axum::http::HeaderMap, Q(p): Q<UsageParams>) -> ApiResult<Response> {
    let (since, until) = period(&s, p.since, p.until)?;
    let csv = match p.format.as_deref() {
        Some("csv") => true,
        Some("json") => false,
        Some(other) => return Err(ApiError::bad_request(format!("`{other}`: use json or csv")).field("format")),
        None => headers
            .get(axum::http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/csv") && !a.contains("application/json")),
    };
    let granularity = match p.granularity.as_deref() {
        None => tollgate_store::Granularity::Hour,
        Some(g) => tollgate_store::Granularity::parse(g)
            .ok_or_else(|| ApiError::bad_request(format!("`{g}`: use minute, hour or day")).field("granularity"))?,
    };
    // Series of different units never add up: without a metric, `hits` (as in 3scale).
    let metric = Some(p.metric.unwrap_or_else(|| "hits".into()));
    // One application: `account/name` as given (it may be gone, its usage stays), else
    // the one the name or id means — never two accounts' applications added together.
    let application = match p.application.filter(|a| !a.is_empty()) {
        Some(a) if a.contains('/') => Some(a),
        Some(a) => {
            let row = find_app(&s, &a).await?;
            let world = World::load(&s.store).await?;
            let account = world.accounts.iter().find(|x| Some(x.id) == row.parent_id).map(|x| x.system_name.clone());
            Some(format!("{}/{}", account.unwrap_or_default(), row.doc.name))
        }
        None => None,
    };
    let q = tollgate_store::UsageQuery { product: p.product, application, metric, since, until };
    let series = s.store.usage_series(&q, granularity).await?;
    let total: i64 = series.iter().map(|(_, v)| v).sum();
    if csv {
        // One row per bucket: its start in RFC 3339 (UTC) and Unix seconds.
        let metric = q.metric.as_deref().unwrap_or("hits");
        let mut out = String::from("at,unix,metric,value\n");
        for (at, v) in &series {
            let (y, m, d) = tollgate_model::period::civil_from_days(at.div_euclid(86_400));
            let t = at.rem_euclid(86_400);
            out +=
                &format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z,{at},{metric},{v}\n", t / 3600, t / 60 % 60, t % 60);
        }
        return Ok(([(axum::http::header::CONTENT_TYPE, "text/csv; charset=utf-8")], out).into_response());
    }
    Ok(Json(json!({
        "granularity": granularity,
        "since": since,
        "until": until,
        "total": total,
        "values": series.iter().map(|(at, v)| json!({ "at": at, "value": v })).collect::<Vec<_>>(),
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_period_counts_the_minute_that_starts_now() {
        // Usage recorded at 1,000,020 is in the minute bucket that starts then; a query in
        // that same second must include it (`bucket < until`).
        let (since, until) = period_at(None, None, 1_000_020).expect("period");
        assert!(since <= 1_000_020 && 1_000_020 < until, "{since}..{until}");
        assert_eq!(until - since, 86_400);
        assert_eq!(period_at(Some(60), Some(120), 500).expect("given"), (60, 120));
        assert!(period_at(Some(120), Some(120), 500).is_err(), "empty");
        let far = period_at(None, Some(i64::MAX), 500).expect_err("too far");
        assert_eq!(far.field.as_deref(), Some("until"), "the field the caller sent is named");
    }
}
