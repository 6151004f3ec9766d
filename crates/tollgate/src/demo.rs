//! `serve --demo`: a built-in WebSocket echo backend on loopback and a demo product in
//! front of it, so a first try needs nothing but the binary.

use crate::cli::ServeArgs;
use crate::serve::Server;
use futures_util::{SinkExt, StreamExt};
use std::hash::{BuildHasher, RandomState};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tollgate_gateway::Environment;
use tollgate_model::Config;

pub struct Demo {
    pub config: Config,
    pub user_key: String,
}

/// A key nobody can guess: 128 bits from the OS-seeded SipHash keys of two RandomStates.
fn random_key() -> String {
    let a = RandomState::new().hash_one(std::time::SystemTime::now());
    let b = RandomState::new().hash_one(std::process::id());
    format!("{a:016x}{b:016x}")
}

/// Replies `reply from server : <message>` to every text message, echoes binary ones.
pub async fn echo_backend(listener: TcpListener) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                return;
            };
            while let Some(Ok(msg)) = ws.next().await {
                let reply = match msg {
                    Message::Text(t) => Message::text(format!("reply from server : {t}")),
                    Message::Binary(b) => Message::Binary(b),
                    // tungstenite answers the close itself; keep polling so it is flushed.
                    _ => continue,
                };
                if ws.send(reply).await.is_err() {
                    break;
                }
            }
        });
    }
}

pub async fn start(_args: &ServeArgs) -> anyhow::Result<Demo> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let echo = listener.local_addr()?;
    tokio::spawn(echo_backend(listener));
    let user_key = random_key();
    let yaml = format!(
        r#"
backends:
  - system_name: echo
    private_base_url: ws://{echo}
products:
  - system_name: demo
    staging_public_base_url: http://demo-staging.localhost
    production_public_base_url: http://demo.localhost
    backend_usages: [ {{ backend: echo, path: / }} ]
    metrics: [ {{ system_name: hits }} ]
    methods: [ {{ system_name: connect }} ]
    mapping_rules:
      - {{ http_method: GET, pattern: /, metric: connect, delta: 1 }}
    policy_chain:
      - {{ name: websocket }}
      - {{ name: tollgate }}
    application_plans:
      - system_name: basic
        limits: [ {{ metric: hits, period: minute, value: 60 }} ]
accounts:
  - name: demo
    applications:
      - {{ name: demo-app, product: demo, plan: basic, user_key: "{user_key}" }}
"#
    );
    let config = tollgate_model::parse_str(&yaml).map_err(|e| anyhow::anyhow!("demo configuration: {e}"))?;
    Ok(Demo { config, user_key })
}

impl Demo {
    pub fn print_instructions(&self, server: &Server) {
        let port = server.staging.port();
        let scheme = if server.staging_tls { "wss" } else { "ws" };
        say!();
        say!("Demo: product `demo` in front of a built-in WebSocket echo backend.");
        say!("Application `demo-app` on plan `basic` (60 hits a minute) has user_key {}", self.user_key);
        say!("Try the staging gateway (type a line, get a reply; Ctrl-D to close):");
        say!("  tollgate ws '{scheme}://demo-staging.localhost:{port}/?user_key={}'", self.user_key);
        say!(
            "  (from the source tree: cargo run --release -- ws '{scheme}://demo-staging.localhost:{port}/?user_key={}')",
            self.user_key
        );
        let _ = Environment::Staging;
    }
}
