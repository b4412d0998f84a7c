"""The light install: the protocol library and the Flask decorator work without the server extra.

Each test runs Python in a subprocess whose ``sitecustomize`` installs a meta path finder that
refuses the server extra's packages, as if they were not installed. Flask itself needs click, so
the Flask checks leave click alone (it comes with Flask, not with plivohook).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from plivohook.console import SERVER_MODULES

PLIVOHOOK_SCRIPT = Path(sys.executable).parent / "plivohook"
ALL_SERVER = frozenset(SERVER_MODULES)

BLOCKER = """\
import sys

BLOCKED = frozenset({blocked!r})


class Blocker:
    def find_spec(self, fullname, path=None, target=None):
        if fullname.partition(".")[0] in BLOCKED:
            raise ImportError(f"blocked for this test: {{fullname}}", name=fullname)
        return None


sys.meta_path.insert(0, Blocker())
"""

# The blocker must really block (an import of each blocked name fails), and nothing blocked may
# have been imported some other way by the end.
CHECK_BLOCKED = """
import sys
from sitecustomize import BLOCKED
for name in BLOCKED:
    try:
        __import__(name)
    except ImportError:
        pass
    else:
        raise SystemExit(f"the blocker let {name} through")
leaked = sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED)
assert not leaked, leaked
print("ok")
"""


def run(tmp_path: Path, blocked: frozenset[str], argv: list[str]) -> subprocess.CompletedProcess:
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(BLOCKER.format(blocked=sorted(blocked)))
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path, check=False
    )


def test_protocol_imports_and_works_without_the_server_extra(tmp_path):
    code = textwrap.dedent(
        """
        import plivohook
        from plivohook.protocol import form, params, signature, xml

        pairs = form.parse_form(
            "From=14155550100&To=14155550199&Text=Hi&"
            "MessageUUID=2f6d4c6e-1a2b-4c3d-9e8f-0a1b2c3d4e5f"
        )
        url = "https://example.com/plivo/message"
        headers = {
            "X-Plivo-Signature-V3": signature.sign_v3("POST", url, pairs, "12345", "token"),
            "X-Plivo-Signature-V3-Nonce": "12345",
        }
        assert signature.verify_request("POST", url, headers, pairs, ["token"])
        message = params.parse_message(pairs)
        reply = xml.Response([xml.reply_to(message.from_number, message.to_number, "Hi")])
        assert reply.to_xml().startswith("<Response><Message")
        """
    )
    result = run(tmp_path, ALL_SERVER, [sys.executable, "-c", code + CHECK_BLOCKED])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_flask_integration_imports_and_answers_without_the_server_extra(tmp_path):
    code = textwrap.dedent(
        """
        import flask
        from plivohook.integrations.flask import plivo_webhook
        from plivohook.protocol.signature import sign_v2
        from plivohook.protocol.xml import Message, Response

        app = flask.Flask("light")
        app.config["PLIVO_AUTH_TOKEN"] = "token"

        @app.post("/sms")
        @plivo_webhook(public_url="https://example.com")
        def sms(message):
            return Response([Message("Thanks!", src=message.to_number, dst=message.from_number)])

        headers = {
            "X-Plivo-Signature-V2": sign_v2("https://example.com/sms", "12345", "token"),
            "X-Plivo-Signature-V2-Nonce": "12345",
        }
        fields = {"From": "ACME", "To": "14155550199", "Text": "Hi",
                  "MessageUUID": "2f6d4c6e-1a2b-4c3d-9e8f-0a1b2c3d4e5f"}
        response = app.test_client().post("/sms", data=fields, headers=headers)
        assert response.status_code == 200, response.status_code
        assert response.get_data() == b"<Response/>", response.get_data()
        """
    )
    blocked = ALL_SERVER - {"click"}
    result = run(tmp_path, blocked, [sys.executable, "-c", code + CHECK_BLOCKED])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


@pytest.mark.parametrize(
    "blocked",
    [ALL_SERVER, ALL_SERVER - {"click"}, frozenset({"psycopg_pool"})],
    ids=["core-only", "flask-extra", "one-missing"],
)
@pytest.mark.parametrize("how", ["script", "module"])
@pytest.mark.parametrize("args", [["serve"], ["--help"]])
def test_command_without_the_server_extra_says_so(tmp_path, blocked, how, args):
    assert PLIVOHOOK_SCRIPT.is_file(), "install with make .venv/.installed-stamp"
    argv = [str(PLIVOHOOK_SCRIPT)] if how == "script" else [sys.executable, "-m", "plivohook"]
    result = run(tmp_path, blocked, argv + args)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("the plivohook command needs the server extra: pip install '")
    assert "[server]'" in line
    assert line.endswith(f"(missing: {', '.join(m for m in SERVER_MODULES if m in blocked)})")


def test_command_with_the_server_extra_runs(tmp_path):
    result = run(tmp_path, frozenset(), [str(PLIVOHOOK_SCRIPT), "--version"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "plivohook, version 0.1.0"
