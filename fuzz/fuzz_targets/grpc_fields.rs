//! `grpc_fields`: the gRPC request fields the gateway reads from clients — the
//! `grpc-timeout` deadline (gRPC's PROTOCOL-HTTP2.md) and whether a `Content-Type`
//! makes a request a gRPC call.
//!
//! Feeds: the bytes of one header value. Asserts: no panic; a deadline is read only
//! from 1 to 8 ASCII digits followed by one unit letter (`H M S m u n`), and then it is
//! exactly that amount; a gRPC content type starts with `application/grpc`, any case.

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::time::Duration;
use tollgate_gateway::{fuzzing, rescue};

fuzz_target!(|data: &[u8]| {
    let Ok(value) = http::HeaderValue::from_bytes(data) else { return };
    if let Some(d) = fuzzing::grpc_timeout(&value) {
        let (digits, unit) = data.split_at(data.len() - 1);
        assert!((1..=8).contains(&digits.len()) && digits.iter().all(u8::is_ascii_digit), "{data:?}");
        let n: u64 = std::str::from_utf8(digits).expect("digits").parse().expect("number");
        let expected = match unit {
            b"H" => Duration::from_secs(n * 3600),
            b"M" => Duration::from_secs(n * 60),
            b"S" => Duration::from_secs(n),
            b"m" => Duration::from_millis(n),
            b"u" => Duration::from_micros(n),
            b"n" => Duration::from_nanos(n),
            _ => panic!("a deadline with unit {unit:?}"),
        };
        assert_eq!(d, expected);
    }
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::CONTENT_TYPE, value);
    if rescue::is_grpc(&headers) {
        assert!(data.len() >= 16 && data[..16].eq_ignore_ascii_case(b"application/grpc"), "{data:?}");
    }
});
