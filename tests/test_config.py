"""Settings are defined once; every way in and out of them agrees."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from plivohook import cli
from plivohook.config import ConfigError, Kind, Settings, click_options, setting_fields

README = Path(__file__).resolve().parents[1] / "README.md"


def _other(default, spec):
    """A valid value different from the default, for every kind of setting."""
    if spec.choices:
        return next(c for c in spec.choices if c != default)
    return {
        Kind.STRING: lambda: default + "-other",
        Kind.OPTIONAL: lambda: "https://hooks.example.com",
        Kind.BOOL: lambda: not default,
        Kind.INT: lambda: default + 1,
        Kind.FLOAT: lambda: default * 2,
        Kind.SECONDS: lambda: default + timedelta(seconds=60),
        Kind.LIST: lambda: ("token-one", "token-two"),
    }[spec.kind]()


def _changed() -> Settings:
    return Settings(**{f.name: _other(f.default, spec) for f, spec in setting_fields()})


def test_every_field_is_a_setting_with_an_environment_variable():
    envs = [spec.env for _f, spec in setting_fields()]
    assert len(envs) == len(set(envs))
    assert all(re.fullmatch(r"PLIVO(HOOK)?_[A-Z_]+", env) for env in envs)


def test_every_field_round_trips_through_the_environment():
    changed = _changed()
    env = changed.to_env()
    assert set(env) == {spec.env for _f, spec in setting_fields()}
    assert Settings.from_env(env) == changed
    # And the defaults round-trip too: an empty variable keeps the default.
    assert Settings.from_env(Settings().to_env()) == Settings()


def test_pool_size_reaches_the_worker_processes():
    # The bug: `serve --workers N --pool-size 3` gave every worker 10 connections, because
    # from_env never read PLIVOHOOK_POOL_SIZE.
    settings = Settings(pool_size=3, workers=2, auth_tokens=("t",))
    assert Settings.from_env(settings.to_env()).pool_size == 3


def test_the_environment_is_parsed_and_checked():
    env = {
        "PLIVO_AUTH_TOKEN": " a , b ,a",
        "PLIVOHOOK_TRUST_FORWARDED_HEADERS": "true",
        "PLIVOHOOK_NONCE_RETENTION_SECONDS": "120",
    }
    settings = Settings.from_env(env)
    assert settings.auth_tokens == ("a", "b")
    assert settings.trust_forwarded_headers is True
    assert settings.nonce_retention == timedelta(seconds=120)
    with pytest.raises(ConfigError, match="PLIVOHOOK_POOL_SIZE must be a whole number"):
        Settings.from_env({"PLIVOHOOK_POOL_SIZE": "ten"})
    with pytest.raises(ConfigError, match=r"PLIVOHOOK_PORT must be in the range 1\.\.65535"):
        Settings.from_env({"PLIVOHOOK_PORT": "99999"})
    with pytest.raises(ConfigError, match="PLIVOHOOK_TRUST_FORWARDED_HEADERS must be 1 or 0"):
        Settings.from_env({"PLIVOHOOK_TRUST_FORWARDED_HEADERS": "maybe"})
    with pytest.raises(ConfigError, match="PLIVOHOOK_LOG_LEVEL must be one of"):
        Settings.from_env({"PLIVOHOOK_LOG_LEVEL": "loud"})


def test_a_secret_comes_from_its_file(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("from-a-file\n")
    settings = Settings.from_env({"PLIVO_AUTH_TOKEN_FILE": str(token_file)})
    assert settings.auth_tokens == ("from-a-file",)
    with pytest.raises(ConfigError, match="PLIVOHOOK_ADMIN_TOKEN_FILE: cannot read"):
        Settings.from_env({"PLIVOHOOK_ADMIN_TOKEN_FILE": str(tmp_path / "missing")})


def test_secrets_are_never_shown():
    settings = Settings(auth_tokens=("sekrit-auth",), admin_token="sekrit-admin-token-1")
    shown = repr(settings)
    assert "sekrit" not in shown and "<hidden>" in shown


def test_click_options_give_back_the_same_settings():
    import click

    seen = {}

    @click.command()
    @click_options
    def command(**options):
        seen["settings"] = Settings.from_options(options)

    changed = _changed()
    args = []
    for f, spec in setting_fields():
        value = getattr(changed, f.name)
        if spec.kind is Kind.BOOL:
            args.append(spec.flag)
        elif spec.kind is Kind.LIST:
            for item in value:
                args += [spec.flag, item]
        elif spec.kind is Kind.SECONDS:
            args += [spec.flag, str(int(value.total_seconds()))]
        else:
            args += [spec.flag, str(value)]
    result = CliRunner().invoke(command, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert seen["settings"] == changed
    # And from the environment alone, through click's own envvar handling.
    result = CliRunner().invoke(command, [], env=changed.to_env(), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert seen["settings"] == changed


def test_serve_help_shows_every_environment_variable():
    result = CliRunner().invoke(cli.main, ["serve", "--help"], terminal_width=200)
    assert result.exit_code == 0
    for _f, spec in setting_fields():
        assert spec.env in result.output
        if spec.secret:
            assert spec.file_env in result.output


def test_the_readme_table_lists_every_setting():
    table = README.read_text("utf-8").split("## Configuration", 1)[1].split("\n## ", 1)[0]
    for _f, spec in setting_fields():
        assert f"`{spec.env}`" in table, spec.env
        assert f"`{spec.flag}" in table, spec.flag
        if spec.secret:
            assert f"`{spec.file_env}`" in table, spec.file_env


def test_validation_names_the_flag():
    with pytest.raises(ConfigError, match="--pool-size must be in the range"):
        replace(Settings(auth_tokens=("t",)), pool_size=0).validated()
    with pytest.raises(ConfigError, match="no Plivo auth token"):
        Settings().validated()
