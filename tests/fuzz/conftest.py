"""Fuzzing the HTTP surface in-process: random requests, forgeries, timing, schemathesis."""

from __future__ import annotations

import pytest

from tests.faults.report import Report, register, session_fixture


def pytest_configure(config: pytest.Config) -> None:
    register(config)


@pytest.fixture(scope="session")
def reliability(tmp_path_factory: pytest.TempPathFactory) -> Report:
    return session_fixture(tmp_path_factory)
