-- The dashboard's live view: every gateway node adds, per product, environment and
-- minute, its responses by status class and the WebSocket messages it relayed each
-- way; and reports, every few seconds, how many WebSockets it has open per product.
CREATE TABLE traffic_buckets (
    product TEXT NOT NULL,
    environment TEXT NOT NULL,
    minute BIGINT NOT NULL,
    responses_1xx BIGINT NOT NULL DEFAULT 0,
    responses_2xx BIGINT NOT NULL DEFAULT 0,
    responses_3xx BIGINT NOT NULL DEFAULT 0,
    responses_4xx BIGINT NOT NULL DEFAULT 0,
    responses_5xx BIGINT NOT NULL DEFAULT 0,
    messages_from_clients BIGINT NOT NULL DEFAULT 0,
    messages_from_backends BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (product, environment, minute)
);
CREATE INDEX traffic_buckets_minute ON traffic_buckets (minute);

-- One row per node, environment and product (product '' for the node itself, so an
-- idle node still says it is alive); replaced by each report.
CREATE TABLE gateway_reports (
    node TEXT NOT NULL,
    environment TEXT NOT NULL,
    product TEXT NOT NULL,
    open_websockets BIGINT NOT NULL,
    reported_at BIGINT NOT NULL,
    PRIMARY KEY (node, environment, product)
);
