"""The one declared schema of every record type.

Sheet headers, validation, the store's tables, the CLI and templates all read
these declarations; nothing else lists a record's fields.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from decimal import Decimal
from typing import Any

from crmkit.errors import CrmkitError, FieldError, ValidationError
from crmkit.records.fields import (
    BoolField,
    ChoiceField,
    DateField,
    DateTimeField,
    DecimalField,
    EmailField,
    Field,
    JSONField,
    LinesField,
    PercentField,
    PhoneField,
    RefField,
    TagsField,
    TextField,
)

__all__ = [
    "ACCOUNT",
    "ACTIVITY",
    "CASE",
    "CONTACT",
    "DEAL",
    "DEAL_STAGES",
    "INVOICE",
    "LEAD",
    "LEAD_STATUS_TYPES",
    "QUOTE",
    "QUOTE_STATUSES",
    "RECORD_TYPES",
    "SCHEDULES",
    "STAGE_FORECAST",
    "STAGE_PROBABILITY",
    "RecordType",
    "header_key",
    "parse_id",
    "record_type",
    "type_of_id",
]

#: Each lead status and the type reports group it under.
LEAD_STATUS_TYPES: dict[str, str] = {
    "new": "open",
    "contacted": "ongoing",
    "nurturing": "ongoing",
    "qualified": "ongoing",
    "converted": "won",
    "disqualified": "lost",
}

DEAL_STAGES = ("prospecting", "qualification", "proposal", "negotiation", "won", "lost")
#: The probability a deal takes when it enters a stage, unless set by hand.
STAGE_PROBABILITY: dict[str, int] = {
    "prospecting": 10,
    "qualification": 20,
    "proposal": 50,
    "negotiation": 75,
    "won": 100,
    "lost": 0,
}
#: The forecast category a deal takes when it enters a stage, unless set by hand.
STAGE_FORECAST: dict[str, str] = {
    "prospecting": "pipeline",
    "qualification": "pipeline",
    "proposal": "best_case",
    "negotiation": "commit",
    "won": "closed",
    "lost": "omitted",
}
OPEN_STAGES = frozenset(DEAL_STAGES) - {"won", "lost"}

#: Invoice statuses a person may set; the others follow from payments and dates.
INVOICE_SET_STATUSES = ("draft", "sent", "void")
#: How often a recurring invoice is issued again.
SCHEDULES = ("monthly", "quarterly", "yearly")
QUOTE_STATUSES = ("draft", "sent", "accepted", "declined", "expired", "invoiced")
INVOICE_STATUSES = ("draft", "sent", "partly_paid", "paid", "overdue", "void")


def header_key(text: str) -> str:
    """How headers are compared: ``E-mail``, ``e mail`` and ``EMAIL`` are one key."""
    return re.sub(r"[^0-9a-z]", "", text.casefold())


@dataclass(frozen=True)
class RecordType:
    """A kind of record: its table, sheet, id prefix and fields."""

    name: str  # singular, as in messages: "contact"
    table: str  # the TinyDB table: "contacts"
    sheet: str  # the sheet title: "Contacts"
    prefix: str  # of its ids: "C" in C-12
    fields: tuple[Field, ...]
    title_field: str  # what names a record in one line
    list_columns: tuple[str, ...]  # what `list` shows in a table
    unique_keys: tuple[str, ...] = ()  # fields two records may not share
    by_name: dict[str, Field] = dataclass_field(init=False, repr=False, compare=False)
    by_header: dict[str, Field] = dataclass_field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        fields_ = SYSTEM_HEAD + self.fields + SYSTEM_TAIL
        object.__setattr__(self, "fields", fields_)
        object.__setattr__(self, "by_name", {f.name: f for f in fields_})
        headers: dict[str, Field] = {}
        for f in fields_:
            for text in (f.name, f.label, *f.aliases):
                headers.setdefault(header_key(text), f)
        # "Deal ID" is the deal's own id; "Contact ID" on it, the contact it links to.
        headers.setdefault(header_key(f"{self.name} id"), fields_[0])
        for f in fields_:
            if isinstance(f, RefField):
                headers.setdefault(header_key(f"{f.name} id"), f)
        object.__setattr__(self, "by_header", headers)

    @property
    def user_fields(self) -> tuple[Field, ...]:
        """The fields a person may set."""
        return tuple(f for f in self.fields if not f.system)

    def get_field(self, name: str) -> Field:
        try:
            return self.by_name[name]
        except KeyError:
            raise CrmkitError(f"{self.name} has no field {name!r}") from None

    def field_for_header(self, header: str) -> Field | None:
        """The field a sheet header means: ``E-mail`` and ``Close date`` are forgiven."""
        return self.by_header.get(header_key(header))

    def suggest(self, name: str) -> str | None:
        """The known field name closest to a misspelt one, if any is close."""
        close = difflib.get_close_matches(name, [f.name for f in self.user_fields], n=1, cutoff=0.75)
        return close[0] if close else None

    def validate(
        self, values: Mapping[str, Any], *, allow_system: bool = False
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Parse ``values`` into (clean schema fields, custom fields).

        Keys the schema does not know are custom fields, kept as given. Every
        bad value is reported at once in one :class:`ValidationError`.
        """
        clean: dict[str, Any] = {}
        custom: dict[str, Any] = {}
        errors: list[FieldError] = []
        for key, raw in values.items():
            f = self.by_name.get(key)
            if f is None:
                custom[key] = raw
                continue
            if f.system and not allow_system:
                errors.append(FieldError(key, raw, "is kept by crmkit and cannot be set"))
                continue
            try:
                clean[key] = f.parse(raw)
            except FieldError as exc:
                errors.append(exc)
        if errors:
            raise ValidationError(self.name, errors)
        return clean, custom

    def check_required(self, doc: Mapping[str, Any]) -> None:
        """Raise when a required field of a complete record is empty."""
        missing = [
            FieldError(f.name, None, "is required")
            for f in self.fields
            if f.required and doc.get(f.name) in (None, "", [])
        ]
        if missing:
            raise ValidationError(self.name, missing)

    def dump(self, clean: Mapping[str, Any]) -> dict[str, Any]:
        """JSON form of clean values, for the store."""
        return {k: self.by_name[k].dump(v) for k, v in clean.items()}

    def load(self, doc: Mapping[str, Any]) -> dict[str, Any]:
        """Clean Python values (Decimal, date) of a stored record."""
        out: dict[str, Any] = {}
        for key, value in doc.items():
            f = self.by_name.get(key)
            out[key] = f.load(value) if f is not None and value is not None else value
        return out

    def title_of(self, doc: Mapping[str, Any]) -> str:
        return str(doc.get(self.title_field) or doc.get("id") or "")


SYSTEM_HEAD: tuple[Field, ...] = (TextField("id", "ID", aliases=("record id", "crm id"), system=True),)
SYSTEM_TAIL: tuple[Field, ...] = (
    DateTimeField("created_at", "Created at", system=True),
    DateTimeField("updated_at", "Updated at", system=True),
    DateTimeField("archived_at", "Archived at", system=True),
)

_owner = TextField("owner", "Owner", aliases=("assigned to", "sales rep"), help="who is responsible")
_email = EmailField("email", "Email", aliases=("e-mail", "email address", "mail"))
_phone = PhoneField("phone", "Phone", aliases=("phone number", "tel", "telephone", "mobile"))
_source = ChoiceField(
    "source",
    "Source",
    choices=("web", "referral", "campaign", "import", "email", "event", "partner", "phone", "other"),
    choice_aliases={"website": "web", "web form": "web", "trade show": "event", "cold call": "phone"},
    aliases=("lead source",),
    help="where the person came from (email: the support inbox)",
)

LEAD = RecordType(
    name="lead",
    table="leads",
    sheet="Leads",
    prefix="L",
    title_field="name",
    list_columns=("id", "name", "company", "email", "status", "rating", "source", "owner"),
    unique_keys=("email", "phone"),
    fields=(
        TextField("name", "Name", aliases=("full name", "lead name", "contact name"), required=True),
        TextField("company", "Company", aliases=("organisation", "organization", "account", "company name")),
        _email,
        _phone,
        _source,
        ChoiceField(
            "status",
            "Status",
            choices=tuple(LEAD_STATUS_TYPES),
            default="new",
            required=True,
            aliases=("lead status",),
            choice_aliases={"working": "contacted", "unqualified": "disqualified"},
        ),
        ChoiceField("rating", "Rating", choices=("hot", "warm", "cold")),
        _owner,
        TextField("notes", "Notes", aliases=("note", "comments", "description")),
        RefField("converted_contact", "Converted contact", target="contacts", system=True),
        RefField("converted_account", "Converted account", target="accounts", system=True),
        RefField("converted_deal", "Converted deal", target="deals", system=True),
        DateTimeField("converted_at", "Converted at", system=True),
    ),
)

CONTACT = RecordType(
    name="contact",
    table="contacts",
    sheet="Contacts",
    prefix="C",
    title_field="name",
    list_columns=("id", "name", "email", "phone", "title", "account", "owner"),
    unique_keys=("email", "phone"),
    fields=(
        TextField("name", "Name", aliases=("full name", "contact name", "contact"), required=True),
        _email,
        _phone,
        TextField("title", "Title", aliases=("job title", "position", "role")),
        RefField(
            "account", "Account", target="accounts", aliases=("company", "organisation", "organization")
        ),
        _owner,
        _source,
        BoolField("opt_out", "Opt out", aliases=("opted out", "unsubscribed", "do not email"), default=False),
        ChoiceField("email_status", "Email status", choices=("ok", "bounced"), default="ok"),
        TagsField("tags", "Tags", aliases=("labels",)),
        RefField("merged_into", "Merged into", target="contacts", system=True),
    ),
)

ACCOUNT = RecordType(
    name="account",
    table="accounts",
    sheet="Accounts",
    prefix="A",
    title_field="name",
    list_columns=("id", "name", "domain", "industry", "tier", "region", "owner"),
    fields=(
        TextField("name", "Name", aliases=("account name", "company", "company name"), required=True),
        TextField("domain", "Domain", aliases=("website", "web", "email domain")),
        TextField("industry", "Industry", aliases=("sector",)),
        ChoiceField("tier", "Tier", choices=("A", "B", "C")),
        TextField("region", "Region", aliases=("territory", "country")),
        _owner,
    ),
)

DEAL = RecordType(
    name="deal",
    table="deals",
    sheet="Deals",
    prefix="D",
    title_field="title",
    list_columns=(
        "id",
        "title",
        "account",
        "stage",
        "amount",
        "currency",
        "probability",
        "close_date",
        "owner",
    ),
    fields=(
        TextField("title", "Title", aliases=("deal", "deal name", "opportunity", "name"), required=True),
        RefField("account", "Account", target="accounts", aliases=("company",)),
        RefField("contact", "Contact", target="contacts"),
        TextField("pipeline", "Pipeline", default="sales"),
        ChoiceField(
            "stage",
            "Stage",
            choices=DEAL_STAGES,
            default="prospecting",
            required=True,
            choice_aliases={
                "closed won": "won",
                "closed lost": "lost",
                "qualify": "qualification",
                "qualified": "qualification",
                "quote": "proposal",
                "negotiating": "negotiation",
            },
            aliases=("deal stage",),
        ),
        DecimalField("amount", "Amount", aliases=("value", "deal value", "deal amount"), minimum=Decimal(0)),
        TextField("currency", "Currency", aliases=("ccy",)),
        PercentField("probability", "Probability", whole=True, aliases=("probability %", "win probability")),
        DateField("close_date", "Close date", aliases=("expected close", "close", "closing date")),
        ChoiceField(
            "forecast_category",
            "Forecast category",
            choices=("pipeline", "best_case", "commit", "closed", "omitted"),
            aliases=("forecast",),
        ),
        _owner,
        TextField("source", "Source", aliases=("lead source",)),
        JSONField("stage_history", "Stage history", system=True),
    ),
)

INVOICE = RecordType(
    name="invoice",
    table="invoices",
    sheet="Invoices",
    prefix="I",
    title_field="number",
    list_columns=(
        "id",
        "number",
        "account",
        "issue_date",
        "due_date",
        "total",
        "currency",
        "amount_paid",
        "status",
    ),
    unique_keys=("number",),
    fields=(
        TextField("number", "Number", aliases=("invoice number", "invoice no", "invoice #", "invoice")),
        RefField("account", "Account", target="accounts", aliases=("company", "customer")),
        RefField("contact", "Contact", target="contacts"),
        RefField("deal", "Deal", target="deals"),
        DateField("issue_date", "Issue date", aliases=("date", "invoice date", "issued")),
        DateField("due_date", "Due date", aliases=("due",)),
        TextField("currency", "Currency", aliases=("ccy",)),
        LinesField("lines", "Lines"),
        DecimalField("amount_paid", "Amount paid", aliases=("paid",), minimum=Decimal(0)),
        ChoiceField(
            "status",
            "Status",
            choices=INVOICE_STATUSES,
            default="draft",
            choice_aliases={"partly paid": "partly_paid", "partially paid": "partly_paid"},
        ),
        DecimalField("subtotal", "Subtotal", system=True),
        DecimalField("tax", "Tax", system=True),
        DecimalField("total", "Total", system=True),
        _owner,
        ChoiceField("schedule", "Repeats", choices=SCHEDULES, aliases=("recurring", "schedule")),
        RefField("quote", "Quote", target="quotes", system=True),
        RefField("recurring_of", "Recurring of", target="invoices", system=True),
        TextField("period", "Period", system=True, help="the period a recurring copy was issued for"),
    ),
)

QUOTE = RecordType(
    name="quote",
    table="quotes",
    sheet="Quotes",
    prefix="Q",
    title_field="number",
    list_columns=(
        "id",
        "number",
        "account",
        "deal",
        "issue_date",
        "valid_until",
        "total",
        "currency",
        "status",
    ),
    unique_keys=("number",),
    fields=(
        TextField("number", "Number", aliases=("quote number", "quote no", "quote #", "quote")),
        RefField("deal", "Deal", target="deals"),
        RefField("account", "Account", target="accounts", aliases=("company", "customer")),
        RefField("contact", "Contact", target="contacts"),
        DateField("issue_date", "Issue date", aliases=("date", "quote date")),
        DateField("valid_until", "Valid until", aliases=("expires", "expiry date")),
        TextField("currency", "Currency", aliases=("ccy",)),
        LinesField("lines", "Lines"),
        ChoiceField("status", "Status", choices=QUOTE_STATUSES, default="draft"),
        DecimalField("subtotal", "Subtotal", system=True),
        DecimalField("tax", "Tax", system=True),
        DecimalField("total", "Total", system=True),
        RefField("invoice", "Invoice", target="invoices", system=True),
        _owner,
    ),
)

CASE = RecordType(
    name="case",
    table="cases",
    sheet="Cases",
    prefix="CASE",
    title_field="subject",
    list_columns=("id", "subject", "contact", "status", "priority", "origin", "owner"),
    fields=(
        TextField("subject", "Subject", aliases=("title", "summary"), required=True),
        RefField("contact", "Contact", target="contacts"),
        RefField("account", "Account", target="accounts"),
        ChoiceField(
            "status",
            "Status",
            choices=("new", "open", "pending", "resolved", "closed"),
            default="new",
            choice_aliases={"solved": "resolved", "waiting": "pending", "on hold": "pending"},
        ),
        ChoiceField(
            "priority",
            "Priority",
            choices=("low", "normal", "high", "urgent"),
            default="normal",
            choice_aliases={"medium": "normal", "critical": "urgent"},
        ),
        ChoiceField("origin", "Origin", choices=("email", "phone", "web"), aliases=("channel",)),
        TextField("description", "Description", aliases=("details", "body")),
        _owner,
        DateTimeField(
            "first_response_at",
            "First response",
            system=True,
            help="when the team first answered (a reply sent by crmkit or found in the Sent folder)",
        ),
    ),
)

ACTIVITY = RecordType(
    name="activity",
    table="activities",
    sheet="Activities",
    prefix="ACT",
    title_field="subject",
    list_columns=("id", "date", "kind", "subject", "contact", "case", "deal"),
    fields=(
        ChoiceField(
            "kind",
            "Kind",
            choices=("email_in", "email_out", "call", "note"),
            required=True,
            default="note",
            aliases=("type",),
        ),
        TextField("subject", "Subject"),
        TextField("body", "Body", aliases=("text", "notes")),
        DateTimeField("date", "Date"),
        # mail: who wrote to whom, the Message-ID that threads replies, and what was kept of it
        TextField("sender", "From"),
        TextField("recipients", "To"),
        TextField("message_id", "Message-ID", aliases=("message id",)),
        JSONField("attachments", "Attachments", system=True),
        TextField("raw_message", "Raw message", system=True, help="the .eml kept beside the store"),
        RefField("contact", "Contact", target="contacts"),
        RefField("lead", "Lead", target="leads"),
        RefField("account", "Account", target="accounts"),
        RefField("deal", "Deal", target="deals"),
        RefField("case", "Case", target="cases"),
        _owner,
    ),
)

#: Every record type, by table name, in the order sheets and help list them.
RECORD_TYPES: dict[str, RecordType] = {
    rt.table: rt for rt in (LEAD, CONTACT, ACCOUNT, DEAL, QUOTE, INVOICE, CASE, ACTIVITY)
}
_BY_PREFIX = {rt.prefix: rt for rt in RECORD_TYPES.values()}
_ID = re.compile(r"^\s*([A-Za-z]+)-(\d+)\s*$")


def record_type(name: str) -> RecordType:
    """The record type called ``name``: ``contact``, ``contacts`` or ``Contacts``."""
    key = name.strip().casefold()
    for rt in RECORD_TYPES.values():
        if key in (rt.name, rt.table, rt.sheet.casefold()):
            return rt
    raise CrmkitError(f"unknown record type {name!r}; known: {', '.join(RECORD_TYPES)}")


def parse_id(record_id: str) -> tuple[RecordType, int]:
    """``c-12`` -> (CONTACT, 12). Raises when it is not a record id."""
    match = _ID.match(record_id)
    rt = _BY_PREFIX.get(match.group(1).upper()) if match else None
    if match is None or rt is None:
        prefixes = ", ".join(f"{p}-1" for p in _BY_PREFIX)
        raise CrmkitError(f"{record_id!r} is not a record id (ids look like {prefixes})")
    return rt, int(match.group(2))


def type_of_id(record_id: str) -> RecordType:
    return parse_id(record_id)[0]
