"""The service's settings: one frozen object, built by the CLI or from the environment."""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, fields, replace
from datetime import timedelta
from urllib.parse import urlsplit

__all__ = ["ConfigError", "Settings", "is_host", "split_tokens"]

# Never printed, logged or returned by the API.
SECRET_FIELDS = frozenset({"auth_tokens", "main_auth_tokens", "admin_token"})


class ConfigError(ValueError):
    """A setting the service cannot start with; the message says how to fix it."""


def split_tokens(values: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """Tokens from repeated flags and/or comma-separated text, blanks dropped, order kept."""
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


@dataclass(frozen=True)
class Settings:
    database_url: str = "sqlite:///plivohook.db"
    auth_tokens: tuple[str, ...] = ()
    main_auth_tokens: tuple[str, ...] = ()
    public_url: str | None = None
    trust_forwarded_headers: bool = False
    # Hosts (host or host:port) the Host header may name when --public-url is not given.
    allowed_hosts: tuple[str, ...] = ()
    admin_token: str | None = None
    auto_reply: str | None = None
    insecure_skip_verify: bool = False
    nonce_retention: timedelta = timedelta(days=7)
    rejection_retention: timedelta = timedelta(days=30)
    max_body_bytes: int = 64 * 1024
    # The request line and headers together; Plivo's come to about 1.5 KiB.
    max_header_bytes: int = 32 * 1024
    pool_size: int = 10  # PostgreSQL connections per process, at most
    # Plivo gives up after 8 s; answer 503 well before, so that it retries rather than times out.
    write_timeout: float = 5.0

    def __repr__(self) -> str:
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in SECRET_FIELDS and value:
                value = "<hidden>"
            shown.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(shown)})"

    def validated(self) -> Settings:
        if not self.auth_tokens and not self.main_auth_tokens and not self.insecure_skip_verify:
            raise ConfigError(
                "no Plivo auth token: give --auth-token (or PLIVO_AUTH_TOKEN, comma-separated for "
                "rotation), or --insecure-skip-verify to accept unsigned requests (never in "
                "production)"
            )
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
        if not 1024 <= self.max_header_bytes <= 1024 * 1024:
            raise ConfigError("--max-header-bytes must be from 1024 to 1048576")
        if self.pool_size < 1:
            raise ConfigError("--pool-size must be at least 1")
        if self.admin_token is not None and len(self.admin_token) < 16:
            raise ConfigError("--admin-token must be at least 16 characters long")
        return replace(self, public_url=public_url, allowed_hosts=allowed)

    def to_env(self) -> dict[str, str]:
        """The environment a worker process needs to rebuild these settings."""
        env = {
            "PLIVOHOOK_DATABASE_URL": self.database_url,
            "PLIVO_AUTH_TOKEN": ",".join(self.auth_tokens),
            "PLIVO_MAIN_AUTH_TOKEN": ",".join(self.main_auth_tokens),
            "PLIVOHOOK_PUBLIC_URL": self.public_url or "",
            "PLIVOHOOK_TRUST_FORWARDED_HEADERS": "1" if self.trust_forwarded_headers else "",
            "PLIVOHOOK_ALLOWED_HOSTS": ",".join(self.allowed_hosts),
            "PLIVOHOOK_ADMIN_TOKEN": self.admin_token or "",
            "PLIVOHOOK_AUTO_REPLY": self.auto_reply or "",
            "PLIVOHOOK_INSECURE_SKIP_VERIFY": "1" if self.insecure_skip_verify else "",
            "PLIVOHOOK_NONCE_RETENTION_SECONDS": str(int(self.nonce_retention.total_seconds())),
            "PLIVOHOOK_REJECTION_RETENTION_SECONDS": str(
                int(self.rejection_retention.total_seconds())
            ),
            "PLIVOHOOK_POOL_SIZE": str(self.pool_size),
            "PLIVOHOOK_MAX_HEADER_BYTES": str(self.max_header_bytes),
        }
        return env

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        retention = env.get("PLIVOHOOK_NONCE_RETENTION_SECONDS")
        header_bytes = env.get("PLIVOHOOK_MAX_HEADER_BYTES")
        kept = env.get("PLIVOHOOK_REJECTION_RETENTION_SECONDS")
        return cls(
            database_url=env.get("PLIVOHOOK_DATABASE_URL") or cls.database_url,
            auth_tokens=split_tokens(env.get("PLIVO_AUTH_TOKEN")),
            main_auth_tokens=split_tokens(env.get("PLIVO_MAIN_AUTH_TOKEN")),
            public_url=env.get("PLIVOHOOK_PUBLIC_URL") or None,
            trust_forwarded_headers=bool(env.get("PLIVOHOOK_TRUST_FORWARDED_HEADERS")),
            allowed_hosts=split_tokens(env.get("PLIVOHOOK_ALLOWED_HOSTS")),
            admin_token=env.get("PLIVOHOOK_ADMIN_TOKEN") or None,
            auto_reply=env.get("PLIVOHOOK_AUTO_REPLY") or None,
            insecure_skip_verify=bool(env.get("PLIVOHOOK_INSECURE_SKIP_VERIFY")),
            nonce_retention=timedelta(seconds=int(retention)) if retention else cls.nonce_retention,
            rejection_retention=(timedelta(seconds=int(kept)) if kept else cls.rejection_retention),
            max_header_bytes=int(header_bytes) if header_bytes else cls.max_header_bytes,
        )
