"""netblame's pytest plugin: each test phase's start, end and outcome, for `netblame run`.

`netblame run` makes it available to the pytest it runs: it writes this file into the run
directory's python/ folder, appends that folder to PYTHONPATH and `netblame_pytest` to
PYTEST_PLUGINS, and removes the file when the command ends. A pytest run without netblame never
sees it. Turn it off with `netblame run --no-pytest-plugin`, or in one pytest with
`-p no:netblame_pytest`.

It writes one JSON line per phase (setup, call, teardown) into a log of its own,
$NETBLAME_EVENTS_DIR/pytest-<pid>.phases, in the process that runs the test (an xdist worker,
not the controller). A pytest that a recording pytest started (pytester's runs, a test that
runs pytest; told by NETBLAME_PYTEST_OUTER in its environment) records nothing, its xdist
workers excepted: its tests are a part of the outer test. The times are pytest's own (CallInfo: what --durations shows), on
CLOCK_REALTIME like the socket events; the outcome is the final report's, after xfail.
"""

import json
import os

import pytest

# The config being recorded: a pytest run inside a test (pytester's inline runs) is not a
# phase of the outer run, and is left out.
_recording = None

# Set in the environment of a recording pytest, for the processes it starts.
_OUTER = "NETBLAME_PYTEST_OUTER"


class _Recorder:
    def __init__(self, events_dir):
        self.events_dir = events_dir
        self.fd = -1
        self.pid = None
        self.failed = False

    def _write(self, line):
        if self.failed:
            return
        try:
            if self.pid != os.getpid():
                # First record, or a forked child running tests (pytest-forked): a log each.
                self.pid = os.getpid()
                path = os.path.join(self.events_dir, "pytest-%d.phases" % self.pid)
                self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
            os.write(self.fd, line)
        except OSError:
            # A full disk or a removed folder must not fail the user's tests; the analysis
            # says which tests have no record.
            self.failed = True

    @pytest.hookimpl(hookwrapper=True, tryfirst=True)
    def pytest_runtest_makereport(self, item, call):
        # Outermost wrapper: what comes back is the final report (xfail applied).
        result = yield
        report = result.get_result()
        if hasattr(report, "wasxfail"):
            outcome = "xfailed" if report.skipped else "xpassed"
        elif report.failed:
            outcome = "failed" if call.when == "call" else "error"
        else:
            outcome = report.outcome
        start_ns = int(call.start * 1e9)
        record = {
            "test": item.nodeid,
            "phase": call.when,
            "outcome": outcome,
            "start_ns": start_ns,
            "end_ns": start_ns + int(call.duration * 1e9),
            "pid": os.getpid(),
            "worker": os.environ.get("PYTEST_XDIST_WORKER"),
        }
        self._write((json.dumps(record) + "\n").encode())

    def close(self):
        if self.fd >= 0 and self.pid == os.getpid():
            os.close(self.fd)
        self.fd = -1


def pytest_configure(config):
    global _recording
    events_dir = os.environ.get("NETBLAME_EVENTS_DIR")
    if _recording is not None or not events_dir:
        return
    # A pytest started by a recording one is a part of one of its tests (pytester's runs, a test
    # that runs pytest), unless it is one of its pytest-xdist workers (`workerinput`).
    if _OUTER in os.environ and not hasattr(config, "workerinput"):
        return
    os.environ[_OUTER] = str(os.getpid())
    _recording = config
    # Absolute now: a test may change the working directory (pytester does).
    recorder = _Recorder(os.path.abspath(events_dir))
    config.pluginmanager.register(recorder, "netblame_pytest_recorder")


def pytest_unconfigure(config):
    global _recording
    if config is _recording:
        recorder = config.pluginmanager.get_plugin("netblame_pytest_recorder")
        if recorder is not None:
            recorder.close()
        os.environ.pop(_OUTER, None)
        _recording = None
