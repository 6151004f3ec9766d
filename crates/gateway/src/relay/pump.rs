//! One direction of the relay: reads its side, follows the frames, forwards bytes
//! (holding back only a split header or a Close frame until checked) and writes the
//! Closes and pings the gateway decided on.

use super::*;

pub(super) struct Pump {
    from_client: bool,
    /// How many bytes the next read asks for: [`Spare::SMALL`] to [`Spare::LEN`].
    read_len: u32,
    /// When (ms since the relay started) a read last filled what it asked for.
    last_full: u32,
    /// A header that arrived in pieces (never forwarded until complete).
    header: [u8; 14],
    /// Bytes of `header` held (under 14: a complete header is never held).
    have: u8,
    /// Payload bytes of the current frame still to pass (or drop).
    remaining: u64,
    in_message: bool,
    message_bytes: u64,
    dropping_message: bool,
    dropping_frame: bool,
    pub(super) messages: u64,
    pub(super) bytes: u64,
    pub(super) closed_with: Option<u16>,
    max_message_bytes: Option<u64>,
    /// A Close frame being read: held back whole (at most 139 bytes) until its code and
    /// reason are checked, so that an invalid one never reaches the other side.
    close: Option<Box<HeldClose>>,
    /// (messages, bytes) already added to the tallies.
    flushed: (u64, u64),
    /// Data frames after the current one that the gate admitted together with it (a
    /// run of this read's frames, see [`Pump::run`]): their headers are still to come
    /// in this read, and they pass without asking the gate again.
    admitted: u32,
}

/// What [`Pump::on_header`] decided about a frame.
enum Checked {
    Step(Step),
    /// The gate has to be waited for: its question for the run, and for the frame alone.
    Ask(FrameInfo, FrameInfo),
}

/// Where [`Pump::scan`] is in a chunk.
#[derive(Default)]
struct Cursor {
    /// The next byte to look at.
    i: usize,
    /// The first byte not yet forwarded (or dropped).
    from: usize,
}

/// A frame whose header [`Pump::scan`] read: the header, whether it arrived in pieces
/// (held back in [`Pump::header`]), and where it began in the chunk.
#[derive(Clone, Copy)]
struct Frame {
    h: FrameHeader,
    split: bool,
    start: usize,
}

/// What the pump does next with a chunk (see [`Pump::scan`]).
enum Action {
    /// Forward `data[a..b]`, then scan on.
    Forward(usize, usize),
    /// Forward the header that was held back (its first `n` bytes), then scan on.
    ForwardHeader(usize),
    /// Check and forward the Close frame held back ([`Pump::finish_close`]).
    FinishClose,
    /// Wait for the gate's verdict on the run (or the frame alone) starting at this
    /// frame, then [resume](Pump::resume) with it.
    Ask(FrameInfo, FrameInfo, Frame),
    /// Forward `data[a..b]`; the chunk is through, and the pump goes on with this step.
    End(usize, usize, Step),
}

enum Step {
    Continue,
    /// Stop: the connection is being closed with this code.
    Close(u16, &'static str),
    /// The side this pump reads from sent its Close while the Close for the side it
    /// writes to was held: that Close goes now, in place of the one that arrived.
    Deliver,
}

impl Pump {
    pub(super) fn new(from_client: bool, opts: &RelayOptions) -> Pump {
        Pump {
            from_client,
            read_len: Spare::SMALL as u32,
            last_full: 0,
            header: [0; 14],
            have: 0,
            remaining: 0,
            in_message: false,
            message_bytes: 0,
            dropping_message: false,
            dropping_frame: false,
            messages: 0,
            bytes: 0,
            closed_with: None,
            max_message_bytes: opts.max_message_bytes,
            close: None,
            flushed: (0, 0),
            admitted: 0,
        }
    }

    /// Whether the side this pump writes to is between two frames, so a frame of the
    /// gateway's (a ping, a Close) can go in. A header held back in pieces is not on the
    /// wire yet, and neither is any byte of a frame being dropped: both leave the other
    /// side between frames. (Counting the held header as a cut frame left the other side
    /// without its Close after a protocol error or a peer gone, depending only on how the
    /// bytes were split into reads.)
    fn at_boundary(&self) -> bool {
        self.remaining == 0 || self.dropping_frame || self.close.is_some()
    }

    fn initiator(&self) -> Initiator {
        if self.from_client { Initiator::Client } else { Initiator::Backend }
    }

    /// Sizes the next read after one of `n` bytes at `now` (ms): doubled (up to
    /// [`Spare::LEN`]) after a read that filled what it asked for, back to
    /// [`Spare::SMALL`] once no read filled it for [`Spare::QUIET`].
    pub(super) fn size_reads(&mut self, n: usize, now: u32) {
        let len = self.read_len as usize;
        if n == len {
            self.read_len = (len * 2).min(Spare::LEN) as u32;
            self.last_full = now;
        } else if len > Spare::SMALL && now.wrapping_sub(self.last_full) >= Spare::QUIET.as_millis() as u32 {
            self.read_len = Spare::SMALL as u32;
        }
    }

    /// The next read's length (tests).
    #[cfg(test)]
    pub(super) fn read_len(&self) -> usize {
        self.read_len as usize
    }

    /// Adds what was relayed since the last call to the tallies.
    pub(super) fn flush(&mut self, opts: &RelayOptions) {
        let (m, b) = (self.messages - self.flushed.0, self.bytes - self.flushed.1);
        if m == 0 && b == 0 {
            return;
        }
        let i = usize::from(!self.from_client);
        for t in &opts.tallies {
            t.messages[i].fetch_add(m, Ordering::Relaxed);
            t.bytes[i].fetch_add(b, Ordering::Relaxed);
        }
        self.flushed = (self.messages, self.bytes);
    }

    /// Checks a complete header: the verdict for the frame, or the gate's question
    /// when it has to be waited for (then [`Pump::admit`] takes the answer). `rest` is
    /// what this read holds after the header: a gate that decides runs is asked once for
    /// the data frames whose headers it holds (one counter update per read, not per
    /// frame).
    fn on_header(&mut self, h: &FrameHeader, rest: &[u8], opts: &RelayOptions, ctl: &Control) -> Checked {
        if let Some(e) = header_error(h, self.from_client, opts.deflate) {
            return Checked::Step(Step::Close(CLOSE_PROTOCOL_ERROR, e));
        }
        if h.is_control() {
            self.dropping_frame = false;
            if h.opcode == OP_CLOSE {
                if ctl.is_held(!self.from_client) {
                    return Checked::Step(Step::Deliver);
                }
                self.close = Some(Box::new(HeldClose {
                    wire: Vec::with_capacity(h.header_len + h.payload_len as usize),
                    header_len: h.header_len,
                    mask: h.mask,
                }));
            }
            return Checked::Step(Step::Continue);
        }
        let starts_message = match starts_message(h.opcode, self.in_message) {
            Ok(starts) => starts,
            Err(e) => return Checked::Step(Step::Close(CLOSE_PROTOCOL_ERROR, e)),
        };
        if starts_message {
            self.in_message = true;
            self.message_bytes = 0;
            self.dropping_message = false;
        }
        // The size first: a frame that makes its message too big never passes, so the
        // gate must not count it (its message, its bytes).
        self.message_bytes = self.message_bytes.saturating_add(h.payload_len);
        if self.max_message_bytes.is_some_and(|max| self.message_bytes > max) {
            return Checked::Step(Step::Close(CLOSE_TOO_BIG, "message too big"));
        }
        if let Some(gate) = &opts.gate
            && !self.dropping_message
        {
            if self.admitted > 0 {
                self.admitted -= 1;
            } else {
                let one = FrameInfo {
                    from_client: self.from_client,
                    frames: 1,
                    messages: u32::from(starts_message),
                    payload_len: h.payload_len,
                };
                let run = if gate.decides_runs() { self.run(one, h, rest, opts) } else { one };
                // Decided at once with counters in this process; a wait (Redis) is the
                // pump's to make, boxed: its future is part of every open WebSocket's.
                return match settle_now(gate, run, one) {
                    Ok((verdict, admitted)) => Checked::Step(self.admit(h, verdict, admitted)),
                    Err(ask) => Checked::Ask(ask, one),
                };
            }
        }
        Checked::Step(self.pass(h))
    }

    /// Applies the gate's verdict on the data frame `h` (and on the `admitted` frames of
    /// its run after it).
    fn admit(&mut self, h: &FrameHeader, verdict: Verdict, admitted: u32) -> Step {
        self.admitted = admitted;
        match verdict {
            Verdict::Forward => {}
            // A message's first frame (a text or binary one) drops the whole message.
            Verdict::Drop if h.opcode != OP_CONTINUATION => self.dropping_message = true,
            Verdict::Drop => {}
            Verdict::Close(code, reason) => return Step::Close(code, reason),
        }
        self.pass(h)
    }

    /// The data frame `h` goes through (or is dropped with its message).
    fn pass(&mut self, h: &FrameHeader) -> Step {
        self.dropping_frame = self.dropping_message;
        if h.fin {
            self.in_message = false;
            if !self.dropping_message {
                self.messages += 1;
            }
        }
        Step::Continue
    }

    /// The run of data frames that starts with `h` (`first` as the gate would see it
    /// alone) and goes on through the frames whose headers this read holds (`rest`: the
    /// bytes after `h`'s header), up to the first that is not a data frame, breaks a
    /// rule or makes its message too big — none of which the gate may count. Their
    /// usage added up: a read of 200 small messages is one decision, not 200.
    fn run(&self, first: FrameInfo, h: &FrameHeader, rest: &[u8], opts: &RelayOptions) -> FrameInfo {
        let mut run = first;
        let too_big = |bytes: u64| self.max_message_bytes.is_some_and(|max| bytes > max);
        // `h`'s message so far, `h` included (checked against the cap already).
        let mut message_bytes = self.message_bytes;
        let mut in_message = !h.fin;
        // Where the next header starts in `rest`.
        let mut at = h.payload_len;
        while let Some(tail) = usize::try_from(at).ok().and_then(|at| rest.get(at..))
            && let Ok(Some(next)) = frames::parse_header(tail)
            && !next.is_control()
            && header_error(&next, self.from_client, opts.deflate).is_none()
            && let Ok(starts) = starts_message(next.opcode, in_message)
        {
            message_bytes = if starts { next.payload_len } else { message_bytes.saturating_add(next.payload_len) };
            if too_big(message_bytes) {
                break;
            }
            run.frames += 1;
            run.messages += u32::from(starts);
            run.payload_len = run.payload_len.saturating_add(next.payload_len);
            in_message = !next.fin;
            at = at.saturating_add(next.header_len as u64).saturating_add(next.payload_len);
        }
        run
    }

    /// Relays this direction until it ends (the relay adds the last counts to the
    /// tallies: every read's are added as it goes).
    ///
    /// A plain function returning the future, not an `async fn`: that would hold each
    /// argument twice (40 bytes per direction of every open WebSocket).
    #[allow(clippy::manual_async_fn, reason = "an `async fn` holds its arguments twice")]
    pub(super) fn pump<'a, R, W>(
        &'a mut self,
        src: &'a mut R,
        mut dst: &'a mut W,
        ctl: &'a Control,
        opts: &'a RelayOptions,
    ) -> impl Future<Output = ()> + 'a
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        async move {
            let mine = if self.from_client { &ctl.to_backend } else { &ctl.to_client };
            loop {
                let mut buf = tokio::select! {
                    biased;
                    () = mine.notified() => {
                        let ping = if self.from_client { &ctl.pings.1 } else { &ctl.pings.0 };
                        let pinged = ping.swap(false, Ordering::Relaxed);
                        if ctl.is_held(!self.from_client) {
                            // Its Close waits for the other side's: keep relaying.
                            continue;
                        }
                        if pinged && ctl.take_peek(!self.from_client).is_none() {
                            // A ping between frames; skipped if a frame is half through.
                            if self.at_boundary() {
                                let frame = frames::ping_frame(self.from_client.then(mask_key));
                                // Boxed, as every rare wait here: the pump's future is held by
                                // every open WebSocket, so only the common waits lie in it.
                                if Box::pin(dst.write_all(&frame)).await.is_err() {
                                    return;
                                }
                            }
                            continue;
                        }
                        Box::pin(self.deliver_close(&mut dst, ctl)).await;
                        return;
                    }
                    r = Spare::read(src, self.read_len as usize) => match r {
                        Ok(None) | Err(_) => {
                            if ctl.close_seen_from(self.from_client) {
                                // An orderly end after its Close: end this direction; once
                                // both Closes went through, the other one ends as well
                                // (RFC 6455 §7.1.1: the handshake is over).
                                let _ = dst.shutdown().await;
                                if ctl.close_seen_from(!self.from_client) {
                                    // The other pump writes to the side this one reads.
                                    ctl.finish(self.from_client);
                                }
                                return;
                            }
                            // Its peer went away without a Close frame (FIN or reset): the
                            // WebSocket is over. The other side gets a Close frame — never
                            // a bare 1006 — and every hold on the connection is released.
                            ctl.note_close(self.initiator(), CLOSE_ABNORMAL);
                            let reason = if self.from_client { "the client went away" } else { "the backend went away" };
                            ctl.close_both(CLOSE_GOING_AWAY, reason);
                            Box::pin(self.deliver_close(&mut dst, ctl)).await;
                            return;
                        }
                        Ok(Some(chunk)) => chunk,
                    },
                };
                let now = ctl.touch(self.from_client) as u32;
                self.size_reads(buf.filled().len(), now);
                let step = {
                    let data: &[u8] = buf.filled();
                    let mut at = Cursor::default();
                    let mut next = None;
                    loop {
                        let (a, b) = match next.take().unwrap_or_else(|| self.scan(data, &mut at, opts, ctl)) {
                            Action::Forward(a, b) => (a, b),
                            Action::ForwardHeader(n) => match dst.write_all(&self.header[..n]).await {
                                Ok(()) => {
                                    self.bytes += n as u64;
                                    continue;
                                }
                                Err(e) => break Err(e),
                            },
                            Action::FinishClose => match Box::pin(self.finish_close(&mut dst, ctl)).await {
                                Ok(Step::Continue) => continue,
                                other => break other,
                            },
                            Action::Ask(run, one, frame) => {
                                // Boxed, the frame with it: a wait on Redis is not part of
                                // every open WebSocket's future.
                                // (Only a gate asks: without one, nothing is governed.)
                                let gate = opts.gate.as_ref();
                                let (verdict, admitted, frame) = Box::pin(async move {
                                    let (verdict, admitted) = match gate {
                                        Some(gate) => settle(gate, run, one).await,
                                        None => (Verdict::Forward, 0),
                                    };
                                    (verdict, admitted, frame)
                                })
                                .await;
                                let step = self.admit(&frame.h, verdict, admitted);
                                next = self.resume(&mut at, frame, step, data);
                                continue;
                            }
                            Action::End(a, b, step) => match dst.write_all(&data[a..b]).await {
                                Ok(()) => {
                                    self.bytes += (b - a) as u64;
                                    break Ok(step);
                                }
                                Err(e) => break Err(e),
                            },
                        };
                        if let Err(e) = dst.write_all(&data[a..b]).await {
                            break Err(e);
                        }
                        self.bytes += (b - a) as u64;
                    }
                };
                // Back to the thread's spares before anything else waits.
                drop(buf);
                self.flush(opts);
                match step {
                    // Its Close went through after the other side's: the closing handshake is
                    // over, whether or not this peer ends its connection.
                    Ok(Step::Continue)
                        if self.at_boundary()
                            && ctl.close_seen_from(self.from_client)
                            && ctl.close_seen_from(!self.from_client) =>
                    {
                        let _ = dst.flush().await;
                        let _ = dst.shutdown().await;
                        // The other pump writes to the side this one reads.
                        ctl.finish(self.from_client);
                        return;
                    }
                    Ok(Step::Continue) => {}
                    Ok(Step::Close(code, reason)) => {
                        ctl.fail_from(self.from_client, code, reason);
                        self.closed_with = Some(code);
                        Box::pin(self.deliver_close(&mut dst, ctl)).await;
                        return;
                    }
                    Ok(Step::Deliver) => {
                        Box::pin(self.deliver_close(&mut dst, ctl)).await;
                        return;
                    }
                    Err(_) => {
                        let _ = dst.shutdown().await;
                        return;
                    }
                }
            }
        }
    }

    /// Sends the pending close for this pump's side (at a frame boundary; otherwise the
    /// frame in flight cannot be finished, and the connection is just shut).
    async fn deliver_close<W: AsyncWrite + Unpin>(&mut self, dst: &mut W, ctl: &Control) {
        if let Some((code, reason)) = ctl.take(!self.from_client)
            && self.at_boundary()
        {
            // Frames to the backend are masked, as a client's must be.
            let frame = frames::close_frame(code, reason, self.from_client.then(mask_key));
            let _ = dst.write_all(&frame).await;
            self.closed_with = Some(code);
        }
        let _ = dst.flush().await;
        let _ = dst.shutdown().await;
    }

    /// The next thing to do with a chunk (`data`, read from this pump's side), from
    /// where `at` is: it follows the frames and stops at each write, at each wait and at
    /// the first frame that must not pass. Bytes are forwarded in contiguous ranges; only
    /// a header split across two reads is held back (at most 14 bytes) and forwarded once
    /// complete.
    ///
    /// Not `async`: the pump awaits what this returns, so its future holds a write at
    /// most — not a chunk walker's future and a write's, as it did when this was an
    /// `async fn` (288 bytes more in every open WebSocket's future, per direction).
    fn scan(&mut self, data: &[u8], at: &mut Cursor, opts: &RelayOptions, ctl: &Control) -> Action {
        let n = data.len();
        loop {
            if self.close.is_some() && self.remaining == 0 {
                // The Close frame held back is whole (nothing before it is left to
                // forward: `at.from` is past it).
                return Action::FinishClose;
            }
            let (i, from) = (at.i, at.from);
            if i >= n {
                // Every frame a run admitted had its header in this read.
                debug_assert_eq!(self.admitted, 0);
                self.admitted = 0;
                return Action::End(from.min(n), n, Step::Continue);
            }
            if self.remaining == 0 && self.have == 0 && ctl.close_seen_from(self.from_client) {
                // This side sent its Close: it may send nothing more (RFC 6455 §5.5.1),
                // and whatever it does send is dropped — the other side gets one Close
                // and nothing after it.
                return Action::End(from, i, Step::Continue);
            }
            if self.remaining > 0 {
                let take = self.remaining.min((n - i) as u64) as usize;
                self.remaining -= take as u64;
                at.i = i + take;
                if let Some(held) = &mut self.close {
                    held.wire.extend_from_slice(&data[i..i + take]);
                    at.from = at.i;
                } else if self.dropping_frame {
                    at.from = at.i;
                    if from < i {
                        return Action::Forward(from, i);
                    }
                }
                continue;
            }
            let frame = if self.have == 0 {
                match frames::parse_header(&data[i..]) {
                    Ok(Some(h)) => {
                        at.i = i + h.header_len;
                        Frame { h, split: false, start: i }
                    }
                    Ok(None) => {
                        // Hold the header's first bytes back until the rest arrives.
                        self.header[..n - i].copy_from_slice(&data[i..]);
                        self.have = (n - i) as u8;
                        return Action::End(from, i, Step::Continue);
                    }
                    Err(e) => return Action::End(from, i, Step::Close(CLOSE_PROTOCOL_ERROR, e)),
                }
            } else {
                // A held-back header continues at the start of this chunk.
                self.header[usize::from(self.have)] = data[i];
                self.have += 1;
                at.i = i + 1;
                at.from = at.i;
                match frames::parse_header(&self.header[..usize::from(self.have)]) {
                    Ok(Some(h)) => {
                        self.have = 0;
                        Frame { h, split: true, start: i }
                    }
                    Ok(None) => continue,
                    Err(e) => return Action::End(at.i, at.i, Step::Close(CLOSE_PROTOCOL_ERROR, e)),
                }
            };
            let step = match self.on_header(&frame.h, &data[at.i..], opts, ctl) {
                Checked::Step(step) => step,
                Checked::Ask(run, one) => return Action::Ask(run, one, frame),
            };
            if let Some(action) = self.resume(at, frame, step, data) {
                return action;
            }
        }
    }

    /// Goes on with a frame whose header was checked (`step`: its verdict): nothing of a
    /// refused frame passes, what came before it does; otherwise its bytes follow. What
    /// must be done before the scan goes on, if anything.
    fn resume(&mut self, at: &mut Cursor, frame: Frame, step: Step, data: &[u8]) -> Option<Action> {
        let Frame { h, split, start } = frame;
        let from = at.from;
        if !matches!(step, Step::Continue) {
            // A split header's bytes were never forwarded, nor anything after `from`.
            return Some(Action::End(from, if split { from } else { start }, step));
        }
        self.remaining = h.payload_len;
        if let Some(held) = &mut self.close {
            if split {
                held.wire.extend_from_slice(&self.header[..h.header_len]);
            } else {
                held.wire.extend_from_slice(&data[start..at.i]);
            }
            at.from = at.i;
            return (!split && from < start).then_some(Action::Forward(from, start));
        }
        if self.dropping_frame {
            at.from = at.i;
            return (!split && from < start).then_some(Action::Forward(from, start));
        }
        split.then_some(Action::ForwardHeader(h.header_len))
    }

    /// The Close frame held back is complete: a valid one is recorded and passes; an
    /// invalid one (RFC 6455 §7.4: a code that must not be sent, a one-byte payload, a
    /// reason that is not UTF-8) fails the connection with 1002 and never reaches the
    /// other side.
    async fn finish_close<W: AsyncWrite + Unpin>(&mut self, dst: &mut W, ctl: &Control) -> std::io::Result<Step> {
        let Some(held) = self.close.take() else { return Ok(Step::Continue) };
        let mut payload = held.wire[held.header_len..].to_vec();
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= held.mask[i % 4];
        }
        match frames::check_close_payload(&payload) {
            Ok(code) => {
                ctl.saw_close_from(self.from_client);
                ctl.note_close(self.initiator(), code.unwrap_or(CLOSE_NO_STATUS));
                self.write(dst, &held.wire).await?;
                Ok(Step::Continue)
            }
            Err(e) => Ok(Step::Close(CLOSE_PROTOCOL_ERROR, e)),
        }
    }

    async fn write<W: AsyncWrite + Unpin>(&mut self, dst: &mut W, bytes: &[u8]) -> std::io::Result<()> {
        if !bytes.is_empty() {
            dst.write_all(bytes).await?;
            self.bytes += bytes.len() as u64;
        }
        Ok(())
    }
}

/// The verdict on `run` (the frames of a read, or `one` frame alone) and how many of the
/// frames after the first it admits, without waiting: a run admitted whole admits all of
/// them; a run refused (`Drop`) is asked for again as its first frame alone, so that
/// exactly what fits passes. `Err`: these frames need the gate's
/// [`Decide::decide`], to be [settled](settle).
fn settle_now(gate: &Gate, run: FrameInfo, one: FrameInfo) -> Result<(Verdict, u32), FrameInfo> {
    let verdict = gate.decide_now(run).ok_or(run)?;
    Ok(match verdict {
        Verdict::Forward => (verdict, run.frames - 1),
        Verdict::Drop if run.frames > 1 => (gate.decide_now(one).ok_or(one)?, 0),
        _ => (verdict, 0),
    })
}

/// [`settle_now`] for a gate that has to be waited for.
async fn settle(gate: &Gate, run: FrameInfo, one: FrameInfo) -> (Verdict, u32) {
    let verdict = gate.decide(run).await;
    match verdict {
        Verdict::Forward => (verdict, run.frames - 1),
        Verdict::Drop if run.frames > 1 => (gate.decide(one).await, 0),
        _ => (verdict, 0),
    }
}

/// Why a frame's header breaks RFC 6455 coming from the client (`from_client`) or the
/// backend, whatever came before it: an unknown opcode (§5.2), masking the wrong way
/// (§5.1), a reserved bit no negotiated extension defines (§5.2; RSV1 is
/// permessage-deflate's on a message's first frame, RFC 7692 §6), a fragmented or long
/// control frame (§5.5).
fn header_error(h: &FrameHeader, from_client: bool, deflate: bool) -> Option<&'static str> {
    let data = matches!(h.opcode, OP_CONTINUATION | OP_TEXT | OP_BINARY);
    if !data && !matches!(h.opcode, OP_CLOSE | OP_PING | OP_PONG) {
        return Some("unknown opcode");
    }
    if h.masked != from_client {
        return Some(if from_client { "client frames must be masked" } else { "server frames must not be masked" });
    }
    if h.rsv23 || (h.rsv1 && !(deflate && matches!(h.opcode, OP_TEXT | OP_BINARY))) {
        return Some("reserved bits set");
    }
    if h.is_control() && (!h.fin || h.payload_len > 125) {
        return Some("invalid control frame");
    }
    None
}

/// Whether a data frame with `opcode` starts a message, given whether one is under way
/// (`in_message`); why it cannot come now otherwise (RFC 6455 §5.4).
fn starts_message(opcode: u8, in_message: bool) -> Result<bool, &'static str> {
    match (opcode, in_message) {
        (OP_CONTINUATION, false) => Err("continuation without a message"),
        (OP_CONTINUATION, true) => Ok(false),
        (_, true) => Err("new message inside a fragmented one"),
        (_, false) => Ok(true),
    }
}

/// A Close frame read so far, as on the wire (header, then the payload, masked as it
/// came).
struct HeldClose {
    wire: Vec<u8>,
    header_len: usize,
    /// The masking key (zeros when unmasked, which leaves the payload as it is).
    mask: [u8; 4],
}

/// A read buffer lent by the worker thread for as long as one chunk takes to pass, and
/// given back when dropped (also when the connection's task is dropped mid-chunk).
///
/// A pump waits for its side's bytes without a buffer: [`Spare::read`] takes one only
/// when the read is ready, and gives it back at once when it is not. So an idle
/// WebSocket holds no read buffer at all — the common case, and there may be tens of
/// thousands — and a busy one reads up to [`Spare::LEN`] at a time. A worker
/// keeps at most [`Spare::KEPT`] spare buffers; buffers held by connections waiting for
/// a slow peer to take their bytes (backpressure) are on top of that, one per direction.
pub(super) struct Spare {
    buf: Vec<u8>,
    filled: usize,
}

thread_local! {
    static SPARES: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Spare {
    /// Bytes read at most at a time (what a 16 KiB TLS record holds, too).
    pub(super) const LEN: usize = 16 * 1024;
    /// Bytes a quiet connection's reads ask for. Small messages pass faster through
    /// small reads: with every read asking for 16 KiB, 32-byte ping-pong fell to 0.90 of
    /// 512-byte reads in `bench/run` (in the kernel; which part is not identified),
    /// while streaming and large messages need the large ones.
    pub(super) const SMALL: usize = 512;
    /// How long reads stay large without one that fills them.
    pub(super) const QUIET: Duration = Duration::from_secs(1);
    /// Spare buffers a worker thread keeps for the next reads (beyond: freed).
    pub(super) const KEPT: usize = 16;

    fn take() -> Vec<u8> {
        SPARES.with_borrow_mut(Vec::pop).unwrap_or_else(|| vec![0; Self::LEN])
    }

    fn give(buf: Vec<u8>) {
        // At thread exit the spares are gone already: the buffer is freed instead.
        let _ = SPARES.try_with(|s| {
            let mut s = s.borrow_mut();
            if s.len() < Self::KEPT {
                s.push(buf);
            }
        });
    }

    /// The next bytes `src` has (at most `len`, at most [`Spare::LEN`]), in a lent
    /// buffer; `None` at the end of the stream. Cancel-safe: when it has not resolved,
    /// nothing was read and nothing is held.
    pub(super) async fn read<R: AsyncRead + Unpin>(src: &mut R, len: usize) -> std::io::Result<Option<Spare>> {
        std::future::poll_fn(|cx| {
            let mut buf = Self::take();
            let mut rb = tokio::io::ReadBuf::new(&mut buf[..len.min(Self::LEN)]);
            match Pin::new(&mut *src).poll_read(cx, &mut rb) {
                std::task::Poll::Ready(Ok(())) => {
                    let filled = rb.filled().len();
                    let chunk = Spare { buf, filled };
                    std::task::Poll::Ready(Ok((filled > 0).then_some(chunk)))
                }
                other => {
                    Self::give(buf);
                    other.map_ok(|()| None)
                }
            }
        })
        .await
    }

    /// The bytes read.
    pub(super) fn filled(&mut self) -> &mut [u8] {
        &mut self.buf[..self.filled]
    }

    /// Spare buffers this thread keeps now (tests).
    #[cfg(test)]
    pub(super) fn kept() -> usize {
        SPARES.with_borrow(Vec::len)
    }
}

impl Drop for Spare {
    fn drop(&mut self) {
        Self::give(std::mem::take(&mut self.buf));
    }
}

/// A masking key for frames the gateway writes to a backend: unpredictable, as RFC 6455
/// §5.3 asks (to defeat cache poisoning by scripts).
fn mask_key() -> [u8; 4] {
    rand::random()
}
