"""A pytest plugin that runs the collected tests in a seeded random order.

    pytest -p scripts.shuffle_plugin --shuffle-seed 3 tests/browser

Used by ``scripts/browser_runs.py`` so that each run of the browser suite takes another order
(the tests must pass in any order). Tests that share a module-scoped fixture value (a Voila
server, a parametrised model) stay together, so each server still starts once per group; the
groups and the tests inside each group are shuffled. The seed is printed in the header.
"""

from __future__ import annotations

import random

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--shuffle-seed", type=int, default=None, help="run the tests in an order seeded by this"
    )


def pytest_report_header(config: pytest.Config) -> str | None:
    seed = config.getoption("--shuffle-seed")
    return None if seed is None else f"test order shuffled with seed {seed}"


def _group(item: pytest.Item) -> tuple:
    """The module and the values of the module- or session-scoped parameters the test uses."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    defs = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {})
    shared = []
    for name, value in sorted(params.items()):
        fixturedefs = defs.get(name) or ()
        if fixturedefs and fixturedefs[-1].scope in ("module", "package", "session"):
            shared.append((name, repr(value)))
    return (item.nodeid.split("::")[0], tuple(shared))


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    seed = config.getoption("--shuffle-seed")
    if seed is None:
        return
    rng = random.Random(seed)
    groups: dict[tuple, list[pytest.Item]] = {}
    for item in items:
        groups.setdefault(_group(item), []).append(item)
    order = list(groups.values())
    rng.shuffle(order)
    items[:] = []
    for group in order:
        rng.shuffle(group)
        items.extend(group)
