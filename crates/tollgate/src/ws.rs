//! `tollgate ws URL`: a small interactive WebSocket client. Lines on stdin are sent as
//! text messages; messages received are printed on stdout (binary ones as a summary).
//! A failed handshake prints the HTTP status and body and exits non-zero.

use crate::cli::WsArgs;
use anyhow::{Context as _, bail};
use futures_util::{SinkExt, StreamExt};
use http::{HeaderName, HeaderValue};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{Connector, client_async_tls_with_config};
use tollgate_model::BackendTls;

/// Resolves the URL's host; `localhost` and `*.localhost` are loopback (RFC 6761).
async fn resolve(host: &str, port: u16) -> anyhow::Result<Vec<SocketAddr>> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let lower = bare.to_ascii_lowercase();
    if lower == "localhost" || lower.ends_with(".localhost") {
        return Ok(vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)]);
    }
    Ok(tokio::net::lookup_host((bare, port)).await.with_context(|| format!("cannot resolve {bare}"))?.collect())
}

pub async fn run(args: WsArgs) -> anyhow::Result<ExitCode> {
    let uri: http::Uri = args.url.parse().with_context(|| format!("`{}` is not a URL", args.url))?;
    let secure = match uri.scheme_str() {
        Some("ws") => false,
        Some("wss") => true,
        _ => bail!("`{}`: the URL must start with ws:// or wss://", args.url),
    };
    let host = uri.host().context("the URL has no host")?.to_string();
    let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });

    let mut request = args.url.as_str().into_client_request().context("cannot build the upgrade request")?;
    for h in &args.headers {
        let (name, value) = h.split_once(':').with_context(|| format!("-H `{h}`: write `Name: value`"))?;
        let name = HeaderName::try_from(name.trim()).with_context(|| format!("-H `{h}`: bad header name"))?;
        let value = HeaderValue::try_from(value.trim()).with_context(|| format!("-H `{h}`: bad header value"))?;
        // Like curl's -H: a header given here replaces the client's own (Host included).
        request.headers_mut().insert(name, value);
    }
    if !args.subprotocol.is_empty() {
        let v = HeaderValue::try_from(args.subprotocol.join(", ")).context("--subprotocol: bad value")?;
        request.headers_mut().insert(http::header::SEC_WEBSOCKET_PROTOCOL, v);
    }

    let mut tcp = None;
    let mut last_err = None;
    for addr in resolve(&host, port).await? {
        match TcpStream::connect(addr).await {
            Ok(s) => {
                tcp = Some(s);
                break;
            }
            Err(e) => last_err = Some(format!("{addr}: {e}")),
        }
    }
    let Some(tcp) = tcp else {
        bail!("cannot connect to {host}:{port}: {}", last_err.unwrap_or_else(|| "no address".into()));
    };
    let connector = if secure {
        let tls = BackendTls { ca_file: args.cacert.clone(), verify: !args.insecure, ..BackendTls::default() };
        let config =
            tollgate_gateway::upstream::client_tls_config(&tls).map_err(|e| anyhow::anyhow!("--cacert: {e}"))?;
        Some(Connector::Rustls(Arc::new(config)))
    } else {
        Some(Connector::Plain)
    };

    let (ws, response) = match client_async_tls_with_config(request, tcp, None, connector).await {
        Ok(ok) => ok,
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let body = resp.body().as_ref().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
            eprintln!("handshake failed: HTTP {}", resp.status());
            if !body.is_empty() {
                eprintln!("{body}");
            }
            return Ok(ExitCode::from(2));
        }
        Err(e) => bail!("handshake failed: {e}"),
    };
    if let Some(p) = response.headers().get(http::header::SEC_WEBSOCKET_PROTOCOL) {
        eprintln!("connected (subprotocol {})", p.to_str().unwrap_or("?"));
    } else {
        eprintln!("connected");
    }

    let (mut sink, mut stream) = ws.split();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    loop {
        tokio::select! {
            line = lines.next_line(), if stdin_open => match line {
                Ok(Some(line)) => sink.send(Message::text(line)).await.context("send failed")?,
                _ => {
                    // End of input: close politely and wait for the server's close.
                    stdin_open = false;
                    let frame = CloseFrame { code: CloseCode::Normal, reason: "".into() };
                    sink.send(Message::Close(Some(frame))).await.context("close failed")?;
                }
            },
            msg = stream.next() => match msg {
                Some(Ok(Message::Text(t))) => println!("{t}"),
                Some(Ok(Message::Binary(b))) => println!("<binary message, {} bytes>", b.len()),
                Some(Ok(Message::Close(frame))) => {
                    match frame {
                        Some(f) => eprintln!("closed: {} {}", u16::from(f.code), f.reason),
                        None => eprintln!("closed"),
                    }
                    return Ok(ExitCode::SUCCESS);
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => bail!("connection failed: {e}"),
                None => {
                    eprintln!("connection closed");
                    return Ok(ExitCode::SUCCESS);
                }
            },
        }
    }
}
