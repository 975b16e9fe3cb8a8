"""crmkit.toml: found, checked key by key, and never a home for passwords."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from crmkit.config import Config, load_config, resolve_password, resolve_store_path
from crmkit.errors import ConfigError

FULL = """
store = "data/crm.json"
default_currency = "vnd"

[imap]
host = "imap.example.com"
user = "support@example.com"
password_command = "printf 's3cret\\\\nsecond line'"

[smtp]
host = "smtp.example.com"
security = "starttls"
from = "Support <support@example.com>"

[sheets]
credentials = "sa.json"
endpoint = "http://127.0.0.1:8080"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "crmkit.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_full_config(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, FULL), env={})
    assert cfg.store == tmp_path / "data" / "crm.json"  # relative to the file
    assert cfg.default_currency == "VND"
    assert cfg.imap is not None and (cfg.imap.port, cfg.imap.security, cfg.imap.folder) == (
        993,
        "ssl",
        "INBOX",
    )
    assert cfg.smtp is not None and (cfg.smtp.port, cfg.smtp.from_address) == (
        587,
        "Support <support@example.com>",
    )
    assert cfg.sheets.credentials == tmp_path / "sa.json" and cfg.sheets.endpoint == "http://127.0.0.1:8080"


def test_no_file_means_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_config(env={}) == Config()
    assert resolve_store_path(None, Config(), env={}) == Path("crm.json")


def test_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, 'store = "from-file.json"\n')
    monkeypatch.chdir(tmp_path)
    assert load_config(env={}).path == Path("crmkit.toml")  # the current folder
    other = tmp_path / "other.toml"
    other.write_text('store = "other.json"\n')
    assert load_config(env={"CRMKIT_CONFIG": str(other)}).store == tmp_path / "other.json"
    assert load_config(path, env={"CRMKIT_CONFIG": str(other)}).store == tmp_path / "from-file.json"
    cfg = load_config(path, env={})
    assert resolve_store_path(None, cfg, env={"CRMKIT_STORE": "env.json"}) == Path("env.json")
    assert resolve_store_path("cli.json", cfg, env={"CRMKIT_STORE": "env.json"}) == Path("cli.json")
    assert resolve_store_path(None, cfg, env={}) == tmp_path / "from-file.json"
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(env={"CRMKIT_CONFIG": str(tmp_path / "missing.toml")})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('stor = "x"', r"unknown key stor \(did you mean store\?\)"),
        ('[imap]\nhots = "x"\nhost = "y"', r"unknown key imap\.hots \(did you mean imap\.host\?\)"),
        ('[imap]\nhost = "x"\nport = "993"', "imap.port must be a number"),
        ('[smtp]\nhost = "x"\nsecurity = "tls"', "smtp.security must be one of ssl, starttls, plain"),
        ("[smtp]\nport = 25", r"\[smtp\] needs a host"),
        ('default_currency = "XXX"', "not a known currency"),
        ('[imap]\nhost = "x"\npassword = "hunter2"', "passwords are never read from the config file"),
        ("store = ", "not valid TOML"),
        ('[sheets]\ntoken = "x"', "unknown key sheets.token"),
        ('password = "hunter2"', "password: passwords are never read.*CRMKIT_IMAP_PASSWORD"),
        ('[imap]\nhost = "x"\ntimeout = -1', "imap.timeout must be more than 0"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        load_config(write(tmp_path, text), env={})
    assert "hunter2" not in str(info.value)
    assert str(tmp_path / "crmkit.toml") in str(info.value)


def test_password_from_env_then_command(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = load_config(write(tmp_path, FULL), env={})
    assert cfg.imap is not None and cfg.smtp is not None
    assert resolve_password(cfg.imap, env={"CRMKIT_IMAP_PASSWORD": "from-env"}).reveal() == "from-env"
    secret = resolve_password(cfg.imap, env={})
    assert secret.reveal() == "s3cret"
    assert "s3cret" not in repr(secret) and "s3cret" not in str(secret) and "s3cret" not in f"{secret}"
    logging.getLogger("test").warning("password is %s", secret)
    assert "s3cret" not in caplog.text
    with pytest.raises(ConfigError, match="set CRMKIT_SMTP_PASSWORD or password_command"):
        resolve_password(cfg.smtp, env={})


def test_failing_password_command_does_not_leak_output(tmp_path: Path) -> None:
    cfg = load_config(
        write(tmp_path, '[imap]\nhost = "x"\npassword_command = "echo topsecret; exit 3"\n'), env={}
    )
    assert cfg.imap is not None
    with pytest.raises(ConfigError, match=r"password_command failed \(exit 3\)") as info:
        resolve_password(cfg.imap, env={})
    assert "topsecret" not in str(info.value)
