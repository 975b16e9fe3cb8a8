"""Lead conversion: a qualified lead becomes a contact, an account and a deal.

The account is matched, not duplicated: first by company name (case, accents
and legal form ignored: "ACME, Inc." is "Acme"), then by the email's domain
unless it is a free-mail domain. A contact with the lead's email is reused.
Everything happens in one store transaction: all of it, or nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from crmkit.errors import CrmkitError
from crmkit.records.matching import FREE_MAIL_DOMAINS, email_domain
from crmkit.records.schema import LEAD, parse_id
from crmkit.store import Store

__all__ = ["Conversion", "convert_lead"]


@dataclass
class Conversion:
    """What a lead became; ``created`` names the records made new (not matched)."""

    lead: dict[str, Any]
    contact: dict[str, Any]
    account: dict[str, Any] | None
    deal: dict[str, Any] | None
    created: list[str] = field(default_factory=list)
    moved_activities: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "lead": self.lead["id"],
            "contact": self.contact["id"],
            "account": self.account["id"] if self.account else None,
            "deal": self.deal["id"] if self.deal else None,
            "created": self.created,
            "moved_activities": self.moved_activities,
        }


def _match_account(store: Store, company: str | None, email: str | None) -> dict[str, Any] | None:
    if company:
        found = store.find_accounts(name=company)
        if found:
            return found[0]
    domain = email_domain(email) if email else ""
    if domain and domain not in FREE_MAIL_DOMAINS:
        found = store.find_accounts(domain=domain)
        if found:
            return found[0]
    return None


def convert_lead(
    store: Store,
    lead_id: str,
    *,
    create_deal: bool = True,
    deal_values: dict[str, Any] | None = None,
    force: bool = False,
) -> Conversion:
    """Convert a lead; ``deal_values`` (title, amount, close_date …) shape the new deal.

    A converted lead cannot be converted again; a disqualified one only with
    ``force``.
    """
    if parse_id(lead_id)[0] is not LEAD:
        raise CrmkitError(f"{lead_id} is not a lead id (L-…)")
    with store.transaction():
        lead = store.get(lead_id)
        if lead.get("status") == "converted":
            raise CrmkitError(
                f"lead {lead['id']} was already converted into {lead.get('converted_contact')} "
                f"on {str(lead.get('converted_at', ''))[:10]}"
            )
        if lead.get("status") == "disqualified" and not force:
            raise CrmkitError(f"lead {lead['id']} is disqualified; force to convert it anyway")
        created: list[str] = []
        email = lead.get("email")
        company = lead.get("company")
        domain = email_domain(email) if email else ""
        work_domain = domain if domain and domain not in FREE_MAIL_DOMAINS else None

        account = _match_account(store, company, email)
        if account is None and (company or work_domain):
            values: dict[str, Any] = {"name": company or work_domain, "owner": lead.get("owner")}
            if work_domain:
                values["domain"] = work_domain
            account = store.add("accounts", values)
            created.append(account["id"])

        existing = store.find_by_email("contacts", email) if email else []
        if existing:
            contact = existing[0]
            fill = {
                k: v
                for k, v in {"phone": lead.get("phone"), "account": account and account["id"]}.items()
                if v and not contact.get(k)
            }
            if fill:
                contact = store.update(contact["id"], fill, force=True)
        else:
            contact = store.add(
                "contacts",
                {
                    "name": lead["name"],
                    "email": email,
                    "phone": lead.get("phone"),
                    "account": account["id"] if account else None,
                    "owner": lead.get("owner"),
                },
                force=True,
            )
            created.append(contact["id"])

        deal = None
        if create_deal:
            values = {
                "title": account["name"] if account else lead["name"],
                "account": account["id"] if account else None,
                "contact": contact["id"],
                "stage": "qualification",
                "owner": lead.get("owner"),
                "source": lead.get("source"),
            }
            values.update({k: v for k, v in (deal_values or {}).items() if v is not None})
            deal = store.add("deals", values)
            created.append(deal["id"])

        moved = 0
        for activity in store.all("activities"):
            if activity.get("lead") == lead["id"] and not activity.get("contact"):
                store.update(activity["id"], {"contact": contact["id"]})
                moved += 1

        lead = store.update(
            lead["id"],
            {
                "status": "converted",
                "converted_contact": contact["id"],
                "converted_account": account["id"] if account else None,
                "converted_deal": deal["id"] if deal else None,
                "converted_at": store.clock(),
            },
            allow_system=True,
        )
        return Conversion(lead, contact, account, deal, created, moved)
