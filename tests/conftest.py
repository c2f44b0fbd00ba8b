"""Suite-wide rules: a clean environment per test, and under CI=true no skipped tests."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.fakes.slack_api import FakeSlack

# Read before any test runs: the autouse fixture below clears the environment.
RUNNING_IN_CI = os.environ.get("CI", "").lower() in ("true", "1", "yes")
_ENV_PREFIXES = ("SLACK_", "CTBOT_")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test sees the developer's Slack tokens or ctbot settings."""
    for name in list(os.environ):
        if name.startswith(_ENV_PREFIXES):
            monkeypatch.delenv(name)
    yield


@pytest.fixture
async def fake_slack() -> AsyncIterator[FakeSlack]:
    """The local fake of Slack's Web API (tests/fakes/slack_api.py), started and stopped."""
    fake = FakeSlack()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


_skipped: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # Under CI a skipped test is a failure: the suite must prove the real thing works.
    if RUNNING_IN_CI and _skipped and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if RUNNING_IN_CI and _skipped:
        terminalreporter.write_line(
            f"CI=true: {len(_skipped)} skipped test(s) count as failures: "
            + ", ".join(_skipped), red=True)
