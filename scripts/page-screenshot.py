#!/usr/bin/env python3
"""Loads a page in headless Chromium, waits until it shows what is asked, saves a screenshot, prints what it shows.

    page-screenshot.py URL OUT.png [--frames N] [--nodes N] [--messages N] [--moving N] [--timeout SECONDS]

Drives Chromium over its DevTools protocol (PyPI's websocket-client): waits until the live page of a Freight
node's admin port (docs/observability.md) has drawn at least --frames frames, --nodes nodes in its graph and
--messages messages in flight, with --moving links showing a rate above zero (a rate is sampled per interval, and
a receiver held up on a loaded machine shows 0 B/s for one), then captures the page as PNG and prints one JSON line: the frames drawn, the graph's
node and link labels, the message rows and the error rows. Exits 1 when the page does not get there in time.
Chromium runs in a process group of its own, killed on exit, with a parent-death signal so that it never outlives
this script.
"""
import argparse
import base64
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

import websocket

REPORT = """JSON.stringify({
  frames: Number(document.body.dataset.frames || 0),
  title: document.title,
  nodes: [...document.querySelectorAll('#graph .node')].map(n => n.dataset.name),
  links: [...document.querySelectorAll('#graph .link')].map(l => l.dataset.name + ' ' + l.querySelector('text').textContent),
  messages: [...document.querySelectorAll('#messages tr.message')].map(r => r.innerText.replace(/\\s+/g, ' ').trim()),
  errors: [...document.querySelectorAll('#errors tr.error')].map(r => r.innerText.replace(/\\s+/g, ' ').trim()),
  state: document.getElementById('state').textContent,
})"""


def die_with_parent():
    os.setsid()
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class DevTools:
    def __init__(self, url):
        self.socket = websocket.create_connection(url, timeout=30, suppress_origin=True)
        self.next_id = 0

    def call(self, method, **params):
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self.socket.recv())
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("out")
    parser.add_argument("--frames", type=int, default=3)
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--messages", type=int, default=0)
    parser.add_argument("--moving", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=60)
    parser.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    args = parser.parse_args()

    profile = tempfile.mkdtemp(prefix="freight-chromium-")
    browser = subprocess.Popen(
        [args.chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--no-first-run", "--no-default-browser-check", "--hide-scrollbars", "--window-size=1400,1000",
         "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", f"--user-data-dir={profile}",
         "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=die_with_parent)
    try:
        deadline = time.monotonic() + args.timeout
        port_file = os.path.join(profile, "DevToolsActivePort")
        while not os.path.exists(port_file) or os.path.getsize(port_file) == 0:
            if browser.poll() is not None or time.monotonic() > deadline:
                sys.exit("chromium did not start its DevTools server")
            time.sleep(0.1)
        port = int(open(port_file).read().split()[0])
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10))
        page = next(t for t in targets if t["type"] == "page")
        tools = DevTools(page["webSocketDebuggerUrl"])
        tools.call("Page.enable")
        tools.call("Page.navigate", url=args.url)
        report = {}
        while True:
            result = tools.call("Runtime.evaluate", expression=REPORT, returnByValue=True)
            value = result.get("result", {}).get("value")
            report = json.loads(value) if value else {}
            moving = [link for link in report.get("links", []) if link.endswith("B/s") and not link.endswith(" 0 B/s")]
            if (report.get("frames", 0) >= args.frames and len(report.get("nodes", [])) >= args.nodes
                    and len(report.get("messages", [])) >= args.messages and len(moving) >= args.moving):
                break
            if time.monotonic() > deadline:
                print(json.dumps(report))
                sys.exit(f"the page did not show {args.frames} frames, {args.nodes} nodes, {args.messages} messages "
                         f"and {args.moving} links moving within {args.timeout} s")
            time.sleep(0.2)
        shot = tools.call("Page.captureScreenshot", format="png")
        with open(args.out, "wb") as out:
            out.write(base64.b64decode(shot["data"]))
        print(json.dumps(report))
    finally:
        try:
            os.killpg(browser.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        browser.wait()
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    main()
