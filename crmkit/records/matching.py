"""Keys that tell when two records mean the same person or company.

Pure functions: the store builds its indexes from them, lead conversion
matches accounts with them, and sync and the poller reuse them.
"""

from __future__ import annotations

import re
import unicodedata

from crmkit.records.fields import email_key, phone_key

__all__ = ["FREE_MAIL_DOMAINS", "company_key", "email_domain", "email_key", "phone_key"]

#: Domains that say nothing about a person's company.
FREE_MAIL_DOMAINS = frozenset(
    [
        "gmail.com",
        "googlemail.com",
        "yahoo.com",
        "yahoo.co.uk",
        "yahoo.com.vn",
        "hotmail.com",
        "outlook.com",
        "live.com",
        "msn.com",
        "icloud.com",
        "me.com",
        "mac.com",
        "aol.com",
        "proton.me",
        "protonmail.com",
        "gmx.com",
        "gmx.de",
        "gmx.net",
        "web.de",
        "mail.com",
        "mail.ru",
        "yandex.ru",
        "yandex.com",
        "zoho.com",
        "qq.com",
        "163.com",
        "126.com",
        "naver.com",
        "fastmail.com",
        "hey.com",
        "tutanota.com",
    ]
)

_LEGAL_SUFFIXES = [
    "inc",
    "incorporated",
    "corp",
    "corporation",
    "co",
    "company",
    "llc",
    "llp",
    "ltd",
    "limited",
    "plc",
    "gmbh",
    "ag",
    "sa",
    "sas",
    "sarl",
    "bv",
    "nv",
    "srl",
    "spa",
    "pty",
    "pte",
    "jsc",
    "jsco",
    "kk",
    "oy",
    "ab",
    "as",
]
_SUFFIX_RE = re.compile(r"(\s+(" + "|".join(_LEGAL_SUFFIXES) + r"))+$")


def company_key(name: str) -> str:
    """``ACME, Inc.`` and ``Acme`` -> ``acme``: case, accents, punctuation and legal form ignored."""
    text = unicodedata.normalize("NFKD", name)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).casefold()
    text = re.sub(r"[^\w\s]", " ", text).replace("_", " ")
    text = re.sub(r"\s+", " ", text).strip()
    text = _SUFFIX_RE.sub("", text).strip()
    return text


def email_domain(email: str) -> str:
    """The domain of an address, lower-cased; empty when there is none."""
    return email.rpartition("@")[2].strip().casefold()


def domain_key(domain: str) -> str:
    """``https://www.Acme.com/about`` -> ``acme.com``."""
    text = domain.strip().casefold()
    text = re.sub(r"^[a-z]+://", "", text).split("/")[0]
    return text[4:] if text.startswith("www.") else text
