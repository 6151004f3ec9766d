//! `http1_fast_path`: the gateway's own HTTP/1.1 client exchange
//! (`tollgate_gateway::upstream::http1`: the response head, its framing, the body by
//! length, chunks or close), against hyper's HTTP/1 client reading the same bytes — the
//! client it replaced for bodiless requests.
//!
//! Feeds: a byte seeding the sizes of the backend's writes (so heads and chunk lines
//! arrive split at any point), a byte choosing the method (`GET` or `HEAD`: a `HEAD`'s
//! answer has no body), then the backend's bytes, after which it closes. Both clients
//! send the request over in-memory connections (`tokio::io::duplex`) and read the
//! answer under the same limits (8,192 bytes, 16 field lines, for heads and trailers).
//!
//! Asserts, beyond "no panic" and "both end":
//! - a head hyper refuses, the gateway refuses; a head hyper reads, the gateway reads
//!   as the same status and fields — except where the gateway is stricter on purpose:
//!   a `101` to a request that asked for no upgrade, more informational answers than
//!   it reads, a `Content-Length` checked where it frames nothing, equal
//!   `Content-Length` values passed on as one, and a `Content-Length` beside
//!   `Transfer-Encoding` (dropped where the chunks frame the body);
//! - when both read a head, a body one reads whole the other reads whole too, with the
//!   same bytes and the same trailers — except a `Transfer-Encoding` list ending in an
//!   empty element (chunked for the gateway, RFC 9110 §5.6.1) and a bare LF where a
//!   chunked body ends (refused at once by the gateway; hyper waits for a CR).

#![no_main]

use bytes::{Bytes, BytesMut};
use hyper::body::Body as _;
use libfuzzer_sys::fuzz_target;
use tollgate_fuzz::scripted_backend as backend;
use tollgate_gateway::upstream::ResponseHeadLimits;
use tollgate_gateway::upstream::http1;

const LIMITS: ResponseHeadLimits = ResponseHeadLimits { bytes: 8192, count: 16 };

/// A response as read: status and fields, then the body's bytes and trailers, or why
/// the body failed.
type Read = (http::StatusCode, http::HeaderMap, Result<(Vec<u8>, Option<http::HeaderMap>), String>);

/// A body read to its end through `next` (one frame per call): its bytes and trailers,
/// or why it failed.
async fn read_body<E: std::fmt::Display>(
    mut next: impl FnMut(&mut std::task::Context<'_>) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, E>>>,
) -> Result<(Vec<u8>, Option<http::HeaderMap>), String> {
    let mut bytes = BytesMut::new();
    let mut trailers = None;
    loop {
        match std::future::poll_fn(&mut next).await {
            None => return Ok((bytes.to_vec(), trailers)),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(d) => bytes.extend_from_slice(&d),
                Err(frame) => trailers = frame.into_trailers().ok(),
            },
            Some(Err(e)) => return Err(e.to_string()),
        }
    }
}

fuzz_target!(|input: &[u8]| {
    let [seed, method, data @ ..] = input else { return };
    let method = if method & 1 == 0 { http::Method::GET } else { http::Method::HEAD };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        // The gateway's reading.
        let (io, far) = tokio::io::duplex(64 * 1024);
        let serving = tokio::spawn(backend(far, data.to_vec(), *seed));
        let mut conn = http1::Connection::new(io);
        let mut fields = http::HeaderMap::new();
        fields.insert(http::header::HOST, http::HeaderValue::from_static("backend"));
        let uri = http::Uri::from_static("/items");
        let ours: Result<Read, String> = match http1::exchange(&mut conn, &method, &uri, &mut fields, LIMITS).await {
            Ok((head, delimited)) => {
                let mut body = http1::ResponseBody::new(Box::new(conn), delimited);
                let outcome = read_body(|cx| body.poll_frame(cx)).await;
                Ok((head.status, head.headers, outcome))
            }
            Err(http1::Failure::Unanswered(e)) => Err(format!("unanswered: {e}")),
            Err(http1::Failure::Exchange(e)) => Err(e.to_string()),
        };
        let _ = serving.await;

        // hyper's.
        let (client, far) = tokio::io::duplex(64 * 1024);
        let serving = tokio::spawn(backend(far, data.to_vec(), *seed));
        let mut builder = hyper::client::conn::http1::Builder::new();
        builder.max_headers(LIMITS.count).max_header_size(LIMITS.bytes).max_buf_size(64 * 1024);
        let (mut sender, connection) =
            builder.handshake(hyper_util::rt::TokioIo::new(client)).await.expect("an in-memory handshake");
        let driving = tokio::spawn(connection);
        let request = http::Request::builder()
            .method(method.clone())
            .uri("/items")
            .header("host", "backend")
            .body(http_body_util::Empty::<Bytes>::new())
            .expect("a request");
        let theirs: Result<Read, String> = match sender.send_request(request).await {
            Ok(resp) => {
                let (head, mut body) = resp.into_parts();
                let outcome = read_body(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await;
                Ok((head.status, head.headers, outcome))
            }
            Err(e) => Err(e.to_string()),
        };
        drop(sender);
        driving.abort();
        let _ = serving.await;

        match (&ours, &theirs) {
            (Ok((status, fields, body)), Ok((their_status, their_fields, their_body))) => {
                assert_eq!(status, their_status, "the same status");
                // The gateway passes equal `Content-Length` values on as one, and drops
                // the field beside `Transfer-Encoding` where the chunks frame the body
                // (not on a HEAD's answer, a 204 or a 304).
                if let Some(theirs) = their_fields.get(http::header::CONTENT_LENGTH)
                    && (their_fields.get_all(http::header::CONTENT_LENGTH).iter().count() > 1
                        || theirs.as_bytes().contains(&b','))
                {
                    assert!(fields.get_all(http::header::CONTENT_LENGTH).iter().count() <= 1, "one length at most");
                }
                let without_length = |f: &http::HeaderMap| {
                    let mut f = f.clone();
                    f.remove(http::header::CONTENT_LENGTH);
                    f
                };
                assert_eq!(without_length(fields), without_length(their_fields), "the same fields");
                // `chunked,` is chunked for the gateway (empty list elements are
                // ignored, RFC 9110 §5.6.1) and a close-delimited body for hyper.
                let empty_coding = their_fields
                    .get_all(http::header::TRANSFER_ENCODING)
                    .iter()
                    .flat_map(|v| v.as_bytes().split(|&b| b == b','))
                    .next_back()
                    .is_some_and(|c| c.trim_ascii().is_empty());
                match (body, their_body) {
                    _ if empty_coding => {}
                    (Ok(b), Ok(t)) => assert_eq!(b, t, "the same body and trailers"),
                    (Err(_), Err(_)) => {}
                    // A bare LF where a chunked body ends: hyper reads on for a CR.
                    (Err(why), Ok(_)) if why.contains("bare LF") => {}
                    (b, t) => panic!("one body read whole, the other failed: ours {b:?}, hyper's {t:?}"),
                }
            }
            (Err(why), Ok((status, _, _))) => {
                let stricter = why.contains("informational")
                    || why.contains("Content-Length")
                    || (why.contains("101") && status.as_u16() == 101);
                assert!(stricter, "hyper read a {status} the gateway refused: {why}");
            }
            (Ok((status, fields, _)), Err(e)) => panic!("the gateway read a {status} hyper refused ({e}): {fields:?}"),
            (Err(_), Err(_)) => {}
        }
    });
});
