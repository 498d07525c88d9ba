"""Run the browser test suite N times in a row from a fresh clone, and report each run.

    .venv/bin/python scripts/browser_runs.py 5            # 5 runs of tests/browser
    .venv/bin/python scripts/browser_runs.py 3 --ref HEAD~1 -- -k explorer

The clone is of the committed ``--ref`` (default ``HEAD``) of this repository, into a temporary
folder, so uncommitted edits and build outputs here cannot leak into the runs. Its front end is
built there with ``npm run build``; the JS toolchain (``node_modules``) is linked from this
checkout and reveal.js (``notebooks/node_modules``, served by Voila for the slides, which must
lie inside the served folder) copied from it, when it has them, else installed with
``npm ci``. Every run uses this interpreter (``sys.executable``) with the clone
first on ``PYTHONPATH``, so the Voila and JupyterLab kernels the tests start import the clone.
Run ``i`` takes the tests in an order shuffled with seed ``i`` (``scripts/shuffle_plugin.py``:
tests sharing a module-scoped server stay together, the groups and the tests inside them are
shuffled), so N runs also show the suite passes in any order; ``--no-shuffle`` keeps file order.
Runs go on after a failure; the exit status is 0 only when every run passed. Each run's output
is kept in ``<clone>/browser-run-<i>.log`` (the clone is removed unless ``--keep``, or a run
failed).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(args: list[str], cwd: Path, **kwargs) -> None:
    subprocess.run(args, cwd=cwd, check=True, **kwargs)


def prepare(clone: Path, ref: str) -> None:
    _run(["git", "clone", "--quiet", "--no-hardlinks", str(REPO), str(clone)], cwd=REPO)
    _run(["git", "checkout", "--quiet", ref], cwd=clone)
    for sub in ("node_modules", "notebooks/node_modules"):
        mine = REPO / sub
        if mine.is_dir() and sub == "node_modules":  # the build tools: a link will do
            (clone / sub).symlink_to(mine.resolve(), target_is_directory=True)
        elif mine.is_dir():  # Voila serves reveal.js from here: files inside the clone
            shutil.copytree(mine.resolve(), clone / sub, symlinks=False)
        else:
            prefix = [] if sub == "node_modules" else ["--prefix", "notebooks"]
            _run(["npm", "ci", "--no-audit", "--no-fund", *prefix], cwd=clone)
    _run(["npm", "run", "build", "--silent"], cwd=clone)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=int, nargs="?", default=5, help="how many runs (5)")
    parser.add_argument("--ref", default="HEAD", help="commit to clone (HEAD)")
    parser.add_argument("--keep", action="store_true", help="keep the clone")
    parser.add_argument("--no-shuffle", action="store_true", help="run the tests in file order")
    parser.add_argument("pytest_args", nargs="*", help="after --: more pytest arguments")
    args = parser.parse_args()

    clone = Path(tempfile.mkdtemp(prefix="zf-browser-runs-")) / "zfwidgets"
    commit = subprocess.run(
        ["git", "rev-parse", "--short", args.ref], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    print(f"cloning {args.ref} ({commit}) into {clone}", flush=True)
    prepare(clone, args.ref)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(clone), env.get("PYTHONPATH")]))
    results = []
    for i in range(1, args.runs + 1):
        log = clone / f"browser-run-{i}.log"
        cmd = [sys.executable, "-m", "pytest", "tests/browser", "-q", "-p", "no:cacheprovider"]
        if not args.no_shuffle:
            cmd += ["-p", "scripts.shuffle_plugin", f"--shuffle-seed={i}"]
        t0 = time.monotonic()
        with open(log, "w") as out:
            rc = subprocess.run(
                [*cmd, *args.pytest_args], cwd=clone, env=env, stdout=out, stderr=subprocess.STDOUT
            ).returncode
        took = time.monotonic() - t0
        lines = log.read_text(errors="replace").strip().splitlines()
        summary = lines[-1] if lines else "(no output)"
        results.append(rc)
        order = "file order" if args.no_shuffle else f"order seed {i}"
        print(f"run {i}/{args.runs} ({order}): exit {rc} in {took:.0f} s: {summary}", flush=True)
    passed = sum(rc == 0 for rc in results)
    print(f"{passed} of {args.runs} runs passed ({commit})")
    if args.keep or passed != args.runs:
        print(f"logs kept in {clone}")
    else:
        shutil.rmtree(clone.parent, ignore_errors=True)
    return 0 if passed == args.runs else 1


if __name__ == "__main__":
    sys.exit(main())
