import json
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"


def load_vectors() -> list[dict]:
    """The reference vectors (a copy of shared/reference/signature-vectors.json, kept in sync)."""
    return json.loads((DATA / "signature-vectors.json").read_text("utf-8"))


def plivo_requests() -> list[dict]:
    """Sample requests as Plivo sends them (tests/data/plivo-requests.json)."""
    return json.loads((DATA / "plivo-requests.json").read_text("utf-8"))["cases"]


def sample(name: str) -> list[tuple[str, str]]:
    """The form fields of one sample request, in order."""
    for case in plivo_requests():
        if case["name"] == name:
            return [(key, value) for key, value in case["params"]]
    raise KeyError(name)
