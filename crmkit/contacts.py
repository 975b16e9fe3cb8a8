"""Contacts and accounts: the 360° views, merging two records of the same person, and restoring one."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

from crmkit.errors import CrmkitError
from crmkit.records.fields import RefField
from crmkit.records.output import record_output
from crmkit.records.schema import CONTACT, RECORD_TYPES, parse_id
from crmkit.store import Store

__all__ = ["MergeResult", "account_view", "contact_view", "merge_contacts", "restore_contact"]

#: The tables whose records point at a contact, and the fields that do.
_CONTACT_LINKS: list[tuple[str, str]] = [
    (rt.table, f.name)
    for rt in RECORD_TYPES.values()
    for f in rt.fields
    if isinstance(f, RefField) and f.target == CONTACT.table
]


def _by_number(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(docs, key=lambda d: int(str(d["id"]).rsplit("-", 1)[1]))


def _newest_first(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(docs, key=lambda a: str(a.get("date") or a.get("created_at") or ""), reverse=True)


def contact_view(store: Store, id_or_email: str, *, today: date | None = None) -> dict[str, Any]:
    """A contact with everything around it: account, deals, invoices, cases, timeline.

    The result is the contact's own JSON form with one more key, ``related``.
    Invoices are the contact's and its account's (an invoice is often made out
    to the company, not the person). Activities come newest first.
    """
    contact = store.lookup("contacts", id_or_email)
    cid = contact["id"]
    account = None
    if contact.get("account") and store.exists(contact["account"]):
        account = record_output(store.get(contact["account"]))

    def linked(table: str, field_name: str = "contact", target: str = cid) -> list[dict[str, Any]]:
        return [record_output(d, today=today) for d in store.linked(table, field_name, target)]

    invoices = {d["id"]: d for d in linked("invoices")}
    if account is not None:
        invoices.update({d["id"]: d for d in linked("invoices", "account", account["id"])})
    view = record_output(contact, today=today)
    view["related"] = {
        "account": account,
        "deals": linked("deals"),
        "invoices": _by_number(list(invoices.values())),
        "cases": linked("cases"),
        "activities": _newest_first(linked("activities")),
        "leads": [record_output(d) for d in store.linked("leads", "converted_contact", cid)],
    }
    return view


def account_view(store: Store, id_or_name: str, *, today: date | None = None) -> dict[str, Any]:
    """An account with its contacts, deals, quotes, invoices, cases and timeline.

    The account's own JSON form with one more key, ``related``. The timeline
    holds the activities logged on the account and on any of its contacts,
    newest first.
    """
    account = record_output(store.lookup("accounts", id_or_name), today=today)
    aid = account["id"]

    def linked(table: str, field_name: str = "account", target: str = aid) -> list[dict[str, Any]]:
        return [record_output(d, today=today) for d in store.linked(table, field_name, target)]

    contacts = linked("contacts")
    activities = {d["id"]: d for d in linked("activities")}
    for contact in contacts:
        activities.update({d["id"]: d for d in linked("activities", "contact", contact["id"])})
    account["related"] = {
        "contacts": contacts,
        "deals": linked("deals"),
        "quotes": linked("quotes"),
        "invoices": linked("invoices"),
        "cases": linked("cases"),
        "activities": _newest_first(list(activities.values())),
    }
    return account


def restore_contact(
    store: Store, id_or_email: str, *, unlink: bool = False, force: bool = False
) -> dict[str, Any]:
    """Bring an archived contact back; one merged into another only with ``unlink``.

    A merged contact's deals, cases and timeline moved to the contact it was
    merged into, and its ``merged_into`` sends old links there: restoring it
    as it is would leave a second record of one person pointing at the first.
    ``unlink`` restores it as a contact of its own and clears that pointer.
    """
    with store.transaction():
        doc = store.lookup("contacts", id_or_email)
        into = doc.get("merged_into")
        if into and doc.get("archived_at"):
            if not unlink:
                raise CrmkitError(
                    f"{doc['id']} was merged into {into}; restore it with --unlink to make it "
                    f"a contact of its own again (what moved to {into} stays there)"
                )
            store.update(doc["id"], {"merged_into": None}, allow_system=True, force=True)
        return store.restore(doc["id"], force=force)


@dataclass
class MergeResult:
    """The kept contact, and how many linked records moved over to it, per table."""

    kept: dict[str, Any]
    merged: dict[str, Any]
    moved: dict[str, int] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"kept": self.kept["id"], "merged": self.merged["id"], "moved": self.moved}


def merge_contacts(store: Store, keep_id: str, other_id: str) -> MergeResult:
    """Fold ``other`` into ``keep``: every deal, case, invoice and activity moves over.

    Leads converted into the other now point at the kept one too. Empty fields
    of the kept contact are filled from the other, tags and custom fields are
    joined (the kept contact's values win), and the other contact is
    archived with ``merged_into`` pointing at the kept one (ids are never
    reused, so links in old exports still lead somewhere).
    """
    for record_id in (keep_id, other_id):
        if parse_id(record_id)[0] is not CONTACT:
            raise CrmkitError(f"{record_id} is not a contact id (C-…)")
    with store.transaction():
        keep = store.get(keep_id)
        other = store.get(other_id)
        if keep["id"] == other["id"]:
            raise CrmkitError("cannot merge a contact into itself")
        for doc in (keep, other):
            if doc.get("merged_into"):
                raise CrmkitError(f"{doc['id']} was already merged into {doc['merged_into']}")

        moved: dict[str, int] = {}
        for table, field_name in _CONTACT_LINKS:
            if table == CONTACT.table:
                continue
            for doc in store.all(table, archived=True):
                if doc.get(field_name) == other["id"]:
                    store.update(doc["id"], {field_name: keep["id"]}, allow_system=True, force=True)
                    moved[table] = moved.get(table, 0) + 1
        for doc in store.all("contacts", archived=True):
            if doc.get("merged_into") == other["id"]:
                store.update(doc["id"], {"merged_into": keep["id"]}, allow_system=True, force=True)

        merged = store.update(other["id"], {"merged_into": keep["id"]}, allow_system=True, force=True)
        merged = store.archive(merged["id"])

        fill: dict[str, Any] = {}
        for f in CONTACT.user_fields:
            if f.name in ("tags",):
                continue
            if keep.get(f.name) in (None, "", False) and other.get(f.name) not in (None, "", False):
                fill[f.name] = other[f.name]
        tags = list(keep.get("tags") or [])
        tags += [t for t in other.get("tags") or [] if t not in tags]
        if tags != (keep.get("tags") or []):
            fill["tags"] = tags
        for key, value in (other.get("custom") or {}).items():
            if key not in (keep.get("custom") or {}):
                fill[key] = value
        # force: the two may share an email or phone; that is why they are merged
        kept = store.update(keep["id"], fill, force=True) if fill else keep
        return MergeResult(kept, merged, moved)
