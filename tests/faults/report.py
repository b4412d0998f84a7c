"""The reliability report: what the fault and fuzz tests did to the service, and what it kept.

One process-wide collector (:data:`REPORT`). The fault tests add the faults they inject and the
fate of every request they send; the fuzz tests add the bad inputs they tried. A plugin, registered
by ``tests/faults/conftest.py`` and ``tests/fuzz/conftest.py`` (once, whichever loads first),
prints the totals at the end of the session and writes them as JSON under the session's
temporary directory (or to ``$PLIVOHOOK_RELIABILITY_REPORT``).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

PLUGIN_NAME = "plivohook-reliability-report"


class Report:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.started = time.time()
        self.faults: Counter[str] = Counter()
        self.requests_sent = 0
        self.responses_200 = 0
        self.acknowledged = 0  # distinct messages answered 200
        self.stored = 0  # of those, found stored (exactly once) afterwards
        self.lost = 0  # acknowledged but missing: must stay 0
        self.duplicates = 0  # a MessageUUID stored more than once: must stay 0
        self.bad_inputs: Counter[str] = Counter()
        self.seeds: dict[str, int] = {}
        self.basetemp: Path | None = None

    def fault(self, kind: str, count: int = 1) -> None:
        with self._lock:
            self.faults[kind] += count

    def bad_input(self, kind: str, count: int = 1) -> None:
        with self._lock:
            self.bad_inputs[kind] += count

    def traffic(self, sent: int = 0, ok: int = 0) -> None:
        with self._lock:
            self.requests_sent += sent
            self.responses_200 += ok

    def outcome(self, acknowledged: int, stored: int, lost: int, duplicates: int = 0) -> None:
        with self._lock:
            self.acknowledged += acknowledged
            self.stored += stored
            self.lost += lost
            self.duplicates += duplicates

    def seed(self, name: str, value: int) -> None:
        with self._lock:
            self.seeds[name] = value

    def as_dict(self) -> dict[str, Any]:
        return {
            "faults_injected": dict(sorted(self.faults.items())),
            "faults_injected_total": sum(self.faults.values()),
            "requests_sent": self.requests_sent,
            "responses_200": self.responses_200,
            "acknowledged_messages": self.acknowledged,
            "stored_of_acknowledged": self.stored,
            "lost": self.lost,
            "duplicates": self.duplicates,
            "bad_inputs_tried": dict(sorted(self.bad_inputs.items())),
            "bad_inputs_tried_total": sum(self.bad_inputs.values()),
            "seeds": dict(self.seeds),
            "seconds": round(time.time() - self.started, 1),
        }


REPORT = Report()


class ReliabilityPlugin:
    """Prints and saves :data:`REPORT` when the session ends."""

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        data = REPORT.as_dict()
        if not data["faults_injected_total"] and not data["bad_inputs_tried_total"]:
            return  # none of the fault or fuzz tests ran
        write = terminalreporter.write_line
        terminalreporter.write_sep("=", "plivohook reliability report")
        faults = ", ".join(f"{k} {v}" for k, v in data["faults_injected"].items()) or "none"
        write(f"faults injected:      {data['faults_injected_total']} ({faults})")
        write(f"requests sent:        {data['requests_sent']}")
        write(f"answered 200:         {data['responses_200']}")
        write(f"acknowledged msgs:    {data['acknowledged_messages']}")
        write(f"stored (of acked):    {data['stored_of_acknowledged']}")
        write(f"lost:                 {data['lost']}")
        write(f"stored twice:         {data['duplicates']}")
        bad = ", ".join(f"{k} {v}" for k, v in data["bad_inputs_tried"].items()) or "none"
        write(f"bad inputs tried:     {data['bad_inputs_tried_total']} ({bad})")
        if data["seeds"]:
            write(
                "seeds:                " + ", ".join(f"{k}={v}" for k, v in data["seeds"].items())
            )
        path = _report_path()
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(data, indent=2) + "\n", "utf-8")
                write(f"written to:           {path}")
            except OSError as exc:
                write(f"not written ({path}): {exc}")


def _report_path() -> Path | None:
    explicit = os.environ.get("PLIVOHOOK_RELIABILITY_REPORT")
    if explicit:
        return Path(explicit)
    if REPORT.basetemp is not None:
        return REPORT.basetemp / "reliability-report.json"
    return None


def register(config: pytest.Config) -> None:
    if not config.pluginmanager.has_plugin(PLUGIN_NAME):
        config.pluginmanager.register(ReliabilityPlugin(), PLUGIN_NAME)


def session_fixture(tmp_path_factory: pytest.TempPathFactory) -> Report:
    REPORT.basetemp = tmp_path_factory.getbasetemp()
    return REPORT
