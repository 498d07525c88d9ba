"""Serve the demo or the teaching slides with Voila: the one place their command lines live.

    python scripts/serve.py demo   [--port 8866]   # notebooks/explorer.ipynb, the Explorer
    python scripts/serve.py slides [--port 8867]   # notebooks/05-slides.ipynb, a reveal.js deck
    python scripts/serve.py slides --print         # the voila command line, nothing started

``make demo`` and ``make slides`` run this script; ``tests/browser/test_demo.py`` and
``tests/browser/test_slides.py`` run it too, so the tests check the start-up path users take.

Voila runs in ``notebooks/`` (its root: ``/voila/files/...`` serves from there) on
127.0.0.1 only, on exactly the port asked for (a busy port is an error, not the next one).
The script waits until the server answers, prints the URL, and stays in the foreground until
Ctrl-C (or SIGTERM), which Voila gets too: it shuts its kernels down and exits.

The slides work offline. Voila's reveal template loads reveal.js's CSS from a CDN (the page
stays blank without one), Font Awesome and jQuery from CDNs too. Here the template
``zf-reveal`` (``notebooks/share/jupyter/voila/templates/``, found through JUPYTER_PATH)
serves reveal.js's CSS from ``notebooks/node_modules/reveal.js`` (``notebooks/package.json``,
installed by ``make slides``) and drops the other two, which the slides do not use.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
#: reveal.js inside notebooks/ (``npm ci`` there installs it).
REVEAL = Path("node_modules") / "reveal.js"
#: A Jupyter data directory with the notebooks' Voila template (``voila/templates/zf-reveal``),
#: put on JUPYTER_PATH for the slides.
SHARE = NOTEBOOKS / "share" / "jupyter"

TARGETS: dict[str, dict[str, object]] = {
    "demo": {"notebook": "explorer.ipynb", "port": 8866, "what": "the Explorer"},
    "slides": {"notebook": "05-slides.ipynb", "port": 8867, "what": "the slides"},
}


def voila_command(
    target: str, port: int | None = None, *, python: str = sys.executable
) -> list[str]:
    """The voila command line for ``target`` ("demo" or "slides"), run from ``notebooks/``."""
    if target not in TARGETS:
        raise ValueError(f"target: expected one of {list(TARGETS)}, got {target!r}")
    spec = TARGETS[target]
    port = int(spec["port"] if port is None else port)
    cmd = [
        python,
        "-m",
        "voila",
        str(spec["notebook"]),
        f"--port={port}",
        "--no-browser",
        "--Voila.ip=127.0.0.1",
        "--Voila.port_retries=0",
        "--VoilaConfiguration.show_tracebacks=True",
    ]
    if target == "slides":
        # the template's conf.json points reveal.js at /voila/files/node_modules/reveal.js
        # (REVEAL, served from notebooks/) and sets the deck's size and theme
        cmd += [
            "--template=zf-reveal",
            # reveal.js's CSS and fonts (and nothing else) may be served from notebooks/
            r"--VoilaConfiguration.file_allowlist=.*\.(css|woff2?|ttf|eot|svg)",
        ]
    return cmd


def voila_env(target: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment voila runs in: ``base`` (default ``os.environ``), plus, for the slides,
    ``notebooks/share/jupyter`` first on JUPYTER_PATH (where the zf-reveal template lives)."""
    env = dict(os.environ if base is None else base)
    if target == "slides":
        env["JUPYTER_PATH"] = os.pathsep.join(filter(None, [str(SHARE), env.get("JUPYTER_PATH")]))
    return env


def url_of(port: int) -> str:
    return f"http://127.0.0.1:{port}/"


def check_ready(target: str) -> None:
    """Raise SystemExit with what to run when something the target needs is missing."""
    nb = NOTEBOOKS / str(TARGETS[target]["notebook"])
    if not nb.is_file():
        raise SystemExit(f"serve.py: {nb} is missing")
    if target == "slides" and not (NOTEBOOKS / REVEAL / "dist" / "reveal.css").is_file():
        raise SystemExit(
            f"serve.py: {NOTEBOOKS / REVEAL} is missing: run `make slides` (or "
            "`npm ci --prefix notebooks`) to install reveal.js for the offline slides"
        )


def wait_ready(proc: subprocess.Popen, port: int, timeout: float) -> bool:
    """Poll Voila's health URL until it answers (True), the process exits or time runs out."""
    health = f"{url_of(port)}voila/static/voila.js"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(health, timeout=2) as r:
                if r.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target", choices=list(TARGETS))
    parser.add_argument("--port", type=int, default=None, help="default: 8866 demo, 8867 slides")
    parser.add_argument("--print", action="store_true", help="print the command line and exit")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for Voila")
    args = parser.parse_args(argv)
    port = int(TARGETS[args.target]["port"] if args.port is None else args.port)
    cmd = voila_command(args.target, port)
    if args.print:
        env = f"JUPYTER_PATH={SHARE}:$JUPYTER_PATH " if args.target == "slides" else ""
        print(f"cd {NOTEBOOKS} && {env}" + shlex.join(cmd))
        return 0
    check_ready(args.target)
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=NOTEBOOKS, env=voila_env(args.target))

    def stop(signum: int, _frame: object) -> None:
        if proc.poll() is None:
            proc.send_signal(signum)

    signal.signal(signal.SIGTERM, stop)
    try:
        if wait_ready(proc, port, args.timeout):
            what = TARGETS[args.target]["what"]
            print(
                f"\n  zfwidgets: {what} at {url_of(port)}  (Voila answered in "
                f"{time.monotonic() - t0:.1f} s; Ctrl-C stops)\n",
                flush=True,
            )
        elif proc.poll() is None:
            print(f"serve.py: Voila did not answer within {args.timeout:.0f} s", file=sys.stderr)
            proc.terminate()
        return proc.wait()
    except KeyboardInterrupt:
        # Ctrl-C reaches Voila too (same process group); give it time to shut its kernels down
        try:
            return proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
