//! Stored documents that differ from the declarative surface: nested items carry ids
//! (so the admin API can address one mapping rule or one limit), and a product's draft
//! is kept apart from its application plans (plans are not versioned).

use serde::{Deserialize, Serialize};
use tollgate_model::{
    ApplicationPlan, Authentication, BackendUsage, ErrorMessages, Limit, MappingRule, Method, Metric, PolicyConfig,
    Product, RequestPath,
};

/// A nested item with its id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Item<T> {
    /// Id, unique among the items of its document.
    pub id: i64,
    /// The item itself, its keys flattened beside `id`.
    #[serde(flatten)]
    pub value: T,
}

fn numbered<T: Clone>(items: &[T], next: &mut i64) -> Vec<Item<T>> {
    items
        .iter()
        .map(|v| {
            *next += 1;
            Item { id: *next, value: v.clone() }
        })
        .collect()
}

fn values<T: Clone>(items: &[Item<T>]) -> Vec<T> {
    items.iter().map(|i| i.value.clone()).collect()
}

/// A product's draft proxy configuration (what `deploy` versions), with item ids.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ProductDoc {
    /// Immutable name of the product.
    pub system_name: String,
    /// Human-readable name; free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `http(s)://host[:port]` the product answers on at the staging gateway.
    pub staging_public_base_url: String,
    /// `http(s)://host[:port]` the product answers on at the production gateway.
    pub production_public_base_url: String,
    /// How requests identify their application.
    #[serde(default)]
    pub authentication: Authentication,
    /// Replacements for the gateway's error responses.
    #[serde(default)]
    pub errors: ErrorMessages,
    /// Backend usages, with ids.
    #[serde(default)]
    pub backend_usages: Vec<Item<BackendUsage>>,
    /// The product's metrics, with ids.
    #[serde(default)]
    pub metrics: Vec<Item<Metric>>,
    /// The product's methods, with ids.
    #[serde(default)]
    pub methods: Vec<Item<Method>>,
    /// Mapping rules, in the order they are matched, with ids.
    #[serde(default)]
    pub mapping_rules: Vec<Item<MappingRule>>,
    /// The policy chain, in order.
    #[serde(default)]
    pub policy_chain: Vec<PolicyConfig>,
    /// How request paths are made canonical.
    #[serde(default, skip_serializing_if = "is_default_path")]
    pub request_path: RequestPath,
    /// Whether redirects to a backend's private base URL are rewritten (default `true`).
    #[serde(default = "yes", skip_serializing_if = "is_yes")]
    pub rewrite_redirects: bool,
    /// The certificate served for the product's public hosts (SNI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<tollgate_model::ProductTls>,
    /// The last id given to a nested item.
    #[serde(default)]
    pub last_id: i64,
}

fn yes() -> bool {
    true
}

fn is_yes(b: &bool) -> bool {
    *b
}

fn is_default_path(p: &RequestPath) -> bool {
    *p == RequestPath::default()
}

impl ProductDoc {
    /// A draft from the declarative product, its items numbered after `last_id` (the
    /// previous draft's, when it replaces one), so an id never names two items over time.
    pub fn from_product(p: &Product, last_id: i64) -> ProductDoc {
        // Every field named, none with `..`: a field added to `Product` does not compile
        // here until the draft keeps it (or says why not), so the two cannot drift; and
        // `to_product` builds a `Product` literal, which names every field too.
        let Product {
            system_name,
            name,
            description,
            staging_public_base_url,
            production_public_base_url,
            backend_usages,
            authentication,
            errors,
            metrics,
            methods,
            mapping_rules,
            policy_chain,
            // Plans are not versioned with the draft (3scale's): they live apart.
            application_plans: _,
            request_path,
            rewrite_redirects,
            tls,
        } = p;
        let mut last_id = last_id;
        ProductDoc {
            system_name: system_name.clone(),
            name: name.clone(),
            description: description.clone(),
            staging_public_base_url: staging_public_base_url.clone(),
            production_public_base_url: production_public_base_url.clone(),
            authentication: authentication.clone(),
            errors: errors.clone(),
            backend_usages: numbered(backend_usages, &mut last_id),
            metrics: numbered(metrics, &mut last_id),
            methods: numbered(methods, &mut last_id),
            mapping_rules: numbered(mapping_rules, &mut last_id),
            policy_chain: policy_chain.clone(),
            request_path: *request_path,
            rewrite_redirects: *rewrite_redirects,
            tls: tls.clone(),
            last_id,
        }
    }

    /// The declarative product, with the given plans.
    pub fn to_product(&self, application_plans: Vec<ApplicationPlan>) -> Product {
        Product {
            system_name: self.system_name.clone(),
            name: self.name.clone(),
            description: self.description.clone(),
            staging_public_base_url: self.staging_public_base_url.clone(),
            production_public_base_url: self.production_public_base_url.clone(),
            backend_usages: values(&self.backend_usages),
            authentication: self.authentication.clone(),
            errors: self.errors.clone(),
            metrics: values(&self.metrics),
            methods: values(&self.methods),
            mapping_rules: values(&self.mapping_rules),
            policy_chain: self.policy_chain.clone(),
            application_plans,
            request_path: self.request_path,
            rewrite_redirects: self.rewrite_redirects,
            tls: self.tls.clone(),
        }
    }

    /// Takes the next item id.
    pub fn next_id(&mut self) -> i64 {
        self.last_id += 1;
        self.last_id
    }
}

/// An application plan with limit ids.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PlanDoc {
    /// Name of the plan, unique within the product.
    pub system_name: String,
    /// Human-readable name; free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Usage limits, with ids.
    #[serde(default)]
    pub limits: Vec<Item<Limit>>,
    /// Concurrent WebSocket connections per application on this plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// The last id given to a limit.
    #[serde(default)]
    pub last_id: i64,
}

impl PlanDoc {
    /// A plan, its limits numbered after `last_id` (see [`ProductDoc::from_product`]).
    pub fn from_plan(p: &ApplicationPlan, last_id: i64) -> PlanDoc {
        let mut last_id = last_id;
        PlanDoc {
            system_name: p.system_name.clone(),
            name: p.name.clone(),
            limits: numbered(&p.limits, &mut last_id),
            max_connections: p.max_connections,
            last_id,
        }
    }

    /// The declarative plan, without limit ids.
    pub fn to_plan(&self) -> ApplicationPlan {
        ApplicationPlan {
            system_name: self.system_name.clone(),
            name: self.name.clone(),
            limits: values(&self.limits),
            max_connections: self.max_connections,
        }
    }

    /// Takes the next limit id.
    pub fn next_id(&mut self) -> i64 {
        self.last_id += 1;
        self.last_id
    }
}

/// An account's own document (its applications are rows of their own).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AccountDoc {
    /// Unique account name.
    pub name: String,
}

/// Applications are stored in the declarative shape.
pub type ApplicationDoc = tollgate_model::Application;
