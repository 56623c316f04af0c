#!/usr/bin/env python3
"""Runs `tcptrace -l -n` on a capture and returns per-direction counts keyed by
"src_addr:port>dst_addr:port": actual data pkts, rexmt data pkts, rexmt data bytes, outoforder pkts.
"""

import ipaddress
import json
import re
import subprocess
import sys

FIELDS = {
    "actual data pkts": "data_packets",
    "rexmt data pkts": "retransmitted_packets",
    "rexmt data bytes": "rexmt_data_bytes",
    "outoforder pkts": "out_of_order_packets",
    "total packets": "packets",
}


def endpoint(text):
    # tcptrace prints IPv6 endpoints as addr:port too; the port follows the last colon.
    addr, port = text.rsplit(":", 1)
    if addr.startswith(":") and not addr.startswith("::"):
        addr = ":" + addr  # tcptrace prints ::1 as ":0001"
    return f"{ipaddress.ip_address(addr)}:{int(port)}"


def reference(path):
    out = subprocess.run(["tcptrace", "-l", "-n", path], check=True, text=True, capture_output=True).stdout
    result = {}
    for block in re.split(r"\n={10,}\n", out):
        hosts = re.findall(r"host \w+:\s+(\S+)", block)
        if len(hosts) != 2:
            continue
        a, b = endpoint(hosts[0]), endpoint(hosts[1])
        ab, ba = {}, {}
        for line in block.splitlines():
            for label, key in FIELDS.items():
                m = re.match(rf"\s+{label}:\s+(\d+)\s+{label}:\s+(\d+)", line)
                if m:
                    ab[key], ba[key] = int(m.group(1)), int(m.group(2))
        result[f"{a}>{b}"] = ab
        result[f"{b}>{a}"] = ba
    return result


if __name__ == "__main__":
    json.dump(reference(sys.argv[1]), sys.stdout, indent=2)
    print()
