//! WebSocket frame headers (RFC 6455 §5.2), parsed incrementally from a byte stream
//! without copying or unmasking payloads: the relay forwards bytes as they come and
//! only needs to know where frames and messages begin and end.

/// What the relay must know about one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// FIN: this frame ends its message.
    pub fin: bool,
    /// RSV1: set on a message's first frame when it is compressed (permessage-deflate,
    /// RFC 7692).
    pub rsv1: bool,
    /// RSV2 or RSV3: no extension Tollgate forwards defines them.
    pub rsv23: bool,
    /// The opcode, one of the `OP_*` constants for a valid frame.
    pub opcode: u8,
    /// Whether the payload is masked (every client-to-server frame must be).
    pub masked: bool,
    /// The masking key (zeros when unmasked).
    pub mask: [u8; 4],
    /// Payload length in bytes.
    pub payload_len: u64,
    /// Header length in bytes (2 to 14).
    pub header_len: usize,
}

/// Continuation of a fragmented message.
pub const OP_CONTINUATION: u8 = 0x0;
/// Text message (UTF-8).
pub const OP_TEXT: u8 = 0x1;
/// Binary message.
pub const OP_BINARY: u8 = 0x2;
/// Close (control).
pub const OP_CLOSE: u8 = 0x8;
/// Ping (control).
pub const OP_PING: u8 = 0x9;
/// Pong (control).
pub const OP_PONG: u8 = 0xA;

impl FrameHeader {
    /// Whether this is a control frame (opcode with bit 0x8 set: close, ping, pong).
    pub fn is_control(&self) -> bool {
        self.opcode & 0x8 != 0
    }
}

/// Parses a header from the start of `buf`: `Ok(None)` if more bytes are needed.
pub fn parse_header(buf: &[u8]) -> Result<Option<FrameHeader>, &'static str> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    let masked = b1 & 0x80 != 0;
    let (len, ext) = match b1 & 0x7F {
        126 => (None, 2),
        127 => (None, 8),
        n => (Some(u64::from(n)), 0),
    };
    let header_len = 2 + ext + if masked { 4 } else { 0 };
    if buf.len() < header_len {
        return Ok(None);
    }
    let payload_len = match len {
        Some(n) => n,
        None if ext == 2 => u64::from(u16::from_be_bytes([buf[2], buf[3]])),
        None => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            let n = u64::from_be_bytes(b);
            if n >> 63 != 0 {
                return Err("frame length has its most significant bit set");
            }
            n
        }
    };
    let mut mask = [0; 4];
    if masked {
        mask.copy_from_slice(&buf[header_len - 4..header_len]);
    }
    Ok(Some(FrameHeader {
        fin: b0 & 0x80 != 0,
        rsv1: b0 & 0x40 != 0,
        rsv23: b0 & 0x30 != 0,
        opcode: b0 & 0x0F,
        masked,
        mask,
        payload_len,
        header_len,
    }))
}

/// Whether a peer may send `code` in a Close frame: 1000–1003 and 1007–1014 (RFC 6455
/// §7.4.1 and the IANA registry it set up, which added 1012–1014), and 3000–4999
/// (registered and private use, §7.4.2). 1004–1006 and 1015 are reserved and must never
/// be sent; everything else below 3000 is reserved for the protocol, and above 4999
/// undefined.
pub fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Checks the (unmasked) payload of a Close frame (RFC 6455 §5.5.1): empty, or a valid
/// close code followed by a UTF-8 reason. The code, `None` when there is none; the
/// error names what is wrong (a protocol error: the connection fails with 1002).
pub fn check_close_payload(payload: &[u8]) -> Result<Option<u16>, &'static str> {
    match payload {
        [] => Ok(None),
        [_] => Err("a close frame's payload of one byte"),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !is_valid_close_code(code) {
                return Err("a close code that must not be sent");
            }
            if std::str::from_utf8(reason).is_err() {
                return Err("a close reason that is not UTF-8");
            }
            Ok(Some(code))
        }
    }
}

/// A close frame with `code` and `reason`, masked (client role) when `mask` is given.
pub fn close_frame(code: u16, reason: &str, mask: Option<[u8; 4]>) -> Vec<u8> {
    let reason = &reason.as_bytes()[..reason.len().min(123)];
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(reason);
    let mut out = Vec::with_capacity(6 + payload.len());
    out.push(0x80 | OP_CLOSE);
    match mask {
        None => {
            out.push(payload.len() as u8);
            out.extend_from_slice(&payload);
        }
        Some(key) => {
            out.push(0x80 | payload.len() as u8);
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
    }
    out
}

/// An empty ping, masked (client role) when `mask` is given.
pub fn ping_frame(mask: Option<[u8; 4]>) -> Vec<u8> {
    match mask {
        None => vec![0x80 | OP_PING, 0],
        Some(key) => vec![0x80 | OP_PING, 0x80, key[0], key[1], key[2], key[3]],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_of_every_length_form() {
        assert_eq!(parse_header(&[0x81]), Ok(None));
        let h = parse_header(&[0x81, 0x05]).expect("ok").expect("complete");
        assert_eq!((h.fin, h.opcode, h.masked, h.payload_len, h.header_len), (true, OP_TEXT, false, 5, 2));
        let h = parse_header(&[0x02, 0xFE, 0x01, 0x00, 1, 2, 3, 4]).expect("ok").expect("complete");
        assert_eq!((h.fin, h.opcode, h.masked, h.payload_len, h.header_len), (false, OP_BINARY, true, 256, 8));
        assert_eq!(h.mask, [1, 2, 3, 4]);
        assert_eq!(parse_header(&[0x82, 0x7F, 0, 0, 0, 0, 0, 1]), Ok(None), "needs all 8 length bytes");
        let h = parse_header(&[0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0]).expect("ok").expect("complete");
        assert_eq!(h.payload_len, 65_536);
        assert!(parse_header(&[0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 0]).is_err());
        let h = parse_header(&[0xC1, 0x00]).expect("ok").expect("complete");
        assert!(h.rsv1 && !h.rsv23);
    }

    #[test]
    fn close_payloads_need_a_code_a_peer_may_send_and_a_utf8_reason() {
        assert_eq!(check_close_payload(b""), Ok(None));
        for ok in [1000u16, 1003, 1007, 1011, 1014, 3000, 4999] {
            assert_eq!(check_close_payload(&ok.to_be_bytes()), Ok(Some(ok)), "{ok}");
        }
        for bad in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
            assert!(check_close_payload(&bad.to_be_bytes()).is_err(), "{bad}");
        }
        assert!(check_close_payload(&[0x03]).is_err(), "one byte");
        assert!(check_close_payload(&[0x03, 0xE8, 0xC3, 0x28]).is_err(), "invalid UTF-8");
        assert_eq!(check_close_payload(&[0x03, 0xE8, 0xC3, 0xA9]), Ok(Some(1000)), "é");
    }

    #[test]
    fn close_frames_masked_and_not() {
        assert_eq!(close_frame(1009, "big", None), vec![0x88, 5, 0x03, 0xF1, b'b', b'i', b'g']);
        let masked = close_frame(1000, "", Some([1, 2, 3, 4]));
        assert_eq!(masked, vec![0x88, 0x82, 1, 2, 3, 4, 0x03 ^ 1, 0xE8 ^ 2]);
    }
}
