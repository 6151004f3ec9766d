use super::pump::Spare;
use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};

fn masked(opcode_byte: u8, payload: &[u8]) -> Vec<u8> {
    let key = [7, 1, 2, 9];
    let mut f = vec![opcode_byte, 0x80 | payload.len() as u8];
    f.extend_from_slice(&key);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    f
}

/// (client end, backend end, relay task) with the relay in between.
fn setup(opts: RelayOptions) -> (DuplexStream, DuplexStream, tokio::task::JoinHandle<Totals>) {
    let (client, gw_client) = duplex(64 * 1024);
    let (gw_backend, backend) = duplex(64 * 1024);
    let task = tokio::spawn(relay(gw_client, gw_backend, opts, std::future::pending()));
    (client, backend, task)
}

async fn read_n(s: &mut DuplexStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    s.read_exact(&mut buf).await.expect("read");
    buf
}

/// Every open WebSocket holds a relay future for its whole life: its size is most
/// of the gateway's memory per idle connection (docs/BENCHMARKS.md). It was 3.9 KB
/// with copies of `stop` and unconfigured timers inline; this keeps it from creeping
/// back (the bound leaves room for debug builds and compiler changes).
#[test]
fn the_relay_future_stays_small() {
    let (a, b) = (tokio::io::duplex(8).0, tokio::io::duplex(8).0);
    let relay = relay(a, b, RelayOptions::default(), std::future::pending());
    let size = std::mem::size_of_val(&relay);
    eprintln!("the relay future: {size} bytes");
    assert!(size <= 1950, "the relay future grew to {size} bytes");
}

#[tokio::test]
async fn bytes_pass_unchanged_even_when_headers_arrive_one_byte_at_a_time() {
    let (mut client, mut backend, task) = setup(RelayOptions::default());
    let mut stream = masked(0x01, b"hel"); // text, not final
    stream.extend(masked(0x89, b"p")); // ping between fragments
    stream.extend(masked(0x80, b"lo")); // final continuation
    for b in &stream {
        client.write_all(&[*b]).await.expect("write");
    }
    assert_eq!(read_n(&mut backend, stream.len()).await, stream);
    let down = [0x82, 0x03, 1, 2, 3];
    backend.write_all(&down).await.expect("write");
    assert_eq!(read_n(&mut client, down.len()).await, down);
    drop((client, backend));
    let totals = task.await.expect("relay");
    assert_eq!((totals.messages_up, totals.messages_down), (1, 1));
    // Both went away without a Close: recorded as 1006, the gateway said 1001.
    assert_eq!(totals.close.map(|c| c.1), Some(CLOSE_ABNORMAL));
    assert_eq!(totals.closed_by_gateway, Some(CLOSE_GOING_AWAY));
}

/// Reads until the end of the stream; the bytes.
async fn read_all(s: &mut DuplexStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    out
}

#[tokio::test]
async fn a_side_that_goes_away_without_a_close_ends_the_websocket_with_1001_to_the_other() {
    // The client's TCP ends (FIN) without a Close frame: the backend gets a Close
    // 1001 and the relay ends, though the backend keeps its connection open.
    let (client, mut backend, task) = setup(RelayOptions::default());
    drop(client);
    let frame = read_all(&mut backend).await;
    assert_eq!(&frame[..2], &[0x88, 0x80 | (2 + 20)], "a masked Close with code and reason: {frame:?}");
    let totals = task.await.expect("the relay ends");
    assert_eq!(totals.close, Some((Initiator::Client, CLOSE_ABNORMAL)));
    // The backend goes away: the client gets an unmasked Close 1001.
    let (mut client, backend, task) = setup(RelayOptions::default());
    drop(backend);
    let frame = read_all(&mut client).await;
    assert_eq!(&frame[..4], &[0x88, 2 + 21, 0x03, 0xE9], "Close 1001 (never 1006 on the wire): {frame:?}");
    assert_eq!(task.await.expect("ends").close, Some((Initiator::Backend, CLOSE_ABNORMAL)));
}

#[tokio::test]
async fn the_websocket_ends_once_both_closes_went_through_whoever_keeps_its_connection() {
    let (mut client, mut backend, task) = setup(RelayOptions::default());
    let close = masked(0x88, &1000u16.to_be_bytes());
    client.write_all(&close).await.expect("write");
    assert_eq!(read_n(&mut backend, close.len()).await, close);
    // The backend answers with its Close and keeps its connection; so does the client.
    backend.write_all(&[0x88, 0x02, 0x03, 0xE8]).await.expect("write");
    assert_eq!(read_n(&mut client, 4).await, [0x88, 0x02, 0x03, 0xE8]);
    let totals = task.await.expect("the relay ends without either side closing its TCP connection");
    assert_eq!(totals.close, Some((Initiator::Client, 1000)));
    assert_eq!(totals.closed_by_gateway, None);
    assert!(read_all(&mut client).await.is_empty() && read_all(&mut backend).await.is_empty(), "both ended");
}

#[test]
fn reads_grow_with_the_traffic_and_shrink_back_after_a_quiet_second() {
    let mut p = pump::Pump::new(true, &RelayOptions::default());
    let len = |p: &pump::Pump| p.read_len();
    p.size_reads(100, 0);
    assert_eq!(len(&p), Spare::SMALL, "a partial read keeps the length");
    let mut now = 0;
    while {
        let before = len(&p);
        p.size_reads(before, now);
        len(&p) > before
    } {
        now += 1;
    }
    assert_eq!(len(&p), Spare::LEN, "doubles up to the cap");
    let quiet = Spare::QUIET.as_millis() as u32;
    p.size_reads(10, now + quiet - 1);
    assert_eq!(len(&p), Spare::LEN, "a small read within the second keeps it");
    p.size_reads(10, now + quiet);
    assert_eq!(len(&p), Spare::SMALL, "back to small once no read filled it for a second");
}

#[tokio::test]
async fn idle_pumps_hold_no_read_buffer_and_bursts_pass_through_lent_ones() {
    // The relay runs on this thread (a current-thread runtime), so its buffers are lent
    // from and given back to this thread's spares.
    let (mut client, mut backend, task) = setup(RelayOptions::default());
    assert_eq!(Spare::kept(), 0, "nothing lent before any byte arrived");
    // A burst of several buffers' worth both ways.
    let big = masked(0x82, &[7u8; 120]);
    let burst: Vec<u8> = big.iter().copied().cycle().take(big.len() * 1000).collect();
    assert!(burst.len() > 4 * Spare::LEN);
    client.write_all(&burst).await.expect("write");
    assert_eq!(read_n(&mut backend, burst.len()).await, burst);
    let down = [0x82, 3, 1, 2, 3];
    backend.write_all(&down).await.expect("write");
    assert_eq!(read_n(&mut client, down.len()).await, down);
    // Both pumps now wait for bytes, holding nothing: every buffer is a spare again.
    let spares = Spare::kept();
    assert!((1..=2).contains(&spares), "{spares} spares after one direction at a time");
    let small = masked(0x81, b"after");
    client.write_all(&small).await.expect("write");
    assert_eq!(read_n(&mut backend, small.len()).await, small);
    assert_eq!(Spare::kept(), spares, "the next read reuses a spare");
    drop((client, backend));
    assert_eq!(task.await.expect("relay").messages_up, 1001);
    assert_eq!(Spare::kept(), spares, "what a pump held went back when it ended");
}

#[tokio::test]
async fn the_first_close_is_recorded_with_its_code_and_tallies_follow_along() {
    let tally = Arc::new(Tally::default());
    let (mut client, mut backend, task) = setup(RelayOptions { tallies: vec![tally.clone()], ..Default::default() });
    let text = masked(0x81, b"hi");
    client.write_all(&text).await.expect("write");
    assert_eq!(read_n(&mut backend, text.len()).await, text);
    assert_eq!(tally.get(), [1, 0, text.len() as u64, 0], "counted before the connection ends");
    // A masked close 4000, one byte at a time: its code is unmasked on the way.
    let close = masked(0x88, &4000u16.to_be_bytes());
    for b in &close {
        client.write_all(&[*b]).await.expect("write");
    }
    assert_eq!(read_n(&mut backend, close.len()).await, close);
    backend.write_all(&[0x88, 0x02, 0x0F, 0xA0]).await.expect("echo");
    drop((client, backend));
    let totals = task.await.expect("relay");
    assert_eq!(totals.close, Some((Initiator::Client, 4000)));
    assert_eq!(totals.closed_by_gateway, None);
}

#[tokio::test]
async fn an_oversized_message_closes_both_sides_with_1009() {
    let (mut client, mut backend, task) = setup(RelayOptions { max_message_bytes: Some(4), ..Default::default() });
    let ok = masked(0x81, b"four");
    client.write_all(&ok).await.expect("write");
    assert_eq!(read_n(&mut backend, ok.len()).await, ok);
    client.write_all(&masked(0x81, b"fiver")).await.expect("write");
    // The client gets an unmasked close 1009; the backend a masked one.
    assert_eq!(read_n(&mut client, 4).await[..4], [0x88, 17, 0x03, 0xF1]);
    let to_backend = read_n(&mut backend, 2).await;
    assert_eq!(to_backend, [0x88, 0x80 | 17]);
    assert_eq!(task.await.expect("relay").closed_by_gateway, Some(1009));
}

/// Found by the `websocket_frames` fuzz target: a header with a protocol error
/// (here a 64-bit length with its top bit set) that arrived in pieces closed the
/// client with 1002 but left the backend without a Close; so did a client that went
/// away in the middle of a header (no 1001), or of a message the gate dropped.
#[tokio::test]
async fn the_other_side_gets_its_close_however_the_bytes_were_split() {
    let bad_length = [0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4];
    let (mut client, mut backend, task) = setup(RelayOptions::default());
    for b in bad_length {
        client.write_all(&[b]).await.expect("write");
        tokio::task::yield_now().await;
    }
    let close = read_n(&mut backend, 2).await;
    assert_eq!(close, [0x88, 0x80 | (2 + 45)], "a masked Close 1002 to the backend");
    assert_eq!(task.await.expect("relay").closed_by_gateway, Some(CLOSE_PROTOCOL_ERROR));

    // Gone in the middle of a header: nothing of it was forwarded, the backend gets 1001.
    let (mut client, mut backend, task) = setup(RelayOptions::default());
    client.write_all(&[0x81]).await.expect("write");
    tokio::task::yield_now().await;
    drop(client);
    let frame = read_all(&mut backend).await;
    assert_eq!(&frame[..2], &[0x88, 0x80 | (2 + 20)], "a masked Close 1001: {frame:?}");
    task.await.expect("relay");

    // Gone in the middle of a dropped message's frame: none of it was forwarded.
    let gate: Gate =
        Arc::new(|_: FrameInfo| -> Pin<Box<dyn Future<Output = Verdict> + Send>> { Box::pin(async { Verdict::Drop }) });
    let (mut client, mut backend, task) = setup(RelayOptions { gate: Some(gate), ..Default::default() });
    let frame = masked(0x81, b"dropped");
    client.write_all(&frame[..frame.len() - 2]).await.expect("write");
    tokio::task::yield_now().await;
    drop(client);
    let got = read_all(&mut backend).await;
    assert_eq!(&got[..2], &[0x88, 0x80 | (2 + 20)], "only a masked Close 1001: {got:?}");
    task.await.expect("relay");
}

#[tokio::test]
async fn protocol_errors_close_with_1002() {
    for bad in [
        vec![0x81, 0x01, b'x'], // unmasked client frame
        masked(0x83, b""),      // unknown opcode
        masked(0x09, b""),      // fragmented control frame
        masked(0x80, b"x"),     // continuation without a message
        masked(0xC1, b"x"),     // RSV1 without permessage-deflate
    ] {
        let (mut client, mut backend, task) = setup(RelayOptions::default());
        client.write_all(&bad).await.expect("write");
        // The backend gets the gateway's Close and answers it; then the client
        // gets its own.
        assert_eq!(read_n(&mut backend, 2).await[0], 0x88);
        backend.write_all(&[0x88, 0x02, 0x03, 0xEA]).await.expect("answer");
        let close = read_n(&mut client, 4).await;
        assert_eq!((close[0], close[2], close[3]), (0x88, 0x03, 0xEA), "{bad:?}");
        assert_eq!(task.await.expect("relay").closed_by_gateway, Some(1002));
    }
}

/// RFC 6455 §7.4: a Close frame with a code no peer may send, a one-byte payload or
/// a reason that is not UTF-8 fails the connection with 1002 — the other side never
/// sees it (Autobahn 7.3.1, 7.5.1, 7.9.*), however its bytes were split.
#[tokio::test]
async fn invalid_close_frames_never_pass_and_fail_the_connection_with_1002() {
    let mut bad: Vec<Vec<u8>> =
        [0u16, 999, 1004, 1005, 1006, 1015, 2000, 2999, 5000, 65535].iter().map(|c| c.to_be_bytes().to_vec()).collect();
    bad.push(vec![0x03]);
    bad.push(vec![0x03, 0xE8, 0xCE, 0xBA, 0xE1, 0xBD, 0xB9, 0xCF, 0x83, 0xCE, 0xBC, 0xCE, 0xB5, 0xED, 0xA0, 0x80]);
    for payload in bad {
        for one_byte_at_a_time in [false, true] {
            let (mut client, mut backend, task) = setup(RelayOptions::default());
            let close = masked(0x88, &payload);
            if one_byte_at_a_time {
                for b in &close {
                    client.write_all(&[*b]).await.expect("write");
                    tokio::task::yield_now().await;
                }
            } else {
                client.write_all(&close).await.expect("write");
            }
            // The backend gets the gateway's masked Close 1002, not the client's.
            let head = read_n(&mut backend, 2).await;
            assert_eq!(head[0], 0x88, "{payload:?}");
            let rest = read_n(&mut backend, usize::from(head[1] & 0x7f) + 4).await;
            let code = u16::from_be_bytes([rest[4] ^ rest[0], rest[5] ^ rest[1]]);
            assert_eq!(code, CLOSE_PROTOCOL_ERROR, "{payload:?}");
            backend.write_all(&[0x88, 0x02, 0x03, 0xEA]).await.expect("answer");
            let close = read_n(&mut client, 4).await;
            assert_eq!((close[0], close[2], close[3]), (0x88, 0x03, 0xEA), "{payload:?}");
            let totals = task.await.expect("relay");
            assert_eq!(totals.closed_by_gateway, Some(CLOSE_PROTOCOL_ERROR));
            assert_eq!(totals.close, Some((Initiator::Gateway, CLOSE_PROTOCOL_ERROR)), "{payload:?}");
        }
    }
    // From the backend, likewise: the client gets 1002.
    let (mut client, mut backend, task) = setup(RelayOptions::default());
    backend.write_all(&[0x88, 0x02, 0x03, 0xEE]).await.expect("1006");
    let close = read_n(&mut client, 4).await;
    assert_eq!((close[0], close[2], close[3]), (0x88, 0x03, 0xEA));
    drop((client, backend));
    assert_eq!(task.await.expect("relay").closed_by_gateway, Some(CLOSE_PROTOCOL_ERROR));
    // A valid code with a UTF-8 reason and an empty Close pass unchanged.
    for payload in [&[0x0B, 0xB8, b'o', b'k'][..], &[]] {
        let (mut client, mut backend, task) = setup(RelayOptions::default());
        let close = masked(0x88, payload);
        client.write_all(&close).await.expect("write");
        assert_eq!(read_n(&mut backend, close.len()).await, close);
        backend.write_all(&[0x88, 0x00]).await.expect("answer");
        assert_eq!(read_n(&mut client, 2).await, [0x88, 0x00]);
        let want = if payload.is_empty() { CLOSE_NO_STATUS } else { 3000 };
        assert_eq!(task.await.expect("relay").close, Some((Initiator::Client, want)));
    }
}

/// Autobahn's strict behaviour (cases 3.2–3.4, 4.*, 5.15): the client's valid
/// frames were echoed before its bad one; the echoes reach it before its Close.
#[tokio::test]
async fn after_a_clients_protocol_error_the_backends_answers_still_reach_it_before_its_close() {
    let (mut client, mut backend, task) = setup(RelayOptions::default());
    client.write_all(&masked(0x81, b"hello")).await.expect("write");
    client.write_all(&masked(0xC1, b"bad")).await.expect("write");
    // The backend reads the valid frame, then the gateway's Close 1002…
    let hello = read_n(&mut backend, 11).await;
    assert_eq!(&hello[..2], &[0x81, 0x85]);
    let close = read_n(&mut backend, 2).await;
    assert_eq!(close[0], 0x88);
    let rest = read_n(&mut backend, usize::from(close[1] & 0x7f) + 4).await;
    assert_eq!(rest.len(), usize::from(close[1] & 0x7f) + 4);
    // …and sends its echo, then its Close answer.
    backend.write_all(&[0x81, 0x05]).await.expect("echo");
    backend.write_all(b"hello").await.expect("echo");
    backend.write_all(&[0x88, 0x02, 0x03, 0xE8]).await.expect("close");
    // The client gets the echo, then the gateway's Close 1002 (not the backend's).
    assert_eq!(read_n(&mut client, 7).await, [0x81, 0x05, b'h', b'e', b'l', b'l', b'o']);
    let close = read_n(&mut client, 4).await;
    assert_eq!((close[0], close[2], close[3]), (0x88, 0x03, 0xEA));
    assert_eq!(task.await.expect("relay").closed_by_gateway, Some(1002));
}

/// A client closes and goes; the backend takes nothing more (it stopped reading, so
/// the Close never reaches it and no answer comes): the closing handshake ends after
/// the grace, and the relay with it.
#[tokio::test(start_paused = true)]
async fn a_closing_handshake_that_never_finishes_ends_after_the_grace() {
    let (mut client, _backend, task) = setup(RelayOptions::default());
    client.write_all(&masked(0x88, &[0x03, 0xE8])).await.expect("close");
    drop(client);
    let totals = tokio::time::timeout(CLOSE_GRACE * 2, task).await.expect("bounded").expect("relay");
    assert_eq!(totals.close, Some((Initiator::Client, 1000)));
}

/// A backend that never answers the Close holds the client's back for the grace only.
#[tokio::test(start_paused = true)]
async fn a_held_close_goes_after_the_grace_when_the_other_side_never_answers() {
    let (mut client, _backend, task) = setup(RelayOptions::default());
    client.write_all(&masked(0xC1, b"bad")).await.expect("write");
    let close = read_n(&mut client, 4).await;
    assert_eq!((close[0], close[2], close[3]), (0x88, 0x03, 0xEA));
    assert_eq!(task.await.expect("relay").closed_by_gateway, Some(1002));
}

#[tokio::test]
async fn the_gate_drops_or_closes_whole_messages() {
    let seen = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = seen.clone();
    let gate: Gate = Arc::new(move |info: FrameInfo| -> Pin<Box<dyn Future<Output = Verdict> + Send>> {
        if !info.starts_message() {
            return Box::pin(async { Verdict::Forward });
        }
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Box::pin(async move {
            match n {
                0 => Verdict::Forward,
                1 => Verdict::Drop,
                _ => Verdict::Close(CLOSE_POLICY_VIOLATION, "usage limits exceeded"),
            }
        })
    });
    let (mut client, mut backend, task) = setup(RelayOptions { gate: Some(gate), ..Default::default() });
    let first = masked(0x81, b"one");
    client.write_all(&first).await.expect("write");
    client.write_all(&masked(0x01, b"tw")).await.expect("write"); // dropped, in two fragments
    client.write_all(&masked(0x80, b"o")).await.expect("write");
    client.write_all(&masked(0x81, b"three")).await.expect("write");
    assert_eq!(read_n(&mut backend, first.len()).await, first);
    // Next on the backend side is the gateway's close, not "two".
    assert_eq!(read_n(&mut backend, 2).await, [0x88, 0x80 | 23]);
    let close = read_n(&mut client, 25).await;
    assert_eq!(&close[4..], b"usage limits exceeded");
    assert_eq!(task.await.expect("relay").closed_by_gateway, Some(1008));
}

/// A gate that decides runs as the counters do: it admits at most `limit` messages,
/// all-or-nothing per question, and counts the questions and what it admitted.
#[derive(Default)]
struct Quota {
    limit: u64,
    used: AtomicU64,
    questions: AtomicU64,
    frames_admitted: AtomicU64,
}

impl Quota {
    fn verdict(&self, f: FrameInfo) -> Verdict {
        self.questions.fetch_add(1, Ordering::SeqCst);
        let used = self.used.load(Ordering::SeqCst);
        if used + u64::from(f.messages) > self.limit {
            return if f.frames > 1 {
                Verdict::Drop
            } else {
                Verdict::Close(CLOSE_POLICY_VIOLATION, "usage limits exceeded")
            };
        }
        self.used.fetch_add(u64::from(f.messages), Ordering::SeqCst);
        self.frames_admitted.fetch_add(u64::from(f.frames), Ordering::SeqCst);
        Verdict::Forward
    }
}

impl Decide for Quota {
    fn decide_now(&self, f: FrameInfo) -> Option<Verdict> {
        Some(self.verdict(f))
    }
    fn decide(&self, f: FrameInfo) -> Pin<Box<dyn Future<Output = Verdict> + Send + '_>> {
        Box::pin(async move { self.verdict(f) })
    }
    fn decides_runs(&self) -> bool {
        true
    }
}

/// `n` masked text messages of 2 bytes (8 bytes each on the wire).
fn small_messages(n: usize) -> Vec<u8> {
    (0..n).flat_map(|i| masked(0x81, &[b'a' + (i % 26) as u8, b'!'])).collect()
}

/// The "one counter update per read": 200 messages that arrive together are a
/// handful of questions to the gate (one per read), not 200, and all of them pass.
#[tokio::test]
async fn a_read_of_many_frames_is_one_question_to_the_gate() {
    let quota = Arc::new(Quota { limit: 1_000, ..Default::default() });
    let (mut client, mut backend, task) = setup(RelayOptions { gate: Some(quota.clone()), ..Default::default() });
    let stream = small_messages(200);
    // In the duplex buffer before the relay reads (a current-thread test: the relay
    // runs only once this task waits).
    client.write_all(&stream).await.expect("write");
    assert_eq!(read_n(&mut backend, stream.len()).await, stream);
    drop((client, backend));
    let totals = task.await.expect("relay");
    assert_eq!(totals.messages_up, 200);
    assert_eq!(quota.used.load(Ordering::SeqCst), 200);
    assert_eq!(quota.frames_admitted.load(Ordering::SeqCst), 200);
    // Reads of 512, 1,024 and the 64 bytes left: three reads, three questions.
    let questions = quota.questions.load(Ordering::SeqCst);
    eprintln!("questions to the gate for 200 messages: {questions}");
    assert!(questions <= 4, "{questions} questions for 200 messages in three reads");
}

/// Exact at the limit: a run that does not fit as a whole is asked for frame by frame,
/// so exactly the messages that fit pass, then the connection closes (1008).
#[tokio::test]
async fn a_run_that_crosses_the_limit_passes_exactly_what_fits() {
    let quota = Arc::new(Quota { limit: 150, ..Default::default() });
    let (mut client, mut backend, task) = setup(RelayOptions { gate: Some(quota.clone()), ..Default::default() });
    let stream = small_messages(200);
    client.write_all(&stream).await.expect("write");
    assert_eq!(read_n(&mut backend, 150 * 8).await, stream[..150 * 8]);
    // Then the gateway's Close, not the 151st message.
    assert_eq!(read_n(&mut backend, 2).await, [0x88, 0x80 | 23]);
    let totals = task.await.expect("relay");
    assert_eq!((totals.messages_up, totals.closed_by_gateway), (150, Some(CLOSE_POLICY_VIOLATION)));
    assert_eq!(quota.used.load(Ordering::SeqCst), 150);
}

/// A message over `max_message_bytes` never passes, so the gate never counts it: the
/// size is checked before the gate is asked (alone or in a run).
#[tokio::test]
async fn a_message_too_big_is_not_counted() {
    let quota = Arc::new(Quota { limit: 10, ..Default::default() });
    let opts = RelayOptions { gate: Some(quota.clone()), max_message_bytes: Some(50), ..Default::default() };
    let (mut client, mut backend, task) = setup(opts);
    let mut stream = small_messages(2);
    let good = stream.len();
    stream.extend(masked(0x82, &[0; 60]));
    stream.extend(small_messages(2));
    client.write_all(&stream).await.expect("write");
    assert_eq!(read_n(&mut backend, good).await, stream[..good]);
    assert_eq!(read_n(&mut backend, 2).await[0], 0x88);
    let totals = task.await.expect("relay");
    assert_eq!((totals.messages_up, totals.closed_by_gateway), (2, Some(CLOSE_TOO_BIG)));
    assert_eq!(quota.used.load(Ordering::SeqCst), 2, "the message too big was not counted");
}

/// A run never reaches past what the gate may count: it stops before a control frame
/// (which the gate does not meter) and before a frame that breaks the protocol (which
/// never passes, so must not be counted).
#[tokio::test]
async fn a_run_stops_at_control_frames_and_protocol_errors() {
    let quota = Arc::new(Quota { limit: 1_000, ..Default::default() });
    let (mut client, mut backend, task) = setup(RelayOptions { gate: Some(quota.clone()), ..Default::default() });
    let mut stream = small_messages(3);
    stream.extend(masked(0x89, b"p")); // a ping between messages
    stream.extend(small_messages(2));
    let good = stream.len();
    stream.extend([0x81, 0x01, b'x']); // unmasked: a protocol error
    stream.extend(small_messages(4)); // never passes
    client.write_all(&stream).await.expect("write");
    assert_eq!(read_n(&mut backend, good).await, stream[..good]);
    assert_eq!(read_n(&mut backend, 2).await[0], 0x88);
    let totals = task.await.expect("relay");
    assert_eq!((totals.messages_up, totals.closed_by_gateway), (5, Some(CLOSE_PROTOCOL_ERROR)));
    // Counted: the five messages that passed, in two runs (before and after the ping).
    assert_eq!(quota.used.load(Ordering::SeqCst), 5);
    assert_eq!(quota.questions.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn idle_connections_and_old_ones_close_with_1001_and_pings_reach_both_sides() {
    let ms = std::time::Duration::from_millis;
    // Idle: nothing arrives, the gateway closes.
    let (mut client, mut backend, task) = setup(RelayOptions { idle_timeout: Some(ms(100)), ..Default::default() });
    assert_eq!(read_n(&mut client, 4).await, [0x88, 14, 0x03, 0xE9]);
    assert_eq!(read_n(&mut backend, 2).await, [0x88, 0x80 | 14]);
    assert_eq!(task.await.expect("relay").closed_by_gateway, Some(1001));

    // Pings: both sides get one (masked towards the backend).
    let (mut client, mut backend, task) = setup(RelayOptions { ping_interval: Some(ms(50)), ..Default::default() });
    assert_eq!(read_n(&mut client, 2).await, [0x89, 0x00]);
    assert_eq!(read_n(&mut backend, 2).await, [0x89, 0x80]);
    drop((client, backend));
    task.await.expect("relay");

    // Age: however busy, the connection ends at its maximum duration.
    let (mut client, _backend, task) = setup(RelayOptions { max_duration: Some(ms(100)), ..Default::default() });
    let close = read_n(&mut client, 4).await;
    assert_eq!((close[0], close[2], close[3]), (0x88, 0x03, 0xE9));
    assert_eq!(task.await.expect("relay").closed_by_gateway, Some(1001));
}

#[tokio::test(start_paused = true)]
async fn a_side_that_stops_answering_pings_is_closed_and_released() {
    let opts = RelayOptions {
        ping_interval: Some(Duration::from_secs(1)),
        pong_timeout: Some(Duration::from_millis(500)),
        ..Default::default()
    };
    let (mut client, mut backend, task) = setup(opts);
    // First round: both answer (any frame counts), the connection lives on.
    assert_eq!(read_n(&mut client, 2).await, [0x89, 0x00]);
    assert_eq!(read_n(&mut backend, 6).await[..2], [0x89, 0x80]); // masked: 4 bytes of key
    client.write_all(&masked(0x8A, b"")).await.expect("pong");
    backend.write_all(&[0x8A, 0x00]).await.expect("pong");
    // Each pong goes on to the other side (an unsolicited pong is a heartbeat).
    assert_eq!(read_n(&mut backend, 6).await[..2], [0x8A, 0x80]);
    assert_eq!(read_n(&mut client, 2).await, [0x8A, 0x00]);
    // Second round: the backend answers, the client does not — it is dead.
    assert_eq!(read_n(&mut client, 2).await, [0x89, 0x00]);
    assert_eq!(read_n(&mut backend, 6).await[..2], [0x89, 0x80]); // masked: 4 bytes of key
    backend.write_all(&[0x8A, 0x00]).await.expect("pong");
    let pong = read_n(&mut client, 2).await;
    assert_eq!(pong, [0x8A, 0x00]);
    // The backend is told the client went away (1001); the relay ends.
    let close = read_n(&mut backend, 8).await;
    assert_eq!((close[0], close[1] & 0x7F), (0x88, 2 + "the client did not answer pings".len() as u8));
    let totals = task.await.expect("relay");
    assert_eq!(totals.closed_by_gateway, Some(1001));
    assert_eq!(totals.close.map(|c| c.0), Some(Initiator::Gateway));
}

#[tokio::test(start_paused = true)]
async fn a_side_that_takes_no_close_is_dropped_after_the_grace() {
    // The client's window is full (it reads nothing): its Close cannot be written.
    let (mut client, gw_client) = duplex(64);
    let (gw_backend, mut backend) = duplex(64 * 1024);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let stop = Box::pin(async move {
        let _ = stop_rx.await;
        (CLOSE_GOING_AWAY, "the gateway is shutting down")
    });
    let task = tokio::spawn(relay(gw_client, gw_backend, RelayOptions::default(), stop));
    backend.write_all(&[0x82, 0x7E, 0x01, 0x00]).await.expect("header");
    backend.write_all(&[0u8; 256]).await.expect("payload");
    let _ = stop_tx.send(());
    // The relay ends within the grace, whatever the client does.
    let totals = tokio::time::timeout(CLOSE_GRACE * 2, task).await.expect("bounded").expect("relay");
    assert_eq!(totals.close, Some((Initiator::Gateway, CLOSE_GOING_AWAY)));
    let mut got = Vec::new();
    let _ = client.read_to_end(&mut got).await;
    assert!(got.len() < 4 + 256 + 4, "the stuck side got at most what fitted: {}", got.len());
}

/// RFC 6455 §5.5.1: nothing follows a Close. Frames a side sends after its Close — data,
/// a ping, a second Close (valid or not), garbage — never reach the other side, which
/// gets exactly one Close.
#[tokio::test]
async fn nothing_a_side_sends_after_its_close_passes() {
    for after in [
        vec![0x81, 0x02, b'h', b'i'],
        vec![0x89, 0x00],
        vec![0x88, 0x02, 0x03, 0xE7],
        vec![0x88, 0x02, 0x03, 0xE8],
        vec![0x00, 0x7F, 0xFF, 0x12],
    ] {
        let (mut client, mut backend, task) = setup(RelayOptions::default());
        let mut sent = vec![0x88, 0x02, 0x03, 0xE8];
        sent.extend_from_slice(&after);
        backend.write_all(&sent).await.expect("write");
        assert_eq!(read_n(&mut client, 4).await, [0x88, 0x02, 0x03, 0xE8]);
        let close = masked(0x88, &1000u16.to_be_bytes());
        client.write_all(&close).await.expect("answer");
        assert_eq!(read_n(&mut backend, close.len()).await, close);
        let totals = task.await.expect("relay");
        assert!(read_all(&mut client).await.is_empty(), "nothing after the Close: {after:?}");
        assert_eq!(totals.close, Some((Initiator::Backend, 1000)));
        assert_eq!(totals.closed_by_gateway, None, "{after:?}");
    }
}
