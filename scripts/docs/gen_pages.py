"""Pages generated at build time (mkdocs-gen-files), so that none of them can drift.

- ``reference/*.md``: one ``::: identifier`` entry (mkdocstrings) for every name in
  ``zfwidgets.__all__`` and ``zfwidgets.widgets.__all__``, grouped by the package that
  defines it; the list is read from the package, so a name added later appears by itself.
  ``scripts/docs/hooks.py`` fails the build when a public name has no entry in the output.
- ``reference/cli.md``: the command line, from ``zfwidgets.cli.build_parser()``.
- ``method.md``, ``atlas-format.md``, ``benchmarks.md``, ``screenshots/*.png``: the
  repository's own files (docs/, BENCHMARKS.md), read at build time, never copied by hand.
- ``gallery/*.md``: each ``site-src/gallery/*.py`` run (two at a time, each in its own process
  and folder), its PNGs shown beside its code. Results are cached in ``build/docs-cache/``
  keyed by the script and every file of the package, so a rebuild reruns only what changed.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import mkdocs_gen_files

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import public_names  # noqa: E402

CACHE = ROOT / "build" / "docs-cache" / "gallery"
GALLERY = ROOT / "site-src" / "gallery"

# -- the API reference --------------------------------------------------------------------------

groups = public_names.grouped()
for group, entries in groups.items():
    title, intro = public_names.GROUPS[group]
    with mkdocs_gen_files.open(f"reference/{group}.md", "w") as f:
        f.write(f"# {title}\n\n{intro}\n\n")
        if not entries:
            f.write("None at present.\n")
        for _name, identifier in entries:
            f.write(f"::: {identifier}\n\n")

with mkdocs_gen_files.open("reference/index.md", "w") as f:
    n = sum(len(v) for v in groups.values())
    f.write(
        "# API reference\n\n"
        f"Generated from the docstrings at build time: all {n} public names "
        "(`zfwidgets.__all__` and `zfwidgets.widgets.__all__`; the widgets are importable from "
        "both). Docstrings are numpy style and cite the sections of [the method](../method.md).\n\n"
        "| name | kind | page |\n| --- | --- | --- |\n"
    )
    for group, entries in groups.items():
        for name, identifier in entries:
            kind = public_names.kind(name)
            anchor = identifier
            f.write(
                f"| [`{name}`]({group}.md#{anchor}) | {kind} | {public_names.GROUPS[group][0]} |\n"
            )
    f.write("\nThe command line: [python -m zfwidgets](cli.md).\n")

# -- the command line ----------------------------------------------------------------------------

from zfwidgets.cli import build_parser  # noqa: E402

os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal width: fix it for the page
parser = build_parser()
with mkdocs_gen_files.open("reference/cli.md", "w") as f:
    import zfwidgets.cli as cli

    f.write("# Command line: `python -m zfwidgets`\n\n")
    f.write("Generated at build time from `zfwidgets.cli.build_parser()`.\n\n")
    doc = cli.__doc__ or ""
    f.write("```text\n" + doc.strip() + "\n```\n\n")
    f.write("```text\n" + parser.format_help().rstrip() + "\n```\n\n")
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for action in subs:
        for name, sub in action.choices.items():
            f.write(f"## `{name}`\n\n")
            if sub.description:
                f.write(sub.description + "\n\n")
            f.write("| argument | default | meaning |\n| --- | --- | --- |\n")
            for a in sub._actions:
                if isinstance(a, argparse._HelpAction):
                    continue
                flag = ", ".join(a.option_strings) or a.dest
                default = "" if a.default in (None, False) else f"`{a.default}`"
                required = " (required)" if a.required and a.option_strings else ""
                help_text = (a.help or "").replace("|", "\\|")
                f.write(f"| `{flag}`{required} | {default} | {help_text} |\n")
            f.write("\n```text\n" + sub.format_help().rstrip() + "\n```\n\n")

# -- the repository's own pages ---------------------------------------------------------------------


def included(src: str, dest: str, note: str, rewrite: dict[str, str] | None = None) -> None:
    text = (ROOT / src).read_text(encoding="utf-8")
    for old, new in (rewrite or {}).items():
        text = text.replace(old, new)
    with mkdocs_gen_files.open(dest, "w") as f:
        f.write(text)
        f.write(f"\n\n---\n*{note}*\n")
    mkdocs_gen_files.set_edit_path(dest, src)


# links between the repository's files -> links between the site's pages
repo_links = {
    "](docs/method.md": "](method.md",
    "](../docs/method.md": "](method.md",
    "](method.md": "](method.md",
    "](docs/atlas-format.md": "](atlas-format.md",
    "](../BENCHMARKS.md": "](benchmarks.md",
    "](BENCHMARKS.md": "](benchmarks.md",
}
included(
    "docs/method.md", "method.md", "This page is docs/method.md, read at build time.", repo_links
)
included(
    "docs/atlas-format.md",
    "atlas-format.md",
    "This page is docs/atlas-format.md, read at build time.",
    repo_links,
)
included(
    "BENCHMARKS.md",
    "benchmarks.md",
    "This page is BENCHMARKS.md, read at build time; `make bench` measures the figures.",
    repo_links,
)
for png in sorted((ROOT / "docs").glob("screenshot-*.png")):
    with mkdocs_gen_files.open(f"screenshots/{png.name}", "wb") as f:
        f.write(png.read_bytes())

# -- the gallery ---------------------------------------------------------------------------------


def package_key() -> str:
    """A hash of every file of the package (code, weights, images): a change reruns the gallery."""
    h = hashlib.sha256()
    for p in sorted((ROOT / "zfwidgets").rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts and "static" not in p.parts:
            h.update(str(p.relative_to(ROOT)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def run_script(script: Path, key: str) -> tuple[Path, float, bool]:
    out = CACHE / script.stem
    stamp = out / ".key"
    full = hashlib.sha256((key + script.read_text(encoding="utf-8")).encode()).hexdigest()
    timing = out / ".seconds"
    if (
        stamp.is_file()
        and stamp.read_text() == full
        and timing.is_file()
        and any(out.glob("*.png"))
    ):
        return out, float(timing.read_text()), True
    out.mkdir(parents=True, exist_ok=True)
    for old in out.iterdir():
        old.unlink()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("OMP_NUM_THREADS", "1")
    env["MPLBACKEND"] = "Agg"
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=out, env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - t0
    (out / "stdout.txt").write_text(proc.stdout)
    if proc.returncode != 0:
        raise RuntimeError(
            f"gallery script {script.name} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
        )
    if not any(out.glob("*.png")):
        raise RuntimeError(f"gallery script {script.name} wrote no PNG")
    timing.write_text(f"{seconds:.1f}")
    stamp.write_text(full)
    return out, seconds, False


scripts = sorted(p for p in GALLERY.glob("*.py") if not p.name.startswith("_"))
key = package_key()
with ThreadPoolExecutor(max_workers=2) as pool:
    results = list(pool.map(lambda s: run_script(s, key), scripts))

index_rows = []
for script, (out, seconds, cached) in zip(scripts, results):
    source = script.read_text(encoding="utf-8")
    doc = re.match(r'"""(.*?)"""', source, re.S)
    title, _, body = (doc.group(1).strip() if doc else script.stem).partition("\n")
    pngs = sorted(out.glob("*.png"))
    stdout = (out / "stdout.txt").read_text().strip()
    with mkdocs_gen_files.open(f"gallery/{script.stem}.md", "w") as f:
        f.write(f"# {title}\n\n{body.strip()}\n\n")
        for png in pngs:
            f.write(f"![{title}]({script.stem}/{png.name}){{ .zf-figure }}\n\n")
        if stdout:
            f.write("```text\n" + stdout + "\n```\n\n")
        ran = f"{seconds:.1f} s" + (
            ", cached: the package and the script are unchanged since" if cached else ""
        )
        f.write(
            f"The code that made it ([{script.name}]({script.name}); run by `make docs`, "
            f"{ran}; a change to either reruns it):\n\n"
        )
        f.write("```python\n" + source.rstrip() + "\n```\n")
    for png in pngs:
        with mkdocs_gen_files.open(f"gallery/{script.stem}/{png.name}", "wb") as f:
            f.write(png.read_bytes())
    index_rows.append((script.stem, title, pngs[0].name))

with mkdocs_gen_files.open("gallery/index.md", "w") as f:
    f.write(
        "# Gallery: the paper's figures, regenerated\n\n"
        "Every figure here is drawn by a script that the documentation build runs on the "
        "bundled model and images (`zf.load_default()`, `zf.load_default_atlas()`, the bundled "
        "checkpoints): the pictures are what the library computes today. Each page shows the "
        "code that made its figure.\n\n"
        '<div class="zf-thumbs" markdown>\n\n'
    )
    for stem, title, png in index_rows:
        f.write(f"[![{title}]({stem}/{png})<br>{title}]({stem}.md)\n\n")
    f.write("</div>\n")
