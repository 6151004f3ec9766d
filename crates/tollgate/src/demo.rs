//! `serve --demo`: a built-in WebSocket echo backend on loopback and a demo product in
//! front of it, so a first try needs nothing but the binary.

use crate::cli::ServeArgs;
use crate::serve::Server;
use anyhow::Context as _;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tollgate_model::Config;

pub struct Demo {
    pub config: Config,
    pub user_key: String,
}

/// The demo backend: a WebSocket upgrade gets an echo that replies
/// `reply from server : <message>` to every text message (binary ones come back as
/// they are); any other request gets a short JSON description of what arrived (method,
/// path, headers), so `curl` through the gateway shows what the backend received.
pub async fn echo_backend(listener: TcpListener) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let service = hyper::service::service_fn(answer);
            let connection = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), service);
            let _ = connection.with_upgrades().await;
        });
    }
}

async fn answer(mut req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let upgrade = req.headers().get(header::UPGRADE).and_then(|v| v.to_str().ok());
    let key = req.headers().get(header::SEC_WEBSOCKET_KEY).map(|k| derive_accept_key(k.as_bytes()));
    if let (Some(u), Some(accept)) = (upgrade, key)
        && u.eq_ignore_ascii_case("websocket")
    {
        let upgrading = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(upgraded) = upgrading.await {
                let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
                echo(ws).await;
            }
        });
        let mut resp = Response::new(Full::default());
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = resp.headers_mut();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        if let Ok(v) = HeaderValue::from_str(&accept) {
            h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
        }
        return Ok(resp);
    }
    let headers: serde_json::Map<String, serde_json::Value> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
        .collect();
    let body = serde_json::json!({
        "backend": "tollgate demo",
        "method": req.method().as_str(),
        "path": req.uri().path_and_query().map_or("/", |p| p.as_str()),
        "headers": headers,
    });
    let mut resp = Response::new(Full::new(Bytes::from(format!("{body:#}\n"))));
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(resp)
}

async fn echo<S: AsyncRead + AsyncWrite + Unpin>(mut ws: WebSocketStream<S>) {
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
}

pub async fn start(_args: &ServeArgs) -> anyhow::Result<Demo> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let echo = listener.local_addr()?;
    tokio::spawn(echo_backend(listener));
    let user_key = tollgate_admin::random::random_hex(16).context("a key for the demo application")?;
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
        let (ws, http) = if server.staging_tls { ("wss", "https") } else { ("ws", "http") };
        let key = &self.user_key;
        say!();
        say!("Demo: product `demo` in front of a built-in echo backend (WebSocket and HTTP).");
        say!("Application `demo-app` on plan `basic` (60 hits a minute) has user_key {key}");
        say!("Try the staging gateway (type a line, get a reply; Ctrl-D to close), from a clone of the repository:");
        say!("  cargo run --release -- ws '{ws}://demo-staging.localhost:{port}/?user_key={key}'");
        say!("or with tollgate installed (cargo install --path crates/tollgate):");
        say!("  tollgate ws '{ws}://demo-staging.localhost:{port}/?user_key={key}'");
        say!("Plain HTTP to the same backend:");
        say!("  curl '{http}://demo-staging.localhost:{port}/?user_key={key}'");
    }
}
