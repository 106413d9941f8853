#!/usr/bin/env python3
# A stand-in for systemd's $NOTIFY_SOCKET (tests/integration/systemd.test.mjs): binds a Unix
# datagram socket (a path, or "@name" for the abstract namespace) and prints one JSON line per
# datagram: {"state": "...", "accepts": [bool per TCP port given]}, where "accepts" says
# whether each loopback port accepted a connection at the moment the datagram arrived.
import json, socket, sys

addr, ports = sys.argv[1], [int(p) for p in sys.argv[2:]]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind('\0' + addr[1:] if addr.startswith('@') else addr)
print(json.dumps({"bound": addr}), flush=True)
while True:
    data = s.recv(65536).decode('utf-8', 'replace')
    accepts = []
    for p in ports:
        c = socket.socket()
        try:
            c.connect(('127.0.0.1', p))
            accepts.append(True)
        except OSError:
            accepts.append(False)
        finally:
            c.close()
    print(json.dumps({"state": data, "accepts": accepts}), flush=True)
