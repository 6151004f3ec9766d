//! Command-line flags. Every flag of `serve` also reads `TOLLGATE_<FLAG>` from the
//! environment (e.g. `TOLLGATE_STAGING_LISTEN=127.0.0.1:9081`).

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(name = "tollgate", version, about = "API management gateway for HTTP and WebSocket services")]
pub struct Cli {
    /// Log filter (tracing syntax), e.g. `info`, `tollgate=debug`; RUST_LOG overrides it.
    #[arg(long, global = true, env = "TOLLGATE_LOG", default_value = "info")]
    pub log: String,
    /// Log line format: `text` (for people) or `json` (one object per line).
    #[arg(long, global = true, env = "TOLLGATE_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the staging and production gateways (and the admin listener) on this machine.
    Serve(ServeArgs),
    /// Run one stateless data-plane node of one environment: configuration from the
    /// store (PostgreSQL), counters in Redis; run any number behind a balancer.
    Gateway(GatewayArgs),
    /// Validate a configuration file and print every error with its path.
    Check(CheckArgs),
    /// An interactive WebSocket client: stdin lines are sent, received messages printed.
    Ws(WsArgs),
    /// Make the store match a declarative file (through the admin API); idempotent.
    Apply(ApplyArgs),
    /// Print the whole configuration as YAML (the input of `apply`).
    Export(AdminArgs),
    /// Deploy a product's draft to staging as a new version (if it changed).
    Deploy(ProductArgs),
    /// Promote a staging version (default: the latest) to production.
    Promote(PromoteArgs),
    /// Show what promoting staging to production would change.
    Diff(ProductArgs),
    /// Print a product's usage (analytics) as a table.
    Usage(UsageArgs),
    /// Print a shell completion script: `tollgate completions bash > /etc/bash_completion.d/tollgate`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff): `tollgate man | man -l -`.
    Man,
    /// Turn another tool's configuration into Tollgate YAML (printed; see `tollgate apply`).
    #[command(subcommand)]
    Import(ImportCommand),
}

#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// An OpenAPI 3.x document (JSON or YAML): a product with one method and one
    /// mapping rule per operation.
    Openapi(ImportOpenApiArgs),
    /// An APIcast configuration (THREESCALE_CONFIG_FILE): a product per service.
    Apicast(ImportApicastArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ImportApicastArgs {
    /// The APIcast configuration (JSON).
    pub file: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct ImportOpenApiArgs {
    /// The OpenAPI document.
    pub file: PathBuf,
    /// The product's system_name (default: from `info.title`).
    #[arg(long)]
    pub product: Option<String>,
    /// Match paths by prefix (default: rules end with `$`, matching the whole path).
    #[arg(long)]
    pub prefix_matching: bool,
}

#[derive(Debug, Clone, Args)]
pub struct UsageArgs {
    /// The product's system_name.
    pub product: String,
    /// Only this application (its name or id).
    #[arg(long)]
    pub application: Option<String>,
    /// The metric or method (default hits).
    #[arg(long, default_value = "hits")]
    pub metric: String,
    /// How far back: `90m`, `24h`, `7d`, or Unix seconds.
    #[arg(long, default_value = "24h")]
    pub since: String,
    /// `minute`, `hour` or `day`.
    #[arg(long, default_value = "hour", value_parser = ["minute", "hour", "day"])]
    pub granularity: String,
    /// Print CSV instead of a table.
    #[arg(long)]
    pub csv: bool,
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// How the commands that manage a running Tollgate reach it.
#[derive(Debug, Clone, Args)]
pub struct AdminArgs {
    /// The admin API of `tollgate serve`.
    #[arg(long, env = "TOLLGATE_ADMIN_URL", default_value = "http://127.0.0.1:8090")]
    pub admin_url: String,
    /// Admin token (printed at the first start of `serve`).
    #[arg(long, env = "TOLLGATE_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct ApplyArgs {
    /// The declarative configuration (YAML).
    #[arg(long, short = 'f')]
    pub file: PathBuf,
    /// Then deploy every product of the file to staging.
    #[arg(long)]
    pub deploy: bool,
    /// Then promote every product of the file to production (implies --deploy).
    #[arg(long)]
    pub promote: bool,
    /// Print the changes without making them.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub admin: AdminArgs,
}

#[derive(Debug, Clone, Args)]
pub struct ProductArgs {
    /// The product's system_name or id.
    pub product: String,
    #[command(flatten)]
    pub admin: AdminArgs,
}

#[derive(Debug, Clone, Args)]
pub struct PromoteArgs {
    /// The product's system_name or id.
    pub product: String,
    /// The staging version to promote (an older one rolls back).
    #[arg(long)]
    pub version: Option<i64>,
    #[command(flatten)]
    pub admin: AdminArgs,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Declarative configuration (YAML) for both environments (DB-less mode). SIGHUP
    /// reloads it; a broken file is rejected and the running configuration stays.
    #[arg(long, short = 'c', env = "TOLLGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// The store for the admin API and the gateways (when no --config is given):
    /// `sqlite://PATH` or `postgres://USER@HOST:PORT/DB`.
    #[arg(long, env = "TOLLGATE_STORE", default_value = "sqlite://./tollgate-data/tollgate.db")]
    pub store: String,
    /// Start a built-in WebSocket echo backend and a demo product, and print a
    /// ready-to-run `tollgate ws` command.
    #[arg(long, env = "TOLLGATE_DEMO")]
    pub demo: bool,
    /// Production gateway address; `tls://HOST:PORT` for TLS (needs --tls-cert/--tls-key).
    #[arg(long, env = "TOLLGATE_PRODUCTION_LISTEN", default_value = "0.0.0.0:8080")]
    pub production_listen: String,
    /// Staging gateway address; `tls://HOST:PORT` for TLS.
    #[arg(long, env = "TOLLGATE_STAGING_LISTEN", default_value = "0.0.0.0:8081")]
    pub staging_listen: String,
    /// Admin listener: /status/live, /status/ready, /metrics, and with a store the
    /// admin API (/api/v1) and the console (/).
    #[arg(long, env = "TOLLGATE_ADMIN_LISTEN", default_value = "127.0.0.1:8090")]
    pub admin_listen: String,
    /// Proxies in front of the admin listener whose `X-Forwarded-Proto: https` the
    /// console believes (loopback always is), comma-separated IP addresses or CIDR
    /// ranges: a login through them gets a `Secure` cookie.
    #[arg(long, env = "TOLLGATE_ADMIN_TRUSTED_PROXIES", value_delimiter = ',')]
    pub admin_trusted_proxies: Vec<String>,
    #[command(flatten)]
    pub listener: ListenerArgs,
    /// Hours of per-minute analytics kept before they are rolled up into hours.
    #[arg(long, env = "TOLLGATE_ANALYTICS_MINUTE_RETENTION", default_value_t = 48)]
    pub analytics_minute_retention: u64,
    /// Days of per-hour analytics kept before they are rolled up into days.
    #[arg(long, env = "TOLLGATE_ANALYTICS_HOUR_RETENTION", default_value_t = 90)]
    pub analytics_hour_retention: u64,
    #[command(flatten)]
    pub shared: SharedStateArgs,
}

/// How the gateway listeners accept and serve connections (`serve` and `gateway`).
#[derive(Debug, Clone, Args)]
pub struct ListenerArgs {
    /// PEM certificate chain for `tls://` listeners: the default, served when no product
    /// with a `tls` certificate of its own is published on the name a client asks for
    /// (SNI). Read at start.
    #[arg(long, env = "TOLLGATE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls://` listeners.
    #[arg(long, env = "TOLLGATE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Oldest TLS version `tls://` listeners accept: 1.2 (default) or 1.3.
    #[arg(long, env = "TOLLGATE_TLS_MIN_VERSION", default_value = "1.2", value_parser = ["1.2", "1.3"])]
    pub tls_min_version: String,
    /// Cipher suites `tls://` listeners offer, comma-separated IANA names from rustls's
    /// safe set (e.g. TLS13_AES_256_GCM_SHA384,TLS13_CHACHA20_POLY1305_SHA256); default:
    /// all of it.
    #[arg(long, env = "TOLLGATE_TLS_CIPHERS", value_name = "NAME[,NAME...]")]
    pub tls_ciphers: Option<String>,
    /// A DER OCSP response for --tls-cert, stapled to every TLS handshake (its form is
    /// checked, not its content; renew the file, then restart).
    #[arg(long, env = "TOLLGATE_TLS_OCSP_FILE")]
    pub tls_ocsp_file: Option<PathBuf>,
    /// Connections each gateway listener serves at once. At the limit a new connection
    /// closes the longest-idle one (else one below --min-data-rate); when all are busy
    /// (open WebSockets are never idle), it is refused.
    #[arg(long, env = "TOLLGATE_MAX_CONNECTIONS", default_value_t = 8192, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub max_connections: u64,
    /// Seconds a client has to send a request head (and to start the next request on
    /// an idle keep-alive connection).
    #[arg(long, env = "TOLLGATE_HEADER_READ_TIMEOUT", default_value_t = 30)]
    pub header_read_timeout: u64,
    /// Largest request head in bytes (bigger → 431). At least 8192.
    #[arg(long, env = "TOLLGATE_MAX_HEADER_BYTES", default_value_t = 32768, value_parser = clap::value_parser!(u64).range(8192..=1_048_576))]
    pub max_header_bytes: u64,
    /// Most field lines in a request head (more → 431), 1–10000. Up to 100 (the
    /// default, as HAProxy's and Envoy's) a head is parsed without allocating; above,
    /// every request allocates and zeroes a table of this many fields. The `http`
    /// crate's header map holds at most 24,576 fields, hence the ceiling.
    #[arg(long, env = "TOLLGATE_MAX_HEADER_COUNT", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub max_header_count: u64,
    /// Largest response head a backend may send, in bytes (bigger → 502
    /// upstream_invalid_response). At least 8192.
    #[arg(long, env = "TOLLGATE_MAX_RESPONSE_HEADER_BYTES", default_value_t = 65_536, value_parser = clap::value_parser!(u64).range(8192..=1_048_576))]
    pub max_response_header_bytes: u64,
    /// Most field lines in a backend's response head (more → 502
    /// upstream_invalid_response). Default 100, for the same reason as
    /// --max-header-count.
    #[arg(long, env = "TOLLGATE_MAX_RESPONSE_HEADER_COUNT", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub max_response_header_count: u64,
    /// Seconds a TCP connection (to a client or a backend) may be silent before the
    /// system probes whether its peer is still there (then every 15 s at most; 4
    /// unanswered probes end it); 0: keep-alive off.
    #[arg(long, env = "TOLLGATE_TCP_KEEPALIVE", default_value_t = 60)]
    pub tcp_keepalive: u64,
    /// Networks of load balancers that send the PROXY protocol (v1 or v2), comma-
    /// separated addresses or CIDR ranges: their connections must begin with a header,
    /// whose client address the gateway then uses; any other connection beginning with
    /// one is refused. Unset: no header is read.
    #[arg(long, env = "TOLLGATE_PROXY_PROTOCOL", value_name = "CIDR[,CIDR...]")]
    pub proxy_protocol: Option<String>,
    /// Name servers that resolve backends' endpoints given by host name (IP or
    /// IP:PORT, comma-separated; port 53 by default), instead of /etc/resolv.conf's.
    #[arg(long, env = "TOLLGATE_RESOLVER", value_name = "IP[:PORT][,...]")]
    pub resolver: Option<String>,
    /// Seconds in-flight requests may take to finish on shutdown.
    #[arg(long, env = "TOLLGATE_DRAIN_TIMEOUT", default_value_t = 30)]
    pub drain_timeout: u64,
    /// Bytes per second a client must at least send (request bodies; slower → 408) and
    /// take (responses; slower → connection closed) once the grace has passed; 0: no
    /// minimum.
    #[arg(long, env = "TOLLGATE_MIN_DATA_RATE", default_value_t = 240)]
    pub min_data_rate: u64,
    /// Seconds of waiting for a client before --min-data-rate applies.
    #[arg(long, env = "TOLLGATE_MIN_DATA_RATE_GRACE", default_value_t = 5)]
    pub min_data_rate_grace: u64,
    /// Seconds a backend has to send its response head, and between two parts of its
    /// body, unless a product's `upstream_connection` policy sets `read_timeout` (over
    /// it: 504).
    #[arg(long, env = "TOLLGATE_UPSTREAM_READ_TIMEOUT", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub upstream_read_timeout: u64,
    /// HTTP/1 request bodies with a Content-Length up to this many bytes are read whole
    /// before a backend connection is taken; larger ones are streamed; 0: always
    /// streamed.
    #[arg(long, env = "TOLLGATE_REQUEST_BUFFER_BYTES", default_value_t = 65_536, value_parser = clap::value_parser!(u64).range(0..=16_777_216))]
    pub request_buffer_bytes: u64,
    /// Threads serving gateway connections, each with its own event loop; 0: one per
    /// core.
    #[arg(long, env = "TOLLGATE_WORKERS", default_value_t = 0)]
    pub workers: usize,
}

/// Where usage counters live, and what happens when they cannot be reached.
#[derive(Debug, Clone, Args)]
pub struct SharedStateArgs {
    /// `memory` (this process only), or Redis shared by every node that uses it (limits
    /// then hold across nodes): `redis://[[USER]:PASSWORD@]HOST:PORT[/DB]`,
    /// `redis+sentinel://HOST[:PORT],…/SERVICE[/DB]` (the master the sentinels name) or
    /// `redis+cluster://HOST[:PORT],…` (a Redis Cluster).
    #[arg(long, env = "TOLLGATE_COUNTERS", default_value = "memory")]
    pub counters: String,
    /// Prefix of every Redis key, so installations can share a Redis; every node of one
    /// installation must use the same.
    #[arg(long, env = "TOLLGATE_COUNTERS_NAMESPACE", default_value = "tollgate")]
    pub counters_namespace: String,
    /// When Redis cannot be reached: `strict` (refuse with 503 rather than exceed a
    /// limit), `allow` (admit, count locally, add to Redis when it returns) or
    /// `resilient` (repeat each application's last decision for
    /// --counters-resilient-ttl seconds, else refuse).
    #[arg(long, env = "TOLLGATE_COUNTERS_FAILURE_MODE", default_value = "strict", value_parser = ["strict", "allow", "resilient"])]
    pub counters_failure_mode: String,
    /// How long a `resilient` node repeats an application's last decision, in seconds.
    #[arg(long, env = "TOLLGATE_COUNTERS_RESILIENT_TTL", default_value_t = 300)]
    pub counters_resilient_ttl: u64,
    /// Milliseconds to wait for Redis before the failure mode answers.
    #[arg(long, env = "TOLLGATE_COUNTERS_TIMEOUT_MS", default_value_t = 500)]
    pub counters_timeout_ms: u64,
    /// Quota leasing with Redis counters: most units of a limit's window a node takes
    /// from Redis beyond what a request needs, to admit later requests without a Redis
    /// call (never more than 1/16 of what the window has left). 0 (the default): every
    /// request asks Redis. See docs/deployment.md, "Quota leasing".
    #[arg(long, env = "TOLLGATE_COUNTERS_LEASE", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    pub counters_lease: u64,
    /// Seconds a WebSocket connection's place under `max_connections` is leased in
    /// Redis; its node renews it every third of that, so a crashed node's places free
    /// themselves within one lease.
    #[arg(long, env = "TOLLGATE_CONNECTION_LEASE", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub connection_lease: u64,
    /// Seconds between checks of the store's configuration revision (PostgreSQL
    /// notifications usually announce changes at once; this is the fallback).
    #[arg(long, env = "TOLLGATE_CONFIG_POLL_INTERVAL", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub config_poll_interval: u64,
}

#[derive(Debug, Clone, Args)]
pub struct GatewayArgs {
    /// The environment this node serves.
    #[arg(long, env = "TOLLGATE_ENV", value_parser = ["production", "staging"])]
    pub env: String,
    /// Gateway address; `tls://HOST:PORT` for TLS (needs --tls-cert/--tls-key).
    #[arg(long, env = "TOLLGATE_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: String,
    /// /status/live, /status/ready and /metrics.
    #[arg(long, env = "TOLLGATE_ADMIN_LISTEN", default_value = "127.0.0.1:8090")]
    pub admin_listen: String,
    /// The store the control plane (`tollgate serve --store …`) writes:
    /// `postgres://USER@HOST:PORT/DB` (or `sqlite://PATH` on the same machine).
    #[arg(long, env = "TOLLGATE_STORE")]
    pub store: String,
    #[command(flatten)]
    pub listener: ListenerArgs,
    #[command(flatten)]
    pub shared: SharedStateArgs,
}

#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// The configuration file to validate.
    #[arg(long, short = 'f', value_name = "FILE")]
    file: Option<PathBuf>,
    /// The same, without `-f`.
    #[arg(value_name = "FILE", conflicts_with = "file", required_unless_present = "file")]
    path: Option<PathBuf>,
}

impl CheckArgs {
    /// The file to check, given with `-f` or alone.
    pub fn file(&self) -> &std::path::Path {
        self.file.as_deref().or(self.path.as_deref()).unwrap_or(std::path::Path::new(""))
    }
}

#[derive(Debug, Clone, Args)]
pub struct WsArgs {
    /// `ws://` or `wss://` URL. `*.localhost` resolves to loopback, as in browsers.
    pub url: String,
    /// Request header, `Name: value`, replacing the client's own (e.g. `Host`); repeatable.
    #[arg(short = 'H', long = "header")]
    pub headers: Vec<String>,
    /// PEM file of certificate authorities to trust (for a self-signed gateway).
    #[arg(long)]
    pub cacert: Option<PathBuf>,
    /// Do not verify the server's certificate.
    #[arg(long, short = 'k')]
    pub insecure: bool,
    /// Subprotocol to request (Sec-WebSocket-Protocol); repeatable.
    #[arg(long)]
    pub subprotocol: Vec<String>,
}
