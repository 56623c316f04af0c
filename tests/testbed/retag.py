#!/usr/bin/env python3
"""Inserts 802.1Q (and, with --qinq, an outer 802.1ad) tags into every frame of an Ethernet pcap.

Used to derive VLAN fixtures from real veth captures where the kernel lacks 8021q support. The
original lengths grow by the tag bytes, as they would on the wire. Classic pcap only.
"""

import argparse
import struct


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--vlan", type=int, default=100)
    ap.add_argument("--qinq", type=int, default=None, help="outer 802.1ad VLAN id")
    args = ap.parse_args()
    data = open(args.src, "rb").read()
    magic = data[:4]
    endian = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    header = bytearray(data[:24])
    snaplen, linktype = struct.unpack(endian + "II", header[16:24])
    assert linktype & 0xFFFF == 1, "Ethernet captures only"
    tags = b""
    if args.qinq is not None:
        tags += struct.pack("!HH", 0x88A8, args.qinq)
    tags += struct.pack("!HH", 0x8100, args.vlan)
    struct.pack_into(endian + "I", header, 16, snaplen + len(tags))
    out = [bytes(header)]
    at = 24
    while at + 16 <= len(data):
        sec, frac, caplen, origlen = struct.unpack(endian + "IIII", data[at:at + 16])
        frame = data[at + 16:at + 16 + caplen]
        at += 16 + caplen
        frame = frame[:12] + tags + frame[12:]
        out.append(struct.pack(endian + "IIII", sec, frac, len(frame), origlen + len(tags)) + frame)
    open(args.dst, "wb").write(b"".join(out))


if __name__ == "__main__":
    main()
