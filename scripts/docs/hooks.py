"""Checks run at the end of `make docs` (mkdocs hooks): a failure here fails the build.

- every public name (``zfwidgets.__all__`` and ``zfwidgets.widgets.__all__``) has an entry,
  i.e. an element with its identifier as ``id`` on its reference page;
- every internal link and image resolves (file, and anchor when one is given);
- nothing is requested from outside the site: no ``src``/``href`` of a script, stylesheet,
  image, font or iframe points to another host (plain ``<a>`` links to papers may).
"""

from __future__ import annotations

import posixpath
import re
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's zfwidgets
sys.path.insert(0, str(Path(__file__).resolve().parent))

import public_names  # noqa: E402


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.links: list[tuple[str, str, str]] = []  # (tag, attribute, url)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        if tag == "a" and a.get("name"):
            self.ids.add(a["name"])
        for attr in ("href", "src"):
            if a.get(attr) is not None:
                self.links.append((tag, attr, a[attr]))


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8", errors="replace"))
    return page


def check_site(site: Path) -> list[str]:
    """Every problem found in the built site, as messages (empty when all is well)."""
    problems: list[str] = []
    pages = {p: _parse(p) for p in site.rglob("*.html")}

    # 1. every public name has its entry
    groups = public_names.grouped()
    for group, entries in groups.items():
        page = site / "reference" / f"{group}.html"
        ids = pages[page].ids if page in pages else set()
        for name, identifier in entries:
            if identifier not in ids:
                problems.append(f"public name {name!r}: no entry #{identifier} in {page.name}")
    listed = {name for entries in groups.values() for name, _ in entries}
    for name in sorted(public_names.all_public() - listed):
        problems.append(f"public name {name!r}: not in the reference")

    # 2. internal links resolve; 3. nothing external is loaded
    for path, page in pages.items():
        if path.name == "404.html" and path.parent == site:
            continue  # links from the site root (/...): a web server's error page, not file://
        for tag, attr, url in page.links:
            parts = urlsplit(url)
            if parts.scheme in ("http", "https") or url.startswith("//"):
                if tag != "a":
                    problems.append(f"{path.relative_to(site)}: <{tag} {attr}> loads {url}")
                continue
            if parts.scheme in ("mailto", "data", "javascript", "blob") or url == "#":
                continue
            target = path if not parts.path else (path.parent / unquote(parts.path)).resolve()
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                problems.append(f"{path.relative_to(site)}: broken link {url}")
                continue
            frag = unquote(parts.fragment)
            if frag and target in pages and frag not in pages[target].ids:
                problems.append(f"{path.relative_to(site)}: no anchor #{frag} in {url}")
    # stylesheets: no @import / url() of another host (fonts are off: theme.font false)
    for css in site.rglob("*.css"):
        for m in re.finditer(r"url\((['\"]?)(https?:)?//", css.read_text(errors="replace")):
            problems.append(f"{css.relative_to(site)}: loads {m.group(0)}...")
    return problems


_ROLE = re.compile(r":(?:func|class|meth|mod|data|attr|exc|obj):<code>(~?)([^<]+)</code>")
_targets: dict[str, tuple[str, str]] = {}


def _public_targets() -> dict[str, tuple[str, str]]:
    """name -> (reference page, anchor) for every public name."""
    if not _targets:
        for group, entries in public_names.grouped().items():
            for name, identifier in entries:
                _targets[name] = (f"reference/{group}.html", identifier)
    return _targets


def on_page_content(html, page, **kwargs):
    """Docstrings use Sphinx roles (:func:`x`), which Markdown leaves as ``:func:<code>x</code>``:
    show them as code, linked to the reference entry when they name a public object."""
    targets = _public_targets()
    here = posixpath.dirname(page.file.url)

    def replace(m: re.Match) -> str:
        tilde, target = m.group(1), m.group(2)
        text = target.rsplit(".", 1)[-1] if tilde else target
        parts = target.split(".")
        hit = None
        for i, part in enumerate(parts):  # the first public name along the dotted path
            if part in targets and (i == 0 or parts[0] == "zfwidgets"):
                hit = targets[part]
                break
        if hit is None:
            return f"<code>{text}</code>"
        url = posixpath.relpath(hit[0], here or ".") + "#" + hit[1]
        return f'<a href="{url}"><code>{text}</code></a>'

    return _ROLE.sub(replace, html)


def on_post_build(config, **kwargs):
    site = Path(config["site_dir"])
    problems = check_site(site)
    if problems:
        listing = "\n  ".join(problems[:50])
        raise SystemExit(f"docs check failed ({len(problems)} problems):\n  {listing}")
    n = sum(len(v) for v in public_names.grouped().values())
    print(f"INFO    -  docs check: {n} public names documented, links and offline checks pass")
