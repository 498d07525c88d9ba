"""Voila / JupyterLab + Chromium harness for the browser tests (imported by conftest and the
tests): the servers (own process groups, ended by PID), notebooks, and the page helpers every
browser test shares (:class:`App` with Playwright's waits, ``PIXELS``, ``TILE_CENTRE``,
``NOISE``, and :func:`starts` / :func:`expect_some_text` for ``expect``)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "tests" / "artifacts"


def launch(playwright: Any, profile: Path, *, width: int = 1280, height: int = 1300) -> Any:
    """Debian's headless Chromium (never Playwright's own download) with a fresh profile in
    ``profile``: the one way the browser tests and the benchmarks start it."""
    return playwright.chromium.launch_persistent_context(
        str(profile),
        executable_path=str(CHROMIUM),
        headless=True,
        args=CHROMIUM_ARGS,
        viewport={"width": width, "height": height},
        device_scale_factor=1,
    )


def notebook(cells: list[str]) -> dict:
    """A minimal nbformat-4 notebook of code cells."""
    return {
        "cells": [
            {
                "cell_type": "code",
                "execution_count": None,
                "id": f"cell-{i}",
                "metadata": {},
                "outputs": [],
                "source": src,
            }
            for i, src in enumerate(cells)
        ],
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """A Jupyter server (``args``) in its own process group, ready once ``health`` answers 200.

    Started in ``directory`` with the repository on ``PYTHONPATH`` and a private runtime dir;
    ended by its own PID (:meth:`stop`) with the kernels it started."""

    def __init__(
        self,
        directory: Path,
        args: list[str],
        port: int,
        health: str,
        startup_timeout: float = 90.0,
        env: dict[str, str] | None = None,
        log_name: str = "server.log",
    ):
        self.port = port
        self.url = f"http://127.0.0.1:{port}/"
        self.log_path = directory / log_name
        full_env = dict(os.environ)
        full_env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(REPO), full_env.get("PYTHONPATH")])
        )
        full_env["JUPYTER_RUNTIME_DIR"] = str(directory / "runtime")
        full_env["OMP_NUM_THREADS"] = full_env.get("OMP_NUM_THREADS", "2")
        full_env.update(env or {})
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            args,
            cwd=directory,
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: kernels go with it
        )
        self._wait_ready(f"{self.url}{health}", startup_timeout)

    def _wait_ready(self, health: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.log_path.stem} exited with {self.proc.returncode}:\n{self.log()}"
                )
            try:
                with urllib.request.urlopen(health, timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"{health} did not answer within {timeout:.0f} s:\n{self.log()}")

    def log(self, tail: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    def stop(self) -> None:
        """End the server: SIGTERM to its process group (the server then shuts its kernels
        down), SIGKILL after 10 s; kernels (own sessions) still alive after that are killed by
        PID."""
        kernels = _descendants(self.proc.pid)
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        for pid in kernels:
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self._log.close()


class VoilaServer(ServerProcess):
    """``voila NB.ipynb`` in its own process group; ``url`` serves the notebook."""

    #: which of a test module's ``NOTEBOOKS`` it serves (None: the module's ``NOTEBOOK``)
    key: str | None = None

    def __init__(self, directory: Path, name: str, startup_timeout: float = 90.0):
        port = _free_port()
        args = [
            sys.executable,
            "-m",
            "voila",
            name,
            f"--port={port}",
            "--no-browser",
            "--Voila.ip=127.0.0.1",
            "--VoilaConfiguration.show_tracebacks=True",
            # Voila keeps a page's kernel after the page closes; the tests open a fresh page
            # per test, so a kernel nobody is connected to goes after 10 s idle (it would
            # otherwise hold its memory, and any background work, to the module's end)
            "--MappingKernelManager.cull_idle_timeout=10",
            "--MappingKernelManager.cull_interval=5",
            "--MappingKernelManager.cull_connected=False",
        ]
        super().__init__(
            directory,
            args,
            port,
            "voila/static/voila.js",
            startup_timeout,
            log_name="voila.log",
        )


class JupyterLabServer(ServerProcess):
    """``jupyter lab`` on 127.0.0.1 serving ``directory``: no token, no password, temporary
    config / workspace / settings dirs, ``window.jupyterapp`` exposed, nothing fetched.

    ``app="notebook"`` runs Jupyter Notebook 7 instead (the same JupyterLab application
    framework, one document per tab: open ``notebooks/NB.ipynb``)."""

    #: module run with ``python -m`` and the class its options belong to
    APPS = {"lab": ("jupyterlab", "LabApp"), "notebook": ("notebook", "JupyterNotebookApp")}

    def __init__(
        self,
        directory: Path,
        root: Path | None = None,
        startup_timeout: float = 90.0,
        app: str = "lab",
    ):
        """``root``: the folder the server shows (default ``directory``, which also holds its
        log, runtime and state folders)."""
        module, cls = self.APPS[app]
        port = _free_port()
        state = directory / f".{app}"
        for sub in ("config", "workspaces", "settings"):
            (state / sub).mkdir(parents=True, exist_ok=True)
        if app == "lab":  # no "Would you like to get notified about Jupyter news?" toast
            notification = state / "settings" / "@jupyterlab" / "apputils-extension"
            notification.mkdir(parents=True, exist_ok=True)
            (notification / "notification.jupyterlab-settings").write_text(
                json.dumps({"fetchNews": "false"})
            )
        args = [
            sys.executable,
            "-m",
            module,
            "--allow-root",
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={port}",
            "--port-retries=0",
            "--IdentityProvider.token=",
            "--ServerApp.password=",
            f"--ServerApp.root_dir={root or directory}",
            f"--{cls}.expose_app_in_browser=True",
            f"--{cls}.workspaces_dir={state / 'workspaces'}",
            f"--{cls}.user_settings_dir={state / 'settings'}",
        ]
        if app == "lab":
            args += [
                "--LabApp.news_url=None",
                "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            ]
        env = {
            "JUPYTER_CONFIG_DIR": str(state / "config"),
            "JUPYTERLAB_WORKSPACES_DIR": str(state / "workspaces"),
            "JUPYTERLAB_SETTINGS_DIR": str(state / "settings"),
        }
        super().__init__(
            directory, args, port, "api", startup_timeout, env=env, log_name=f"{app}.log"
        )


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _descendants(root: int) -> list[int]:
    """PIDs of every process below ``root`` (from /proc; empty where there is no /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def serve(directory: Path, name: str, cells: list[str]) -> VoilaServer:
    """Write a notebook into ``directory`` and serve it with Voila."""
    (directory / name).write_text(json.dumps(notebook(cells), indent=1))
    return VoilaServer(directory, name)


# A predicate's body (JavaScript using ``arg``, returning a truthy value when the condition
# holds) as the function Playwright's ``wait_for_function`` polls; a throw counts as "not yet".
def predicate(body: str) -> str:
    return f"(arg) => {{ try {{ {body} }} catch (e) {{ return null; }} }}"


PIXELS = """(sel) => {
  const c = document.querySelector(sel);
  if (!c || !c.width) return null;
  const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
  let opaque = 0, hash = 2166136261;
  const colours = new Set();
  for (let i = 0; i < d.length; i += 4) {
    if (d[i + 3]) { opaque++; colours.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]); }
    hash = Math.imul(hash ^ d[i] ^ (d[i + 1] << 8) ^ (d[i + 2] << 16) ^ (d[i + 3] << 24), 16777619) >>> 0;
  }
  return { width: c.width, height: c.height, opaque, colours: colours.size, hash,
           count: Number(c.dataset.count), draws: Number(c.dataset.draws) };
}"""

# Centre of tile i in page coordinates, from the documented atlas geometry (js/lib/grid.js).
TILE_CENTRE = """([sel, i]) => {
  const c = document.querySelector(sel);
  const r = c.getBoundingClientRect();
  const s = r.width / c.width;
  const cols = Number(c.dataset.columns), th = Number(c.dataset.tileH);
  const tw = Number(c.dataset.tileW), pad = Number(c.dataset.pad);
  const x = pad + (i % cols) * (tw + pad) + tw / 2;
  const y = pad + Math.floor(i / cols) * (th + pad) + th / 2;
  return { x: r.left + x * s, y: r.top + y * s };
}"""


def starts(text: str) -> re.Pattern:
    """A pattern for ``expect(locator).to_have_text``: the text begins with ``text``."""
    return re.compile("^" + re.escape(text))


def expect_some_text(locator: Any, text: str, exact: bool = True, timeout_s: float = 30.0) -> None:
    """Wait until one of the elements ``locator`` matches shows ``text`` (all of its text,
    or, with ``exact=False``, somewhere in it): ``text in [e.textContent for e in ...]`` as
    a waiting assertion."""
    from playwright.sync_api import expect

    pattern = re.compile(re.escape(text) if not exact else f"^{re.escape(text)}$")
    expect(locator.filter(has_text=pattern).first).to_be_attached(timeout=timeout_s * 1000)


NOISE = ("federation", "fontawesome", "jquery", "favicon", "failed to load resource", "cdn")


@dataclass
class App:
    page: object
    server: Any  # VoilaServer / JupyterLabServer: .log()
    load_s: float
    errors: list[str] = field(default_factory=list)

    def wait(self, body: str, arg: object = None, timeout_s: float = 20.0):
        """Wait (Playwright's ``wait_for_function``, polled every animation frame) until the
        predicate ``body`` holds for ``arg``; its value."""
        try:
            handle = self.page.wait_for_function(
                predicate(body), arg=arg, timeout=int(timeout_s * 1000)
            )
            return handle.json_value()
        except Exception as exc:
            raise AssertionError(
                f"{exc}\nwaiting for: {body}\npage errors: {self.errors}\n"
                f"server log:\n{self.server.log(2500)}"
            ) from None

    def pixels(self, sel: str) -> dict:
        return self.page.evaluate(PIXELS, sel)

    def settle(self) -> None:
        """Wait until the page has painted twice more (what a screenshot or a check that
        something did *not* change needs), instead of sleeping a fixed time."""
        self.page.evaluate(
            "() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))"
        )

    def text(self, sel: str) -> str:
        return self.page.locator(sel).first.inner_text()

    def at(self, sel: str) -> Any:
        """The first element ``sel`` matches (what :meth:`text` reads), for ``expect``."""
        return self.page.locator(sel).first

    def shot(self, artifacts: Path, name: str, sel: str | None = None) -> Path:
        path = artifacts / name
        if sel is None:
            self.page.screenshot(path=str(path), full_page=True)
        else:
            self.page.locator(sel).first.screenshot(path=str(path))
        return path


@contextlib.contextmanager
def open_app(
    context: Any,
    server: Any,
    ready: str,
    arg: object = None,
    timeout_s: float = 120.0,
    path: str = "",
    init_script: str | None = None,
) -> Iterator[App]:
    """A new page on ``server.url + path`` (console errors outside ``NOISE`` and page errors
    collected in ``App.errors``), yielded once the predicate ``ready`` holds; ``load_s`` is
    the time from the request to then. The page is closed afterwards (not the server).
    ``init_script``: JavaScript run in the page before any of its own scripts."""
    page = context.new_page()
    if init_script is not None:
        page.add_init_script(init_script)
    app = App(page=page, server=server, load_s=0.0)

    def on_console(msg: Any) -> None:
        if msg.type == "error" and not any(n in msg.text.lower() for n in NOISE):
            app.errors.append(msg.text)

    page.on("console", on_console)
    page.on("pageerror", lambda exc: app.errors.append(f"pageerror: {exc}"))
    t0 = time.monotonic()
    try:
        page.goto(server.url + path, wait_until="domcontentloaded", timeout=int(timeout_s * 1000))
        app.wait(ready, arg, timeout_s=timeout_s)
        app.load_s = time.monotonic() - t0
        yield app
    finally:
        page.close()


# -- the kernel websocket, watched (and optionally stripped of binary buffers) -------------
_WIRE_JS = """(() => {
  // Wraps window.WebSocket (page init script, before Jupyter's own code makes a socket).
  // Counts kernel -> browser frames and bytes in window.__zfWire; with STRIP, rewrites every
  // message that carries binary buffers into the same message without them (and without the
  // widget state's buffer_paths), as a front end that drops buffers (Colab) delivers it.
  // Both Jupyter kernel websocket wire formats are handled: "v1.kernel.websocket.jupyter.org"
  // (every message a binary frame of uint64 offsets + parts + buffers) and the legacy one
  // (JSON text frames; binary frames only for messages with buffers: uint32 offsets).
  const STRIP = __STRIP__;
  const wire = { framesIn: 0, bytesIn: 0, buffered: 0, stripped: 0, reports: 0, protocol: null };
  window.__zfWire = wire;
  const enc = new TextEncoder();
  const dec = new TextDecoder();

  function readV1(buf) {
    const dv = new DataView(buf);
    const n = Number(dv.getBigUint64(0, true));
    const off = [];
    for (let i = 0; i < n; i++) off.push(Number(dv.getBigUint64(8 * (i + 1), true)));
    const part = (i) => dec.decode(new Uint8Array(buf, off[i], off[i + 1] - off[i]));
    return { channel: part(0), parts: [1, 2, 3, 4].map((i) => JSON.parse(part(i))),
             nbuf: Math.max(0, off.length - 6) };
  }
  function writeV1(channel, parts) {
    const chunks = [channel, ...parts.map((p) => JSON.stringify(p))].map((s) => enc.encode(s));
    const n = chunks.length + 1;
    const head = 8 * (n + 1);
    const total = head + chunks.reduce((a, c) => a + c.length, 0);
    const out = new Uint8Array(total);
    const dv = new DataView(out.buffer);
    dv.setBigUint64(0, BigInt(n), true);
    let at = head;
    chunks.forEach((c, i) => { dv.setBigUint64(8 * (i + 1), BigInt(at), true); out.set(c, at); at += c.length; });
    dv.setBigUint64(8 * n, BigInt(at), true);
    return out.buffer;
  }
  function readLegacy(buf) {
    const dv = new DataView(buf);
    const nbufs = dv.getUint32(0);
    const off = [];
    for (let i = 0; i < nbufs; i++) off.push(dv.getUint32(4 * (i + 1)));
    const end = nbufs > 1 ? off[1] : buf.byteLength;
    return { msg: JSON.parse(dec.decode(new Uint8Array(buf, off[0], end - off[0]))), nbuf: nbufs - 1 };
  }
  function dropPaths(content) {
    const data = content && content.data;
    if (data && Array.isArray(data.buffer_paths)) data.buffer_paths = [];
  }
  function incoming(ws, data) {
    wire.framesIn += 1;
    wire.protocol = ws.protocol;
    wire.bytesIn += typeof data === "string" ? enc.encode(data).length : data.byteLength;
    if (typeof data === "string") return data;
    if (ws.protocol === "v1.kernel.websocket.jupyter.org") {
      const m = readV1(data);
      if (m.nbuf === 0) return data;
      wire.buffered += 1;
      if (!STRIP) return data;
      wire.stripped += 1;
      dropPaths(m.parts[3]);
      return writeV1(m.channel, m.parts);
    }
    const m = readLegacy(data);
    if (m.nbuf === 0) return data;
    wire.buffered += 1;
    if (!STRIP) return data;
    wire.stripped += 1;
    dropPaths(m.msg.content);
    m.msg.buffers = [];
    return JSON.stringify(m.msg);
  }
  function outgoing(data) {
    const text = typeof data === "string" ? data : dec.decode(data);
    if (text.includes('"zf-no-buffers"')) wire.reports += 1;
  }
  const Native = window.WebSocket;
  const wrapped = new WeakMap();
  const wrap = (ws, fn) => (ev) => {
    const data = incoming(ws, ev.data);
    const e = data === ev.data ? ev : new MessageEvent("message", { data, origin: ev.origin });
    return typeof fn === "function" ? fn.call(ws, e) : fn.handleEvent(e);
  };
  class WatchedWebSocket extends Native {
    set onmessage(fn) { super.onmessage = fn ? wrap(this, fn) : fn; }
    get onmessage() { return super.onmessage; }
    addEventListener(type, fn, opts) {
      if (type !== "message" || !fn) return super.addEventListener(type, fn, opts);
      if (!wrapped.has(fn)) wrapped.set(fn, wrap(this, fn));
      return super.addEventListener(type, wrapped.get(fn), opts);
    }
    removeEventListener(type, fn, opts) {
      return super.removeEventListener(type, (type === "message" && wrapped.get(fn)) || fn, opts);
    }
    send(data) { try { outgoing(data); } catch (e) {} return super.send(data); }
  }
  window.WebSocket = WatchedWebSocket;
})();"""


def wire_script(strip: bool) -> str:
    """Page init script (see ``open_app(init_script=...)``) that counts what the kernel
    websocket delivers in ``window.__zfWire`` (frames, bytes, messages with binary buffers,
    ``zf-no-buffers`` reports sent) and, with ``strip``, removes every message's binary
    buffers and the widget state's ``buffer_paths`` before Jupyter's code sees it: a front end
    that drops binary buffers, as Colab's widget manager does."""
    return _WIRE_JS.replace("__STRIP__", "true" if strip else "false")
