"""crmkit.toml: found, checked key by key, and never a home for passwords."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from crmkit.config import (
    Config,
    discover_config,
    load_config,
    resolve_password,
    resolve_sheet_names,
    resolve_store,
    resolve_store_path,
    store_named_by,
)
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


def test_found_in_the_nearest_folder_above_with_paths_relative_to_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, 'default_currency = "EUR"\n[smtp]\nhost = "x"\ncafile = "certs/ca.pem"\n')
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    cfg = load_config(env={})
    assert cfg.path == tmp_path / "crmkit.toml" and cfg.default_currency == "EUR"
    assert cfg.smtp is not None and cfg.smtp.cafile == tmp_path / "certs" / "ca.pem"
    # no store key: the crm.json beside crmkit.toml, not one in the current folder
    assert resolve_store(None, cfg, env={}) == tmp_path / "crm.json"
    assert store_named_by(None, cfg, env={}) == str(tmp_path / "crmkit.toml")
    assert store_named_by(None, cfg, env={"CRMKIT_STORE": "x.json"}) == "CRMKIT_STORE"
    assert store_named_by("y.json", cfg, env={"CRMKIT_STORE": "x.json"}) == "--store"
    # a nearer one wins
    write(tmp_path / "a", 'default_currency = "JPY"\n')
    assert load_config(env={}).default_currency == "JPY"
    assert discover_config() == tmp_path / "a" / "crmkit.toml"
    assert discover_config(tmp_path) == tmp_path / "crmkit.toml"  # above the current folder: absolute


def test_not_found_anywhere_above(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert discover_config() is None
    assert store_named_by(None, load_config(env={}), env={}) is None


def test_latin1_config_is_one_line_naming_the_file_and_byte(tmp_path: Path) -> None:
    path = tmp_path / "crmkit.toml"
    path.write_bytes('store = "crm.json"\n# Café\n'.encode("latin-1"))
    with pytest.raises(ConfigError) as raised:
        load_config(path, env={})
    assert str(raised.value) == f"{path}: not UTF-8 text (byte 0xe9 at offset 24, line 2); save it as UTF-8"


def test_a_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "crmkit.toml"
    path.write_bytes(b"\xef\xbb\xbf" + 'default_currency = "EUR"  # Café\n'.encode())
    assert load_config(path, env={}).default_currency == "EUR"


def test_config_that_is_a_folder_or_a_broken_link_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "crmkit.toml").mkdir()
    monkeypatch.chdir(tmp_path)
    for explicit, env in (
        (None, {}),
        (tmp_path / "crmkit.toml", {}),
        (None, {"CRMKIT_CONFIG": "crmkit.toml"}),
    ):
        with pytest.raises(ConfigError, match=r"crmkit\.toml is a folder, not a file"):
            load_config(explicit, env=env)
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "crmkit.toml").symlink_to(sub / "gone.toml")
    monkeypatch.chdir(sub)
    with pytest.raises(ConfigError, match=r"gone\.toml, which does not exist"):
        load_config(env={})


CLI_PROBLEMS = {
    "latin-1": (lambda folder: (folder / "crmkit.toml").write_bytes("store = 'Café.json'\n".encode("latin-1")),
                "crmkit.toml: not UTF-8 text (byte 0xe9 at offset 12, line 1); save it as UTF-8"),
    "a folder": (lambda folder: (folder / "crmkit.toml").mkdir(),
                 "crmkit.toml is a folder, not a file: remove or rename it, or pass --config"),
}  # fmt: skip


@pytest.mark.parametrize("problem", CLI_PROBLEMS)
@pytest.mark.parametrize("where", ["here", "above"])
@pytest.mark.parametrize(
    "command", [["contacts", "list"], ["contacts", "add", "name=A"], ["sync", "crm.xlsx"]]
)
def test_bad_config_file_through_the_cli_is_one_line_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, problem: str, where: str, command: list[str]
) -> None:
    from click.testing import CliRunner

    from crmkit.cli import main

    make, message = CLI_PROBLEMS[problem]
    make(tmp_path)
    folder = tmp_path if where == "here" else tmp_path / "sub"
    folder.mkdir(exist_ok=True)
    monkeypatch.chdir(folder)
    monkeypatch.delenv("CRMKIT_CONFIG", raising=False)
    monkeypatch.delenv("CRMKIT_STORE", raising=False)
    result = CliRunner().invoke(main, command)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception
    shown = "crmkit.toml" if where == "here" else str(tmp_path / "crmkit.toml")
    assert result.output == f"Error: {message.replace('crmkit.toml', shown, 1)}\n"


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


INBOX = """
[imap]
host = "imap.example.com"
user = "Support@Example.com"
cafile = "certs/ca.pem"
folder = "Support"
after = "move"
move_to = "Support/Filed"
unknown_sender = "lead"
ignore_plus_tags = false
urgent_keywords = ["urgent", "khẩn cấp"]
high_keywords = []
max_new_cases_per_hour = 12
acknowledge = true
own_addresses = ["help@example.com", "Sales@Example.com"]

[smtp]
host = "smtp.example.com"
from = "Support <noreply@example.com>"
"""


def test_inbox_keys_of_the_imap_table(tmp_path: Path) -> None:
    from datetime import timedelta

    from crmkit.config import InboxSettings
    from crmkit.mail.settings import inbox_rules, poll_settings

    cfg = load_config(write(tmp_path, INBOX), env={})
    assert cfg.imap is not None and cfg.imap.cafile == tmp_path / "certs" / "ca.pem"  # relative to the file
    assert cfg.inbox == InboxSettings(
        after="move",
        move_to="Support/Filed",
        unknown_sender="lead",
        ignore_plus_tags=False,
        urgent_keywords=("urgent", "khẩn cấp"),
        high_keywords=(),
        max_new_cases_per_hour=12,
        acknowledge=True,
        own_addresses=("help@example.com", "sales@example.com"),
    )
    rules = inbox_rules(cfg)
    assert (rules.unknown_sender, rules.ignore_plus_tags, rules.acknowledge) == ("lead", False, True)
    assert (rules.urgent_keywords, rules.high_keywords) == (("urgent", "khẩn cấp"), ())
    assert (rules.max_new_cases, rules.rate_window) == (12, timedelta(hours=1))
    # the mailbox's own addresses: configured, the IMAP user, the SMTP sender
    assert rules.own_addresses == (
        "help@example.com",
        "sales@example.com",
        "support@example.com",
        "noreply@example.com",
    )
    settings = poll_settings(cfg)
    assert (settings.server, settings.after, settings.move_to) == (cfg.imap, "move", "Support/Filed")


def test_inbox_keys_left_out_keep_the_defaults(tmp_path: Path) -> None:
    from crmkit.config import InboxSettings
    from crmkit.mail.inbox import InboxRules
    from crmkit.mail.settings import inbox_rules

    cfg = load_config(write(tmp_path, '[imap]\nhost = "x"\nuser = "me"\n'), env={})
    assert cfg.inbox == InboxSettings() and cfg.inbox.after == "seen"
    assert cfg.imap is not None and cfg.imap.cafile is None
    assert inbox_rules(cfg) == InboxRules()  # "me" is no address: not one of the mailbox's own
    assert load_config(write(tmp_path, 'store = "crm.json"\n'), env={}).inbox == InboxSettings()


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ('after = "archive"', r"imap\.after must be one of seen, move, none \(got 'archive'\)"),
        ('after = "move"', r'imap\.after = "move" needs imap\.move_to'),
        ('move_to = "inbox"', "imap.move_to must be another folder than the one polled"),
        ('move_to = " "', "imap.move_to must name a folder"),
        ('unknown_sender = "robot"', "imap.unknown_sender must be one of contact, lead"),
        ('ignore_plus_tags = "yes"', "imap.ignore_plus_tags must be true or false"),
        ("acknowledge = 1", "imap.acknowledge must be true or false"),
        ('urgent_keywords = "urgent"', "imap.urgent_keywords must be a list of text"),
        ("high_keywords = [1]", r"imap\.high_keywords must be a list of text \(got 1 in it\)"),
        ("max_new_cases_per_hour = 0", "imap.max_new_cases_per_hour must be at least 1"),
        ("max_new_cases_per_hour = 2.5", "imap.max_new_cases_per_hour must be a whole number"),
        ("max_new_cases_per_hour = true", "imap.max_new_cases_per_hour must be a whole number"),
        ('own_addresses = ["support"]', r"imap\.own_addresses: 'support' is not an email address"),
        ("cafile = 3", "imap.cafile must be a file path"),
        ('move_too = "Done"', r"unknown key imap\.move_too \(did you mean imap\.move_to\?\)"),
    ],
)
def test_bad_inbox_keys_name_the_key(tmp_path: Path, keys: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, f'[imap]\nhost = "x"\n{keys}\n'), env={})


def test_smtp_trusts_a_private_ca_too(tmp_path: Path) -> None:
    # acknowledgements and campaigns go through [smtp]: a relay with a private CA is common
    cfg = load_config(write(tmp_path, '[smtp]\nhost = "x"\ncafile = "ca.pem"\n'), env={})
    assert cfg.smtp is not None and cfg.smtp.cafile == tmp_path / "ca.pem"


def test_the_readme_configuration_example_is_valid(tmp_path: Path) -> None:
    import re

    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    match = re.search(r"## Configuration.*?```toml\n(.*?)```", readme, re.S)
    assert match is not None
    cfg = load_config(write(tmp_path, match.group(1)), env={})
    assert cfg.imap is not None and cfg.imap.cafile == tmp_path / "certs" / "mail-ca.pem"
    assert (cfg.inbox.after, cfg.inbox.move_to, cfg.inbox.max_new_cases_per_hour) == ("seen", "Filed", 5)
    assert cfg.sheet_names == {"Deals": "CRM Deals"}


def test_acknowledgement_window(tmp_path: Path) -> None:
    from datetime import timedelta

    from crmkit.mail.settings import inbox_rules

    cfg = load_config(write(tmp_path, '[imap]\nhost = "x"\nacknowledge_every_hours = 6\n'), env={})
    assert inbox_rules(cfg).ack_window == timedelta(hours=6)
    with pytest.raises(ConfigError, match="acknowledge_every_hours must be more than 0"):
        load_config(write(tmp_path, '[imap]\nhost = "x"\nacknowledge_every_hours = 0\n'), env={})


def test_sheet_names_map_crmkit_sheets_to_tabs(tmp_path: Path) -> None:
    text = '[sheet_names]\nDeals = "CRM Deals"\n"Invoice Lines" = "  Lines  "\n'
    cfg = load_config(write(tmp_path, text), env={})
    assert cfg.sheet_names == {"Deals": "CRM Deals", "Invoice Lines": "Lines"}
    assert load_config(write(tmp_path, 'store = "x.json"'), env={}).sheet_names == {}
    tabs = resolve_sheet_names(cfg.sheet_names)  # what the sync uses: every sheet, mapped or not
    assert tabs["Deals"] == "CRM Deals" and tabs["Invoice Lines"] == "Lines" and tabs["Leads"] == "Leads"
    assert set(tabs) == {"Leads", "Contacts", "Accounts", "Deals", "Invoices", "Cases", "Invoice Lines"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('sheet_names = "Deals"', r"sheet_names must be a table \(\[sheet_names\]\)"),
        (
            '[sheet_names]\nDeal = "CRM Deals"',
            r"sheet_names\.Deal: not one of crmkit's sheets \(did you mean 'Deals'\? the keys are Leads, "
            r"Contacts, Accounts, Deals, Invoices, Cases, Invoice Lines\)",
        ),
        ('[sheet_names]\nOpportunities = "Opps"', r"sheet_names\.Opportunities: not one of crmkit's sheets"),
        ("[sheet_names]\nDeals = 3", r"sheet_names\.Deals must be the name of a tab \(got 3\)"),
        ('[sheet_names]\nDeals = "  "', r"sheet_names\.Deals must be the name of a tab"),
        (
            '[sheet_names]\nDeals = "leads"',
            r"sheet_names\.Deals: Leads and Deals would both sync with the tab 'leads'",
        ),
        (
            '[sheet_names]\nDeals = "CRM"\nLeads = "crm"',
            r"sheet_names\.Deals: Leads and Deals would both sync with the tab 'CRM'",
        ),
        ('[sheet_name]\nDeals = "x"', r"unknown key sheet_name \(did you mean sheet_names\?\)"),
    ],
)
def test_bad_sheet_names_name_the_file_and_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        load_config(write(tmp_path, text), env={})
    assert str(info.value).startswith(f"{tmp_path / 'crmkit.toml'}: ")


def test_the_init_template_shows_sheet_names_and_it_works_uncommented(tmp_path: Path) -> None:
    from crmkit.project import CONFIG_TEMPLATE

    text = CONFIG_TEMPLATE.format(store="crm.json", currency="USD")
    assert load_config(write(tmp_path, text), env={}).sheet_names == {}
    lines = text.splitlines()
    start = lines.index(next(line for line in lines if line.startswith("# [sheet_names]")))
    uncommented = [line[2:] if start <= n <= start + 1 else line for n, line in enumerate(lines)]
    assert load_config(write(tmp_path, "\n".join(uncommented)), env={}).sheet_names == {"Deals": "CRM Deals"}


def test_several_mailboxes_as_an_array_of_tables(tmp_path: Path) -> None:
    text = (
        '[[imap]]\nhost = "imap.example.com"\nuser = "support@example.com"\nsent_folder = "Sent"\n'
        '[[imap]]\nhost = "imap.example.com"\nuser = "sales@example.com"\nafter = "none"\n'
    )
    cfg = load_config(write(tmp_path, text), env={})
    assert [(b.server.user, b.inbox.after, b.inbox.sent_folder) for b in cfg.mailboxes] == [
        ("support@example.com", "seen", "Sent"),
        ("sales@example.com", "none", None),
    ]
    assert cfg.imap is not None and cfg.imap.user == "support@example.com"  # the first, for one-mailbox code
    from crmkit.mail.settings import all_poll_settings

    settings = all_poll_settings(cfg)
    assert {"support@example.com", "sales@example.com"} <= set(settings[1].rules.own_addresses)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('imap = ["x"]\n', "imap must be a table"),
        ("imap = []\n", "imap must be a table"),
        ('[[imap]]\nhost = "h"\nuser = "a@x"\n[[imap]]\nhost = "H"\nuser = "A@x"\n', "reads A@x@H folder INBOX twice"),
        ('[[imap]]\nhost = "h"\nuser = "a@x"\nsent_folder = "Sent"\n[[imap]]\nhost = "h"\nuser = "a@x"\n'
         'folder = "Sent"\n', "folder Sent twice"),
        ('[[imap]]\nhost = "h"\nuser = "a@x"\nnope = 1\n', "unknown key imap.nope"),
    ],
)
def test_bad_mailbox_lists_are_one_clear_line(tmp_path: Path, text: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        load_config(write(tmp_path, text), env={})


def test_scrub_masks_whole_secret_values_only() -> None:
    from crmkit.config import Secret, scrub

    assert scrub("unexpected response", Secret("x")) == "unexpected response"  # not "une***pected"
    assert scrub("b'NO [AUTH] hunter2 is wrong'", Secret("hunter2")) == "b'NO [AUTH] *** is wrong'"
    assert scrub("password=hunter2;user=ana", "hunter2", None, "") == "password=***;user=ana"
    assert scrub("hunter22 and hunter2", "hunter2") == "hunter22 and ***"  # another value, kept
    assert scrub("p@ss! and (p@ss!)", "p@ss!") == "*** and (***)"
