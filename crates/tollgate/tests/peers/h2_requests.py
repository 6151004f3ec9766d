"""Sends HTTP/2 requests exactly as given — also ones the h2 library would refuse to
send — and reports what the server did with each, with the `h2` library.

Reads a JSON list from stdin; each item is {"headers": [[name, value], ...],
"body": "..." (optional), "settings": {...} (optional, sent after the preface)}. Each
request goes on a connection of its own (prior knowledge, cleartext), so that a
connection error on one does not hide the others. Prints one JSON list, one item per
request: {"status": N, "headers": [[name, value], ...], "body": "..."} when answered,
{"reset": CODE} when the stream was reset, {"goaway": CODE} when the connection was
closed with GOAWAY, {"closed": true} when it closed without one. Bounded: a 10 s socket
timeout per request.

usage: python3 h2_requests.py HOST PORT < requests.json
"""
import json
import socket
import sys

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

host, port = sys.argv[1], int(sys.argv[2])


def one(request):
    sock = socket.create_connection((host, port), timeout=10)
    config = h2.config.H2Configuration(
        client_side=True,
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
        validate_inbound_headers=False,
    )
    conn = h2.connection.H2Connection(config=config)
    conn.initiate_connection()
    if request.get("settings"):
        conn.update_settings({getattr(h2.settings.SettingCodes, k): v for k, v in request["settings"].items()})
    sock.sendall(conn.data_to_send())
    stream_id = conn.get_next_available_stream_id()
    body = request.get("body")
    headers = [(k.encode(), v.encode()) for k, v in request["headers"]]
    conn.send_headers(stream_id, headers, end_stream=body is None)
    if body is not None:
        conn.send_data(stream_id, body.encode(), end_stream=True)
    sock.sendall(conn.data_to_send())
    result = {}
    status, got, data = None, [], b""
    try:
        while not result:
            chunk = sock.recv(65536)
            if not chunk:
                result = {"closed": True}
                break
            for event in conn.receive_data(chunk):
                if isinstance(event, h2.events.ResponseReceived) and event.stream_id == stream_id:
                    for k, v in event.headers:
                        k = k.decode() if isinstance(k, bytes) else k
                        v = v.decode() if isinstance(v, bytes) else v
                        if k == ":status":
                            status = int(v)
                        else:
                            got.append([k, v])
                elif isinstance(event, h2.events.DataReceived) and event.stream_id == stream_id:
                    data += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, stream_id)
                elif isinstance(event, h2.events.StreamEnded) and event.stream_id == stream_id:
                    result = {"status": status, "headers": got, "body": data.decode(errors="replace")}
                elif isinstance(event, h2.events.StreamReset) and event.stream_id == stream_id:
                    result = {"reset": int(event.error_code)}
                elif isinstance(event, h2.events.ConnectionTerminated):
                    result = result or {"goaway": int(event.error_code)}
            sock.sendall(conn.data_to_send())
    except socket.timeout:
        result = result or {"timeout": True, "status": status}
    except (ConnectionError, OSError, h2.exceptions.ProtocolError):
        result = result or {"closed": True}
    sock.close()
    return result


print(json.dumps([one(r) for r in json.load(sys.stdin)]))
