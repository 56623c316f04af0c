#!/usr/bin/env python3
"""Real captures with known loss, from the Linux TCP stack in private network namespaces.

A workload (workload.py) runs inside a namespace made for the run; tcpdump (libpcap) captures its
headers in immediate mode; nftables drops a chosen fraction of data segments at the *input* hook,
after libpcap has seen them, so the capture holds each lost segment and its retransmission. The
nftables counter is the ground truth: packets and bytes dropped after capture. Only TCP segments
with a 32-byte header (timestamps, no SACK blocks) and some payload are eligible, so the payload
dropped is exactly `bytes - packets * (IP header + 32)`.

Topologies (--link):
  lo     one namespace, loopback at MTU 1500 (LINKTYPE_EN10MB with zero MACs on Linux lo)
  any    one namespace, loopback captured on the "any" pseudo-interface (LINUX_SLL2)
  veth   two namespaces joined by a veth pair (Ethernet)

802.1Q and QinQ captures are veth captures with tags inserted by retag.py: the kernels here have
no 8021q support to make them for real.

Needs root. Addresses are loopback or documentation prefixes inside namespaces this script
creates and deletes; nothing leaves the machine.

Usage: testbed.py --out capture.pcap [--truth truth.json] [options]
"""

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
TCP_HEADER = 32  # Linux data segments: 20 bytes + timestamps option (12)


def sh(*cmd, check=True, **kw):
    return subprocess.run(cmd, check=check, text=True, capture_output=True, **kw)


def ns_exec(ns, *cmd, **kw):
    return sh("ip", "netns", "exec", ns, *cmd, **kw)


def nft_rules(port, loss, min_len):
    """Drop rules for the input hook: a fraction `loss` of eligible data segments each way."""
    threshold = int(round(loss * 1_000_000))
    rules = []
    for match in (f"tcp dport {port}", f"tcp sport {port}"):
        rules.append(
            f"add rule inet netblame input {match} tcp doff 8 meta length > {min_len} "
            f"numgen random mod 1000000 < {threshold} counter drop"
        )
    return "\n".join(
        ["add table inet netblame",
         "add chain inet netblame input { type filter hook input priority 0; policy accept; }"]
        + rules) + "\n"


def read_counters(ns):
    out = ns_exec(ns, "nft", "-j", "list", "table", "inet", "netblame").stdout
    packets = nbytes = 0
    for item in json.loads(out)["nftables"]:
        rule = item.get("rule")
        if not rule:
            continue
        for expr in rule["expr"]:
            if "counter" in expr:
                packets += expr["counter"]["packets"]
                nbytes += expr["counter"]["bytes"]
    return packets, nbytes


class Testbed:
    def __init__(self, link, ipv6):
        tag = uuid.uuid4().hex[:8]
        self.link = link
        self.ipv6 = ipv6
        self.server_ns = f"nbs-{tag}"
        self.client_ns = self.server_ns if link in ("lo", "any") else f"nbc-{tag}"
        self.created = []

    def __enter__(self):
        try:
            return self._setup()
        except BaseException:
            # __exit__ does not run when __enter__ fails: remove what was made.
            self.__exit__(None, None, None)
            raise

    def _setup(self):
        for ns in dict.fromkeys([self.server_ns, self.client_ns]):
            sh("ip", "netns", "add", ns)
            self.created.append(ns)
            ns_exec(ns, "ip", "link", "set", "lo", "up")
        if self.link in ("lo", "any"):
            ns_exec(self.server_ns, "ip", "link", "set", "lo", "mtu", "1500")
            self.server_addr = "::1" if self.ipv6 else "127.0.0.1"
            self.capture_iface = self.link
            return self
        s, c = self.server_ns, self.client_ns
        sh("ip", "link", "add", "nbveth0", "netns", s, "type", "veth", "peer", "name", "nbveth1", "netns", c)
        for ns, dev in ((s, "nbveth0"), (c, "nbveth1")):
            ns_exec(ns, "ip", "link", "set", dev, "up")
            # Offloads would show GRO super-segments; keep them, as on a real host.
        addrs = {s: ("192.0.2.1/24", "2001:db8::1/64"), c: ("192.0.2.2/24", "2001:db8::2/64")}
        for ns, dev in ((s, "nbveth0"), (c, "nbveth1")):
            top = dev
            ns_exec(ns, "ip", "link", "set", top, "up")
            v4, v6 = addrs[ns]
            ns_exec(ns, "ip", "addr", "add", v4, "dev", top)
            ns_exec(ns, "ip", "-6", "addr", "add", v6, "dev", top, "nodad")
        self.server_addr = "2001:db8::1" if self.ipv6 else "192.0.2.1"
        self.capture_iface = "nbveth0"
        return self

    def __exit__(self, *exc):
        for ns in self.created:
            sh("ip", "netns", "del", ns, check=False)


def run_workload(tb, args):
    common = [sys.executable, os.path.join(HERE, "workload.py"),
              "--addr", tb.server_addr, "--port", str(args.port),
              "--conns", str(args.conns), "--rounds", str(args.rounds),
              "--min-size", str(args.min_size), "--max-size", str(args.max_size),
              "--seed", str(args.seed), *(["--nodelay"] if args.nodelay else [])]
    if tb.server_ns == tb.client_ns:
        wl = ns_exec(tb.client_ns, *common, check=False, timeout=args.timeout)
        if wl.returncode != 0:
            raise RuntimeError(f"workload failed: {wl.stdout}{wl.stderr}")
        return json.loads(wl.stdout)
    server = subprocess.Popen(["ip", "netns", "exec", tb.server_ns, *common, "--role", "server"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        if server.stdout.readline().strip() != "ready":
            raise RuntimeError(f"workload server did not start: {server.stderr.read()}")
        client = ns_exec(tb.client_ns, *common, "--role", "client", check=False, timeout=args.timeout)
        out, err = server.communicate(timeout=args.timeout)
    finally:
        if server.poll() is None:
            server.kill()
    if client.returncode != 0 or server.returncode != 0:
        raise RuntimeError(f"workload failed: {client.stdout}{client.stderr}{out}{err}")
    c, s = json.loads(client.stdout), json.loads(out)
    totals = {k: c[k] + s[k] for k in ("client_sent", "client_received", "server_sent", "server_received")}
    if totals["client_sent"] != totals["server_received"] or totals["server_sent"] != totals["client_received"]:
        raise RuntimeError(f"workload byte counts disagree: {totals}")
    return dict(totals, errors=[])


def run(args):
    with Testbed(args.link, args.ipv6) as tb:
        min_len = 120
        for ns in dict.fromkeys([tb.server_ns, tb.client_ns]):
            ns_exec(ns, "nft", "-f", "-", input=nft_rules(args.port, args.loss, min_len))
        cmd = ["ip", "netns", "exec", tb.server_ns, "tcpdump", "-i", tb.capture_iface, "-n",
               "-s", str(args.snaplen), "-B", "65536", "--immediate-mode",
               "--time-stamp-precision=nano", "-w", args.out]
        if args.link == "any":
            cmd += ["-y", "LINUX_SLL2"]
        cmd += [f"tcp port {args.port}"]
        dump = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
        # Wait until the capture is live, so no packet of the workload is missed.
        seen = []
        while not any("listening on" in s for s in seen):
            line = dump.stderr.readline()
            if not line:
                dump.kill()
                raise RuntimeError("tcpdump did not start: " + "".join(seen))
            seen.append(line)
        try:
            workload = run_workload(tb, args)
        finally:
            # Immediate mode delivers each packet at once; a short pause lets the last ones in.
            time.sleep(0.5)
            dump.send_signal(signal.SIGINT)
            _, err = dump.communicate(timeout=60)
        m = re.search(r"(\d+) packets? dropped by kernel", err)
        kernel_drops = int(m.group(1)) if m else None
        m = re.search(r"(\d+) packets? captured", err)
        captured = int(m.group(1)) if m else None
        packets = nbytes = 0
        for ns in dict.fromkeys([tb.server_ns, tb.client_ns]):
            p, b = read_counters(ns)
            packets += p
            nbytes += b
    ip_header = 40 if args.ipv6 else 20
    truth = {
        "link": args.link,
        "ipv6": args.ipv6,
        "port": args.port,
        "conns": args.conns,
        "loss": args.loss,
        "snaplen": args.snaplen,
        "captured_packets": captured,
        "kernel_drops": kernel_drops,
        "dropped_packets": packets,
        "dropped_bytes": nbytes,
        "dropped_payload": nbytes - packets * (ip_header + TCP_HEADER),
        "workload": workload,
    }
    if args.truth:
        with open(args.truth, "w") as f:
            json.dump(truth, f, indent=2)
            f.write("\n")
    return truth


def parser():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--truth")
    ap.add_argument("--link", choices=["lo", "any", "veth"], default="lo")
    ap.add_argument("--ipv6", action="store_true")
    ap.add_argument("--port", type=int, default=5001)
    ap.add_argument("--conns", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--min-size", type=int, default=200)
    ap.add_argument("--max-size", type=int, default=20000)
    ap.add_argument("--loss", type=float, default=0.02, help="fraction of data segments dropped")
    ap.add_argument("--snaplen", type=int, default=128)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--nodelay", action="store_true")
    ap.add_argument("--timeout", type=float, default=600)
    return ap


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("testbed.py needs root (network namespaces, nftables, capture)")
    print(json.dumps(run(parser().parse_args()), indent=2))
