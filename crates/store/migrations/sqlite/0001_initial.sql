-- Entities are stored as JSON documents in the keys of the declarative YAML (plus ids
-- for nested items), with the columns the store itself needs to find, order and
-- protect them. `revision` guards concurrent edits (optimistic locking).
CREATE TABLE backends (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    system_name TEXT NOT NULL UNIQUE,
    doc TEXT NOT NULL,
    revision BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE products (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    system_name TEXT NOT NULL UNIQUE,
    doc TEXT NOT NULL,
    revision BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE application_plans (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    parent_id BIGINT NOT NULL REFERENCES products(id) ON DELETE CASCADE,
    system_name TEXT NOT NULL,
    doc TEXT NOT NULL,
    revision BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (parent_id, system_name)
);
CREATE TABLE accounts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    system_name TEXT NOT NULL UNIQUE,
    doc TEXT NOT NULL,
    revision BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE applications (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    parent_id BIGINT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    system_name TEXT NOT NULL,
    doc TEXT NOT NULL,
    revision BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (parent_id, system_name)
);
CREATE TABLE proxy_configs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    product_id BIGINT NOT NULL REFERENCES products(id) ON DELETE CASCADE,
    environment TEXT NOT NULL CHECK (environment IN ('staging', 'production')),
    version BIGINT NOT NULL,
    content TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
-- Staging versions are numbered per product; production rows record each promotion
-- (of a staging version), so a rollback is a new row naming an older version.
CREATE UNIQUE INDEX proxy_configs_staging_version ON proxy_configs (product_id, version) WHERE environment = 'staging';
CREATE INDEX proxy_configs_latest ON proxy_configs (product_id, environment, id);
CREATE TABLE admin_tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    token_hash TEXT NOT NULL UNIQUE,
    read_only BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at BIGINT NOT NULL,
    token TEXT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    status BIGINT NOT NULL,
    before_doc TEXT,
    after_doc TEXT
);
CREATE TABLE usage_buckets (
    application TEXT NOT NULL,
    product TEXT NOT NULL,
    metric TEXT NOT NULL,
    granularity TEXT NOT NULL,
    bucket BIGINT NOT NULL,
    value BIGINT NOT NULL,
    PRIMARY KEY (application, metric, granularity, bucket)
);
