#!/usr/bin/env python3
"""Regenerates the committed fixtures (`just fixtures`): small real captures with known loss, each
with `NAME.truth.json` beside it holding the nftables ground truth and tcptrace's per-direction
counts (taken on the untagged original for the re-tagged VLAN captures, which tcptrace cannot
read when QinQ; tcptrace cannot read Linux cooked v2 at all, so that one has none)."""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import tcptrace_ref  # noqa: E402
import testbed  # noqa: E402


def capture(tmp, name, **kw):
    out = os.path.join(tmp, name + ".pcap")
    argv = ["--out", out, "--conns", "2", "--rounds", "20", "--loss", "0.05"]
    for k, v in kw.items():
        flag = "--" + k.replace("_", "-")
        argv += [flag] if v is True else [flag, str(v)]
    truth = testbed.run(testbed.parser().parse_args(argv))
    return out, truth


def save(dest, name, src, truth, ref):
    shutil.copy(src, os.path.join(dest, name))
    truth = dict(truth, tcptrace=ref)
    with open(os.path.join(dest, name.rsplit(".", 1)[0] + ".truth.json"), "w") as f:
        json.dump(truth, f, indent=2)
        f.write("\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dest", default=os.path.join(HERE, "..", "..", "fixtures"))
    args = ap.parse_args()
    os.makedirs(args.dest, exist_ok=True)
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        lo, truth = capture(tmp, "lo", seed=1)
        ref = tcptrace_ref.reference(lo)
        save(args.dest, "lo-loss.pcap", lo, truth, ref)
        ng = os.path.join(tmp, "lo-loss.pcapng")
        subprocess.run([py, os.path.join(HERE, "topcapng.py"), lo, ng], check=True)
        save(args.dest, "lo-loss.pcapng", ng, truth, ref)
        # A capture killed mid-record: keep 60% of the file, cut inside a record.
        data = open(lo, "rb").read()
        cut = os.path.join(tmp, "lo-loss-cut.pcap")
        open(cut, "wb").write(data[: int(len(data) * 0.6)])
        save(args.dest, "lo-loss-cut.pcap", cut, dict(truth, cut_at=int(len(data) * 0.6)), None)

        any6, truth = capture(tmp, "any6", link="any", ipv6=True, seed=2)
        save(args.dest, "any-v6-sll2.pcap", any6, truth, None)

        veth, truth = capture(tmp, "veth", link="veth", seed=3)
        ref = tcptrace_ref.reference(veth)
        save(args.dest, "veth.pcap", veth, truth, ref)
        vlan = os.path.join(tmp, "vlan.pcap")
        subprocess.run([py, os.path.join(HERE, "retag.py"), veth, vlan, "--vlan", "100"], check=True)
        save(args.dest, "veth-vlan.pcap", vlan, dict(truth, retagged="802.1Q 100"), ref)

        veth6, truth = capture(tmp, "veth6", link="veth", ipv6=True, seed=4)
        ref = tcptrace_ref.reference(veth6)
        qinq = os.path.join(tmp, "qinq.pcap")
        subprocess.run([py, os.path.join(HERE, "retag.py"), veth6, qinq, "--vlan", "100", "--qinq", "200"],
                       check=True)
        save(args.dest, "veth-v6-qinq.pcap", qinq, dict(truth, retagged="802.1ad 200 / 802.1Q 100"), ref)
    for name in sorted(os.listdir(args.dest)):
        print(f"{os.path.getsize(os.path.join(args.dest, name)):>8}  fixtures/{name}")


if __name__ == "__main__":
    main()
