"""The ``plivohook`` command: serve, send (simulate Plivo), messages, sign, verify, migrate."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import re
import signal
import socket
import sys
import time
import uuid
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import click

from . import logs
from .config import (
    ConfigError,
    Settings,
    click_options,
    forward_options,
    setting_fields,
    split_tokens,
)
from .protocol import signature
from .protocol.simulator import (
    SCHEMES,
    inbound_sms_params,
    new_nonce,
    signed_request,
    status_params,
)

# C0 and C1 controls (ESC, BEL, CSI...) and DEL: stored text comes from anyone who can send an
# SMS, and a raw escape sequence would retitle, recolour or hyperlink the operator's terminal.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f]")
_CONTROLS_BUT_LINES = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(value: object, *, multiline: bool = False) -> str:
    """Stored data made safe for a terminal: control characters become U+FFFD.

    ``multiline`` keeps newlines and tabs (a message's text, a response body), which move the
    cursor forward only; a carriage return could overwrite what was printed, so it goes too.
    """
    text = "" if value is None else str(value)
    return (_CONTROLS_BUT_LINES if multiline else _CONTROLS).sub("\ufffd", text)


# -- the database: one clear line instead of a traceback -------------------------------------------


class SetupError(click.ClickException):
    """A setting the command cannot work with: one line on stderr, exit 2 (as a usage error)."""

    exit_code = 2


def _database_problem(message: str) -> SetupError:
    return SetupError(f"--database (PLIVOHOOK_DATABASE_URL): {message}")


def checked_store(
    database: str, *, must_exist: bool = False, folder_must_exist: bool = False, **options: Any
) -> Any:
    """The store for --database, or SetupError when the URL (or the SQLite file) is wrong.

    ``must_exist``: a command that only reads must not create an empty database for a typo.
    ``folder_must_exist``: only serve creates folders (0700); migrate on a typo'd folder refuses.
    """
    from .store import DatabaseURLError, open_store

    try:
        store = open_store(database, **options)
    except DatabaseURLError as exc:
        raise _database_problem(str(exc)) from None
    path = getattr(store, "path", None)
    if path and path != ":memory:":
        file = Path(path)
        if must_exist and not file.is_file():
            raise _database_problem(
                f"there is no SQLite database at {path} (nothing was created); check the path, "
                "or start serve once to create it"
            )
        if folder_must_exist and not file.absolute().parent.is_dir():
            raise _database_problem(
                f"the folder {file.absolute().parent} does not exist; create it, or let serve "
                "create it"
            )
    return store


async def _open_checked(store: Any) -> None:
    from .store import StoreUnavailable

    try:
        await store.open()
    except StoreUnavailable as exc:
        raise _database_problem(str(exc)) from None


# -- the port: one clear line instead of Errno 98 -----------------------------------------------


def port_problem(host: str, port: int) -> str | None:
    """Why serve could not listen on host:port (None: it can), found by binding a socket once.

    SO_REUSEADDR as uvicorn sets it, so a port in TIME_WAIT is not reported as busy. Another
    process may still take the port before uvicorn binds it; then uvicorn's own error remains.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"--host (PLIVOHOOK_HOST): cannot resolve {host!r}: {exc.strerror}"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return (
                    f"--port (PLIVOHOOK_PORT): port {port} on {host} is already in use (another "
                    "plivohook or make run?); stop it or choose another port"
                )
            if exc.errno == errno.EACCES:
                return (
                    f"--port (PLIVOHOOK_PORT): not allowed to listen on port {port} (ports below "
                    "1024 need privileges); choose a port from 1024 up"
                )
            if exc.errno == errno.EADDRNOTAVAIL:
                return f"--host (PLIVOHOOK_HOST): {host} is not an address of this machine"
            return f"--host/--port: cannot listen on {host}:{port}: {exc.strerror}"
    return None


def signed_urls_lines(settings: Settings, host: str, port: int) -> list[str]:
    """What serve says at start about the URL each signature is checked against.

    A wrong URL refuses every real message with 403, and the operator's first question is which
    URL the server expected: say it before the first request rather than after the first refusal.
    """
    if settings.insecure_skip_verify:
        return ["signatures are not checked (--insecure-skip-verify)"]
    if settings.public_url:
        lines = [
            f"signatures are checked against {settings.public_url}/plivo/message and "
            f"{settings.public_url}/plivo/status (plus the request's query string), "
            "from --public-url"
        ]
        if settings.trust_forwarded_headers:
            lines.append(
                "WARNING: --trust-forwarded-headers is ignored: --public-url alone decides the "
                "URL signatures are checked against; give one of them"
            )
        return lines
    source = (
        "X-Forwarded-Proto/X-Forwarded-Host (or Host) headers"
        if settings.trust_forwarded_headers
        else "Host header"
    )
    shown = f"[{host}]" if ":" in host else host
    return [
        f"signatures are checked against <scheme>://<host>/plivo/message and /plivo/status, the "
        f"host taken from each request's {source} (called directly: "
        f"http://{shown}:{port}/plivo/message); behind a tunnel or proxy give --public-url, "
        "the URL Plivo calls"
    ]


# -- tokens: from the environment or a file, a flag only with a warning -------------------------


def _token_file_option(name: str, envvar: str, what: str):  # type: ignore[no-untyped-def]
    return click.option(
        name,
        type=click.Path(exists=True, dir_okay=False, readable=True),
        envvar=envvar,
        show_envvar=True,
        help=f"Read {what} from this file (one per line or comma-separated).",
    )


def read_token_file(path: str | None, option: str) -> tuple[str, ...]:
    """The tokens in a file: one per line (or comma-separated), blank lines skipped."""
    if not path:
        return ()
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"cannot read {path}: {exc}", param_hint=option) from None
    tokens = split_tokens(lines)
    if not tokens:
        raise click.BadParameter(f"{path} holds no token", param_hint=option)
    return tokens


def token_warnings(ctx: click.Context, *flags: tuple[str, str, str]) -> list[str]:
    """A warning for each (parameter, flag, environment variable) whose token came as a flag.

    Every user of the machine can read another's command line (ps, /proc/PID/cmdline), not its
    environment or its 0600 files. The warning names the flag, never the value.
    """
    from click.core import ParameterSource

    return [
        f"WARNING: {flag} on the command line is visible to every user in the process "
        f"list (ps); set {envvar} or use {flag}-file instead."
        for param, flag, envvar in flags
        if ctx.get_parameter_source(param) is ParameterSource.COMMANDLINE
    ]


def warn_tokens_on_command_line(ctx: click.Context, *flags: tuple[str, str, str]) -> None:
    _echo_warnings(token_warnings(ctx, *flags))


def _echo_warnings(lines: list[str]) -> None:
    for line in lines:
        click.secho(line, fg="yellow", err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="plivohook")
def main() -> None:
    """plivohook: verify, keep and answer Plivo messaging webhooks."""


# -- serve --------------------------------------------------------------------------------------


@main.command()
@click_options
def serve(**options: Any) -> None:
    """Run the receiver: point Plivo's message_url at /plivo/message, callbacks at /plivo/status.

    Every option can also be set by its environment variable (shown with each option); tokens
    are best given that way or in a file, not as flags (visible to every user in `ps`).
    """
    # Said once the log format is known (with --log-format json, stderr is all JSON).
    warnings = token_warnings(
        click.get_current_context(),
        *(
            (f.name, spec.flag or "", spec.env)
            for f, spec in setting_fields()
            if spec.secret and spec.flag
        ),
    )
    try:
        settings = Settings.from_options(options).validated()
    except ConfigError as exc:
        _echo_warnings(warnings)
        raise click.UsageError(str(exc)) from None
    from .replies.service import check_settings
    from .server import run

    try:
        # A bad rules file or handler: one line naming the file, the rule and the reason.
        check_settings(settings)
    except ConfigError as exc:
        raise SetupError(str(exc)) from None
    problem = port_problem(settings.host, settings.port)
    if problem:
        _echo_warnings(warnings)
        raise SetupError(problem)

    async def preflight() -> None:
        # Open (and migrate) once before uvicorn starts: a wrong URL, PostgreSQL down or a
        # missing database is one line here, not a lifespan traceback per worker.
        store = checked_store(
            settings.database_url, pool_max=settings.pool_size, timeout=settings.write_timeout
        )
        await _open_checked(store)
        await store.close()

    asyncio.run(preflight())
    logs.configure(settings.log_level, settings.log_format)
    lines = warnings + signed_urls_lines(settings, settings.host, settings.port)
    if settings.insecure_skip_verify:
        lines.insert(
            len(warnings),
            "WARNING: --insecure-skip-verify: signatures are not checked; anyone can post.",
        )
    for line in lines:
        if settings.log_format == "json":
            # A log pipeline reads stderr: every line of it is one JSON object.
            warning = line.startswith("WARNING: ")
            logging.getLogger("plivohook").log(
                logging.WARNING if warning else logging.INFO, line.removeprefix("WARNING: ")
            )
        else:
            color = "red" if "--insecure-skip-verify:" in line else "yellow"
            click.secho(line, fg=color if line.startswith("WARNING") else None, err=True)
    run(settings)


# -- migrate ------------------------------------------------------------------------------------


@main.command()
@click.option("--database", default="sqlite:///plivohook.db", envvar="PLIVOHOOK_DATABASE_URL")
def migrate(database: str) -> None:
    """Apply pending schema migrations (serve also does this at start)."""
    from .store import StoreUnavailable

    async def go() -> list[int]:
        store = checked_store(database, folder_must_exist=True)
        try:
            return await store.migrate()  # type: ignore[no-any-return]
        except StoreUnavailable as exc:
            raise _database_problem(str(exc)) from None

    applied = asyncio.run(go())
    click.echo(f"applied migrations: {applied}" if applied else "schema is up to date")


# -- prune: retention on demand ------------------------------------------------------------------


@main.command()
@click.option("--database", default="sqlite:///plivohook.db", envvar="PLIVOHOOK_DATABASE_URL")
@click.option(
    "--older-than",
    "days",
    required=True,
    type=click.IntRange(0),
    help="Delete messages, delivery reports and rejections received more than DAYS days ago.",
)
def prune(database: str, days: int) -> None:
    """Delete old messages in small batches (safe while serve runs; opt-outs are kept)."""
    from datetime import UTC, datetime

    from .store import StoreUnavailable

    async def go() -> dict[str, int]:
        store = checked_store(database, must_exist=True)
        await _open_checked(store)
        try:
            return await store.prune_messages(datetime.now(UTC) - timedelta(days=days))  # type: ignore[no-any-return]
        except StoreUnavailable as exc:
            raise _database_problem(str(exc)) from None
        finally:
            await store.close()

    removed = asyncio.run(go())
    click.echo(", ".join(f"{table}: {count} deleted" for table, count in removed.items()))


# -- send: simulate Plivo -----------------------------------------------------------------------


def _signing_token(ctx: click.Context, auth_token: str | None, auth_token_file: str | None) -> str:
    warn_tokens_on_command_line(ctx, ("auth_token", "--auth-token", "PLIVO_AUTH_TOKEN"))
    tokens = split_tokens(auth_token) or read_token_file(auth_token_file, "--auth-token-file")
    if not tokens:
        raise click.UsageError(
            "no auth token to sign with: set PLIVO_AUTH_TOKEN, or give --auth-token-file"
        )
    return tokens[0]


@main.command()
@click.argument("url")
@click.option(
    "--auth-token", envvar="PLIVO_AUTH_TOKEN", show_envvar=True, help="Token to sign with."
)
@_token_file_option("--auth-token-file", "PLIVO_AUTH_TOKEN_FILE", "the token to sign with")
@click.option("--from", "from_", default="14155550100", show_default=True)
@click.option("--to", default="14155550199", show_default=True)
@click.option("--text", default="Hello from plivohook send", show_default=True)
@click.option("--uuid", "message_uuid", help="MessageUUID (default: a new one per message).")
@click.option("--count", default=1, show_default=True, type=click.IntRange(1, 1_000_000))
@click.option("--concurrency", default=10, show_default=True, type=click.IntRange(1, 1000))
@click.option(
    "--scheme",
    "schemes",
    multiple=True,
    type=click.Choice(SCHEMES),
    help="Signature headers to send; repeatable. [default: v2 and v3]",
)
@click.option("--method", default="POST", type=click.Choice(["POST", "GET"]), show_default=True)
@click.option("--status", "status", help="Send a delivery report with this Status instead.")
@click.option("--timeout", default=10.0, show_default=True, help="Seconds per request.")
@click.option(
    "--sign-url",
    help="Sign for this URL (e.g. a server's --public-url) while posting to URL.  [default: URL]",
)
@click.option(
    "--expect-reply",
    help="Exit 1 unless every answer's Message says exactly this text (use '' for no Message).",
)
@click.pass_context
def send(
    ctx: click.Context,
    url: str,
    auth_token: str | None,
    auth_token_file: str | None,
    from_: str,
    to: str,
    text: str,
    message_uuid: str | None,
    count: int,
    concurrency: int,
    schemes: tuple[str, ...],
    method: str,
    status: str | None,
    timeout: float,
    sign_url: str | None,
    expect_reply: str | None,
) -> None:
    """Send inbound messages to URL signed exactly as Plivo does (no Plivo account needed).

    URL is the full webhook URL, e.g. http://127.0.0.1:8080/plivo/message.
    """
    if sign_url is not None and not signature.base_url_variants(sign_url):
        raise click.BadParameter(f"{sign_url!r} is not a valid URL", param_hint="--sign-url")
    import httpx
    from rich.progress import Progress

    schemes = schemes or ("v2", "v3")
    token = _signing_token(ctx, auth_token, auth_token_file)

    def params_for(index: int) -> list[tuple[str, str]]:
        uid = message_uuid or str(uuid.uuid1())  # time-based, as Plivo's are
        if status:
            return status_params(uid, status, from_number=from_, to_number=to, sequence=index + 1)
        return inbound_sms_params(uid, text, from_, to)

    codes: Counter[str] = Counter()
    bodies: list[str] = []
    replies: Counter[str] = Counter()  # with --expect-reply: the answers' Message texts
    failures: dict[str, str] = {}

    def _reason(exc: Exception) -> str:
        # httpx's text for a refused connection may be "[Errno 111] Connection refused", "All
        # connection attempts failed", or (through anyio) a bare errno such as "1".
        text = str(exc).strip()
        return text if text and not text.isdigit() else type(exc).__name__

    async def run() -> None:
        limit = asyncio.Semaphore(concurrency)
        async with httpx.AsyncClient(timeout=timeout) as client:
            with Progress(transient=True, disable=count == 1) as progress:
                task = progress.add_task("sending", total=count)

                async def one(index: int) -> None:
                    async with limit:
                        full_url, headers, body = signed_request(
                            url, params_for(index), token, schemes, method, sign_url=sign_url
                        )
                        try:
                            response = await client.request(
                                method, full_url, headers=headers, content=body
                            )
                            codes[str(response.status_code)] += 1
                            if count == 1:
                                bodies.append(response.text)
                            if expect_reply is not None and response.status_code == 200:
                                replies[reply_text(response.text)] += 1
                        except httpx.ConnectError as exc:
                            codes["not reachable"] += 1
                            failures.setdefault("not reachable", _reason(exc))
                        except httpx.TimeoutException:
                            codes["timed out"] += 1
                        except httpx.HTTPError as exc:
                            codes[type(exc).__name__] += 1
                            failures.setdefault(type(exc).__name__, _reason(exc))
                        progress.advance(task)

                await asyncio.gather(*(one(i) for i in range(count)))

    started = time.perf_counter()
    asyncio.run(run())
    elapsed = time.perf_counter() - started
    if bodies:
        click.echo(printable(bodies[0].rstrip(), multiline=True))
    summary = ", ".join(f"{code}: {n}" for code, n in sorted(codes.items()))
    click.echo(f"sent {count} in {elapsed:.2f}s ({count / elapsed:.0f}/s) -- {summary}")
    if "not reachable" in codes:
        click.echo(
            f"the server is not reachable at {url} ({failures['not reachable']}); is plivohook "
            "serve running there?",
            err=True,
        )
    if "timed out" in codes:
        click.echo(f"no answer from {url} within {timeout:g} s (--timeout)", err=True)
    if any(not code.startswith("2") for code in codes):
        sys.exit(1)
    if expect_reply is not None:
        wrong = {text: n for text, n in replies.items() if text != expect_reply}
        if wrong or sum(replies.values()) != count:
            for text, n in sorted(wrong.items()):
                shown = printable(text) if text else "(no Message)"
                click.echo(f"expected reply {expect_reply!r}, got {shown!r} ({n}x)", err=True)
            sys.exit(1)
        click.echo(f"every answer says {expect_reply!r}")


def reply_text(body: str) -> str:
    """The text of the Message elements in an answer, joined by newlines ('' for none)."""
    from xml.etree import ElementTree

    try:
        root = ElementTree.fromstring(body)  # noqa: S314 - the answer of the server we called
    except ElementTree.ParseError:
        return f"(not XML: {body[:80]})"
    return "\n".join(element.text or "" for element in root.iter("Message"))


# -- messages -----------------------------------------------------------------------------------


@main.command()
@click.option("--database", default="sqlite:///plivohook.db", envvar="PLIVOHOOK_DATABASE_URL")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 500))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new messages as they arrive.")
@click.option("--from", "from_", help="Only messages from this number.")
@click.option("--to", help="Only messages to this number.")
@click.option("-q", "query", help="Only messages whose text contains this.")
def messages(
    database: str,
    limit: int,
    as_json: bool,
    follow: bool,
    from_: str | None,
    to: str | None,
    query: str | None,
) -> None:
    """Print the stored messages, newest last."""
    import orjson
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from .web.api import message_json as _message_view
    from .web.asgi import rfc3339 as _rfc3339

    console = Console()

    def show(batch: list[dict[str, Any]]) -> None:
        if as_json:
            for message in batch:
                view = _message_view(message)
                view["received_at"] = _rfc3339(message["received_at"])
                click.echo(orjson.dumps(view).decode())
            return
        if not batch:
            return
        table = Table(show_header=not follow or not seen, box=None)
        for column in ("received", "from", "to", "type", "text", "reply status"):
            table.add_column(column)
        for message in batch:
            # Text, not markup: "[/bold]" or "[link=...]" in a message is shown as written.
            table.add_row(
                Text(_rfc3339(message["received_at"])[:19].replace("T", " ")),
                Text(printable(message["from"])),
                Text(printable(message["to"])),
                Text(printable(message["type"])),
                Text(printable(message["text"], multiline=True)),
                Text(printable(message["status"] or "")),
            )
        console.print(table)

    seen: set[str] = set()

    async def go() -> None:
        store = checked_store(database, must_exist=True)
        await _open_checked(store)
        try:
            while True:
                page = await store.list_messages(
                    limit=limit, from_number=from_, to_number=to, q=query
                )
                fresh = [m for m in reversed(page.items) if m["message_uuid"] not in seen]
                show(fresh)
                seen.update(m["message_uuid"] for m in fresh)
                if not follow:
                    if not seen and not as_json:
                        click.echo("no messages yet")
                    return
                await asyncio.sleep(1.0)
        finally:
            await store.close()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(go())


# -- forward / deliveries ---------------------------------------------------------------------


@main.command()
@forward_options
def forward(**options: Any) -> None:
    """Deliver the stored events (the worker of serve, on its own; pair with --no-forward-worker).

    Any number may run against one PostgreSQL database, on any machines: they never deliver an
    event at the same time. On SQLite one delivers at a time, the others wait for its lease.
    """
    warn_tokens_on_command_line(
        click.get_current_context(),
        ("forward_secret", "--forward-secret", "PLIVOHOOK_FORWARD_SECRET"),
    )
    try:
        settings = Settings.from_options(options)
        settings.check_forwarding()
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    if not settings.forwarding:
        raise click.UsageError(
            "nothing to forward to: give --forward-url (PLIVOHOOK_FORWARD_URLS) or --nats-url"
        )
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )

    async def go() -> None:
        from .forward.service import destinations, run_worker

        store = checked_store(
            settings.database_url, pool_max=settings.pool_size, timeout=settings.write_timeout
        )
        await _open_checked(store)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        click.echo(f"forwarding to {', '.join(destinations(settings))} (Ctrl-C stops)", err=True)
        try:
            await run_worker(settings, store, stop)
        finally:
            await store.close()

    asyncio.run(go())


@main.command()
@click.option("--database", default="sqlite:///plivohook.db", envvar="PLIVOHOOK_DATABASE_URL")
@click.option("--dead", is_flag=True, help="Only the dead events (tried past --forward-max-age).")
@click.option(
    "--state",
    type=click.Choice(["pending", "delivered", "dead"]),
    help="Only events in this state.",
)
@click.option("--message-uuid", help="Only the events of this MessageUUID.")
@click.option("--destination", help="Only the events for this destination.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 500))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--retry", "retry_id", type=click.IntRange(1), help="Make this event due now.")
@click.option("--retry-dead", is_flag=True, help="Make every dead event due now.")
def deliveries(
    database: str,
    dead: bool,
    state: str | None,
    message_uuid: str | None,
    destination: str | None,
    limit: int,
    as_json: bool,
    retry_id: int | None,
    retry_dead: bool,
) -> None:
    """List forwarded events (newest last), or make dead ones due again."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from .web.asgi import json_bytes
    from .web.asgi import now as _now
    from .web.asgi import rfc3339 as _rfc3339

    if retry_id is not None and retry_dead:
        raise click.UsageError("give --retry ID or --retry-dead, not both")
    if dead:
        if state not in (None, "dead"):
            raise click.UsageError("--dead and --state disagree")
        state = "dead"

    async def go() -> None:
        store = checked_store(database, must_exist=True)
        await _open_checked(store)
        try:
            if retry_id is not None:
                if await store.retry_delivery(retry_id, _now()):
                    click.echo(f"event {retry_id} is due now")
                    return
                found = await store.get_delivery(retry_id)
                raise click.ClickException(
                    f"no delivery {retry_id}" if found is None else f"{retry_id} was delivered"
                )
            if retry_dead:
                count = await store.retry_dead(_now())
                click.echo(f"{count} dead event{'s' if count != 1 else ''} due now")
                return
            page = await store.list_deliveries(
                limit=limit, state=state, message_uuid=message_uuid, destination=destination
            )
        finally:
            await store.close()
        items = list(reversed(page.items))
        if as_json:
            for item in items:
                click.echo(json_bytes(item).decode())
            return
        if not items:
            click.echo("no deliveries")
            return
        table = Table(box=None)
        for column in ("id", "state", "tries", "type", "message", "destination", "last", "next"):
            table.add_column(column)
        for item in items:
            last = item["last_error"] or (
                str(item["last_status_code"]) if item["last_status_code"] else ""
            )
            following = item["next_attempt_at"]
            table.add_row(
                Text(str(item["id"])),
                Text(item["state"]),
                Text(str(item["attempts"])),
                Text(item["event_type"]),
                Text(printable(item["message_uuid"])),
                Text(printable(item["destination"])),
                Text(printable(last)),
                Text(_rfc3339(following)[:19].replace("T", " ") if following else ""),
            )
        Console().print(table)

    asyncio.run(go())


# -- sign / verify ------------------------------------------------------------------------------


def _pairs(values: tuple[str, ...]) -> list[tuple[str, str]]:
    pairs = []
    for item in values:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--param")
        pairs.append((key, value))
    return pairs


_URL = click.argument("url")
_METHOD = click.option(
    "--method", default="POST", show_default=True, type=click.Choice(["POST", "GET"])
)
_PARAM = click.option("--param", "-p", "params", multiple=True, help="A form field KEY=VALUE.")
_VERSION = click.option(
    "--version", "version", default="v3", show_default=True, type=click.Choice(["v2", "v3"])
)


@main.command()
@_URL
@click.option("--auth-token", envvar="PLIVO_AUTH_TOKEN", show_envvar=True)
@_token_file_option("--auth-token-file", "PLIVO_AUTH_TOKEN_FILE", "the token to sign with")
@click.option("--nonce", show_default="a new random one", help="The nonce header's value.")
@_METHOD
@_PARAM
@_VERSION
@click.pass_context
def sign(
    ctx: click.Context,
    url: str,
    auth_token: str | None,
    auth_token_file: str | None,
    nonce: str | None,
    method: str,
    params: tuple[str, ...],
    version: str,
) -> None:
    """Show the exact string Plivo signs for a request, and the signature header."""
    auth_token = _signing_token(ctx, auth_token, auth_token_file)
    nonce = nonce or new_nonce()
    pairs = _pairs(params)
    if not signature.base_url_variants(url):
        raise click.BadParameter(f"{url!r} is not a valid URL", param_hint="URL")
    if version == "v2":
        signed = signature.string_to_sign_v2(url, nonce)
        value = signature.sign_v2(url, nonce, auth_token)
        header = "X-Plivo-Signature-V2"
    else:
        signed = signature.string_to_sign_v3(method, url, pairs, nonce)
        value = signature.sign_v3(method, url, pairs, nonce, auth_token)
        header = "X-Plivo-Signature-V3"
    click.echo(f"string to sign: {signed}")
    click.echo(f"{header}: {value}")
    click.echo(f"{header}-Nonce: {nonce}")


@main.command()
@_URL
@click.option(
    "--auth-token", "auth_tokens", multiple=True, envvar="PLIVO_AUTH_TOKEN", show_envvar=True
)
@_token_file_option("--auth-token-file", "PLIVO_AUTH_TOKEN_FILE", "the token(s) to try")
@click.option("--nonce", required=True)
@click.option("--signature", "signature_value", required=True, help="The header's value.")
@_METHOD
@_PARAM
@_VERSION
@click.pass_context
def verify(
    ctx: click.Context,
    url: str,
    auth_tokens: tuple[str, ...],
    auth_token_file: str | None,
    nonce: str,
    signature_value: str,
    method: str,
    params: tuple[str, ...],
    version: str,
) -> None:
    """Check a signature and show every string tried: finds proxy and URL mismatches."""
    warn_tokens_on_command_line(ctx, ("auth_tokens", "--auth-token", "PLIVO_AUTH_TOKEN"))
    tokens = split_tokens([*auth_tokens, *read_token_file(auth_token_file, "--auth-token-file")])
    if not tokens:
        raise click.UsageError(
            "no auth token to try: set PLIVO_AUTH_TOKEN, or give --auth-token-file"
        )
    pairs = _pairs(params)
    if not signature.base_url_variants(url):
        raise click.BadParameter(f"{url!r} is not a valid URL", param_hint="URL")
    tried = signature.strings_to_sign(version, method, url, pairs, nonce)  # type: ignore[arg-type]
    plural = "s" if len(tried) != 1 else ""
    click.echo(
        f"tried {len(tried)} string{plural} (one per form of the URL), each with "
        f"{len(tokens)} token{'s' if len(tokens) != 1 else ''}:"
    )
    for name, text in tried:
        click.echo(f"tried ({name}): {printable(text)}")
    if version == "v2":
        result = signature.verify_v2(url, nonce, signature_value, tokens)
    else:
        result = signature.verify_v3(method, url, pairs, nonce, signature_value, tokens)
    if result:
        click.secho(
            f"valid: {result.scheme}, token #{result.token_index}, URL form {result.variant}",
            fg="green",
        )
        return
    click.secho(f"invalid: {result.reason}", fg="red")
    click.echo(
        "hint: the URL must be exactly the one configured at Plivo (scheme, host, port, path, "
        "trailing slash); behind a proxy use serve --public-url."
    )
    sys.exit(1)


# -- optouts ------------------------------------------------------------------------------------

_DATABASE = click.option(
    "--database", default="sqlite:///plivohook.db", envvar="PLIVOHOOK_DATABASE_URL"
)


def _number_argument(value: str, name: str) -> str:
    from .web.api import BadQuery, phone_number

    try:
        return phone_number(value, name)
    except BadQuery as exc:
        raise click.BadParameter(str(exc), param_hint=name.upper()) from None


def _with_store(database: str, work: Any) -> Any:
    async def go() -> Any:
        store = checked_store(database, must_exist=True)
        await _open_checked(store)
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(go())


@main.group()
def optouts() -> None:
    """List, add and remove opt-outs (senders who sent STOP to one of your numbers)."""


@optouts.command("list")
@_DATABASE
@click.option("--from", "from_", help="Only this sender.")
@click.option("--to", help="Only this number of ours.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 500))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def optouts_list(
    database: str, from_: str | None, to: str | None, limit: int, as_json: bool
) -> None:
    """Print the opt-outs, newest first."""
    import orjson

    from .web.asgi import rfc3339

    from_ = _number_argument(from_, "from") if from_ else None
    to = _number_argument(to, "to") if to else None

    async def work(store: Any) -> Any:
        return await store.list_optouts(limit=limit, from_number=from_, to_number=to)

    page = _with_store(database, work)
    if not page.items and not as_json:
        click.echo("no opt-outs")
    for item in page.items:
        at = rfc3339(item["opted_out_at"])
        if as_json:
            click.echo(orjson.dumps({**item, "opted_out_at": at}).decode())
        else:
            how = f"message {item['message_uuid']}" if item["message_uuid"] else "by hand"
            click.echo(
                f"{printable(item['from'])} opted out of {printable(item['to'])} at {at} "
                f"({printable(how)})"
            )


@optouts.command("add")
@_DATABASE
@click.argument("to")
@click.argument("from_", metavar="FROM")
def optouts_add(database: str, to: str, from_: str) -> None:
    """Record that FROM opted out of TO (one of your numbers)."""
    from .web.asgi import now

    to, from_ = _number_argument(to, "to"), _number_argument(from_, "from")

    async def work(store: Any) -> bool:
        return await store.add_optout(to, from_, now())  # type: ignore[no-any-return]

    added = _with_store(database, work)
    click.echo(f"{from_} opted out of {to}" + ("" if added else " (already)"))


@optouts.command("remove")
@_DATABASE
@click.argument("to")
@click.argument("from_", metavar="FROM")
def optouts_remove(database: str, to: str, from_: str) -> None:
    """Remove FROM's opt-out of TO; exit 1 if there was none."""
    to, from_ = _number_argument(to, "to"), _number_argument(from_, "from")

    async def work(store: Any) -> bool:
        return await store.remove_optout(to, from_)  # type: ignore[no-any-return]

    if not _with_store(database, work):
        click.echo(f"{from_} had not opted out of {to}", err=True)
        sys.exit(1)
    click.echo(f"{from_} may get replies from {to} again")


# -- rules and reload ---------------------------------------------------------------------------


@main.group()
def rules() -> None:
    """Check a rules file (--rules)."""


@rules.command("check")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--text", help="A sample message text: show which rule answers it.")
@click.option("--from", "from_", default="14155550100", show_default=True)
@click.option("--to", default="14155550199", show_default=True)
@click.option("--intent", help="A sample MessageIntent (optout, optin, help).")
@click.option("--opted-out", is_flag=True, help="As if the sender had opted out of --to.")
def rules_check(
    path: str, text: str | None, from_: str, to: str, intent: str | None, opted_out: bool
) -> None:
    """Validate the rules file PATH (exit 1 if it is bad) and try a sample text on it."""
    from .replies import RulesError, decide, load_rules

    try:
        loaded = load_rules(path)
    except RulesError as exc:
        click.echo(printable(str(exc)), err=True)
        sys.exit(1)
    keywords = sum(1 for rule in loaded.rules if rule.keyword is not None)
    click.echo(
        f"{path}: OK, {len(loaded.rules)} rules ({keywords} keyword, "
        f"{len(loaded.rules) - keywords} regex), "
        f"{'a' if loaded.default else 'no'} [default]"
    )
    if text is None:
        return
    decision = decide(
        text=text,
        from_=from_,
        to=to,
        message_intent=intent,
        rules=loaded,
        opted_out=opted_out,
    )
    click.echo(f"answered by: {decision.source}")
    if decision.action:
        click.echo(f"records: {decision.action}")
    if decision.reply_text is not None:
        click.echo(f"reply: {printable(decision.reply_text, multiline=True)}")
    elif decision.run_handler:
        click.echo("reply: none from the rules (a --handler would run)")
    else:
        click.echo("reply: none")


@main.command()
@click.option(
    "--pid", required=True, type=int, help="The serve process (its pid, printed at start)."
)
@click.option("--url", help="The server's base URL: show what /healthz says about the rules after.")
def reload(pid: int, url: str | None) -> None:
    """Reload the rules file of a running server (sends it SIGHUP; the same as kill -HUP PID).

    With --workers the serving process passes the signal to every worker. A file that does not
    load keeps the rules in force; with --url this says so, and exits 1.
    """
    import signal

    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        raise SetupError(f"--pid: no process {pid}") from None
    except PermissionError:
        raise SetupError(f"--pid: not allowed to signal process {pid}") from None
    click.echo(f"sent SIGHUP to {pid}")
    if not url:
        return
    import httpx

    health: dict[str, Any] = {}
    for _ in range(20):  # the workers reload on their own; give them a moment
        time.sleep(0.25)
        try:
            health = httpx.get(url.rstrip("/") + "/healthz", timeout=5).json()
        except (httpx.HTTPError, ValueError) as exc:
            raise SetupError(f"--url: no answer from {url}/healthz: {exc}") from None
        if health.get("rules", {}).get("ok"):
            break
    state = health.get("rules")
    if state is None:
        click.echo("the server has no --rules file")
        return
    if state.get("ok"):
        click.echo(f"rules in force: {state['running']}")
        return
    click.echo(f"the rules were NOT reloaded: {printable(state.get('error'))}", err=True)
    sys.exit(1)


# Every option that reads the environment says which variable in --help.
for _command in main.commands.values():
    for _param in _command.params:
        if isinstance(_param, click.Option) and _param.envvar:
            _param.show_envvar = True
