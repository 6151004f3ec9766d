//! `websocket_frames`: the WebSocket relay (`tollgate_gateway::relay::relay`), which
//! follows the frames of both directions (RFC 6455 §5) while passing bytes through,
//! driven over in-memory connections (`tokio::io::duplex`) on a current-thread runtime
//! with paused time (its timers cost no wall-clock time).
//!
//! Feeds: an options byte (permessage-deflate, a message-size cap, a gate that closes
//! or drops messages of a given length or admits a quota of messages deciding a read's
//! frames together, one side or both), a byte seeding the sizes of
//! the writes (so frame headers arrive split across reads at any point), the cap and
//! gate lengths, then the client's bytes and — after a `0xFF 0x00 0xFF` separator — the
//! backend's.
//!
//! A reference model, written from RFC 6455 and the relay's documented rules, walks
//! each side's bytes: unknown opcode, wrong masking (client frames masked, backend
//! frames not), reserved bits (RSV1 only on a message's first frame with deflate),
//! a fragmented or long control frame, a continuation without a message, a message
//! inside a message, a 64-bit length with its top bit set and a Close frame whose
//! code no peer may send (RFC 6455 §7.4), of one byte or with a reason that is not
//! UTF-8 are protocol errors (1002) — a Close frame is held back whole until checked;
//! a message over the cap is 1009 (checked before the gate, which never counts it);
//! the gate's close is 1008 and its drop swallows the message's data frames; a quota
//! passes exactly its number of messages, then 1008 (the model asks frame by frame,
//! the relay a read's run at once); nothing a side sends after its Close passes.
//!
//! Asserts, beyond "no panic" and "the relay ends" (within ten virtual minutes):
//! - with one side talking: the other side receives exactly the model's forwarded
//!   bytes (a frame boundary before the first error), then the gateway's Close frame
//!   (masked towards the backend) with the model's code — 1002, 1009 or 1008 — or, when
//!   the talking side just went away at a frame boundary, 1001; the talking side gets
//!   one unmasked Close with the same code; the totals count the forwarded bytes and
//!   the messages the model passed;
//! - with both sides talking: each side receives a prefix of what the model forwards
//!   from the other, then at most one Close from the gateway, with a code in 1001,
//!   1002, 1008, 1009;
//! - the code the totals report as the gateway's is one of those.

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tollgate_gateway::relay::{Decide, FrameInfo, RelayOptions, Totals, Verdict, relay};

const SEPARATOR: &[u8] = &[0xFF, 0x00, 0xFF];

/// What the gate does: close (1008) or drop messages whose first frame has a given
/// length, or admit at most `quota` messages, deciding runs of frames together as the
/// counters do (all-or-nothing; a run that does not fit is a `Drop`, after which the
/// relay asks frame by frame).
#[derive(Clone, Copy)]
struct Spec {
    close_len: Option<u64>,
    drop_len: Option<u64>,
    quota: Option<u64>,
}

struct Gate {
    spec: Spec,
    /// Messages admitted so far against the quota.
    used: AtomicU64,
}

impl Gate {
    fn new(spec: Spec) -> Gate {
        Gate { spec, used: AtomicU64::new(0) }
    }

    fn verdict(&self, frame: FrameInfo) -> Verdict {
        if let Some(quota) = self.spec.quota {
            let used = self.used.load(Ordering::Relaxed);
            if used + u64::from(frame.messages) > quota {
                return if frame.frames > 1 { Verdict::Drop } else { Verdict::Close(1008, "over the fuzz quota") };
            }
            self.used.fetch_add(u64::from(frame.messages), Ordering::Relaxed);
            return Verdict::Forward;
        }
        if frame.starts_message() && Some(frame.payload_len) == self.spec.close_len {
            Verdict::Close(1008, "closed by the fuzz gate")
        } else if frame.starts_message() && Some(frame.payload_len) == self.spec.drop_len {
            Verdict::Drop
        } else {
            Verdict::Forward
        }
    }
}

impl Decide for Gate {
    fn decide_now(&self, frame: FrameInfo) -> Option<Verdict> {
        Some(self.verdict(frame))
    }

    fn decide(&self, frame: FrameInfo) -> Pin<Box<dyn Future<Output = Verdict> + Send + '_>> {
        let v = self.verdict(frame);
        Box::pin(async move { v })
    }

    fn decides_runs(&self) -> bool {
        self.spec.quota.is_some()
    }
}

struct Model {
    deflate: bool,
    max: Option<u64>,
    /// The gate, made afresh for each direction the model walks (each side alone may
    /// use the whole quota: what the relay forwards is then a prefix).
    gate: Option<Spec>,
}

/// What the model expects of one direction.
#[derive(Debug)]
struct Outcome {
    /// The bytes that reach the other side, in order.
    forwarded: Vec<u8>,
    /// The gateway closes with this code (an error in these bytes).
    error: Option<u16>,
    /// Whether the bytes end inside a frame that was (partly) forwarded: then no Close
    /// can be injected.
    mid_frame: bool,
    /// Whether a Close frame's header passed.
    saw_close: bool,
    /// Messages passed (their final frame's header went through, not dropped).
    messages: u64,
}

/// A frame header per RFC 6455 §5.2: `None` when incomplete, `Err` for a 64-bit length
/// with its most significant bit set.
#[allow(clippy::type_complexity)]
fn header(b: &[u8]) -> Result<Option<(bool, bool, bool, u8, bool, u64, usize)>, ()> {
    let [b0, b1, ..] = *b else { return Ok(None) };
    let masked = b1 & 0x80 != 0;
    let ext = match b1 & 0x7F {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let len_at = 2 + ext;
    let header_len = len_at + if masked { 4 } else { 0 };
    if b.len() < header_len {
        return Ok(None);
    }
    let len = match ext {
        0 => u64::from(b1 & 0x7F),
        2 => u64::from(b[2]) << 8 | u64::from(b[3]),
        _ => b[2..10].iter().fold(0u64, |n, &x| n << 8 | u64::from(x)),
    };
    if len >> 63 == 1 {
        return Err(());
    }
    Ok(Some((b0 & 0x80 != 0, b0 & 0x40 != 0, b0 & 0x30 != 0, b0 & 0x0F, masked, len, header_len)))
}

impl Model {
    fn run(&self, input: &[u8], from_client: bool) -> Outcome {
        let gate = self.gate.map(Gate::new);
        let mut o = Outcome { forwarded: Vec::new(), error: None, mid_frame: false, saw_close: false, messages: 0 };
        let (mut i, mut in_message, mut message_bytes, mut dropping) = (0usize, false, 0u64, false);
        while i < input.len() {
            let (fin, rsv1, rsv23, opcode, masked, len, header_len) = match header(&input[i..]) {
                Ok(Some(h)) => h,
                // A header cut short is held back, never forwarded.
                Ok(None) => break,
                Err(()) => {
                    o.error = Some(1002);
                    break;
                }
            };
            let control = opcode & 0x8 != 0;
            let data = matches!(opcode, 0 | 1 | 2);
            let bad = !(data || matches!(opcode, 8 | 9 | 10))
                || masked != from_client
                || rsv23
                || (rsv1 && !(self.deflate && matches!(opcode, 1 | 2)))
                || (control && (!fin || len > 125))
                || (opcode == 0 && !in_message)
                || (matches!(opcode, 1 | 2) && in_message);
            if bad {
                o.error = Some(1002);
                break;
            }
            let mut drop_frame = false;
            if data {
                if opcode != 0 {
                    in_message = true;
                    message_bytes = 0;
                    dropping = false;
                }
                // The size before the gate: a frame over the cap is never counted.
                message_bytes = message_bytes.saturating_add(len);
                if self.max.is_some_and(|m| message_bytes > m) {
                    o.error = Some(1009);
                    break;
                }
                if let Some(gate) = &gate
                    && !dropping
                {
                    let info = FrameInfo { from_client, frames: 1, messages: u32::from(opcode != 0), payload_len: len };
                    match gate.verdict(info) {
                        Verdict::Close(code, _) => {
                            o.error = Some(code);
                            break;
                        }
                        Verdict::Drop if opcode != 0 => dropping = true,
                        _ => {}
                    }
                }
                drop_frame = dropping;
                if fin {
                    in_message = false;
                    if !dropping {
                        o.messages += 1;
                    }
                }
            } else if opcode == 8 {
                // A Close frame is held back whole until its payload is checked.
                let Some(frame) = input.get(i..i + header_len + len as usize) else { break };
                let key = if masked { &frame[header_len - 4..header_len] } else { &[0u8; 4][..] };
                let payload: Vec<u8> = frame[header_len..].iter().enumerate().map(|(k, b)| b ^ key[k % 4]).collect();
                let valid = match payload.len() {
                    0 => true,
                    1 => false,
                    _ => {
                        let code = u16::from(payload[0]) << 8 | u16::from(payload[1]);
                        let may_be_sent = (1000..=1003).contains(&code)
                            || (1007..=1014).contains(&code)
                            || (3000..=4999).contains(&code);
                        may_be_sent && std::str::from_utf8(&payload[2..]).is_ok()
                    }
                };
                if !valid {
                    o.error = Some(1002);
                    break;
                }
                o.saw_close = true;
            }
            let end = (i as u64).saturating_add(header_len as u64).saturating_add(len);
            let end = usize::try_from(end).unwrap_or(usize::MAX).min(input.len());
            if !drop_frame {
                o.forwarded.extend_from_slice(&input[i..end]);
            }
            if (end as u64) < (i as u64).saturating_add(header_len as u64).saturating_add(len) {
                o.mid_frame = !drop_frame;
            }
            if o.saw_close {
                // Nothing after a side's Close passes (RFC 6455 §5.5.1).
                break;
            }
            i = end;
        }
        o
    }
}

/// The close code of `bytes` if they are exactly one Close frame as the gateway writes
/// them (masked towards the backend), with a code and a reason.
fn gateway_close(bytes: &[u8], masked: bool) -> Option<u16> {
    let (&b0, rest) = bytes.split_first()?;
    let (&b1, rest) = rest.split_first()?;
    if b0 != 0x88 || (b1 & 0x80 != 0) != masked {
        return None;
    }
    let len = usize::from(b1 & 0x7F);
    let (key, payload) = if masked { rest.split_at_checked(4)? } else { (&[0u8; 4][..], rest) };
    if payload.len() != len || len < 2 {
        return None;
    }
    let unmasked: Vec<u8> = payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]).collect();
    std::str::from_utf8(&unmasked[2..]).ok()?;
    Some(u16::from_be_bytes([unmasked[0], unmasked[1]]))
}

/// Splits what a side received into forwarded bytes (a prefix of `expected`) and the
/// gateway's Close, if any; panics when it is neither.
fn split_received(got: &[u8], expected: &[u8], masked: bool, side: &str) -> (usize, Option<u16>) {
    let common = got.iter().zip(expected).take_while(|(a, b)| a == b).count();
    if common == got.len() {
        return (common, None);
    }
    for k in (0..=common).rev() {
        if let Some(code) = gateway_close(&got[k..], masked) {
            return (k, Some(code));
        }
    }
    panic!("the {side} received bytes that are neither forwarded nor a Close:\n got {got:?}\n expected {expected:?}");
}

async fn write_in_pieces(side: &mut DuplexStream, bytes: &[u8], seed: u8) {
    let mut n = 0usize;
    let mut rest = bytes;
    while !rest.is_empty() {
        let size = 1 + (usize::from(seed) * 7 + n * 13) % (1 + usize::from(seed % 37));
        let (now, later) = rest.split_at(size.min(rest.len()));
        if side.write_all(now).await.is_err() {
            // The relay closed this connection (after an error): the rest is never read.
            return;
        }
        tokio::task::yield_now().await;
        rest = later;
        n += 1;
    }
}

async fn drive(opts: RelayOptions, model: &Model, up: &[u8], down: &[u8], seed: u8, both: bool) {
    let (mut client, gw_client) = tokio::io::duplex(1 << 20);
    let (gw_backend, mut backend) = tokio::io::duplex(1 << 20);
    let task = tokio::spawn(relay(gw_client, gw_backend, opts, std::future::pending()));
    let mut to_client = Vec::new();
    let mut to_backend = Vec::new();
    if both {
        let client_side = async {
            write_in_pieces(&mut client, up, seed).await;
            let _ = client.shutdown().await;
            let _ = client.read_to_end(&mut to_client).await;
        };
        let backend_side = async {
            write_in_pieces(&mut backend, down, seed.rotate_left(3)).await;
            let _ = backend.shutdown().await;
            let _ = backend.read_to_end(&mut to_backend).await;
        };
        tokio::join!(client_side, backend_side);
    } else {
        write_in_pieces(&mut client, up, seed).await;
        let _ = client.shutdown().await;
        let _ = backend.read_to_end(&mut to_backend).await;
        let _ = backend.shutdown().await;
        let _ = client.read_to_end(&mut to_client).await;
    }
    let totals: Totals = task.await.expect("the relay task panicked");
    let allowed = [1001, 1002, 1008, 1009];
    if let Some(code) = totals.closed_by_gateway {
        assert!(allowed.contains(&code), "the gateway closed with {code}");
    }

    let ups = model.run(up, true);
    let downs = model.run(if both { down } else { &[] }, false);
    let (k_up, close_to_backend) = split_received(&to_backend, &ups.forwarded, true, "backend");
    let (k_down, close_to_client) = split_received(&to_client, &downs.forwarded, false, "client");
    for code in [close_to_backend, close_to_client].into_iter().flatten() {
        assert!(allowed.contains(&code), "a Close with {code}");
    }
    if both {
        return;
    }
    // One side talking: everything is determined.
    assert_eq!(k_up, ups.forwarded.len(), "the backend did not get all the model forwards: {ups:?}");
    assert_eq!(k_down, 0);
    let expected_code = ups.error.unwrap_or(1001);
    let close_expected = ups.error.is_some() || (!ups.saw_close && !ups.mid_frame);
    assert_eq!(close_to_backend, close_expected.then_some(expected_code), "the backend's Close (the model: {ups:?})");
    assert_eq!(close_to_client, Some(expected_code), "the client's Close (the model: {ups:?})");
    assert_eq!(totals.bytes_up, ups.forwarded.len() as u64, "bytes counted up");
    assert_eq!(totals.messages_up, ups.messages, "messages counted up");
    assert_eq!(totals.closed_by_gateway, Some(expected_code));
}

fuzz_target!(|data: &[u8]| {
    let mut b = tollgate_fuzz::Bytes(data);
    let flags = b.u8();
    let seed = b.u8();
    let cap = b.u8();
    let gate_len = b.u8();
    let rest = b.rest();
    let (up, down) = match rest.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) {
        Some(at) => (&rest[..at], &rest[at + SEPARATOR.len()..]),
        None => (rest, &[][..]),
    };
    let gate = match flags >> 3 & 3 {
        1 => Some(Spec { close_len: Some(u64::from(gate_len)), drop_len: None, quota: None }),
        2 => Some(Spec { close_len: None, drop_len: Some(u64::from(gate_len)), quota: None }),
        3 => Some(Spec { close_len: None, drop_len: None, quota: Some(u64::from(gate_len)) }),
        _ => None,
    };
    let max = (flags & 2 != 0).then_some(u64::from(cap));
    let model = Model { deflate: flags & 1 != 0, max, gate };
    let opts = RelayOptions {
        deflate: flags & 1 != 0,
        max_message_bytes: max,
        gate: gate.map(|g| Arc::new(Gate::new(g)) as Arc<dyn Decide>),
        ..RelayOptions::default()
    };
    let both = flags & 4 != 0;
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().expect("a runtime");
    rt.block_on(async {
        let run = drive(opts, &model, up, down, seed, both);
        tokio::time::timeout(Duration::from_secs(600), run).await.expect("the relay did not end");
    });
});
