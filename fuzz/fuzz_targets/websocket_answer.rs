//! `websocket_answer`: the gateway's reading of a backend's answer to a WebSocket
//! upgrade (`tollgate_gateway::upstream::handshake::upgrade`), against hyper's HTTP/1
//! client reading the same bytes — the reader it replaced.
//!
//! Feeds: a byte seeding the sizes of the backend's writes (so the head arrives split at
//! any point), then the backend's bytes, after which it closes. Both readers send a GET
//! with `Connection: Upgrade` and `Upgrade: websocket` over in-memory connections
//! (`tokio::io::duplex`) and read the answer under the same limits (8,192 bytes, 16
//! field lines).
//!
//! Asserts, beyond "no panic" and "both end":
//! - whatever hyper reads as a response, the gateway reads as the same final status and
//!   the same fields, and skips the same informational answers before it (unless
//!   there are more than the gateway reads, `MAX_INFORMATIONAL`);
//! - what the gateway reads as a `101` hyper reads as a `101` too, with the same fields,
//!   unless the head carries `Content-Length` or `Transfer-Encoding` (framing a body a
//!   `101` does not have, which hyper may refuse and the gateway ignores);
//! - after a `101`, the bytes the gateway hands the relay are exactly those that follow
//!   the head.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate_fuzz::scripted_backend as backend;
use tollgate_gateway::upstream::ResponseHeadLimits;
use tollgate_gateway::upstream::handshake;

const LIMITS: ResponseHeadLimits = ResponseHeadLimits { bytes: 8192, count: 16 };

fn request() -> http::Request<http_body_util::Empty<bytes::Bytes>> {
    http::Request::get("/chat")
        .header("host", "backend")
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .body(http_body_util::Empty::new())
        .expect("a request")
}

fuzz_target!(|input: &[u8]| {
    let Some((&seed, data)) = input.split_first() else { return };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        // The gateway's reading.
        let (mut gateway, far) = tokio::io::duplex(64 * 1024);
        let serving = tokio::spawn(backend(far, data.to_vec(), seed));
        let (head, _) = request().into_parts();
        let ours = handshake::upgrade(&mut gateway, &head, LIMITS).await;
        drop(gateway);
        let _ = serving.await;

        // hyper's.
        let (client, far) = tokio::io::duplex(64 * 1024);
        let serving = tokio::spawn(backend(far, data.to_vec(), seed));
        let mut builder = hyper::client::conn::http1::Builder::new();
        builder.max_headers(LIMITS.count).max_header_size(LIMITS.bytes).max_buf_size(64 * 1024);
        let (mut sender, connection) =
            builder.handshake(hyper_util::rt::TokioIo::new(client)).await.expect("an in-memory handshake");
        let driving = tokio::spawn(connection.with_upgrades());
        let theirs = sender.send_request(request()).await;
        drop(sender);
        driving.abort();
        let _ = serving.await;

        let framed = |h: &http::HeaderMap| {
            h.contains_key(http::header::CONTENT_LENGTH) || h.contains_key(http::header::TRANSFER_ENCODING)
        };
        match (&ours, &theirs) {
            (Ok(answer), Ok(resp)) => {
                assert_eq!(answer.head.status, resp.status(), "the same final status");
                assert_eq!(&answer.head.headers, resp.headers(), "the same fields");
            }
            // hyper skips any number of informational answers; the gateway, 32.
            (Err(handshake::HandshakeError::Invalid(why)), Ok(_)) if why.contains("informational") => {}
            (Err(e), Ok(resp)) => panic!("hyper read a {} the gateway refused: {e}", resp.status()),
            (Ok(answer), Err(e)) => {
                assert!(
                    answer.head.status != http::StatusCode::SWITCHING_PROTOCOLS || framed(&answer.head.headers),
                    "the gateway read a 101 hyper refused ({e}): {:?}",
                    answer.head
                );
            }
            (Err(_), Err(_)) => {}
        }
        if let Ok(answer) = &ours
            && answer.head.status == http::StatusCode::SWITCHING_PROTOCOLS
        {
            // What follows the head, after any informational answers skipped.
            let mut after = data;
            loop {
                let (parts, len) = handshake::parse_response_head(after, LIMITS)
                    .expect("the head it read")
                    .expect("a whole head");
                after = &after[len..];
                if parts.status == http::StatusCode::SWITCHING_PROTOCOLS || !parts.status.is_informational() {
                    break;
                }
            }
            assert_eq!(&answer.rest[..], &after[..answer.rest.len()], "the bytes after the head, in order");
        }
    });
});
