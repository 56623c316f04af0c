#!/usr/bin/env python3
"""Rewrites a classic pcap file as pcapng: one section, one interface with nanosecond resolution
(if_tsresol 9), an enhanced packet block per record, and an interface statistics block with the
given drop count. Used for fixtures, so the pcapng path is tested on real traffic without
depending on Wireshark's tools."""

import argparse
import struct


def block(btype, body):
    body += b"\0" * (-len(body) % 4)
    n = len(body) + 12
    return struct.pack("<II", btype, n) + body + struct.pack("<I", n)


def option(code, value):
    return struct.pack("<HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--drops", type=int, default=0)
    args = ap.parse_args()
    data = open(args.src, "rb").read()
    le = data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1")
    nanos = data[:4] in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    e = "<" if le else ">"
    snaplen, linktype = struct.unpack(e + "II", data[16:24])
    out = [block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))]
    out.append(block(1, struct.pack("<HHI", linktype & 0xFFFF, 0, snaplen) + option(9, b"\x09") + option(0, b"")))
    at, last = 24, 0
    while at + 16 <= len(data):
        sec, frac, caplen, origlen = struct.unpack(e + "IIII", data[at:at + 16])
        ts = sec * 1_000_000_000 + (frac if nanos else frac * 1000)
        last = ts
        out.append(block(6, struct.pack("<IIIII", 0, ts >> 32, ts & 0xFFFFFFFF, caplen, origlen)
                         + data[at + 16:at + 16 + caplen]))
        at += 16 + caplen
    out.append(block(5, struct.pack("<III", 0, last >> 32, last & 0xFFFFFFFF)
                     + option(5, struct.pack("<Q", args.drops)) + option(0, b"")))
    open(args.dst, "wb").write(b"".join(out))


if __name__ == "__main__":
    main()
