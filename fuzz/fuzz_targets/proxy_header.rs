//! `proxy_header`: the PROXY protocol header reader of the gateway's listeners
//! (`tollgate_gateway::proxy_protocol::read_header`), over an in-memory connection.
//!
//! Asserts, beyond "no panic": a header is taken exactly — what follows it is left
//! unread, untouched — and a header accepted is at most 107 bytes (v1) or 16 + its
//! declared length (v2, at most 2,064 bytes); nothing that is neither a v1 nor a v2
//! header is accepted.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tollgate_gateway::proxy_protocol::read_header;

fuzz_target!(|input: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let (mut a, mut b) = tokio::io::duplex(1 << 17);
        a.write_all(input).await.expect("write");
        drop(a);
        let peer = "127.0.0.1:1".parse().expect("addr");
        let result = read_header(&mut b, peer).await;
        let mut rest = Vec::new();
        let _ = b.read_to_end(&mut rest).await;
        let taken = input.len() - rest.len();
        assert_eq!(&input[taken..], &rest[..], "what follows is left as it came");
        if result.is_ok() {
            if input.starts_with(b"PROXY") {
                assert!(taken <= 107 && input[..taken].ends_with(b"\r\n"), "v1 taken: {taken}");
            } else {
                assert!(input.starts_with(b"\r\n\r\n\0\r\nQUIT\n"), "accepted without a signature");
                let declared = usize::from(u16::from_be_bytes([input[14], input[15]]));
                assert_eq!(taken, 16 + declared);
                assert!(taken <= 16 + 2048);
            }
        }
    });
});
