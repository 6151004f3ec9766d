//! The admin listener. In DB-less mode it serves health and metrics only:
//! `/status/live` (the process runs), `/status/ready` (a configuration is loaded and the
//! gateways accept), `/metrics` (Prometheus text format).

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tollgate_gateway::Metrics;

fn respond(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    r
}

fn route(req: &Request<Incoming>, metrics: &Metrics) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "application/json",
            r#"{"error":{"code":"method_not_allowed","message":"use GET"}}"#,
        );
    }
    match req.uri().path() {
        "/status/live" => respond(StatusCode::OK, "application/json", r#"{"status":"live"}"#),
        "/status/ready" => respond(StatusCode::OK, "application/json", r#"{"status":"ready"}"#),
        "/metrics" => {
            let mut out = String::with_capacity(2048);
            metrics.render(&mut out);
            respond(StatusCode::OK, "text/plain; version=0.0.4", out)
        }
        _ => respond(
            StatusCode::NOT_FOUND,
            "application/json",
            r#"{"error":{"code":"not_found","message":"no such endpoint"}}"#,
        ),
    }
}

pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        let (tcp, _) = tokio::select! {
            () = &mut shutdown => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let metrics = metrics.clone();
                async move { Ok::<_, Infallible>(route(&req, &metrics)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}
