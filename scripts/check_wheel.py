"""Build the wheel, install it into a new virtual environment, and use it there.

    python3 scripts/check_wheel.py            # `make wheel-check`; CI runs it after `make test`
    python3 scripts/check_wheel.py --keep     # leave the work folder (printed) for a look

What a user gets from ``pip install zfwidgets``, checked end to end:

1. The sources git knows (tracked files and untracked ones that are not ignored) are copied to
   a temporary folder without ``zfwidgets/static/`` or ``node_modules/``, so the wheel build
   has to run ``npm install`` and esbuild itself (hatch-jupyter-builder), as it does on a clean
   checkout.
2. ``pip wheel --no-deps`` builds the wheel there (build isolation: hatchling and
   hatch-jupyter-builder come from the package index). The wheel must hold the JS bundles,
   the bundled model, images and atlas, and the ``zfwidgets`` console script.
3. A new virtual environment (``python -m venv``, no system site-packages, not the
   development ``.venv``) gets the wheel alone: ``pip install zfwidgets-*.whl``, no editable
   install and no extras, so only the dependencies the wheel declares are installed (from
   pip's cache and the configured indexes). ``pip check`` must pass.
4. From a folder outside the checkout (so ``import zfwidgets`` can only find the installed
   copy): ``zfwidgets --help`` and ``python -m zfwidgets --help`` name the program as it was
   run; a bad argument exits with status 2; ``Explorer()`` on the bundled model computes its
   views with no error; ``zfwidgets mine`` over the bundled photos writes an atlas that
   ``zfwidgets.Atlas.load`` reads back with its tiles; ``zfwidgets site`` turns it into a
   static site.

Only the Python standard library is used here; ``npm`` must be on ``PATH``. Each step's wall
time is printed, and the script exits non-zero at the first failed check.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: Files the wheel must hold (besides the Python modules): the esbuild bundles, the bundled
#: model, images and atlas.
WHEEL_FILES = (
    "zfwidgets/static/layer_grid.js",
    "zfwidgets/static/style.css",
    "zfwidgets/static/site/zfsite.js",
    "zfwidgets/static/site/zfsite.css",
    "zfwidgets/data/fashion_mnist_test300.safetensors",
    "zfwidgets/data/photos/astronaut.jpg",
    "zfwidgets/models/weights/zfnet_small_fashion_mnist.safetensors",
    "zfwidgets/models/weights/zfnet_small_fashion_mnist_atlas.safetensors",
)

#: Run inside the new environment: the Explorer on the bundled model, then a read-back of the
#: atlas that `zfwidgets mine` wrote. Prints "ok" last.
IN_VENV = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import zfwidgets as zf

    site_packages, atlas_dir = Path(sys.argv[1]), Path(sys.argv[2])
    where = Path(zf.__file__).resolve()
    assert site_packages in where.parents, f"zfwidgets imported from {where}, not the venv"

    e = zf.Explorer()
    assert e.wait(600), "Explorer(): its views did not finish in 600 s"
    assert e.grid.error == "", f"Explorer(): the layer grid shows an error: {e.grid.error}"
    assert e.grid.layers, "Explorer(): no layers offered"
    assert "render" in e.grid._esm, "Explorer(): the layer grid's JS bundle is not loaded"
    assert e.predictions.error == "", f"Explorer(): predictions error: {e.predictions.error}"
    assert e.predictions.labels, "Explorer(): no predictions"
    assert set(e.predictions.labels) <= set(zf.data.CLASSES), e.predictions.labels
    e.close()

    atlas = zf.Atlas.load(atlas_dir)
    assert atlas.layers == ["features.0"] and atlas.k == 3, atlas
    assert atlas.input_size == (96, 96), atlas.input_size
    assert atlas.has_images("features.0"), "the mined atlas has no rendered tiles"
    unit = atlas.unit_images("features.0", 0)
    assert unit.mime in ("image/png", "image/webp") and unit.sprite.shape[0] > 0, unit.mime
    print(f"{atlas!r}; unit 0 sprite {unit.sprite.shape}")
    print("ok")
    """
)


def run(cmd: list[str], *, cwd: Path, env: dict | None = None, expect: int = 0, what: str):
    """Run ``cmd``; fail (exit 1) unless its status is ``expect``; return the completed run."""
    start = time.perf_counter()
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    took = time.perf_counter() - start
    if r.returncode != expect:
        sys.stdout.write(r.stdout[-6000:])
        sys.stderr.write(r.stderr[-6000:])
        fail(f"{what}: exit status {r.returncode}, expected {expect}: {' '.join(cmd)}")
    print(f"  {what}: {took:.1f} s", flush=True)
    return r


def fail(message: str) -> None:
    print(f"check_wheel: FAILED: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def check(condition: bool, message: str) -> None:
    if not condition:
        fail(message)


def copy_sources(dest: Path) -> None:
    """Tracked and untracked-but-not-ignored files of the checkout, without built output."""
    r = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    )
    for name in r.stdout.decode().split("\0"):
        if not name or name.startswith(("zfwidgets/static/", "node_modules/")):
            continue
        src = REPO / name
        if not src.is_file():  # deleted in the work tree but still tracked
            continue
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    if shutil.which("npm") is None:
        fail("npm is not on PATH; the wheel build runs npm install and esbuild")
    total = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="zfwidgets-wheel-"))
    print(f"check_wheel: working in {work}", flush=True)
    try:
        src, dist, venv, out = work / "src", work / "dist", work / "venv", work / "run"
        for d in (src, dist, out):
            d.mkdir()
        copy_sources(src)
        check(not (src / "zfwidgets" / "static").exists(), "the copy holds built bundles")

        run([sys.executable, "-m", "venv", str(venv)], cwd=work, what="python -m venv")
        py = venv / "bin" / "python"
        run(
            [str(py), "-m", "pip", "wheel", "--no-deps", "-w", str(dist), str(src)],
            cwd=work,
            what="pip wheel (npm install + esbuild + hatchling)",
        )
        wheels = sorted(dist.glob("zfwidgets-*.whl"))
        check(len(wheels) == 1, f"expected one wheel in {dist}, found {wheels}")
        wheel = wheels[0]
        with zipfile.ZipFile(wheel) as z:
            names = set(z.namelist())
            missing = [f for f in WHEEL_FILES if f not in names]
            check(not missing, f"{wheel.name} lacks {missing}")
            eps = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
            check(len(eps) == 1, f"{wheel.name} has no entry_points.txt")
            entry_points = z.read(eps[0]).decode()
            check(
                "zfwidgets = zfwidgets.cli:main" in entry_points,
                f"no zfwidgets console script in {wheel.name}: {entry_points!r}",
            )
            meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
            requires = [
                line.split(":", 1)[1].strip()
                for line in z.read(meta).decode().splitlines()
                if line.startswith("Requires-Dist:") and "extra ==" not in line
            ]
        print(f"  {wheel.name}: {wheel.stat().st_size / 1e6:.1f} MB; requires {requires}")
        for req in requires:
            check("<" not in req and "==" not in req, f"upper bound or pin in {req!r}")

        run([str(py), "-m", "pip", "install", str(wheel)], cwd=work, what="pip install wheel")
        run([str(py), "-m", "pip", "check"], cwd=work, what="pip check")
        r = run([str(py), "-m", "pip", "list", "--format=freeze"], cwd=work, what="pip list")
        installed = dict(line.split("==", 1) for line in r.stdout.splitlines() if "==" in line)
        print(
            f"  installed: torch {installed.get('torch')}, torchvision "
            f"{installed.get('torchvision')}, {len(installed)} distributions"
        )
        for dev_only in ("pytest", "captum", "voila", "jupyterlab"):
            check(dev_only not in installed, f"{dev_only} came in with the wheel alone")

        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        env.setdefault("OMP_NUM_THREADS", "2")
        exe = venv / "bin" / "zfwidgets"
        check(exe.is_file(), f"no console script at {exe}")
        r = run([str(exe), "--help"], cwd=out, env=env, what="zfwidgets --help")
        check(r.stdout.startswith("usage: zfwidgets "), f"zfwidgets --help: {r.stdout[:200]!r}")
        check("mine" in r.stdout and "site" in r.stdout, "zfwidgets --help lists no commands")
        r = run([str(py), "-m", "zfwidgets", "--help"], cwd=out, env=env, what="python -m --help")
        check(
            r.stdout.startswith("usage: python -m zfwidgets "),
            f"python -m zfwidgets --help: {r.stdout[:200]!r}",
        )
        r = run(
            [str(exe), "mine"],
            cwd=out,
            env=env,
            expect=2,
            what="zfwidgets mine, arguments missing (status 2)",
        )
        check(
            r.stderr.startswith("usage: zfwidgets mine ")
            and "zfwidgets mine: error: the following arguments are required" in r.stderr,
            f"zfwidgets mine with no arguments: {r.stderr!r}",
        )
        r = run(
            [str(exe), "mine", "--model", "m:f", "--data", ".", "--out", "x", "--k", "0"],
            cwd=out,
            env=env,
            expect=2,
            what="zfwidgets mine --k 0 (status 2)",
        )
        check(
            r.stderr.startswith("zfwidgets mine: error: --k: expected an int >= 1"),
            f"zfwidgets mine --k 0: {r.stderr!r}",
        )

        r = run(
            [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            cwd=out,
            env=env,
            what="site-packages",
        )
        site_packages = Path(r.stdout.strip()).resolve()
        photos = site_packages / "zfwidgets" / "data" / "photos"
        check(photos.is_dir(), f"no bundled photos at {photos}")
        atlas_dir = out / "atlas"
        # The paper's ZFNet (untrained: no weights ship for it) over the 6 bundled photos.
        run(
            [
                str(exe),
                "mine",
                "--model",
                "zfwidgets.models:zfnet",
                "--data",
                str(photos),
                "--size",
                "96",
                "--layers",
                "features.0",
                "--k",
                "3",
                "--out",
                str(atlas_dir),
                "--batch-size",
                "6",
                "--workers",
                "0",
                "--quiet",
            ],
            cwd=out,
            env=env,
            what="zfwidgets mine (bundled photos)",
        )
        check((atlas_dir / "manifest.json").is_file(), f"no manifest.json in {atlas_dir}")
        check(any((atlas_dir / "tiles").rglob("*")), f"no rendered tiles in {atlas_dir}")
        site = out / "site"
        run([str(exe), "site", str(atlas_dir), str(site)], cwd=out, env=env, what="zfwidgets site")
        for f in ("index.html", "zfsite.js", "zfsite.css"):
            check(any(site.rglob(f)), f"the site lacks {f}")

        script = out / "in_venv.py"
        script.write_text(IN_VENV)
        r = run(
            [str(py), str(script), str(site_packages), str(atlas_dir)],
            cwd=out,
            env=env,
            what="Explorer() + Atlas.load",
        )
        check(r.stdout.rstrip().endswith("ok"), f"in-venv checks: {r.stdout[-2000:]!r}")
        print(f"  {r.stdout.strip().splitlines()[-2]}")
    finally:
        if args.keep:
            print(f"check_wheel: kept {work}")
        else:
            start = time.perf_counter()
            shutil.rmtree(work, ignore_errors=True)
            print(f"  remove {work}: {time.perf_counter() - start:.1f} s", flush=True)
    print(f"check_wheel: passed in {time.perf_counter() - total:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
