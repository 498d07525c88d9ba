"""Browser test fixtures: a Voila server on 127.0.0.1 and Debian's headless Chromium.

The server runs in its own process group (kernels included) and is ended by its PID at
teardown (see harness.py). Chromium is /usr/bin/chromium driven by Playwright for Python
(never `playwright install`); `make test` installs it with apt-get when it is missing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS


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
        context = p.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 1300},
            device_scale_factor=1,
        )
        try:
            yield context
        finally:
            context.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
