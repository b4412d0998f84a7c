import json
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"


def load_vectors() -> list[dict]:
    """The reference vectors (a copy of shared/reference/signature-vectors.json, kept in sync)."""
    return json.loads((DATA / "signature-vectors.json").read_text("utf-8"))
