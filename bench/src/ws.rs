//! The WebSocket load driver: no WebSocket load tool is packaged on this machine, so
//! this is ours. Every mode is bounded in time and in count, and checks every echo.

use anyhow::{Context, Result, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Where a WebSocket client connects: address, `Host` header and path.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub host: String,
    pub path: String,
}

/// The echo backend: every data message goes back as it came.
pub async fn echo_server() -> Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    println!("listening on {}", listener.local_addr()?.port());
    loop {
        let (tcp, _) = listener.accept().await?;
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            let Ok(ws) = tokio_tungstenite::accept_async(tcp).await else { return };
            let (sink, stream) = ws.split();
            // `forward` feeds the sink and flushes only when the stream has nothing
            // ready, so a window of messages leaves in few writes.
            let _ = stream
                .filter(|m| std::future::ready(matches!(m, Ok(Message::Binary(_) | Message::Text(_)))))
                .forward(sink)
                .await;
        });
    }
}

/// A raw byte copy to 127.0.0.1:`upstream`: the floor any proxy is measured against.
pub async fn copy_server(upstream: u16) -> Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    println!("listening on {}", listener.local_addr()?.port());
    loop {
        let (mut client, _) = listener.accept().await?;
        tokio::spawn(async move {
            let Ok(mut backend) = TcpStream::connect(("127.0.0.1", upstream)).await else { return };
            let _ = (client.set_nodelay(true), backend.set_nodelay(true));
            let _ = tokio::io::copy_bidirectional(&mut client, &mut backend).await;
        });
    }
}

/// The `i`th source address of 127.0.0.0/8 (127.1.1.1, 127.1.2.1, …): connections
/// spread over them never run out of ephemeral ports, however many linger in TIME_WAIT.
pub fn source(i: usize) -> SocketAddr {
    ([127, 1 + (i / 250 % 250) as u8, 1 + (i % 250) as u8, 1], 0).into()
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket to `t`, from `from` when given (see [`source`]).
pub async fn connect(t: &Target, from: Option<SocketAddr>) -> Result<Ws> {
    let tcp = match from {
        Some(src) => {
            let socket = TcpSocket::new_v4()?;
            socket.bind(src)?;
            socket.connect(t.addr).await?
        }
        None => TcpStream::connect(t.addr).await?,
    };
    tcp.set_nodelay(true)?;
    let mut req = format!("ws://{}{}", t.addr, t.path).into_client_request()?;
    req.headers_mut().insert("host", t.host.parse()?);
    let (ws, _) = tokio_tungstenite::client_async(req, MaybeTlsStream::Plain(tcp)).await?;
    Ok(ws)
}

/// The result of a timed run: operations done, how long, and per-operation latency in
/// microseconds.
pub struct Run {
    pub count: u64,
    pub elapsed: Duration,
    pub latency: Histogram<u64>,
}

impl Run {
    pub fn rate(&self) -> f64 {
        self.count as f64 / self.elapsed.as_secs_f64()
    }
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 60 s, three significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// Ping-pong: `connections` sockets each send one message of `size` bytes, wait for its
/// echo and send the next, until `duration` has passed or each has done `max` round
/// trips. Every round trip's time goes into the histogram.
pub async fn ping_pong(t: &Target, connections: usize, size: usize, duration: Duration, max: u64) -> Result<Run> {
    let mut sockets = Vec::with_capacity(connections);
    for _ in 0..connections {
        sockets.push(connect(t, None).await.context("connect")?);
    }
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = sockets
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                let payload = bytes_of(size);
                let mut latency = histogram();
                let mut n = 0u64;
                while n < max && Instant::now() < deadline {
                    let sent = Instant::now();
                    ws.send(Message::binary(payload.clone())).await?;
                    match ws.next().await {
                        Some(Ok(Message::Binary(b))) if b.len() == size => {}
                        other => bail!("unexpected reply: {other:?}"),
                    }
                    latency.saturating_record(sent.elapsed().as_micros() as u64);
                    n += 1;
                }
                let elapsed = started.elapsed();
                let _ = ws.close(None).await;
                Ok((n, latency, elapsed))
            })
        })
        .collect();
    let mut run = Run { count: 0, elapsed: Duration::ZERO, latency: histogram() };
    for task in bounded(tasks, duration).await? {
        let (n, latency, elapsed) = task?;
        run.count += n;
        run.elapsed = run.elapsed.max(elapsed);
        run.latency.add(latency).map_err(|e| anyhow!("{e:?}"))?;
    }
    Ok(run)
}

/// Handshakes: `concurrency` loops each connect (from source addresses spread over
/// 127.0.0.0/8), upgrade, exchange one 32-byte message and close, until `duration` has
/// passed or `max` connections in all have been made. Latency is the whole exchange.
pub async fn handshakes(t: &Target, concurrency: usize, duration: Duration, max: usize) -> Result<Run> {
    let started = Instant::now();
    let deadline = started + duration;
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (t, next) = (t.clone(), next.clone());
            tokio::spawn(async move {
                let mut latency = histogram();
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= max {
                        break;
                    }
                    let began = Instant::now();
                    session(&t, i).await?;
                    latency.saturating_record(began.elapsed().as_micros() as u64);
                    n += 1;
                }
                Ok::<_, anyhow::Error>((n, latency))
            })
        })
        .collect();
    let mut run = Run { count: 0, elapsed: Duration::ZERO, latency: histogram() };
    for task in bounded(tasks, duration).await? {
        let (n, latency) = task?;
        run.count += n;
        run.latency.add(latency).map_err(|e| anyhow!("{e:?}"))?;
    }
    run.elapsed = started.elapsed();
    Ok(run)
}

/// One session from the `i`th source address: connect, upgrade, one 32-byte message
/// and its echo, close (the close handshake completes when the peer's close frame
/// arrives).
pub async fn session(t: &Target, i: usize) -> Result<()> {
    let mut ws = connect(t, Some(source(i))).await.context("connect")?;
    ws.send(Message::binary(vec![7u8; 32])).await?;
    match ws.next().await {
        Some(Ok(Message::Binary(b))) if b.len() == 32 => {}
        other => bail!("unexpected reply: {other:?}"),
    }
    ws.close(None).await?;
    while let Some(Ok(_)) = ws.next().await {}
    Ok(())
}

/// Joins the tasks, giving up (and aborting them) if they overrun `duration` by 60 s.
async fn bounded<T: 'static>(
    tasks: Vec<tokio::task::JoinHandle<Result<T>>>,
    duration: Duration,
) -> Result<Vec<Result<T>>> {
    let aborts: Vec<_> = tasks.iter().map(|t| t.abort_handle()).collect();
    let all = async {
        let mut out = Vec::with_capacity(tasks.len());
        for t in tasks {
            out.push(t.await.map_err(anyhow::Error::from).and_then(|r| r));
        }
        out
    };
    match tokio::time::timeout(duration + Duration::from_secs(60), all).await {
        Ok(out) => Ok(out),
        Err(_) => {
            aborts.iter().for_each(|a| a.abort());
            bail!("the run overran its time by 60 s")
        }
    }
}

fn bytes_of(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i % 251) as u8).collect()
}

/// Streaming throughput: `connections` sockets each send `messages` messages with at
/// most `window` awaiting their echo; messages per second, each counted once.
pub async fn stream(t: &Target, connections: usize, messages: usize, size: usize, window: usize) -> Result<f64> {
    let started = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let t = t.clone();
            tokio::spawn(async move {
                let ws = connect(&t, None).await?;
                let (mut sink, mut stream) = ws.split();
                let credit = Arc::new(Semaphore::new(window));
                let window = credit.clone();
                let payload = bytes_of(size);
                let reader = async move {
                    for _ in 0..messages {
                        match stream.next().await {
                            Some(Ok(Message::Binary(b))) if b.len() == size => credit.add_permits(1),
                            other => bail!("unexpected reply: {other:?}"),
                        }
                    }
                    Ok(stream)
                };
                let writer = async move {
                    for _ in 0..messages {
                        let permit = match window.try_acquire() {
                            Ok(p) => p,
                            Err(_) => {
                                // The window is full: send what is queued, then wait.
                                sink.flush().await?;
                                window.acquire().await?
                            }
                        };
                        permit.forget();
                        sink.feed(Message::binary(payload.clone())).await?;
                    }
                    sink.flush().await?;
                    Ok::<_, anyhow::Error>(sink)
                };
                let (sink, stream) = tokio::try_join!(writer, reader)?;
                let mut ws = sink.reunite(stream).map_err(|_| anyhow!("reunite"))?;
                let _ = ws.close(None).await;
                Ok(())
            })
        })
        .collect();
    for t in bounded(tasks, Duration::from_secs(120)).await? {
        t?;
    }
    Ok((connections * messages) as f64 / started.elapsed().as_secs_f64())
}

/// Opens `n` WebSockets (from addresses spread over 127.0.0.0/8), each after one echoed
/// message, and returns them open.
pub async fn open_idle(t: &Target, n: usize) -> Result<Vec<Ws>> {
    let mut open = Vec::with_capacity(n);
    for i in 0..n {
        let mut ws = connect(t, Some(source(i))).await.with_context(|| format!("connection {i}"))?;
        ws.send(Message::binary(vec![1u8; 32])).await?;
        match ws.next().await {
            Some(Ok(Message::Binary(_))) => {}
            other => bail!("unexpected reply {other:?}"),
        }
        open.push(ws);
    }
    Ok(open)
}
