"""The service's settings, each defined once: its flag, environment variable, parser and help.

A field of :class:`Settings` carries a :class:`Setting` in its metadata; everything else is
derived from it: ``serve``'s click options (:func:`click_options`), the settings from those
options (:meth:`Settings.from_options`), the environment a worker process is started with
(:meth:`Settings.to_env`) and the settings it rebuilds from it (:meth:`Settings.from_env`). They
used to be listed by hand in four places, and one was lost on the way: ``--pool-size`` never
reached the workers of ``--workers N``. tests/test_config.py round-trips every field and checks
the README's table against these definitions.

Secrets (the tokens) may also come from a file (``--auth-token-file``, ``PLIVO_AUTH_TOKEN_FILE``)
so that they need not appear in the process list, and are never shown by ``repr``.
"""

from __future__ import annotations

import enum
import ipaddress
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields, replace
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "ConfigError",
    "Kind",
    "Setting",
    "Settings",
    "click_options",
    "forward_options",
    "host_name",
    "is_host",
    "setting_fields",
    "split_tokens",
]


class ConfigError(ValueError):
    """A setting the service cannot start with; the message says how to fix it."""


def split_tokens(values: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """Values from repeated flags and/or comma-separated text, blanks dropped, order kept."""
    if not values:
        return ()
    if isinstance(values, str):
        values = [values]
    tokens: list[str] = []
    for value in values:
        for token in value.split(","):
            token = token.strip()
            if token and token not in tokens:
                tokens.append(token)
    return tuple(tokens)


class Kind(enum.Enum):
    """How a setting is written as text (a flag's value, an environment variable)."""

    STRING = "string"  # never empty
    OPTIONAL = "optional"  # str | None; empty text is None
    BOOL = "bool"  # a flag; 1/true/yes/on in the environment
    INT = "int"
    FLOAT = "float"
    SECONDS = "seconds"  # a timedelta, written as whole seconds
    LIST = "list"  # tuple[str, ...]: a repeated flag, comma-separated text


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})


@dataclass(frozen=True, slots=True)
class Setting:
    env: str
    help: str
    kind: Kind = Kind.STRING
    flag: str | None = None  # None: environment only
    secret: bool = False  # never printed, logged or returned; may also come from a file
    choices: tuple[str, ...] | None = None
    min: float | None = None
    max: float | None = None

    @property
    def file_env(self) -> str:
        return f"{self.env}_FILE"

    @property
    def file_flag(self) -> str | None:
        return f"{self.flag}-file" if self.flag else None

    def parse(self, text: str, name: str) -> Any:
        """The value of ``text`` (from the environment); ConfigError names ``name``."""
        kind = self.kind
        if kind is Kind.LIST:
            return split_tokens(text)
        if kind is Kind.OPTIONAL:
            return text or None
        if kind is Kind.BOOL:
            lowered = text.strip().lower()
            if lowered not in _TRUE | _FALSE:
                raise ConfigError(f"{name} must be 1 or 0 (true or false), not {text!r}")
            return lowered in _TRUE
        if kind in (Kind.INT, Kind.SECONDS, Kind.FLOAT):
            try:
                number: float = float(text) if kind is Kind.FLOAT else int(text)
            except ValueError:
                what = "a number" if kind is Kind.FLOAT else "a whole number"
                raise ConfigError(f"{name} must be {what}, not {text!r}") from None
            self.check_range(number, name)
            return timedelta(seconds=number) if kind is Kind.SECONDS else number
        if self.choices and text not in self.choices:
            raise ConfigError(f"{name} must be one of {', '.join(self.choices)}, not {text!r}")
        return text

    def check_range(self, number: float, name: str) -> None:
        if (self.min is not None and number < self.min) or (
            self.max is not None and number > self.max
        ):
            low = "" if self.min is None else _number(self.min)
            high = "" if self.max is None else _number(self.max)
            raise ConfigError(f"{name} must be in the range {low}..{high}, not {_number(number)}")

    def format(self, value: Any) -> str:
        """``value`` as :meth:`parse` reads it back."""
        if value is None:
            return ""
        kind = self.kind
        if kind is Kind.LIST:
            return ",".join(value)
        if kind is Kind.BOOL:
            return "1" if value else ""
        if kind is Kind.SECONDS:
            return str(int(value.total_seconds()))
        return str(value)


# RFC 3986, section 3.2.2: reg-name = *( unreserved / pct-encoded / sub-delims ), and an
# IP-literal in brackets; then an optional port. Nothing that ends the authority (/ ? #), no
# userinfo (@), no whitespace: the expected URL is built from this text, and any of those would
# let a client move the path a signature is checked against.
_REG_NAME = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})+")
_IPV_FUTURE = re.compile(r"v[0-9A-Fa-f]+\.[A-Za-z0-9\-._~!$&'()*+,;=:]+")
_PORT = re.compile(r"[0-9]{1,5}")


def is_host(value: str) -> bool:
    """Whether ``value`` is an RFC 3986 ``host[:port]`` (what a Host header may hold)."""
    if value.startswith("["):
        literal, bracket, rest = value[1:].partition("]")
        if not bracket:
            return False
        if not _IPV_FUTURE.fullmatch(literal):
            try:
                ipaddress.IPv6Address(literal)
            except ValueError:
                return False
            if "%" in literal:  # a zone id (RFC 6874) names a local interface: not a host
                return False
    else:
        name, colon, port = value.partition(":")
        if not _REG_NAME.fullmatch(name):
            return False
        rest = colon + port
    if not rest:
        return True
    return rest[0] == ":" and _PORT.fullmatch(rest[1:]) is not None


def host_name(value: str) -> str:
    """The host of a ``host[:port]``, lower-cased, brackets kept (``[::1]``)."""
    if value.startswith("["):
        return value[: value.index("]") + 1].lower()
    return value.partition(":")[0].lower()


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def setting(default: Any, **spec: Any) -> Any:
    """A dataclass field of :class:`Settings` with its :class:`Setting`."""
    return field(default=default, metadata={"setting": Setting(**spec)})


@dataclass(frozen=True)
class Settings:
    database_url: str = setting(
        "sqlite:///plivohook.db",
        env="PLIVOHOOK_DATABASE_URL",
        flag="--database",
        help="sqlite:///path (default) or postgresql://user@host/db.",
    )
    auth_tokens: tuple[str, ...] = setting(
        (),
        env="PLIVO_AUTH_TOKEN",
        flag="--auth-token",
        kind=Kind.LIST,
        secret=True,
        help="Plivo auth token; repeat (or comma-separate) to rotate.",
    )
    main_auth_tokens: tuple[str, ...] = setting(
        (),
        env="PLIVO_MAIN_AUTH_TOKEN",
        flag="--main-auth-token",
        kind=Kind.LIST,
        secret=True,
        help="The main account's token, for the Ma- headers of subaccounts.",
    )
    public_url: str | None = setting(
        None,
        env="PLIVOHOOK_PUBLIC_URL",
        flag="--public-url",
        kind=Kind.OPTIONAL,
        help="The public base URL Plivo calls (https://example.com), used to check signatures.",
    )
    trust_forwarded_headers: bool = setting(
        False,
        env="PLIVOHOOK_TRUST_FORWARDED_HEADERS",
        flag="--trust-forwarded-headers",
        kind=Kind.BOOL,
        help="Believe X-Forwarded-Proto/-Host (only behind a proxy that sets them).",
    )
    allowed_hosts: tuple[str, ...] = setting(
        (),
        env="PLIVOHOOK_ALLOWED_HOSTS",
        flag="--allowed-hosts",
        kind=Kind.LIST,
        help="Without --public-url: the hosts (example.com, or example.com:8443 for one port) "
        "the Host header may name; others are answered 400.",
    )
    admin_token: str | None = setting(
        None,
        env="PLIVOHOOK_ADMIN_TOKEN",
        flag="--admin-token",
        kind=Kind.OPTIONAL,
        secret=True,
        help="Bearer token for /api/* (at least 16 characters); the API is off without it.",
    )
    auto_reply: str | None = setting(
        None,
        env="PLIVOHOOK_AUTO_REPLY",
        flag="--auto-reply",
        kind=Kind.OPTIONAL,
        help="Text sent back to every sender.",
    )
    rules: str | None = setting(
        None,
        env="PLIVOHOOK_RULES",
        flag="--rules",
        kind=Kind.OPTIONAL,
        help="TOML file of reply rules (keywords, regexes, [default], [compliance]); "
        "kill -HUP or `plivohook reload` reloads it.",
    )
    handler: str | None = setting(
        None,
        env="PLIVOHOOK_HANDLER",
        flag="--handler",
        kind=Kind.OPTIONAL,
        help="Your reply function, package.module:function (sync or async); runs when "
        "compliance and the rules did not answer.",
    )
    # Plivo waits 8 s for the answer: the handler's limit plus the second commit must fit.
    handler_timeout: float = setting(
        3.0,
        env="PLIVOHOOK_HANDLER_TIMEOUT",
        flag="--handler-timeout",
        kind=Kind.FLOAT,
        min=0.1,
        max=6,
        help="Seconds the handler may take; past it Plivo gets <Response/> and the message "
        "records the timeout.",
    )
    insecure_skip_verify: bool = setting(
        False,
        env="PLIVOHOOK_INSECURE_SKIP_VERIFY",
        flag="--insecure-skip-verify",
        kind=Kind.BOOL,
        help="Accept unsigned requests (testing only).",
    )
    nonce_retention: timedelta = setting(  # noqa: RUF009 (a field(), not a default)
        timedelta(days=7),
        env="PLIVOHOOK_NONCE_RETENTION_SECONDS",
        flag="--nonce-retention",
        kind=Kind.SECONDS,
        min=60,
        help="Seconds a nonce is remembered to refuse replays.",
    )
    rejection_retention: timedelta = setting(  # noqa: RUF009 (a field(), not a default)
        timedelta(days=30),
        env="PLIVOHOOK_REJECTION_RETENTION_SECONDS",
        flag="--rejection-retention",
        kind=Kind.SECONDS,
        min=0,
        help="Seconds a rejected (signed but unstorable) request is kept for inspection.",
    )
    retention_days: int = setting(
        0,
        env="PLIVOHOOK_RETENTION_DAYS",
        flag="--retention",
        kind=Kind.INT,
        min=0,
        max=36500,
        help="Days messages, delivery reports and rejections are kept; 0 keeps them for ever.",
    )
    max_body_bytes: int = setting(
        64 * 1024,
        env="PLIVOHOOK_MAX_BODY_BYTES",
        flag="--max-body-bytes",
        kind=Kind.INT,
        min=1024,
        max=16 * 1024 * 1024,
        help="Largest request body accepted (413 beyond).",
    )
    # The request line and headers together; Plivo's come to about 1.5 KiB.
    max_header_bytes: int = setting(
        32 * 1024,
        env="PLIVOHOOK_MAX_HEADER_BYTES",
        flag="--max-header-bytes",
        kind=Kind.INT,
        min=1024,
        max=1024 * 1024,
        help="Largest request line and headers accepted (431 beyond; at most 100 fields).",
    )
    pool_size: int = setting(
        10,
        env="PLIVOHOOK_POOL_SIZE",
        flag="--pool-size",
        kind=Kind.INT,
        min=1,
        max=1000,
        help="PostgreSQL connections per worker process, at most.",
    )
    # Plivo gives up after 8 s; answer 503 well before, so that it retries rather than times out.
    write_timeout: float = setting(
        5.0,
        env="PLIVOHOOK_WRITE_TIMEOUT",
        flag="--write-timeout",
        kind=Kind.FLOAT,
        min=0.1,
        max=60,
        help="Seconds a commit may take before the request is answered 503 (Plivo retries).",
    )
    host: str = setting(
        "127.0.0.1", env="PLIVOHOOK_HOST", flag="--host", help="Address to listen on."
    )
    port: int = setting(
        8080,
        env="PLIVOHOOK_PORT",
        flag="--port",
        kind=Kind.INT,
        min=1,
        max=65535,
        help="Port to listen on.",
    )
    workers: int = setting(
        1,
        env="PLIVOHOOK_WORKERS",
        flag="--workers",
        kind=Kind.INT,
        min=1,
        max=64,
        help="Worker processes sharing the port.",
    )
    forward_urls: tuple[str, ...] = setting(
        (),
        env="PLIVOHOOK_FORWARD_URLS",
        flag="--forward-url",
        kind=Kind.LIST,
        help="Your app's URL that gets every message and delivery report as a signed POST; "
        "repeat (or comma-separate) for several.",
    )
    forward_secret: str | None = setting(
        None,
        env="PLIVOHOOK_FORWARD_SECRET",
        flag="--forward-secret",
        kind=Kind.OPTIONAL,
        secret=True,
        help="The Standard Webhooks secret (whsec_ and base64) the forwarded events are signed "
        "with.",
    )
    forward_timeout: float = setting(
        10.0,
        env="PLIVOHOOK_FORWARD_TIMEOUT",
        flag="--forward-timeout",
        kind=Kind.FLOAT,
        min=0.1,
        max=300,
        help="Seconds one delivery attempt may take, answer included.",
    )
    forward_max_age: timedelta = setting(  # noqa: RUF009 (a field(), not a default)
        timedelta(days=3),
        env="PLIVOHOOK_FORWARD_MAX_AGE_SECONDS",
        flag="--forward-max-age",
        kind=Kind.SECONDS,
        min=1,
        help="Seconds an event is retried before it is dead.",
    )
    forward_lease: float = setting(
        30.0,
        env="PLIVOHOOK_FORWARD_LEASE_SECONDS",
        flag="--forward-lease",
        kind=Kind.FLOAT,
        min=1,
        max=3600,
        help="Seconds a forwarding worker holds the events it claimed (more than "
        "--forward-timeout); a worker that died is taken over after it.",
    )
    forward_worker_off: bool = setting(
        False,
        env="PLIVOHOOK_NO_FORWARD_WORKER",
        flag="--no-forward-worker",
        kind=Kind.BOOL,
        help="Store events but leave their delivery to `plivohook forward` processes.",
    )
    nats_url: str | None = setting(
        None,
        env="PLIVOHOOK_NATS_URL",
        flag="--nats-url",
        kind=Kind.OPTIONAL,
        help="Also publish every event to NATS JetStream at this URL (nats://host:4222).",
    )
    nats_subject: str = setting(
        "plivohook",
        env="PLIVOHOOK_NATS_SUBJECT",
        flag="--nats-subject",
        help="Subject prefix: events go to <prefix>.message.received and .message.status.",
    )
    nats_stream: str = setting(
        "PLIVOHOOK",
        env="PLIVOHOOK_NATS_STREAM",
        flag="--nats-stream",
        help="JetStream stream, created with the subjects <prefix>.> when missing.",
    )
    log_level: str = setting(
        "info",
        env="PLIVOHOOK_LOG_LEVEL",
        flag="--log-level",
        choices=("debug", "info", "warning", "error"),
        help="Log level.",
    )
    log_format: str = setting(
        "text",
        env="PLIVOHOOK_LOG_FORMAT",
        flag="--log-format",
        choices=("text", "json"),
        help="Log lines as text, or as JSON (one object per line).",
    )
    metrics_open: bool = setting(
        False,
        env="PLIVOHOOK_METRICS_OPEN",
        flag="--metrics-open",
        kind=Kind.BOOL,
        help="Serve GET /metrics without the admin token (by default it needs it as a bearer).",
    )

    def __repr__(self) -> str:
        shown = []
        for f, spec in setting_fields():
            value = getattr(self, f.name)
            if spec.secret and value:
                value = "<hidden>"
            shown.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(shown)})"

    def validated(self) -> Settings:
        if not self.auth_tokens and not self.main_auth_tokens and not self.insecure_skip_verify:
            raise ConfigError(
                "no Plivo auth token: set PLIVO_AUTH_TOKEN (comma-separated for rotation) or "
                "give --auth-token-file, or --insecure-skip-verify to accept unsigned requests "
                "(never in production)"
            )
        for f, spec in setting_fields():
            value = getattr(self, f.name)
            if spec.kind in (Kind.INT, Kind.FLOAT):
                spec.check_range(value, spec.flag or spec.env)
            elif spec.kind is Kind.SECONDS:
                spec.check_range(value.total_seconds(), spec.flag or spec.env)
            elif spec.choices and value not in spec.choices:
                raise ConfigError(f"{spec.flag} must be one of {', '.join(spec.choices)}")
        public_url = self.public_url
        if public_url:
            parts = urlsplit(public_url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ConfigError("--public-url must be an absolute http(s) URL")
            if parts.query or parts.fragment:
                raise ConfigError("--public-url must not have a query or a fragment")
            public_url = public_url.rstrip("/")
        allowed = tuple(host.strip().lower() for host in self.allowed_hosts if host.strip())
        for host in allowed:
            if not is_host(host):
                raise ConfigError(
                    f"--allowed-hosts: {host!r} is not a host or host:port (like example.com or "
                    "example.com:8443)"
                )
        if self.admin_token is not None and len(self.admin_token) < 16:
            raise ConfigError("--admin-token must be at least 16 characters long")
        self.check_forwarding()
        return replace(self, public_url=public_url, allowed_hosts=allowed)

    @property
    def forwarding(self) -> bool:
        """Whether events are stored for delivery (a forward URL or NATS is configured)."""
        return bool(self.forward_urls or self.nats_url)

    def check_forwarding(self) -> None:
        """Refuse forwarding options that cannot work, in one line that never shows the secret."""
        if not self.forwarding and self.forward_secret is None:
            return
        # Imported here: the forward package needs the server extra (httpx, nats-py).
        from .forward.base import ForwardConfigError
        from .forward.http import parse_secret, redact_url, validate_url
        from .forward.jetstream import validate_nats_url, validate_stream, validate_subject

        try:
            for url in self.forward_urls:
                validate_url(url)
            if self.forward_urls and not self.forward_secret:
                raise ConfigError(
                    "--forward-url needs --forward-secret (PLIVOHOOK_FORWARD_SECRET): a Standard "
                    "Webhooks secret, 'whsec_' followed by base64"
                )
            if len({redact_url(url) for url in self.forward_urls}) != len(self.forward_urls):
                raise ConfigError("--forward-url names one URL twice")
            if self.forward_secret:
                parse_secret(self.forward_secret)
            if self.nats_url:
                validate_nats_url(self.nats_url)
                validate_subject(self.nats_subject)
                validate_stream(self.nats_stream)
        except ForwardConfigError as exc:
            raise ConfigError(str(exc)) from None
        if self.forward_lease <= self.forward_timeout:
            raise ConfigError(
                f"--forward-lease ({self.forward_lease:g} s) must be longer than "
                f"--forward-timeout ({self.forward_timeout:g} s): an attempt must end within it"
            )

    def to_env(self) -> dict[str, str]:
        """The environment a worker process needs to rebuild these settings (every field)."""
        return {spec.env: spec.format(getattr(self, f.name)) for f, spec in setting_fields()}

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Settings from environment variables; an unset or empty one keeps its default.

        A secret may come from the file named by ``<VAR>_FILE`` instead.
        """
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f, spec in setting_fields():
            text = env.get(spec.env)
            if not text and spec.secret and env.get(spec.file_env):
                text = read_secret_file(env[spec.file_env], spec.file_env)
            if text is None or (text == "" and spec.kind is not Kind.BOOL):
                continue
            values[f.name] = spec.parse(text, spec.env)
        return cls(**values)

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> Settings:
        """Settings from :func:`click_options`' parameters (keyed by field name)."""
        values: dict[str, Any] = {}
        for f, spec in setting_fields():
            value = options.get(f.name)
            if spec.secret and not value and options.get(f"{f.name}_file"):
                value = read_secret_file(options[f"{f.name}_file"], spec.file_flag or "")
            if value is None or value == () or value == "":
                continue
            if spec.kind is Kind.LIST:
                value = split_tokens(list(value) if not isinstance(value, str) else value)
            elif spec.kind is Kind.SECONDS:
                value = timedelta(seconds=value)
            values[f.name] = value
        return cls(**values)


def setting_fields() -> Iterator[tuple[Field[Any], Setting]]:
    for f in fields(Settings):
        yield f, f.metadata["setting"]


def read_secret_file(path: str, name: str) -> str:
    """The secret(s) in ``path``: one per line or comma-separated, as comma-separated text.

    A trailing newline is not part of a token; a file that holds none is refused.
    """
    try:
        text = Path(path).read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise ConfigError(f"{name}: cannot read {path}: {reason}") from None
    tokens = split_tokens(text.splitlines())
    if not tokens:
        raise ConfigError(f"{name}: {path} holds no token")
    return ",".join(tokens)


def _default(f: Field[Any]) -> Any:
    return f.default if f.default is not MISSING else None


FORWARD_FIELDS = frozenset(
    {
        "database_url",
        "pool_size",
        "write_timeout",
        "forward_urls",
        "forward_secret",
        "forward_timeout",
        "forward_max_age",
        "forward_lease",
        "nats_url",
        "nats_subject",
        "nats_stream",
        "log_level",
    }
)


def forward_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``click_options`` for ``plivohook forward``: the database's and forwarding's settings."""
    return click_options(command, only=FORWARD_FIELDS)


def click_options(
    command: Callable[..., Any], *, only: frozenset[str] | None = None
) -> Callable[..., Any]:
    """Decorate a click command with one option per setting (and ``--<secret>-file`` ones).

    The command receives every setting under its field name, and each secret's file as
    ``<name>_file``; :meth:`Settings.from_options` turns them into settings. ``only`` limits
    the options to those fields (the others keep their defaults).
    """
    import click

    decorators = []
    for f, spec in setting_fields():
        if spec.flag is None or (only is not None and f.name not in only):
            continue
        default = _default(f)
        kwargs: dict[str, Any] = {
            "envvar": spec.env,
            "show_envvar": True,
            "help": spec.help,
        }
        kind = spec.kind
        if kind is Kind.BOOL:
            kwargs.update(is_flag=True, default=False)
        elif kind is Kind.LIST:
            kwargs.update(multiple=True)
        elif kind in (Kind.INT, Kind.SECONDS):
            low = None if spec.min is None else int(spec.min)
            high = None if spec.max is None else int(spec.max)
            number = int(default.total_seconds()) if kind is Kind.SECONDS else default
            kwargs.update(type=click.IntRange(low, high), default=number, show_default=True)
        elif kind is Kind.FLOAT:
            kwargs.update(
                type=click.FloatRange(spec.min, spec.max), default=default, show_default=True
            )
        elif spec.choices:
            kwargs.update(type=click.Choice(spec.choices), default=default, show_default=True)
        elif default is not None:
            kwargs.update(default=default, show_default=True)
        if spec.secret:
            # Flags are visible to every user in `ps`: the environment or a file is the way.
            kwargs["help"] += " Prefer the environment variable or the -file option."
        decorators.append(click.option(spec.flag, f.name, **kwargs))
        if spec.secret and spec.file_flag:
            decorators.append(
                click.option(
                    spec.file_flag,
                    f"{f.name}_file",
                    envvar=spec.file_env,
                    show_envvar=True,
                    type=click.Path(exists=True, dir_okay=False, readable=True),
                    help=f"Read {spec.flag}'s value from this file.",
                )
            )
    for decorate in reversed(decorators):
        command = decorate(command)
    return command
