#!/usr/bin/env python3
"""Live capture under load: a loopback bulk transfer of --gigabytes GB inside a private network
namespace (lo at MTU 1500), captured at the default snaplen with the same filter by
`netblame capture` and by tcpdump (its defaults, and with --immediate-mode as netblame uses), alternating, --rounds rounds each, in one run. Reports packets
captured, packets/s and Gbit/s of the transfer, and kernel drops. Needs root and tcpdump.
"""

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SNAPLEN = 160
PORT = 5201

TRANSFER = r"""
import socket, sys, threading, time
total = int(sys.argv[1]); chunk = int(sys.argv[2])
srv = socket.create_server(("127.0.0.1", %d))
got = [0]
def sink():
    c, _ = srv.accept()
    buf = bytearray(1 << 20)
    while (n := c.recv_into(buf)):
        got[0] += n
t = threading.Thread(target=sink); t.start()
s = socket.create_connection(("127.0.0.1", %d))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
data = b"b" * chunk
start = time.perf_counter()
sent = 0
while sent < total:
    s.sendall(data); sent += chunk
s.close(); t.join()
print(time.perf_counter() - start, got[0])
""" % (PORT, PORT)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--gigabytes", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--chunk", type=int, default=16384, help="bytes per send (TCP_NODELAY): smaller, more packets")
    ap.add_argument("--netblame", default=os.path.join(ROOT, "target", "release", "netblame"))
    args = ap.parse_args()
    total = int(args.gigabytes * 1e9)
    ns = f"nbb-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    rows = []
    try:
        subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up", "mtu", "1500"], check=True)
        with tempfile.TemporaryDirectory() as tmp:
            for r in range(args.rounds):
                for tool in ("netblame", "tcpdump", "tcpdump-immediate"):
                    out = os.path.join(tmp, f"{tool}-{r}.pcap")
                    if tool == "netblame":
                        cmd = [args.netblame, "capture", "-w", out, "--port", str(PORT)]
                    else:
                        cmd = ["tcpdump", "-i", "lo", "-n", "-s", str(SNAPLEN), "-w", out,
                               *(["--immediate-mode"] if tool.endswith("immediate") else []),
                               f"(tcp or udp) and (port {PORT})"]
                    p = subprocess.Popen(["ip", "netns", "exec", ns, *cmd], stderr=subprocess.PIPE, text=True)
                    while True:
                        line = p.stderr.readline()
                        if not line or "capturing on" in line or "listening on" in line:
                            break
                    res = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", TRANSFER, str(total),
                                          str(args.chunk)],
                                         check=True, capture_output=True, text=True).stdout.split()
                    seconds, received = float(res[0]), int(res[1])
                    time.sleep(0.5)
                    p.send_signal(signal.SIGINT)
                    _, err = p.communicate(timeout=120)
                    if tool == "netblame":
                        captured = int(re.search(r"(\d+) packets captured", err).group(1))
                        drops = int(re.search(r"(\d+) dropped by the kernel", err).group(1))
                    else:
                        captured = int(re.search(r"(\d+) packets captured", err).group(1))
                        drops = int(re.search(r"(\d+) packets dropped by kernel", err).group(1))
                    rows.append((tool, r + 1, captured, drops, seconds, received))
                    print(f"  {tool:<17} round {r + 1}: {captured} packets, {drops} dropped, "
                          f"{received * 8 / seconds / 1e9:.1f} Gbit/s, {captured / seconds / 1e3:.0f} k packets/s",
                          flush=True)
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    print()
    print(f"{args.gigabytes} GB loopback transfer per run in {args.chunk}-byte sends, snaplen {SNAPLEN}, filter '(tcp or udp) and (port {PORT})'")
    print("| tool | round | packets captured | kernel drops | transfer Gbit/s | packets/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for tool, r, captured, drops, seconds, received in rows:
        print(f"| {tool} | {r} | {captured} | {drops} | {received * 8 / seconds / 1e9:.1f} | "
              f"{captured / seconds / 1e3:.0f} k |")


if __name__ == "__main__":
    main()
