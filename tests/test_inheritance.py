"""The command gets nothing of netblame's: what `netblame run` (either backend) and `netblame demo`
hand the programs they start is exactly what a plain shell would hand them, as root and as the sudo
user. A C probe (tests/programs/inherit_probe.c) reports what it was given at exec; the same probe,
started the same way without netblame, is the reference."""

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest
from conftest import ROOT, need_root, need_tool, netblame_path

NOBODY = 65534
PROBE_SRC = ROOT / "tests" / "programs" / "inherit_probe.c"
HELPERS = ("tcpdump", "ip", "nft")
IP = shutil.which("ip") or "ip"
# Fields that must be the same as the reference whoever the command runs as.
SIGNAL_FIELDS = ("SigBlk", "SigIgn")
SAME_USER_FIELDS = ("Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")
ALWAYS_FIELDS = (*SIGNAL_FIELDS, "Umask", "NoNewPrivs", "Seccomp", "Cpus_allowed_list", "Nice", "Policy")


@pytest.fixture(scope="module")
def probe_dir():
    """The probe, built where any uid can run it, with helper names linked to it."""
    need_tool("gcc")
    d = Path(tempfile.mkdtemp(prefix="nb-inherit-"))
    os.chmod(d, 0o755)
    subprocess.run(["gcc", "-O1", "-Wall", "-o", str(d / "inherit_probe"), str(PROBE_SRC)], check=True)
    shims = d / "shims"
    shims.mkdir()
    for name in HELPERS:
        (shims / name).symlink_to(d / "inherit_probe")
    yield d
    shutil.rmtree(d, ignore_errors=True)


class Report:
    """A probe's report: descriptors by number (kind of file) and the status fields."""

    def __init__(self, text):
        self.fields, self.fds, self.packet_inodes = {}, {}, set()
        for line in text.splitlines():
            if line.startswith("fd "):
                _, fd, target = (line.split(" ", 2) + [""])[:3]
                self.fds[int(fd)] = target
            elif line.startswith("packet_inode "):
                self.packet_inodes.add(line.split()[1])
            elif line.startswith("open_packet_socket "):
                self.fields["open_packet_socket"] = line.split(" ", 1)[1]
            elif ":" in line:
                k, v = line.split(":", 1)
                self.fields[k] = v.strip()
        assert "SigIgn" in self.fields, text

    def kinds(self, above=-1):
        """Descriptor number -> kind of file (a pipe, a socket, or the path), for comparing runs."""
        def kind(t):
            for k in ("pipe:", "socket:", "anon_inode:"):
                if t.startswith(k):
                    return k.rstrip(":")
            return t
        return {fd: kind(t) for fd, t in self.fds.items() if fd > above}

    def packet_fds(self):
        return [fd for fd, t in self.fds.items()
                if t.startswith("socket:[") and t[len("socket:["):-1] in self.packet_inodes]


def given_state(ignore, block, fd):
    """The parent's side of exec: what a shell (or CI runner) might hand netblame."""
    def setup():
        os.setpgid(0, 0)
        for sig in ignore:
            signal.signal(sig, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_BLOCK, block)
    return dict(preexec_fn=setup, pass_fds=(fd,), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True, timeout=120)


# Two hands: a plain one, and one that ignores SIGHUP and SIGPIPE (nohup, a CI runner) and blocks
# SIGUSR1. Rust's runtime ignores SIGPIPE before main; the command must still get what was given.
HANDS = {
    "plain": ((), ()),
    "nohup-and-mask": ((signal.SIGHUP, signal.SIGPIPE), (signal.SIGUSR1,)),
}


@pytest.fixture
def given_file(tmp_path):
    f = open(tmp_path / "given-on-purpose", "w")
    yield f
    f.close()


def start(argv, netns, hand, given_file, env=None):
    ignore, block = HANDS[hand]
    # The real ip by its path: `env` may put the shims first on PATH.
    p = subprocess.Popen([IP, "netns", "exec", netns, *map(str, argv)], env=env,
                         **{k: v for k, v in given_state(ignore, block, given_file.fileno()).items()
                            if k != "timeout"})
    out, err = p.communicate(timeout=120)
    return p.pid, p.returncode, out, err


def reference(probe_dir, netns, hand, given_file):
    """The probe as the same parent starts it without netblame."""
    pid, code, out, err = start([probe_dir / "inherit_probe"], netns, hand, given_file)
    assert code == 0, err
    ref = Report(out)
    assert ref.fields["NSpgid"] == str(pid)
    assert given_file.fileno() in ref.fds, "the reference holds the descriptor given on purpose"
    return ref


def assert_handed_as_given(got, ref, pgid, what, stdio=True):
    if stdio:
        assert got.kinds() == ref.kinds(), f"{what}: descriptors differ from a plain start"
    else:
        # A helper's stdin/stdout/stderr are netblame's choice; above 2 only what was given.
        assert got.kinds(above=2) == ref.kinds(above=2), f"{what}: descriptors above 2 differ"
    assert got.packet_fds() == [], f"{what} holds the capture's packet socket"
    for k in ALWAYS_FIELDS:
        assert got.fields.get(k) == ref.fields.get(k), f"{what}: {k} {got.fields.get(k)} != {ref.fields.get(k)}"
    assert got.fields["NSpgid"] == str(pgid), f"{what} is not in netblame's process group"


@pytest.mark.parametrize("hand", sorted(HANDS))
@pytest.mark.parametrize("backend", ["libpcap", "tcpdump"])
@pytest.mark.parametrize("user", ["root", "sudo-user"])
def test_the_command_gets_what_a_plain_shell_gives_it_and_nothing_of_netblames(
        netns, tmp_path, probe_dir, given_file, hand, backend, user):
    need_root("a live capture and a second uid")
    if backend == "tcpdump":
        need_tool("tcpdump")
    ref = reference(probe_dir, netns, hand, given_file)
    helper_reports = tmp_path / "helpers"
    helper_reports.mkdir()
    env = dict(os.environ, PATH=f"{probe_dir / 'shims'}:{os.environ['PATH']}", NBPROBE_OUT=str(helper_reports),
               **{f"NBPROBE_REAL_{h}": shutil.which(h) or f"/nonexistent/{h}" for h in HELPERS})
    env.pop("NETBLAME_PRELOAD", None)
    base = Path(tempfile.mkdtemp(prefix="nb-inherit-run-"))
    try:
        if user == "sudo-user":
            os.chmod(base, 0o755)
            env.update(SUDO_UID=str(NOBODY), SUDO_GID=str(NOBODY))
        pid, code, out, err = start([netblame_path(), "run", "--backend", backend, "--out", base / "run", "--",
                                     probe_dir / "inherit_probe"], netns, hand, given_file, env=env)
        assert code == 0, err
        assert (base / "run" / "capture.pcap").exists()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    got = Report(out)
    assert got.packet_inodes, "the capture's packet socket is open while the command runs"
    assert_handed_as_given(got, ref, pid, "the command")
    if user == "root":
        for k in SAME_USER_FIELDS:
            assert got.fields[k] == ref.fields[k], k
    else:
        assert got.fields["Uid"].split() == [str(NOBODY)] * 4
        assert int(got.fields["CapEff"], 16) == 0 and int(got.fields["CapPrm"], 16) == 0
        assert got.fields["open_packet_socket"] != "ok", "the dropped user opened a packet socket"
    helpers = sorted(helper_reports.iterdir())
    if backend == "tcpdump":
        assert [h.name.split(".")[0] for h in helpers] == ["tcpdump"], helpers
        assert_handed_as_given(Report(helpers[0].read_text()), ref, pid, "tcpdump", stdio=False)


@pytest.mark.parametrize("hand", sorted(HANDS))
def test_the_demos_helpers_get_nothing_of_netblames(netns, tmp_path, probe_dir, given_file, hand):
    need_root("the demo's network namespace and capture")
    need_tool("nft")
    ref = reference(probe_dir, netns, hand, given_file)
    helper_reports = tmp_path / "helpers"
    helper_reports.mkdir()
    env = dict(os.environ, PATH=f"{probe_dir / 'shims'}:{os.environ['PATH']}", NBPROBE_OUT=str(helper_reports),
               **{f"NBPROBE_REAL_{h}": shutil.which(h) or f"/nonexistent/{h}" for h in HELPERS})
    pid, code, out, err = start([netblame_path(), "demo", "--out", tmp_path / "demo"], netns, hand, given_file,
                                env=env)
    assert code == 0, err
    assert "nftables dropped 1 packet" in err, err
    names = sorted({h.name.split(".")[0] for h in helper_reports.iterdir()})
    assert names == ["ip", "nft"], names
    for h in helper_reports.iterdir():
        assert_handed_as_given(Report(h.read_text()), ref, pid, h.name, stdio=False)


@pytest.mark.parametrize("hand", sorted(HANDS))
def test_a_broken_pipe_ends_a_program_as_it_would_without_netblame(netns, tmp_path, given_file, hand):
    """How netblame could change a suite's outcome: given SIGPIPE ignored (nohup, a CI runner
    started from Python), the command got it back at its default, so a writer into a closed pipe
    died of SIGPIPE (141) instead of seeing EPIPE (and exiting 1, as `yes` does)."""
    need_root("a live capture")
    bash = shutil.which("bash")
    script = "yes | head -n1 >/dev/null; echo ${PIPESTATUS[0]}"
    _, code, direct, err = start([bash, "-c", script], netns, hand, given_file)
    assert code == 0, err
    expected = "1" if signal.SIGPIPE in HANDS[hand][0] else "141"
    assert direct.strip() == expected, "the reference"
    _, code, under, err = start([netblame_path(), "run", "--out", tmp_path / "run", "--", bash, "-c", script],
                                netns, hand, given_file)
    assert code == 0, err
    assert under.strip() == direct.strip(), "a broken pipe ends the program differently under netblame"
