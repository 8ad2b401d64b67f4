"""Shared fixtures; QGIS itself is started once per session by pytest-qgis."""
from plugin_fixtures import prepare_environment

prepare_environment()

from plugin_fixtures import naip_raster, plugin_package  # noqa: E402,F401

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """Config JSON + checkpoint of a tiny random-weight CLIP (see tests/tinymodel.py)."""
    from tinymodel import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny-model"))


# -- the adversary suite's tally (tests/test_adversary.py), printed at the end of every run ------------
_ADVERSARY = {"ran": 0, "held": 0, "skipped": 0, "failed": []}


def pytest_configure(config):
    config.addinivalue_line("markers", "adversary: a case of the adversary suite (faults, damage, hostile input)")


def pytest_runtest_logreport(report):
    if "adversary" not in report.keywords:
        return
    if report.when == "call":
        _ADVERSARY["ran"] += 1
        if report.passed:
            _ADVERSARY["held"] += 1
        else:
            _ADVERSARY["failed"].append(report.nodeid)
    elif report.skipped:
        _ADVERSARY["skipped"] += 1
    elif report.failed:
        _ADVERSARY["ran"] += report.when == "setup"
        _ADVERSARY["failed"].append(report.nodeid)


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter):
    tally = _ADVERSARY
    if not (tally["ran"] or tally["skipped"]):
        return
    failed = sorted(set(tally["failed"]))
    line = (f"adversary suite: {tally['ran']} cases ran, {tally['held']} held, {len(failed)} failed"
            + (f", {tally['skipped']} skipped" if tally["skipped"] else ""))
    terminalreporter.write_sep("-", line, red=bool(failed), green=not failed)
    for nodeid in failed:
        terminalreporter.write_line(f"  did not hold: {nodeid}")
