"""Headless Chromium driven over the DevTools protocol on a pipe (--remote-debugging-pipe): no
WebDriver, no websocket library. Loads a page, records console errors, exceptions and network
requests, evaluates scripts and takes screenshots.

    with Browser() as b:
        page = b.load(Path("report.html"))
        page.errors, page.requests, page.load_ms
        b.evaluate("document.title")
        b.screenshot(Path("shot.png"))
"""

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

# The flags that keep Chromium from reaching out on its own (a closed network refuses it, and
# the test counts every request the page makes).
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--mute-audio",
    "--remote-debugging-pipe",
]


def chromium_path():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class Loaded:
    url: str
    load_ms: float
    errors: list = field(default_factory=list)
    requests: list = field(default_factory=list)


class Browser:
    def __init__(self, width=1280, height=900, timeout=60):
        self.width, self.height, self.timeout = width, height, timeout

    def __enter__(self):
        path = chromium_path()
        if path is None:
            raise RuntimeError("chromium is not installed (apt-get install chromium)")
        self.profile = tempfile.mkdtemp(prefix="netblame-chromium-")
        # Chromium reads commands from fd 3 and writes answers to fd 4.
        to_browser_r, self.to_browser = os.pipe()
        self.from_browser, from_browser_w = os.pipe()
        # bash moves the pipes onto 3 and 4, whatever numbers they got here.
        r, w = to_browser_r, from_browser_w
        # Move w out of the way first (it may be 3), then put both in place and close the rest.
        moves = f"5>&{w} 3<&{r} 4>&5 5>&-" if w in (3,) else f"3<&{r} 4>&{w}"
        closes = " ".join(f"{fd}>&-" for fd in (r, w) if fd not in (3, 4, 5))
        self.proc = subprocess.Popen(
            ["bash", "-c", f'exec "$0" "$@" {moves} {closes}', path, *FLAGS,
             f"--user-data-dir={self.profile}", f"--window-size={self.width},{self.height}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._log(),
            pass_fds=(r, w))
        os.close(to_browser_r)
        os.close(from_browser_w)
        self.buf = b""
        self.next_id = 0
        self.events = []
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable", session=True)
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": False},
                  session=True)
        return self

    def _log(self):
        self.log_path = Path(self.profile) / "chromium.log"
        return open(self.log_path, "wb")

    def log(self):
        """What chromium printed (for a failing test's message)."""
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def __exit__(self, *exc):
        try:
            self.call("Browser.close")
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self.to_browser)
        os.close(self.from_browser)
        shutil.rmtree(self.profile, ignore_errors=True)

    def _read_message(self, deadline):
        while b"\0" not in self.buf:
            if time.monotonic() > deadline:
                raise TimeoutError("no answer from chromium")
            chunk = os.read(self.from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError(f"chromium closed its debugging pipe:\n{self.log()}")
            self.buf += chunk
        msg, self.buf = self.buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method, params=None, session=False):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = self.session
        os.write(self.to_browser, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            m = self._read_message(deadline)
            if m.get("id") == self.next_id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
            if "method" in m:
                self.events.append(m)

    def wait_for(self, method, deadline):
        while True:
            for i, m in enumerate(self.events):
                if m.get("method") == method:
                    return self.events.pop(i)
            self.events.append(self._read_message(deadline))

    def load(self, path: Path) -> Loaded:
        url = Path(path).resolve().as_uri()
        self.events.clear()
        start = time.monotonic()
        self.call("Page.navigate", {"url": url}, session=True)
        self.wait_for("Page.loadEventFired", time.monotonic() + self.timeout)
        load_ms = (time.monotonic() - start) * 1000
        # Let late console messages and requests arrive.
        self.evaluate("new Promise(r => setTimeout(r, 300))", await_promise=True)
        page = Loaded(url=url, load_ms=load_ms)
        for m in self.events:
            method, p = m.get("method"), m.get("params", {})
            if method == "Runtime.exceptionThrown":
                page.errors.append(p["exceptionDetails"].get("text", "exception"))
            elif method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                page.errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in p["args"]))
            elif method == "Log.entryAdded" and p["entry"].get("level") == "error":
                page.errors.append(p["entry"].get("text", ""))
            elif method == "Network.requestWillBeSent":
                page.requests.append(p["request"]["url"])
        return page

    def evaluate(self, expression, await_promise=False):
        r = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                           "awaitPromise": await_promise}, session=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"script failed: {r['exceptionDetails']}")
        return r["result"].get("value")

    def screenshot(self, path: Path, full_page=False, clip_height=None):
        params = {"format": "png"}
        if full_page or clip_height:
            height = clip_height or self.evaluate("document.documentElement.scrollHeight")
            params["clip"] = {"x": 0, "y": 0, "width": self.width, "height": height, "scale": 1}
            params["captureBeyondViewport"] = True
        data = self.call("Page.captureScreenshot", params, session=True)["data"]
        Path(path).write_bytes(base64.b64decode(data))
