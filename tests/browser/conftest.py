"""Browser test fixtures: the module's notebook served by Voila on 127.0.0.1
(``voila_server``) and Debian's headless Chromium (``browser_context``).

A module that serves a notebook declares its cells and asks for ``voila_server``:

- ``NOTEBOOK = [cell, ...]``: one notebook, one server for the module;
- ``NOTEBOOKS = {key: [cell, ...], ...}``: one server per key, one after the other; every test
  that asks for ``voila_server`` runs once per key (``voila_server.key`` says which);
- optionally ``voila_files(directory)``: writes the files the notebook reads into the
  server's folder (its working directory) before the server starts.

The server runs in its own process group (kernels included), culls kernels no page is
connected to, and is ended by its PID at teardown (see harness.py). Chromium is
/usr/bin/chromium driven by Playwright for Python (never `playwright install`); `make test`
installs it with apt-get when it is missing.

Every check of what a page shows after an action waits for it (``expect(locator)...`` or
``wait_for_function``); ``expect`` waits up to ``EXPECT_TIMEOUT_MS`` unless told otherwise.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import ARTIFACTS, CHROMIUM, VoilaServer, launch, serve

#: how long ``expect(locator)`` waits by default (Playwright's own default is 5 s, too short
#: on a loaded machine for a redraw that follows kernel work)
EXPECT_TIMEOUT_MS = 30_000


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if CHROMIUM.exists():
        return
    skip = pytest.mark.skip(
        reason=f"{CHROMIUM} is missing: install it with `apt-get install -y chromium` "
        "(`make test` does)"
    )
    for item in items:
        if "browser" in item.keywords:
            item.add_marker(skip)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A module with ``NOTEBOOKS`` runs its ``voila_server`` tests once per notebook."""
    notebooks = getattr(metafunc.module, "NOTEBOOKS", None)
    if notebooks is not None and "voila_server" in metafunc.fixturenames:
        metafunc.parametrize("voila_server", list(notebooks), indirect=True)


@pytest.fixture(scope="module")
def voila_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[VoilaServer]:
    """The test module's notebook (``NOTEBOOK``, or ``NOTEBOOKS[key]``) served by Voila from
    a fresh folder, one server per module (and key); ended, kernels included, at teardown.

    Every GET of its ``url`` starts a kernel that runs the notebook: a test that opens its own
    page sees no state another test left."""
    module = request.module
    key = getattr(request, "param", None)
    cells = module.NOTEBOOK if key is None else module.NOTEBOOKS[key]
    stem = module.__name__.rpartition(".")[2].removeprefix("test_").removesuffix("_browser")
    name = stem if key is None else f"{stem}-{key}"
    directory = tmp_path_factory.mktemp(f"voila-{name}")
    files = getattr(module, "voila_files", None)
    if files is not None:
        files(directory)
    server = serve(directory, f"{name}.ipynb", cells)
    server.key = key
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """A headless Debian Chromium (persistent context in a temp profile), one per test module.

    Playwright's sync API keeps an asyncio loop marked as running in this thread while the
    browser is open; widgets built in this process meanwhile would take it for a kernel's
    loop. Closing the browser with its module keeps that loop out of every other test.
    """
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as p:
        context = launch(p, profile, width=1280, height=1300)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture(scope="session", autouse=True)
def expect_timeout() -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=EXPECT_TIMEOUT_MS)


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
