"""`netblame flows` end to end: committed fixtures, bad input, tables, and a differential test
against tcptrace on fresh captures with known loss."""

import struct
import subprocess

import pytest
from conftest import FIXTURES, by_direction, flows_json, need_root, need_tool, truth_of

TCPTRACE_FIXTURES = ["lo-loss.pcap", "lo-loss.pcapng", "veth.pcap", "veth-vlan.pcap", "veth-v6-qinq.pcap"]


def assert_matches_tcptrace(doc, reference, truth):
    rows = by_direction(doc)
    assert set(rows) == set(reference), "same connections and directions as tcptrace"
    for key, ref in reference.items():
        row = rows[key]
        for col in ("packets", "data_packets", "retransmitted_packets"):
            assert row[col] == ref[col], f"{key} {col}: netblame {row[col]}, tcptrace {ref[col]}"
    rexmit_bytes = sum(r["retransmitted_bytes"] for r in doc["flows"])
    assert rexmit_bytes >= truth["dropped_payload"], "every payload byte dropped after capture was resent"


@pytest.mark.parametrize("name", TCPTRACE_FIXTURES)
def test_fixture_matches_tcptrace_and_ground_truth(netblame, name):
    capture = FIXTURES / name
    truth = truth_of(capture)
    doc = flows_json(netblame, capture)
    assert truth["dropped_packets"] > 0, "the fixture has loss"
    assert_matches_tcptrace(doc, truth["tcptrace"], truth)
    assert doc["capture"]["undecodable"] == 0 and doc["capture"]["truncated"] == 0
    assert all(r["aligned"] for r in doc["flows"])
    assert {r["gaps"] for r in doc["flows"]} == {0}, "capture is complete: no holes"


def test_linux_cooked_v2_ipv6(netblame):
    capture = FIXTURES / "any-v6-sll2.pcap"
    truth = truth_of(capture)
    doc = flows_json(netblame, capture)
    assert len(doc["flows"]) == 2 * truth["conns"]
    assert doc["capture"]["tcp_packets"] == doc["capture"]["frames"] == truth["captured_packets"]
    assert sum(r["retransmitted_bytes"] for r in doc["flows"]) >= truth["dropped_payload"] > 0
    assert all(r["src_addr"] == "::1" for r in doc["flows"])
    assert doc["capture"]["capture_duplicates"] == 0


def test_pcapng_matches_pcap(netblame):
    a = flows_json(netblame, FIXTURES / "lo-loss.pcap")
    b = flows_json(netblame, FIXTURES / "lo-loss.pcapng")
    assert a["flows"] == b["flows"], "nanosecond timestamps and every count survive the format"
    assert b["capture"]["kernel_drops"] == 0 and a["capture"]["kernel_drops"] is None


def test_capture_cut_mid_record_is_analysed_with_a_warning(netblame):
    r = netblame("flows", FIXTURES / "lo-loss-cut.pcap")
    assert r.returncode == 0, r.stderr
    assert "ends inside a record at byte offset" in r.stderr and "lo-loss-cut.pcap" in r.stderr
    assert "2 TCP connections" in r.stdout and "file cut short" in r.stdout


def test_table_output_is_readable(netblame):
    r = netblame("flows", FIXTURES / "lo-loss.pcap")
    assert r.returncode == 0
    lines = r.stdout.splitlines()
    assert lines[0].endswith("2 TCP connections, 0 UDP flows")
    assert "a <-> b" in lines[2] and "rexmit" in lines[2]
    assert lines[-1].startswith("capture: ")


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty file"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "not a pcap or pcapng file"),
        (b"\xd4\xc3\xb2\xa1\x02\x00", "corrupt at byte offset 0"),
    ],
)
def test_bad_files_exit_1_naming_the_file(netblame, tmp_path, content, message):
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(content)
    r = netblame("flows", bad)
    assert r.returncode == 1
    assert message in r.stderr and str(bad) in r.stderr
    assert "panicked" not in r.stderr


def test_missing_file(netblame, tmp_path):
    r = netblame("flows", tmp_path / "nope.pcap")
    assert r.returncode == 1 and "nope.pcap" in r.stderr and "No such file" in r.stderr


def test_oversized_record_names_the_offset(netblame, tmp_path):
    data = bytearray((FIXTURES / "lo-loss.pcap").read_bytes())
    first_len = struct.unpack_from("<I", data, 24 + 8)[0]
    second = 24 + 16 + first_len
    struct.pack_into("<I", data, second + 8, 300_000)
    bad = tmp_path / "huge.pcap"
    bad.write_bytes(bytes(data))
    r = netblame("flows", bad)
    assert r.returncode == 1
    assert f"corrupt at byte offset {second}" in r.stderr and "256 KiB" in r.stderr


def test_usage_errors_exit_2(netblame):
    assert netblame().returncode == 2
    assert netblame("flows").returncode == 2
    assert netblame("flows", "--bogus", FIXTURES / "lo-loss.pcap").returncode == 2


def test_broken_pipe_is_quiet(netblame):
    from conftest import netblame_path

    p = subprocess.run(f"'{netblame_path()}' flows --json '{FIXTURES / 'lo-loss.pcap'}' | head -c 10",
                       shell=True, capture_output=True, text=True)
    assert p.returncode == 0 and p.stderr == ""


def test_csv_and_parquet_tables_load_in_pandas_and_polars(netblame, tmp_path):
    pd = pytest.importorskip("pandas")
    pl = pytest.importorskip("polars")
    r = netblame("flows", FIXTURES / "veth-vlan.pcap", "--csv", tmp_path / "csv", "--parquet", tmp_path / "pq")
    assert r.returncode == 0, r.stderr
    doc = flows_json(netblame, FIXTURES / "veth-vlan.pcap")
    required_flows = ("flow_id src_addr src_port dst_addr dst_port first_ts_ns last_ts_ns packets data_packets "
                      "payload_bytes retransmitted_packets retransmitted_bytes spurious_retransmissions "
                      "out_of_order_packets gaps zero_window_packets handshake_rtt_ns rtt_p50_ns rtt_p99_ns").split()
    required_packets = "ts_ns flow_id src_addr src_port dst_addr dst_port rel_seq rel_ack payload_len flags window class".split()
    for table, required, rows in (("flows", required_flows, len(doc["flows"])),
                                  ("packets", required_packets, doc["capture"]["frames"])):
        for frame in (pd.read_csv(tmp_path / "csv" / f"{table}.csv"),
                      pd.read_parquet(tmp_path / "pq" / f"{table}.parquet"),
                      pl.read_csv(tmp_path / "csv" / f"{table}.csv").to_pandas(),
                      pl.read_parquet(tmp_path / "pq" / f"{table}.parquet").to_pandas()):
            assert [c for c in required if c not in frame.columns] == []
            assert len(frame) == rows
    flows = pl.read_parquet(tmp_path / "pq" / "flows.parquet")
    assert flows["retransmitted_packets"].sum() == sum(r["retransmitted_packets"] for r in doc["flows"])
    packets = pl.read_parquet(tmp_path / "pq" / "packets.parquet")
    assert packets.filter(pl.col("class").is_in(["retransmission", "spurious-retransmission"])).height == \
        flows["retransmitted_packets"].sum()
    assert packets["ts_ns"].min() > 1_700_000_000 * 10**9, "nanosecond epoch timestamps"


@pytest.mark.parametrize("link, ipv6", [("lo", False), ("veth", True)])
def test_differential_against_tcptrace_on_fresh_capture(netblame, tmp_path, link, ipv6):
    need_root("the testbed (network namespaces, nftables, capture)")
    need_tool("tcptrace")
    need_tool("tcpdump")
    need_tool("nft")
    import tcptrace_ref
    import testbed

    for seed in range(1, 6):
        out = tmp_path / f"{link}-{seed}.pcap"
        argv = ["--out", str(out), "--link", link, "--conns", "3", "--rounds", "40", "--loss", "0.03",
                "--seed", str(seed)] + (["--ipv6"] if ipv6 else [])
        truth = testbed.run(testbed.parser().parse_args(argv))
        if truth["dropped_packets"] > 0:
            break
    assert truth["dropped_packets"] > 0, "nftables dropped nothing in five runs"
    assert truth["kernel_drops"] == 0
    doc = flows_json(netblame, out)
    assert doc["capture"]["frames"] == truth["captured_packets"]
    assert_matches_tcptrace(doc, tcptrace_ref.reference(str(out)), truth)
