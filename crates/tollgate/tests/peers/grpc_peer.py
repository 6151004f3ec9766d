"""A gRPC server and client from PyPI's grpcio (C-core), for the gateway's gRPC tests.

    python3 grpc_peer.py server
        serves /test.Echo/{Unary,ServerStream,ClientStream,Bidi,Fail,Slow} on 127.0.0.1
        (h2c); prints `listening on PORT`, then runs until killed. Messages are raw
        bytes (no protobuf): Unary echoes, ServerStream sends the request 3 times,
        ClientStream joins what it got with `+`, Bidi echoes each message upper-cased,
        Fail ends with NOT_FOUND and a message, Slow waits past any deadline, Reset sends
        one message then resets the stream (RST_STREAM CANCEL), ResetUnary resets it at
        once.

    python3 grpc_peer.py client TARGET AUTHORITY USER_KEY CASE
        calls through TARGET (host:port) with :authority AUTHORITY and metadata
        user_key; prints one JSON line: {"code": "OK", "details": ..., "replies": [...],
        "trailers": {...}}.
"""
import json
import sys
import threading
from concurrent import futures

import grpc

IDENTITY = dict(request_deserializer=None, response_serializer=None)


def serve():
    def unary(request, context):
        context.set_trailing_metadata((("x-served-by", "grpcio"),))
        return request

    def server_stream(request, context):
        for i in range(3):
            yield request + str(i).encode()

    def client_stream(requests, context):
        return b"+".join(requests)

    def bidi(requests, context):
        for r in requests:
            yield r.upper()

    def fail(request, context):
        context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")

    def slow(request, context):
        # Answers only when the call ends (its deadline passes, or the client leaves).
        ended = threading.Event()
        if context.add_callback(ended.set):
            ended.wait()
        return b""

    def reset(request, context):
        # One message, then the stream is reset (RST_STREAM CANCEL, grpcio's cancel).
        yield b"one"
        context.cancel()

    def reset_unary(request, context):
        # Reset before any answer.
        context.cancel()
        return b""

    handlers = {
        "Reset": grpc.unary_stream_rpc_method_handler(reset, **IDENTITY),
        "ResetUnary": grpc.unary_unary_rpc_method_handler(reset_unary, **IDENTITY),
        "Unary": grpc.unary_unary_rpc_method_handler(unary, **IDENTITY),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream, **IDENTITY),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream, **IDENTITY),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi, **IDENTITY),
        "Fail": grpc.unary_unary_rpc_method_handler(fail, **IDENTITY),
        "Slow": grpc.unary_unary_rpc_method_handler(slow, **IDENTITY),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Echo", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"listening on {port}", flush=True)
    threading.Event().wait()


def client(target, authority, user_key, case):
    channel = grpc.insecure_channel(target, options=[("grpc.default_authority", authority)])
    md = (("user_key", user_key),)
    out = {"code": "OK", "details": None, "replies": [], "trailers": {}}
    try:
        if case == "unary":
            reply, call = channel.unary_unary("/test.Echo/Unary").with_call(b"hello", metadata=md, timeout=10)
            out["replies"] = [reply.decode()]
            out["trailers"] = {k: v for k, v in call.trailing_metadata()}
        elif case == "server_stream":
            out["replies"] = [r.decode() for r in channel.unary_stream("/test.Echo/ServerStream")(b"s", metadata=md, timeout=10)]
        elif case == "client_stream":
            reply = channel.stream_unary("/test.Echo/ClientStream")(iter([b"a", b"b", b"c"]), metadata=md, timeout=10)
            out["replies"] = [reply.decode()]
        elif case == "bidi":
            # Each reply comes before the next message is sent: nothing is buffered.
            replies = []
            outbox = []
            ready = threading.Semaphore(0)

            def messages():
                for m in [b"x", b"y", b"z"]:
                    outbox.append(m)
                    yield m
                    ready.acquire(timeout=10)

            for r in channel.stream_stream("/test.Echo/Bidi")(messages(), metadata=md, timeout=10):
                replies.append(r.decode())
                ready.release()
            out["replies"] = replies
        elif case == "fail":
            channel.unary_unary("/test.Echo/Fail")(b"", metadata=md, timeout=10)
        elif case == "reset":
            for r in channel.unary_stream("/test.Echo/Reset")(b"", metadata=md, timeout=10):
                out["replies"].append(r.decode())
        elif case == "reset_unary":
            channel.unary_unary("/test.Echo/ResetUnary")(b"", metadata=md, timeout=10)
        elif case == "deadline":
            channel.unary_unary("/test.Echo/Slow")(b"", metadata=md, timeout=0.5)
        else:
            raise SystemExit(f"unknown case {case}")
    except grpc.RpcError as e:
        out["code"] = e.code().name
        out["details"] = e.details()
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        serve()
    else:
        client(*sys.argv[2:6])
