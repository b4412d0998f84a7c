"""Logging, configured in one place: ``serve``, each worker of ``--workers N``, and uvicorn's.

Two formats (``--log-format``):

* ``text`` (the default): ``2024-05-01 12:00:00,123 INFO plivohook: message 200 stored ...``
* ``json``: one object per line, ``{"ts": ..., "level": ..., "logger": ..., "msg": ...}`` plus the
  request's fields on a webhook's line (``route``, ``method``, ``status``, ``outcome``,
  ``message_uuid``, ``duration_ms``); a traceback goes in ``exc``. ASCII only: a client's bytes
  can never break a line or the JSON.

uvicorn's loggers lose their own handlers and go through the same one (its access log stays
off: the webhooks log their own line per request). Worker processes are started afresh and call
:func:`configure` again from the settings in their environment.

No line carries a token, a signature, a cookie or an Authorization header: the request line
names the route, the MessageUUID, the outcome and the time, never headers or the body.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

__all__ = ["REQUEST_FIELDS", "JSONFormatter", "TextFormatter", "configure"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# The attribute a webhook's log line carries its fields in (``extra={"request": {...}}``).
REQUEST_FIELDS = "request"
_UVICORN = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)


class JSONFormatter(logging.Formatter):
    """One JSON object per line: ts (UTC, ISO 8601, milliseconds), level, logger, msg, fields."""

    def format(self, record: logging.LogRecord) -> str:
        created = record.created
        seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
        entry: dict[str, Any] = {
            "ts": f"{seconds}.{int(created % 1 * 1000):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, REQUEST_FIELDS, None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        # ensure_ascii: a lone surrogate from a client's bytes stays an escape, never an
        # encoding error on the way out.
        return json.dumps(entry, default=str)


def configure(level: str = "info", fmt: str = "text", *, stream: TextIO | None = None) -> None:
    """Send every log line (ours and uvicorn's) to ``stream`` (stderr) in ``fmt``, at ``level``."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in _UVICORN:
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            logger.removeHandler(old)
        logger.propagate = True
        logger.setLevel(level.upper())
    # Our own logger follows the root's level; set explicitly in case a library changed it.
    logging.getLogger("plivohook").setLevel(level.upper())
