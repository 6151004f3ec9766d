"""A DNS server for the DNS re-resolution test, on dnslib (PyPI): it answers A and AAAA
queries from records the test sets on stdin, with a TTL of one second.

Prints `listening on PORT` (UDP and TCP on 127.0.0.1). Each stdin line
`NAME IP [IP ...]` replaces NAME's addresses (an empty list: NXDOMAIN) and is
acknowledged with `ok` once in effect.
"""
import ipaddress
import sys
import threading

from dnslib import AAAA, A, QTYPE, RCODE, RR
from dnslib.server import BaseResolver, DNSServer

TTL = 1
records = {}
lock = threading.Lock()


class Resolver(BaseResolver):
    def resolve(self, request, handler):
        reply = request.reply()
        name = str(request.q.qname).lower().rstrip(".")
        with lock:
            addresses = records.get(name)
        if not addresses:
            reply.header.rcode = RCODE.NXDOMAIN
            return reply
        for ip in addresses:
            if ip.version == 4 and request.q.qtype in (QTYPE.A, QTYPE.ANY):
                reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(str(ip)), ttl=TTL))
            if ip.version == 6 and request.q.qtype in (QTYPE.AAAA, QTYPE.ANY):
                reply.add_answer(RR(request.q.qname, QTYPE.AAAA, rdata=AAAA(str(ip)), ttl=TTL))
        return reply


class Quiet:
    def log_recv(self, *a): pass
    def log_send(self, *a): pass
    def log_request(self, *a): pass
    def log_reply(self, *a): pass
    def log_truncated(self, *a): pass
    def log_error(self, handler, e): print(f"dns error: {e}", file=sys.stderr)
    def log_data(self, *a): pass


# UDP on a free port, then TCP on the same number (taken by another process now and
# then: try another; bounded).
for attempt in range(50):
    udp = DNSServer(Resolver(), address="127.0.0.1", port=0, logger=Quiet())
    port = udp.server.server_address[1]
    try:
        tcp = DNSServer(Resolver(), address="127.0.0.1", port=port, tcp=True, logger=Quiet())
        break
    except OSError:
        udp.server.server_close()
else:
    sys.exit("no port free for both UDP and TCP")
udp.start_thread()
tcp.start_thread()
print(f"listening on {port}", flush=True)
for line in sys.stdin:
    parts = line.split()
    if not parts:
        continue
    with lock:
        records[parts[0].lower().rstrip(".")] = [ipaddress.ip_address(p) for p in parts[1:]]
    print("ok", flush=True)
