"""Shared fixtures; QGIS itself is started once per session by pytest-qgis."""
from plugin_fixtures import prepare_environment, remove_scratch

prepare_environment()

from plugin_fixtures import naip_raster, plugin_package  # noqa: E402,F401

import os  # noqa: E402
import sys  # noqa: E402

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


_EXIT_STATUS = pytest.StashKey[int]()


def pytest_sessionfinish(session, exitstatus):
    session.config.stash[_EXIT_STATUS] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """Leave without the interpreter's final teardown, with pytest's own exit status.

    After the Dask tests (tests/test_distributed.py: LocalClusters started and closed in this process), the
    interpreter's teardown crashed ("double free or corruption", exit 139) once every test had passed and
    the summary was printed: a crash of process exit in the libraries' native threads, not of a test. It
    would turn a green run red, so the run ends here, after every other plugin's teardown (QGIS's too).
    """
    remove_scratch()
    status = config.stash.get(_EXIT_STATUS, None)
    if status is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
