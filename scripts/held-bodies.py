#!/usr/bin/env python3
"""Memory of `dispatcher serve` while clients hold unsigned webhook bodies open (docs/benchmarks.md,
"Webhook bodies held to a budget").

Each of N connections sends the headers of a POST /webhook with a well-formed but wrong signature
and a 3.4 MB body, then keeps the connection open. Prints serve's resident memory before, while
they are held, and after they close.

    scripts/held-bodies.py PORT N SERVE_PID
"""
import socket
import sys
import time

port, n, pid = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
size = 3_400_000


def rss():
    with open(f"/proc/{pid}/status") as status:
        return next(line.split(":", 1)[1].strip() for line in status if line.startswith("VmRSS"))


print("before", rss())
held = []
body = b"a" * size
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nX-Hub-Signature-256: sha256=%s\r\n\r\n"
              % (size + 10, b"0" * 64))
    try:
        s.sendall(body)
    except OSError:
        pass  # refused (503) and closed: counted as the budget's
    held.append(s)
time.sleep(2)
print(f"holding {n} x {size:,} unsigned bytes:", rss())
for s in held:
    s.close()
time.sleep(2)
print("after close", rss())
