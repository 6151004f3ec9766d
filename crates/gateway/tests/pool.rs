//! The backend connection pool against real backends on 127.0.0.1: connections are
//! reused once a response has been read to its end, closed when it was not, replaced
//! when the backend closed them while idle, and no request is lost on the way.

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tollgate_gateway::upstream::Upstream;
use tollgate_model::{BackendTls, BaseUrl};

/// `n` chunks of 1 KiB with no declared length: sent chunked.
struct Chunks(usize);

impl Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.0 == 0 {
            return Poll::Ready(None);
        }
        self.0 -= 1;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b'y'; 1024])))))
    }
}

type AnyBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// The answer to one request. Paths: `/len/N` (N bytes with a length), `/chunked/N` (N
/// chunks of 1 KiB), `/empty` (204), `/echo-length` (the request body's length), else `ok`.
async fn answer(req: http::Request<Incoming>) -> Result<http::Response<AnyBody>, Infallible> {
    let path = req.uri().path().to_string();
    let host = req.headers().get(http::header::HOST).cloned();
    let sent = req.into_body().collect().await.map(|b| b.to_bytes().len()).unwrap_or(0);
    let n = |p: &str| path.strip_prefix(p).and_then(|n| n.parse::<usize>().ok()).unwrap_or(0);
    let mut resp = if path.starts_with("/len/") {
        http::Response::new(Full::new(Bytes::from(vec![b'x'; n("/len/")])).boxed())
    } else if path.starts_with("/chunked/") {
        http::Response::new(Chunks(n("/chunked/")).boxed())
    } else if path == "/empty" {
        let mut r = http::Response::new(Full::new(Bytes::new()).boxed());
        *r.status_mut() = http::StatusCode::NO_CONTENT;
        r
    } else if path == "/echo-length" {
        http::Response::new(Full::new(Bytes::from(sent.to_string())).boxed())
    } else {
        http::Response::new(Full::new(Bytes::from_static(b"ok")).boxed())
    };
    if let Some(h) = host {
        resp.headers_mut().insert("x-host", h);
    }
    Ok(resp)
}

/// A hyper backend counting the connections it accepted.
async fn backend() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tcp.set_nodelay(true).expect("nodelay");
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service_fn(answer))
                    .await;
            });
        }
    });
    (addr, accepted)
}

fn upstream(addr: SocketAddr) -> Upstream {
    let base = BaseUrl::parse(&format!("http://{addr}"), &["http"]).expect("base URL");
    Upstream::new("test", base, &BackendTls::default(), std::time::Duration::from_secs(5)).expect("upstream")
}

fn get(up: &Upstream, path: &str) -> http::Request<tollgate_gateway::upstream::body::UpstreamBody> {
    let uri = up.uri(path, None).expect("uri");
    http::Request::get(uri).body(tollgate_gateway::upstream::body::UpstreamBody::Empty).expect("request")
}

async fn read(up: &Upstream, path: &str) -> (http::StatusCode, Bytes, Option<String>) {
    let resp = up.request(get(up, path)).await.expect("response");
    let status = resp.status();
    let host = resp.headers().get("x-host").map(|h| h.to_str().expect("header text").to_string());
    (status, resp.into_body().collect().await.expect("body").to_bytes(), host)
}

#[tokio::test]
async fn a_connection_carries_request_after_request_whatever_the_framing() {
    let (addr, accepted) = backend().await;
    let up = upstream(addr);
    for round in 0..50 {
        let (status, body, host) = read(&up, "/").await;
        assert_eq!((status, &body[..]), (http::StatusCode::OK, &b"ok"[..]), "round {round}");
        assert_eq!(host.as_deref(), Some(addr.to_string().as_str()), "Host is the backend's authority");
        let (_, body, _) = read(&up, "/len/70000").await;
        assert_eq!(body.len(), 70_000);
        let (_, body, _) = read(&up, "/chunked/40").await;
        assert_eq!(body.len(), 40 * 1024);
        let (status, body, _) = read(&up, "/empty").await;
        assert_eq!((status, body.len()), (http::StatusCode::NO_CONTENT, 0));
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "one connection served all 200 requests");
    assert_eq!(up.fleet().endpoints[0].pool.idle(), 1);
}

#[tokio::test]
async fn concurrent_requests_open_connections_and_all_come_back() {
    let (addr, accepted) = backend().await;
    let up = Arc::new(upstream(addr));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let up = up.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..20 {
                let (status, body, _) = read(&up, "/len/3000").await;
                assert_eq!((status, body.len()), (http::StatusCode::OK, 3000));
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let opened = accepted.load(Ordering::SeqCst);
    assert!((1..=16).contains(&opened), "at most one connection per concurrent request, got {opened}");
    assert_eq!(up.fleet().endpoints[0].pool.idle(), opened, "every connection went back to the pool");
}

#[tokio::test]
async fn a_body_dropped_before_its_end_closes_its_connection() {
    let (addr, accepted) = backend().await;
    let up = upstream(addr);
    let resp = up.request(get(&up, "/chunked/200")).await.expect("response");
    let mut body = resp.into_body();
    let first = body.frame().await.expect("a first frame").expect("data");
    assert!(first.is_data());
    drop(body);
    assert_eq!(
        up.fleet().endpoints[0].pool.idle(),
        0,
        "the rest of that response would have been read as the next one"
    );
    let (status, body, _) = read(&up, "/len/10").await;
    assert_eq!((status, body.len()), (http::StatusCode::OK, 10));
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn request_bodies_go_out_whole() {
    let (addr, _) = backend().await;
    let up = upstream(addr);
    for size in [0usize, 1, 65_536, 300_001] {
        let uri = up.uri("/echo-length", None).expect("uri");
        let body = tollgate_gateway::upstream::body::UpstreamBody::bytes(vec![b'z'; size]);
        let resp = up.request(http::Request::post(uri).body(body).expect("request")).await.expect("response");
        let got = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(got, size.to_string().as_bytes());
    }
}

/// A backend that answers one request per connection and then closes it, without
/// saying so (no `Connection: close`), as a backend whose keep-alive timeout ran out
/// does. Reports each close.
async fn closing_backend() -> (SocketAddr, Arc<AtomicUsize>, tokio::sync::mpsc::UnboundedReceiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let (closed_tx, closed) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let _ = tcp.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
            drop(tcp);
            let _ = closed_tx.send(());
        }
    });
    (addr, accepted, closed)
}

#[tokio::test]
async fn a_connection_the_backend_closed_while_idle_is_not_used_again() {
    let (addr, accepted, mut closed) = closing_backend().await;
    let up = upstream(addr);
    for round in 1..=5 {
        let (status, body, _) = read(&up, "/").await;
        assert_eq!((status, &body[..]), (http::StatusCode::OK, &b"ok"[..]), "round {round}");
        closed.recv().await.expect("the backend reports its close");
        // Let the runtime's reactor see the backend's FIN (yield_now runs after it).
        tokio::task::yield_now().await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 5);
    assert!(up.fleet().endpoints[0].pool.idle() <= 1);
}

#[tokio::test]
async fn an_unreachable_backend_is_a_connect_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("address").port()
    };
    let up = upstream(SocketAddr::from(([127, 0, 0, 1], port)));
    let Err(err) = up.request(get(&up, "/")).await else { panic!("a closed port answered") };
    assert!(
        matches!(err, tollgate_gateway::refusal::Refusal::UpstreamUnavailable(_)),
        "a refused connection is 'unavailable' (retryable), got {err:?}"
    );
}

/// An upstream speaking HTTP/2 with prior knowledge (h2c) to `addr`.
fn h2_upstream(addr: SocketAddr) -> Upstream {
    let base = BaseUrl::parse(&format!("http://{addr}"), &["http"]).expect("base");
    let options = tollgate_gateway::upstream::FleetOptions {
        protocol: tollgate_model::UpstreamProtocol::Http2,
        ..Default::default()
    };
    Upstream::with_endpoints("h2", base, &BackendTls::default(), std::time::Duration::from_secs(5), &[], options, None)
        .expect("upstream")
}

/// An HTTP/2 (h2c) backend that allows `streams` concurrent streams per connection and
/// answers once `hold` requests have arrived: counts connections and requests.
async fn h2_backend(streams: u32, hold: usize) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let arrived = Arc::new(tokio::sync::Semaphore::new(0));
    let seen = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let (arrived, seen) = (arrived.clone(), seen.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req: http::Request<Incoming>| {
                    let (arrived, seen) = (arrived.clone(), seen.clone());
                    async move {
                        assert_eq!(req.version(), http::Version::HTTP_2);
                        let authority = req.uri().authority().map(|a| a.to_string()).unwrap_or_default();
                        // Each `/hold` waits until `hold` of them have come: they are in
                        // flight together.
                        if req.uri().path() == "/hold" {
                            if (seen.fetch_add(1, Ordering::SeqCst) + 1) % hold == 0 {
                                arrived.add_permits(hold);
                            }
                            arrived.acquire().await.expect("permit").forget();
                        }
                        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(authority))))
                    }
                });
                let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .max_concurrent_streams(streams)
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn http2_requests_share_connections_up_to_the_servers_stream_limit_then_open_more() {
    let (addr, accepted) = h2_backend(2, 6).await;
    let up = h2_upstream(addr);
    // The first request learns the server's SETTINGS (2 streams) on its connection.
    let (status, _, _) = read(&up, "/").await;
    assert_eq!(status, 200);
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    let round = || {
        futures_util::future::join_all((0..6).map(|_| async {
            let resp = up.request(get(&up, "/hold")).await.expect("response");
            resp.into_body().collect().await.expect("body").to_bytes()
        }))
    };
    // Six held at once: a connection never carries more than its 2 streams (a third
    // would wait on it for ever, as the server answers only once all six came).
    // Bounded: a connection over its limit would hold its third request for ever.
    let answers = tokio::time::timeout(std::time::Duration::from_secs(20), round()).await;
    for a in answers.expect("every request answered: no connection took more streams than allowed") {
        assert_eq!(a, Bytes::from(addr.to_string()), ":authority is the backend's host");
    }
    let connections = up.fleet().endpoints[0].pool.http2_connections();
    assert!((3..=6).contains(&connections), "6 requests at 2 streams each: {connections} connections");
    assert_eq!(accepted.load(Ordering::SeqCst), connections);
    // The connections are kept and shared: another round opens none.
    round().await;
    assert_eq!(accepted.load(Ordering::SeqCst), connections);
}

#[tokio::test]
async fn an_http2_connection_the_backend_closed_is_dropped_and_the_next_request_opens_another() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let connections: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
    let held = connections.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let task = tokio::spawn(async move {
                let service = service_fn(|_req: http::Request<Incoming>| async {
                    Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
            held.lock().expect("lock").push(task.abort_handle());
        }
    });
    let up = h2_upstream(addr);
    assert_eq!(read(&up, "/").await.0, 200);
    assert_eq!(up.fleet().endpoints[0].pool.http2_connections(), 1);
    // The backend goes away (a restart, a maximum connection age).
    for task in connections.lock().expect("lock").drain(..) {
        task.abort();
    }
    // The connection's task sees it end and lets it go (bounded: 10 s).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while up.fleet().endpoints[0].pool.http2_connections() != 0 {
        assert!(std::time::Instant::now() < deadline, "the closed connection is still offered");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let answer = tokio::time::timeout(std::time::Duration::from_secs(10), read(&up, "/")).await;
    assert_eq!(answer.expect("answered at once, not after a timeout").0, 200);
    assert_eq!(up.fleet().endpoints[0].pool.http2_connections(), 1, "a new connection");
}
