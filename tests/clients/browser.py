"""Loads a page in headless Chromium and waits until a JavaScript expression
is true in it, over the DevTools protocol on a pipe (Python's standard
library only). Fails on a page exception, a console error, a failed request
or a response of 400 or more, and when the deadline passes first.

Usage: browser.py URL EXPRESSION [--then EXPRESSION ...] [--ca CA.PEM] [--width 1280]
                  [--height 900] [--mobile] [--timeout 60] [--png out.png]
Each `--then` expression is waited for after the one before became true (an
expression may act on the page, e.g. click, once what it needs is there,
and return true). Prints the last expression's last value; exit 0 when
every expression became true with no errors, 1 otherwise (with what went
wrong on stderr)."""

import argparse
import base64
import hashlib
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time

CHROMIUM = os.environ.get("CHROMIUM", "/usr/lib/chromium/chromium")


def trust(ca):
    """Chromium flags that trust the CA whose certificate is at `ca` (the
    servers send it in their chain): its public key's SHA-256, pinned."""
    if not ca:
        return []
    pub = subprocess.run(["openssl", "x509", "-in", ca, "-pubkey", "-noout"],
                         check=True, capture_output=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "der"], input=pub,
                         check=True, capture_output=True).stdout
    spki = base64.b64encode(hashlib.sha256(der).digest()).decode()
    return ["--ignore-certificate-errors-spki-list=" + spki]


class Browser:
    """One headless Chromium speaking CDP over fds 3 (in) and 4 (out)."""

    def __init__(self, width, height, ca=None):
        self.profile = tempfile.mkdtemp(prefix="wasmos-browser-")
        cmd_r, self.cmd_w = os.pipe()
        self.out_r, out_w = os.pipe()

        def wire():
            # The child's fds 3 and 4 must be the pipe ends, whatever
            # numbers os.pipe() gave them.
            a, b = os.dup(cmd_r), os.dup(out_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        log = open(os.path.join(self.profile, "chromium.log"), "wb")
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", "--disable-extensions", "--disable-background-networking",
             "--user-data-dir=" + self.profile, "--remote-debugging-pipe",
             f"--window-size={width},{height}"] + trust(ca) + ["about:blank"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, preexec_fn=wire,
            close_fds=False, start_new_session=True,
            env=dict(os.environ, HOME=self.profile))
        os.close(cmd_r)
        os.close(out_w)
        self.buf = b""
        self.replies = {}
        self.next_id = 0
        self.events = []
        self.session = None

    def close(self):
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)

    def _read(self, timeout):
        ready, _, _ = select.select([self.out_r], [], [], max(0.0, timeout))
        if not ready:
            return
        chunk = os.read(self.out_r, 1 << 20)
        if not chunk:
            raise RuntimeError("chromium closed its pipe (it crashed?)")
        self.buf += chunk
        while b"\0" in self.buf:
            msg, self.buf = self.buf.split(b"\0", 1)
            m = json.loads(msg)
            if "id" in m:
                self.replies[m["id"]] = m
            else:
                self.events.append(m)

    def call(self, method, params=None, timeout=60.0):
        self.next_id += 1
        mid = self.next_id
        msg = {"id": mid, "method": method, "params": params or {}}
        if self.session and not method.startswith("Target."):
            msg["sessionId"] = self.session
        os.write(self.cmd_w, json.dumps(msg).encode() + b"\0")
        deadline = time.time() + timeout
        while mid not in self.replies:
            if time.time() > deadline:
                raise RuntimeError(f"chromium did not answer {method}")
            self._read(deadline - time.time())
        reply = self.replies.pop(mid)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})


def problems(events):
    out = []
    for e in events:
        m, p = e.get("method"), e.get("params", {})
        if m == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            out.append("exception: " + d.get("exception", {}).get("description", d.get("text", "")))
        elif m == "Runtime.consoleAPICalled" and p.get("type") == "error":
            out.append("console error: " + " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
        elif m == "Network.loadingFailed" and not p.get("canceled"):
            out.append("request failed: " + p.get("errorText", ""))
        elif m == "Network.responseReceived" and p.get("response", {}).get("status", 0) >= 400:
            r = p["response"]
            out.append(f"HTTP {r['status']} for {r['url']}")
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("expression")
    ap.add_argument("--then", action="append", default=[],
                    help="an expression to wait for after the previous one became true")
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=900)
    ap.add_argument("--mobile", action="store_true")
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--png")
    ap.add_argument("--ca", help="the cluster CA's certificate (PEM)")
    ap.add_argument("--session", help="a token to hold as the dashboard's session cookie")
    ap.add_argument("--expect-error", action="append", default=[],
                    help="a page error the test expects (a substring); others fail the run")
    a = ap.parse_args()
    b = Browser(a.width, a.height, a.ca)
    try:
        target = b.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        b.session = b.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Network", "Log"):
            b.call(domain + ".enable")
        # A page in the background paints no frames: screenshots would be stale.
        b.call("Page.bringToFront")
        b.call("Emulation.setDeviceMetricsOverride", {
            "width": a.width, "height": a.height, "deviceScaleFactor": 1, "mobile": a.mobile})
        if a.session:
            # As if logged in: the session cookie holds a token.
            b.call("Network.setCookie", {"name": "wasmos-session", "value": a.session, "url": a.url,
                                         "secure": True, "httpOnly": True, "sameSite": "Strict"})
        b.call("Page.navigate", {"url": a.url})
        value = None
        failed_step = None
        for step in [a.expression] + a.then:
            deadline = time.time() + a.timeout
            value = None
            while time.time() < deadline:
                r = b.call("Runtime.evaluate", {"expression": step, "returnByValue": True})
                value = r.get("result", {}).get("value")
                if value:
                    break
                b._read(0.2)
            if not value:
                failed_step = step
                break
        errors = [e for e in problems(b.events) if not any(x in e for x in a.expect_error)]
        if a.png:
            # Let the page paint what the expression saw (the picture is for
            # people; the verdict above does not depend on it).
            end = time.time() + 0.8
            while time.time() < end:
                b._read(end - time.time())
            shot = b.call("Page.captureScreenshot", {"format": "png"})
            with open(a.png, "wb") as f:
                f.write(base64.b64decode(shot["data"]))
        print(json.dumps(value))
        if errors:
            print("\n".join(errors), file=sys.stderr)
        if failed_step is not None:
            print(f"timed out after {a.timeout}s waiting for: {failed_step}", file=sys.stderr)
        sys.exit(0 if value and not errors else 1)
    finally:
        b.close()


if __name__ == "__main__":
    main()
