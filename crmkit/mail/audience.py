"""Who a campaign goes to: a segment of the store, the people in it who must not be mailed, and
what a template can say about each of them.

``--to contacts`` (the default) filters contacts; ``--to leads`` leads;
``--to deals`` filters deals and writes to each deal's contact. Conditions use
the record filters of the rest of crmkit (``stage=won``, ``owner!=ana``,
``name~acme``); for contacts, ``account.tier=A`` and ``deal.stage=proposal``
filter on the contact's account and on any of its deals.

Opted-out and bounced people, records without an address or with one that is
not valid, and a second record with an address already in the campaign are
never mailed: they are kept with the reason, for the summary.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from crmkit.errors import CrmkitError
from crmkit.mail.compose import is_address
from crmkit.mail.template import Address, Fields, first_name
from crmkit.records.fields import EmailField, email_key
from crmkit.records.query import Condition, matches, parse_condition
from crmkit.records.schema import OPEN_STAGES, RECORD_TYPES, RecordType, parse_id
from crmkit.store import Store

__all__ = ["AUDIENCES", "Audience", "Recipient", "record_context", "select_audience", "skip_reason"]

AUDIENCES = ("contacts", "leads", "deals")
_UNPAID = frozenset({"sent", "partly_paid", "overdue"})


@dataclass
class Recipient:
    """One person a campaign writes to (or skips, with ``skip`` saying why)."""

    record_id: str  # the contact or lead the message is about and logged on
    name: str
    email: str | None
    context: dict[str, Any] = field(default_factory=dict, repr=False)
    skip: str | None = None
    key: str = ""  # what the campaign's journal counts once (default: the person; e.g. an invoice)

    def __post_init__(self) -> None:
        self.key = self.key or self.record_id


@dataclass
class Audience:
    recipients: list[Recipient]  # to be mailed, in record order
    skipped: list[Recipient]  # with their reason
    already_sent: list[Recipient] = field(default_factory=list)  # sent by an earlier run of the campaign

    def skipped_by_reason(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for person in self.skipped:
            assert person.skip is not None
            counts[person.skip] = counts.get(person.skip, 0) + 1
        return counts


def _loaded(rt: RecordType, doc: Mapping[str, Any]) -> Fields:
    """A record's set values as Python values (dates, decimals), for templates; blanks left out."""
    names = [f.name for f in rt.fields] + ["custom"] + (["balance"] if rt.table == "invoices" else [])
    out = Fields(rt.name, {"id": doc["id"]}, names)
    for fld in rt.fields:
        value = doc.get(fld.name)
        if value is None or value == "" or value == []:
            continue
        value = fld.load(value)
        out[fld.name] = Address(value) if isinstance(fld, EmailField) else value
    if rt.table == "invoices" and out.get("total") is not None:  # what is still to pay
        out["balance"] = out["total"] - (out.get("amount_paid") or 0)
    custom = {k: v for k, v in (doc.get("custom") or {}).items() if v not in (None, "", [])}
    if custom:
        out["custom"] = custom
        for key, value in custom.items():
            out.setdefault(key, value)
    return out


class _Related:
    """A contact's account, deals and invoices, indexed once for the whole campaign."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.deals: dict[str, list[dict[str, Any]]] = {}
        for doc in store.all("deals"):
            if doc.get("contact"):
                self.deals.setdefault(doc["contact"], []).append(doc)
        self.invoices_by_contact: dict[str, list[dict[str, Any]]] = {}
        self.invoices_by_account: dict[str, list[dict[str, Any]]] = {}
        for doc in store.all("invoices"):
            if doc.get("contact"):
                self.invoices_by_contact.setdefault(doc["contact"], []).append(doc)
            elif doc.get("account"):
                self.invoices_by_account.setdefault(doc["account"], []).append(doc)
        self.accounts: dict[str, dict[str, Any]] = {}

    def account(self, account_id: str | None) -> dict[str, Any] | None:
        if not account_id:
            return None
        if account_id not in self.accounts:
            doc = self.store.peek(account_id)
            self.accounts[account_id] = dict(doc) if doc and not doc.get("archived_at") else {}
        return self.accounts[account_id] or None

    def invoices(self, contact: Mapping[str, Any]) -> list[dict[str, Any]]:
        mine = self.invoices_by_contact.get(contact["id"], [])
        if contact.get("account"):
            mine = mine + self.invoices_by_account.get(contact["account"], [])
        return mine


def _open_deal(deals: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    open_deals = [d for d in deals if d.get("stage") in OPEN_STAGES]
    if not open_deals:
        return None
    # the one closing soonest; undated ones after dated ones, newest first among them
    return min(open_deals, key=lambda d: (d.get("close_date") or "9999", -int(d["id"].split("-")[1])))


def _unpaid_invoice(invoices: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    unpaid = [i for i in invoices if i.get("status") in _UNPAID]
    return min(unpaid, key=lambda i: (i.get("due_date") or "9999", i["id"])) if unpaid else None


def record_context(
    store: Store,
    doc: Mapping[str, Any],
    *,
    deal: Mapping[str, Any] | None = None,
    invoice: Mapping[str, Any] | None = None,
    related: Any = None,
) -> dict[str, Any]:
    """What a template can use for one contact or lead.

    The record's own fields at the top level and under ``contact`` or ``lead``;
    for a contact, ``account``, ``deals`` and ``deal`` (its open deal closing
    soonest, or the deal the campaign is about), ``invoices`` and ``invoice``
    (its unpaid invoice due first); ``first_name`` for all. A relation the
    record does not have is left out, so using it is reported as missing.
    """
    rt, _ = parse_id(doc["id"])
    own = _loaded(rt, doc)
    # every name a template may use for this type, set or not: the rest are typos worth a suggestion
    names = [*own._crmkit_names, rt.name, "first_name"]
    if rt.table == "contacts":
        names += ["account", "deals", "deal", "invoices", "invoice"]
    context: dict[str, Any] = Fields(rt.name, {**own, rt.name: own}, names)
    if own.get("name"):
        context["first_name"] = first_name(own["name"])
    if rt.table != "contacts":
        return context
    related = related or _Related(store)
    account = related.account(doc.get("account"))
    if account is not None:
        context["account"] = _loaded(RECORD_TYPES["accounts"], account)
    deals = related.deals.get(doc["id"], [])
    context["deals"] = [_loaded(RECORD_TYPES["deals"], d) for d in deals]
    chosen = deal or _open_deal(deals)
    if chosen is not None:
        context["deal"] = _loaded(RECORD_TYPES["deals"], chosen)
    invoices = related.invoices(doc)
    context["invoices"] = [_loaded(RECORD_TYPES["invoices"], i) for i in invoices]
    unpaid = invoice or _unpaid_invoice(invoices)
    if unpaid is not None:
        context["invoice"] = _loaded(RECORD_TYPES["invoices"], unpaid)
    return context


def _split_conditions(rt: RecordType, where: Iterable[str]) -> dict[str, list[Condition]]:
    """``--where`` texts by what they filter: the records themselves, their account, or their deals."""
    by_target: dict[str, list[Condition]] = {"self": [], "account": [], "deal": []}
    for text in where:
        target = "self"
        name = text.split("=", 1)[0].split("~", 1)[0].rstrip("!").strip()
        if rt.table == "contacts" and "." in name and name.split(".", 1)[0] in ("account", "deal"):
            target = name.split(".", 1)[0]
            text = text.strip()[len(target) + 1 :]
        target_rt = {"self": rt, "account": RECORD_TYPES["accounts"], "deal": RECORD_TYPES["deals"]}[target]
        by_target[target].append(parse_condition(target_rt, text))
    return by_target


def skip_reason(doc: Mapping[str, Any], seen: Collection[str] = ()) -> str | None:
    """Why this contact or lead must not be mailed (None: it may be); ``seen``: addresses taken."""
    email = doc.get("email")
    if doc.get("archived_at"):
        return "archived"
    if doc.get("opt_out"):
        return "opted out"
    if doc.get("email_status") == "bounced":
        return "bounced"
    if not email:
        return "no email address"
    if not is_address(str(email)):
        return "not a valid email address"
    if email_key(str(email)) in seen:
        return "address already in this campaign"
    return None


def select_audience(
    store: Store,
    *,
    to: str = "contacts",
    where: Iterable[str] = (),
    limit: int | None = None,
    sent: Mapping[str, str] | None = None,
) -> Audience:
    """The people a campaign writes to, in record order, and those it must skip (with why).

    ``sent`` (record id -> address) are those an earlier run of the campaign
    mailed: they are set aside as already sent, their addresses count as
    already in the campaign, and ``limit`` counts only the others, so that
    ``--limit 500`` run day after day works through a segment.
    """
    if to not in AUDIENCES:
        raise CrmkitError(f"--to must be one of {', '.join(AUDIENCES)} (got {to!r})")
    if limit is not None and limit < 1:
        raise CrmkitError("--limit must be at least 1")
    rt = RECORD_TYPES[to]
    conditions = _split_conditions(rt, where)
    for related_table, target in (("accounts", "account"), ("deals", "deal")):
        if conditions[target]:  # a field no account (deal) has is a typo: refused as for the records
            store.find(related_table, conditions[target], limit=1)
    related = _Related(store) if to in ("contacts", "deals") else None
    # (person, the deal the campaign is about)
    people: list[tuple[Mapping[str, Any], Mapping[str, Any] | None]] = []
    audience = Audience([], [])
    if to == "deals":
        for deal in store.find("deals", conditions["self"]):
            contact = store.peek(deal["contact"]) if deal.get("contact") else None
            if contact is not None and not contact.get("archived_at"):
                people.append((contact, deal))
            else:
                audience.skipped.append(
                    Recipient(deal["id"], str(deal.get("title") or ""), None, skip="deal without a contact")
                )
    else:
        for doc in store.find(to, conditions["self"]):
            if conditions["account"]:
                assert related is not None
                account = related.account(doc.get("account"))
                if account is None or not matches(account, conditions["account"]):
                    continue
            if conditions["deal"]:
                assert related is not None
                deals = related.deals.get(doc["id"], [])
                if not any(matches(d, conditions["deal"]) for d in deals):
                    continue
            people.append((doc, None))
    sent = sent or {}
    seen: set[str] = {email_key(address) for address in sent.values() if address}
    for record, about in people:
        email = str(record.get("email") or "") or None
        person = Recipient(record["id"], str(record.get("name") or ""), email)
        if person.record_id in sent:
            audience.already_sent.append(person)
            continue
        person.skip = skip_reason(record, seen)
        if person.skip is not None:
            audience.skipped.append(person)
            continue
        if limit is not None and len(audience.recipients) >= limit:
            break
        assert email is not None
        seen.add(email_key(email))
        person.context = record_context(store, record, deal=about, related=related)
        audience.recipients.append(person)
    return audience
