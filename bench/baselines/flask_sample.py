"""Baseline: Plivo's receive-SMS sample for Flask, with the SDK's V2 signature check.

The way Plivo's documentation shows it (and its users deploy it, on gunicorn with one sync
worker): validate ``X-Plivo-Signature-V2`` with ``plivo.utils.validate_signature``, read the
form, print the message, answer Message XML echoing it back. It stores nothing.

    BENCH_AUTH_TOKEN=... gunicorn -w 1 -k sync -b 127.0.0.1:8000 flask_sample:app
"""

from __future__ import annotations

import os

from flask import Flask, Response, request
from plivo import plivoxml
from plivo.utils import validate_signature

AUTH_TOKEN = os.environ.get("BENCH_AUTH_TOKEN", "")

app = Flask(__name__)


@app.route("/plivo/message", methods=["GET", "POST"])
def inbound_sms() -> Response:
    signature = request.headers.get("X-Plivo-Signature-V2")
    nonce = request.headers.get("X-Plivo-Signature-V2-Nonce")
    if not signature or not nonce:
        return Response("missing signature", status=403)
    if not validate_signature(request.url, nonce, signature, AUTH_TOKEN):
        return Response("invalid signature", status=403)

    from_number = request.values.get("From")
    to_number = request.values.get("To")
    text = request.values.get("Text")
    print(f"Message received - From: {from_number}, To: {to_number}, Text: {text}")

    response = plivoxml.ResponseElement()
    response.add(
        plivoxml.MessageElement(
            "Thank you, we have received your request", src=to_number, dst=from_number
        )
    )
    return Response(response.to_string(), mimetype="application/xml")
