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
    pub id: i64,
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
    pub system_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub staging_public_base_url: String,
    pub production_public_base_url: String,
    #[serde(default)]
    pub authentication: Authentication,
    #[serde(default)]
    pub errors: ErrorMessages,
    #[serde(default)]
    pub backend_usages: Vec<Item<BackendUsage>>,
    #[serde(default)]
    pub metrics: Vec<Item<Metric>>,
    #[serde(default)]
    pub methods: Vec<Item<Method>>,
    #[serde(default)]
    pub mapping_rules: Vec<Item<MappingRule>>,
    #[serde(default)]
    pub policy_chain: Vec<PolicyConfig>,
    #[serde(default, skip_serializing_if = "is_default_path")]
    pub request_path: RequestPath,
    #[serde(default = "yes", skip_serializing_if = "is_yes")]
    pub rewrite_redirects: bool,
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
        let mut last_id = last_id;
        ProductDoc {
            system_name: p.system_name.clone(),
            name: p.name.clone(),
            description: p.description.clone(),
            staging_public_base_url: p.staging_public_base_url.clone(),
            production_public_base_url: p.production_public_base_url.clone(),
            authentication: p.authentication.clone(),
            errors: p.errors.clone(),
            backend_usages: numbered(&p.backend_usages, &mut last_id),
            metrics: numbered(&p.metrics, &mut last_id),
            methods: numbered(&p.methods, &mut last_id),
            mapping_rules: numbered(&p.mapping_rules, &mut last_id),
            policy_chain: p.policy_chain.clone(),
            request_path: p.request_path,
            rewrite_redirects: p.rewrite_redirects,
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
        }
    }

    pub fn next_id(&mut self) -> i64 {
        self.last_id += 1;
        self.last_id
    }
}

/// An application plan with limit ids.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PlanDoc {
    pub system_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub limits: Vec<Item<Limit>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
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

    pub fn to_plan(&self) -> ApplicationPlan {
        ApplicationPlan {
            system_name: self.system_name.clone(),
            name: self.name.clone(),
            limits: values(&self.limits),
            max_connections: self.max_connections,
        }
    }

    pub fn next_id(&mut self) -> i64 {
        self.last_id += 1;
        self.last_id
    }
}

/// An account's own document (its applications are rows of their own).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AccountDoc {
    pub name: String,
}

/// Applications are stored in the declarative shape.
pub type ApplicationDoc = tollgate_model::Application;
