//! gRPC unary calls with tonic: this binary's `grpc` subcommand serves `/bench.Echo/Unary`
//! over h2c (the message comes back as it went), and [`unary_load`] calls it from one
//! thread — directly or through a proxy — counting calls and their latency. Messages
//! are raw bytes with a codec of their own: no protobuf code generation, nothing but
//! gRPC's framing measured.

use anyhow::{Context, Result, bail};
use bytes::{Buf, BufMut, Bytes};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{Request, Response, Status};

/// The method called.
pub const PATH: &str = "/bench.Echo/Unary";

/// Messages as they are: bytes in, bytes out.
#[derive(Debug, Clone, Copy, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = Raw;
    type Decoder = Raw;

    fn encoder(&mut self) -> Raw {
        Raw
    }

    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// The echo method.
#[derive(Clone, Copy)]
struct Echo;

impl tonic::server::UnaryService<Bytes> for Echo {
    type Response = Bytes;
    type Future = std::future::Ready<Result<Response<Bytes>, Status>>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        std::future::ready(Ok(Response::new(request.into_inner())))
    }
}

/// Serves the echo method over h2c on a free loopback port, printed as `listening on
/// PORT`; any other path is `UNIMPLEMENTED`.
pub async fn server() -> Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("listening on {}", listener.local_addr()?.port());
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                let resp = match req.uri().path() {
                    PATH => tonic::server::Grpc::new(Raw).unary(Echo, req).await,
                    _ => Status::unimplemented("only /bench.Echo/Unary").into_http(),
                };
                Ok::<_, std::convert::Infallible>(resp)
            });
            let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .max_concurrent_streams(1024)
                .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                .await;
        });
    }
}

/// One run's numbers: calls per second, and latency percentiles in microseconds.
#[derive(Debug, Clone, Copy)]
pub struct Calls {
    /// Calls completed.
    pub calls: u64,
    pub rate: f64,
    pub p50: f64,
    pub p99: f64,
}

/// Unary calls to `target` for `duration`: `connections` HTTP/2 connections, `streams`
/// calls in flight on each, `:authority` `authority`, the key in `user_key` metadata.
/// On one thread (the proxy has the other core), like wrk `-t1`. Any failed call fails
/// the run: a fast error is not a fast proxy.
pub fn unary_load(
    target: SocketAddr,
    authority: &str,
    connections: usize,
    streams: usize,
    duration: Duration,
) -> Result<Calls> {
    let authority = authority.to_owned();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(load(target, &authority, connections, streams, duration))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the gRPC load thread panicked"))?
}

async fn load(
    target: SocketAddr,
    authority: &str,
    connections: usize,
    streams: usize,
    duration: Duration,
) -> Result<Calls> {
    let origin: http::Uri = format!("http://{authority}").parse().context("authority")?;
    let mut channels = Vec::with_capacity(connections);
    for _ in 0..connections {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{target}"))?
            .origin(origin.clone())
            .tcp_nodelay(true)
            .connect()
            .await
            .with_context(|| format!("connect to {target}"))?;
        channels.push(channel);
    }
    let message = Bytes::from_static(&[7u8; 64]);
    let until = Instant::now() + duration;
    let started = Instant::now();
    let mut workers = Vec::new();
    for channel in &channels {
        for _ in 0..streams {
            let mut client = tonic::client::Grpc::new(channel.clone());
            let message = message.clone();
            workers.push(async move {
                let mut latencies = hdrhistogram::Histogram::<u64>::new(3)?;
                let path = http::uri::PathAndQuery::from_static(PATH);
                while Instant::now() < until {
                    client.ready().await.context("channel not ready")?;
                    let mut request = Request::new(message.clone());
                    request.metadata_mut().insert("user_key", "bench-key".parse()?);
                    let sent = Instant::now();
                    let reply: Response<Bytes> = client.unary(request, path.clone(), Raw).await?;
                    if reply.get_ref().len() != message.len() {
                        bail!("the echo came back {} bytes long", reply.get_ref().len());
                    }
                    latencies.record(sent.elapsed().as_micros() as u64)?;
                }
                Ok::<_, anyhow::Error>(latencies)
            });
        }
    }
    let mut all = hdrhistogram::Histogram::<u64>::new(3)?;
    for latencies in futures_util::future::try_join_all(workers).await? {
        all.add(latencies)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(Calls {
        calls: all.len(),
        rate: all.len() as f64 / seconds,
        p50: all.value_at_quantile(0.5) as f64,
        p99: all.value_at_quantile(0.99) as f64,
    })
}
