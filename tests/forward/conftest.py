"""Fixtures: a real receiving app (see receiver.py) on a free local port."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .receiver import Receiver, Served, free_port


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    """A receiver already listening, and its base URL."""
    state = Receiver()
    port = free_port()
    served = Served(state.app(), port)
    try:
        yield state, f"http://127.0.0.1:{port}"
    finally:
        served.stop()
