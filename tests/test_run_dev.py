"""scripts/run_dev.py (`make run`): the file that keeps the development tokens is private."""

from __future__ import annotations

import importlib.util
import os
import stat
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_run_dev():
    spec = importlib.util.spec_from_file_location("run_dev", ROOT / "scripts" / "run_dev.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_env_file_is_created_0600(tmp_path):
    run_dev = load_run_dev()
    path = tmp_path / ".plivohook-dev.env"
    old = os.umask(0o022)
    try:
        run_dev.save(path, {"PLIVO_AUTH_TOKEN": "t" * 20, "PLIVOHOOK_ADMIN_TOKEN": "a" * 20})
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == f"PLIVO_AUTH_TOKEN={'t' * 20}\nPLIVOHOOK_ADMIN_TOKEN={'a' * 20}\n"


def test_an_existing_readable_env_file_is_made_private_before_it_is_written(tmp_path):
    run_dev = load_run_dev()
    path = tmp_path / ".plivohook-dev.env"
    path.write_text("PLIVO_AUTH_TOKEN=old\n")
    path.chmod(0o644)
    run_dev.save(path, {"PLIVO_AUTH_TOKEN": "new"})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == "PLIVO_AUTH_TOKEN=new\n"
