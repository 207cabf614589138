"""The HTTP API's request and answer shapes (pydantic): validation and the OpenAPI schema both
come from these. Semantic checks that need the store (a recipient's variable count against the
campaign's template, duplicates, suppression) live in `imports` and `service`."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

from . import templates
from .clones import Pick
from .states import CampaignStatus, InDoubtPolicy, RecipientStatus
from .whatsapp import SendApi


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Component(BaseModel):
    """A template component as Graph takes it; `{{n}}` in any string is the recipient's n-th variable."""

    model_config = ConfigDict(extra="allow", json_schema_extra={
        "example": {"type": "body", "parameters": [{"type": "text", "text": "{{1}}"},
                                                    {"type": "text", "text": "{{2}}"}]}})

    type: Annotated[str, Field(min_length=1, max_length=32, description="header, body, button, ...")]


class Template(_Strict):
    name: Annotated[str, Field(pattern=r"^[a-z0-9_]{1,512}$", description="the approved template's name")]
    language: Annotated[
        str,
        Field(pattern=r"^[a-z]{2,3}(_[A-Za-z]{2,4})?$", description='language code, e.g. "en_US" '
              '(Graph\'s {"code": "en_US"} is accepted too)'),
    ]
    components: list[Component] = Field(default_factory=list)

    @field_validator("language", mode="before")
    @classmethod
    def _language_code(cls, value: Any) -> Any:
        if isinstance(value, dict) and set(value) == {"code"}:
            return value["code"]
        return value

    @field_validator("components")
    @classmethod
    def _placeholders(cls, components: list[Component]) -> list[Component]:
        try:
            templates.variable_count({"components": [c.model_dump() for c in components]})
        except templates.TemplateError as error:
            raise ValueError(str(error)) from None
        return components

    def as_stored(self) -> dict:
        return {"name": self.name, "language": self.language,
                "components": [c.model_dump(exclude_none=True) for c in self.components]}


class RecipientIn(_Strict):
    phone: Annotated[str, Field(max_length=64, description="E.164, e.g. +919876543210 (spaces, dashes, "
                                                          "parentheses and a leading 00 are fine)")]
    variables: list[str] = Field(default_factory=list, description="one value per {{n}}, in order")


class SendWindowIn(_Strict):
    """The hours a campaign may send in, in its audience's time zone (campaigns.windows)."""

    start: Annotated[str, Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$", description="HH:MM, opening")]
    end: Annotated[str, Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$", description=(
        "HH:MM, closing; before `start`: the window runs across midnight"))]
    timezone: Annotated[str, Field(min_length=1, max_length=64, description="an IANA zone, e.g. Asia/Kolkata")]
    days: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] | None = Field(
        None, min_length=1, description="the days it opens on (default: every day)")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone") from None
        return value

    @field_validator("end")
    @classmethod
    def _not_empty(cls, value: str, info) -> str:
        if value == info.data.get("start"):
            raise ValueError("end equals start: the window would never open")
        return value


class CreateCampaign(_Strict):
    model_config = ConfigDict(json_schema_extra={"example": {
        "name": "Diwali offer", "phone_number_id": "1234567890",
        "template": {"name": "diwali_offer", "language": "en_US", "components": [
            {"type": "body", "parameters": [{"type": "text", "text": "{{1}}"}, {"type": "text", "text": "{{2}}"}]}]},
        "rate": 80, "in_doubt_policy": "auto",
        "recipients": [{"phone": "+919876543210", "variables": ["Asha", "20%"]}]}})

    name: Annotated[str, Field(min_length=1, max_length=200)]
    phone_number_id: Annotated[str, Field(pattern=r"^[0-9]{1,32}$", description="the sending WhatsApp number's id")]
    template: Template
    rate: Annotated[int, Field(ge=1, le=1000, description="messages per second for this campaign")] = 80
    in_doubt_policy: InDoubtPolicy = Field(
        InDoubtPolicy.AUTO, description="a send that may or may not have happened (its batch died with it on the "
        "wire): auto (default: sent again only once status webhooks prove it never reached Meta), skip (at most "
        "once: never sent again) or resend (at least once: sent again after the grace period without proof)")
    send_window: SendWindowIn | None = Field(None, description=(
        "the hours it may send in; outside them its shards park and it goes on by itself at the opening"))
    api: SendApi = Field(SendApi.MESSAGES, description=(
        "the Graph endpoint its sends go to: messages (default: POST /{phone_number_id}/messages) or "
        "marketing_messages (the Marketing Messages API, POST /{phone_number_id}/marketing_messages: marketing "
        "templates only; the same answers, errors and status webhooks)"))
    send_at: datetime | None = Field(
        None, description="start time: ISO 8601 with a time zone, or epoch seconds; must be in the future "
        "(the campaign is then `scheduled`)")
    expires_at: datetime | None = Field(
        None, description="no send starts after it (ISO 8601 with a time zone, or epoch seconds; in the future, "
        "after send_at): recipients still pending then end `expired` and the campaign completes")
    recipients: list[RecipientIn] | None = Field(
        None, description="inline recipients, as POST /campaigns/{id}/recipients takes them; all must be "
        "valid or nothing is created")

    @field_validator("send_at", "expires_at")
    @classmethod
    def _aware(cls, value: datetime | None, info) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError(f"{info.field_name} needs a time zone, e.g. 2030-01-31T09:30:00Z or +05:30")
        return value


class ImportRequest(_Strict):
    recipients: list[RecipientIn]


# Every moment in an answer: ISO 8601 in UTC (campaigns.timestamps.iso_utc), e.g. 2026-11-28T18:54:13.556+00:00.
Moment = Annotated[datetime | None, Field(description="ISO 8601, UTC, or null")]


class Counts(BaseModel):
    pending: int
    sending: int
    sent: int
    delivered: int
    read: int
    failed: int
    in_doubt: int
    skipped: int
    expired: int = Field(description="still pending when the campaign's expires_at passed: never sent")


class InDoubtResolution(BaseModel):
    """What became of the sends whose batch died with them possibly on the wire (policy auto by default)."""

    waiting_for_proof: int = Field(description="in doubt now, their policy still waiting for a proof either way "
                                   "(auto) or for the grace period (resend); 0 under skip")
    proven_sent: int = Field(description="were in doubt until a status webhook proved them sent")
    resent_after_absence: int = Field(description="sent again after the webhooks proved they never reached Meta")
    duplicates: int = Field(description="sent again, then a late status showed the first send had reached Meta: "
                            "the recipient got it twice (the residual risk of policy auto)")


class CampaignOut(BaseModel):
    id: str
    name: str
    status: CampaignStatus
    phone_number_id: str
    template: dict
    rate: int
    in_doubt_policy: str
    api: SendApi = Field(SendApi.MESSAGES, description="the Graph endpoint its sends go to")
    shards: int
    total: int
    counts: Counts
    in_doubt_resolution: InDoubtResolution
    progress: float = Field(description="finished share of the recipients, 0..1")
    current_rate: float = Field(description="achieved rate: messages per second the provider accepted over "
                                "the last 5 s, summed over the shards being sent (0 when none is)")
    pace: float = Field(description="messages per second the senders' rate limiters allow now, over the "
                        "shards being sent (the campaign's rate / 1.02, less what 130429 refusals took off): "
                        "a ceiling, not what is sent")
    eta_seconds: int | None = Field(description="pending recipients / current_rate, in seconds; null while "
                                    "nothing is being sent")
    paused_reason: str | None
    send_window: SendWindowIn | None = Field(None, description="the hours it may send in (null: any time)")
    paused_by: Literal["person", "provider", "error"] | None = Field(
        None, description="who paused it: a person, the provider (Meta paused its template: its event resumes it; "
        "or restricted its account: it resumes at paused_until), or a campaign-fatal error")
    paused_until: Moment = Field(None, description="a provider's pause with a known end (an account "
                                 "restriction's expiration): it resumes by itself then")
    waiting_reason: Literal["messaging_limit", "send_window"] | None = Field(
        None, description="sending, but waiting for a limit: its shards are parked and go on by themselves")
    waiting_until: Moment = Field(None, description="when the limit frees room (ISO 8601, UTC)")
    expires_at: Moment = Field(None, description="no send starts after it; what is pending then ends expired")
    fits_now: int | None = Field(None, description="`send`'s answer only: how many of the pending recipients "
                                 "its portfolio's messaging limit lets through now (null: no limit)")
    last_error: str | None
    stuck_shards: list[int] = Field(description="shards whose sender lease expired (recovery takes them over)")
    send_at: Moment
    created_at: datetime = Field(description="ISO 8601, UTC")
    started_at: Moment
    completed_at: Moment


class Rejected(BaseModel):
    index: int | None = Field(None, description="JSON: 0-based position in `recipients`")
    line: int | None = Field(None, description="CSV: 1-based line number (the header is line 1)")
    phone: str
    reason: str


class ImportReport(BaseModel):
    accepted: int
    rejected: list[Rejected] = Field(description="rejected rows (the first 1000)")
    rejected_count: int
    duplicates: int = Field(description="numbers repeated in the request or already in the campaign")
    suppressed: int = Field(description="numbers on the suppression list (opted out)")
    total: int = Field(description="recipients of the campaign after this import")


class CreatedCampaign(CampaignOut):
    import_: ImportReport | None = Field(None, alias="import", description="the inline recipients' report")


class RetryOut(CampaignOut):
    reopened_shards: int


class CampaignSummary(BaseModel):
    id: str
    name: str
    status: CampaignStatus
    phone_number_id: str
    template_name: str | None
    rate: int
    recipients_reserved: int
    paused_reason: str | None
    send_at: Moment
    expires_at: Moment = None
    created_at: datetime = Field(description="ISO 8601, UTC")
    started_at: Moment
    completed_at: Moment


class CampaignPage(BaseModel):
    items: list[CampaignSummary]
    next: str | None = Field(description="pass as ?next= for the following page; null at the end")


class RecipientOut(BaseModel):
    key: str = Field(description="campaign:shard:seq, the biz_opaque_callback_data of its send")
    shard: int
    seq: int
    phone: str
    variables: list[str]
    status: RecipientStatus
    attempts: int
    wamid: str | None
    error_code: int | None
    error_class: str | None
    error_message: str | None
    sent_at: Moment
    delivered_at: Moment
    read_at: Moment
    failed_at: Moment
    expired_at: Moment
    in_doubt_at: Moment
    proven_at: Moment = Field(description="when a status webhook proved this in-doubt send happened")
    absent_proven_at: Moment = Field(description="when the webhooks proved this in-doubt send never reached "
                                     "Meta, and it went back to be sent again (policy auto)")
    duplicate_at: Moment = Field(description="when a late status showed that the first send had reached Meta too")
    in_doubt: Literal["waiting_for_proof", "proven_sent", "resent_after_absence", "sent_twice"] | None = Field(
        description="what became of this send once in doubt; null if it never was")


class NumberIn(_Strict):
    model_config = ConfigDict(json_schema_extra={"example": {"throughput_mps": 20, "messaging_limit": 2000}})

    throughput_mps: Annotated[int, Field(ge=1, le=1000, description=(
        "messages per second Meta allows this number (80 by default, 1 000 after Meta's upgrade, 20 for a "
        "number shared with the Business app): every campaign sending from it shares it"))] = 80
    messaging_limit: Annotated[int | None, Field(ge=1, le=10_000_000, description=(
        "unique users its business portfolio may reach with business-initiated messages in a rolling 24 h "
        "(Meta's tiers: 250, 2 000, 10 000, 100 000); null: unlimited"))] = None
    portfolio: Annotated[str | None, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$", description=(
        "the business portfolio whose messaging limit this number shares with its other numbers; "
        "default: the number alone"))] = None
    secret: Annotated[str | None, Field(pattern=r"^[A-Za-z0-9/_+=.@-]{1,512}$", description=(
        "for a number of another account: the name of the Secrets Manager secret holding its access token "
        "(JSON {\"access_token\": ...}), under the stack's prefix (<stack name>/...); default: the stack's secret"))] = None
    business_account_id: Annotated[str | None, Field(pattern=r"^[0-9]{1,32}$", description=(
        "its WhatsApp Business Account: Meta's account webhooks (a restriction) pause the campaigns of that "
        "account's numbers only; default: none named, the number counts as any account's"))] = None


class NumberShard(BaseModel):
    campaign_id: str
    shard: int
    asks_mps: float = Field(description="its campaign's rate over its shards: its ceiling")
    share_mps: float = Field(description="what the number's budget gives it now (max-min fair)")


class NumberOut(BaseModel):
    phone_number_id: str
    throughput_mps: float = Field(description="the number's limit: what its owner set, else Meta's default (80)")
    configured: bool = Field(description="whether its owner set it (PUT /numbers/{id})")
    secret: str | None = Field(description="the name of the secret its token is read from; null: the stack's")
    business_account_id: str | None = Field(None, description="its WhatsApp Business Account; null: none named")
    in_use_mps: float = Field(description="the sum of the shares of the shards sending from it now")
    sending: list[NumberShard]
    messaging_limit: int | None = Field(description="its portfolio's unique users a rolling day; null: unlimited")
    portfolio: str = Field(description="whose messaging limit it counts in (the number's own id by default)")
    reached_24h: int = Field(description="unique users the portfolio reached in the rolling window")
    left: int | None = Field(description="users the limit still allows now; null without a limit")
    next_room_at: Moment = Field(description="when the oldest counted hour leaves the window")


class NumberList(BaseModel):
    items: list[NumberOut]


class SuppressionIn(_Strict):
    model_config = ConfigDict(json_schema_extra={"example": {"reason": "asked by phone to get no more offers"}})

    reason: Annotated[str | None, Field(min_length=1, max_length=200, description=(
        "why the number is suppressed (kept with it, and named by the recipients it skips)"))] = None


class SuppressionOut(BaseModel):
    phone: str = Field(description="E.164 digits, as recipients are stored")
    reason: str
    source: Literal["reply", "graph_131050", "person"] | None = Field(description=(
        "reply: the person replied an opt-out keyword (STOP, UNSUBSCRIBE, ...); graph_131050: Meta refused a "
        "send because the person stopped marketing messages; person: PUT /suppressions/{phone}"))
    created_at: datetime = Field(description="when it went on the list (ISO 8601, UTC)")


class SuppressionAdded(SuppressionOut):
    skipped_recipients: int = Field(description="this number's pending recipients skipped now in the campaigns "
                                    "not finished (draft, scheduled, sending, paused)")


class SuppressionPage(BaseModel):
    items: list[SuppressionOut]
    next: str | None = Field(description="pass as ?next= for the following page; null at the end")


class RecipientPage(BaseModel):
    items: list[RecipientOut]
    next: str | None


class EventOut(BaseModel):
    """One entry of a campaign's history (campaigns.history)."""

    model_config = ConfigDict(json_schema_extra={"example": {
        "at": "2026-11-28T18:54:13.556+00:00", "kind": "paused", "by": "provider",
        "cause": "template diwali_offer (en_US) PAUSED by Meta: LOW_QUALITY", "until": None, "code": None}})

    at: datetime = Field(description="when it happened (ISO 8601, UTC; the writing function's clock)")
    kind: Literal["started", "scheduled", "paused", "resumed", "waiting", "waiting_over", "completed", "cancelled",
                  "retried"] = Field(description="what happened: `waiting` is a sending campaign whose shards "
                                     "parked for a limit, `waiting_over` a batch sending again after it")
    by: Literal["person", "provider", "error", "system"] = Field(
        description="a person (the API), the provider (Meta's template event or a code of its own), a "
        "campaign-fatal error, or the system (the schedule, a limit, the last recipient settled)")
    cause: str = Field(description="the reason: the pause's, the provider's event, the error, the limit "
                       "waited for (`messaging_limit`, `send_window`)")
    until: Moment = Field(description="a wait's expected end, a schedule's start")
    code: int | None = Field(description="the Graph error code of an error's pause")


class EventPage(BaseModel):
    items: list[EventOut]
    next: str | None = Field(description="pass as ?next= for the following page; null at the end")


# -- test sends and clones (campaigns.test_sends, campaigns.clones) ---------------------------------------


class SendTestIn(_Strict):
    model_config = ConfigDict(json_schema_extra={"example": {"recipients": [
        {"phone": "+919876543210", "variables": ["Asha", "20%"]}, {"phone": "+14155550100", "variables": ["Sam", "5%"]}]}})

    recipients: list[RecipientIn] = Field(min_length=1, max_length=10, description=(
        "1 to 10 numbers to send the campaign's template to now, each with its variables (one per {{n}}), "
        "validated as an import's; the campaign's recipients and counts are not touched"))


class SendTestError(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    code: int | None = Field(description="the Graph error code (-2: no connection, -3: a 5xx without a body); "
                             "null when nothing was sent (suppressed)")
    message: str
    class_: str = Field(alias="class", description=(
        "the error's class, as a campaign's send would be judged (graph_errors: throttled, retry_recipient, "
        "retryable, recipient, suppress, fatal), or suppressed (on the suppression list: not sent), or "
        "no_answer (the request went out but no answer came back: it may have been sent)"))


class SendTestResult(BaseModel):
    phone: str = Field(description="E.164 digits")
    ok: bool = Field(description="Meta accepted the send")
    wamid: str | None = Field(None, description="the accepted message's id")
    error: SendTestError | None = None


class SendTestOut(BaseModel):
    results: list[SendTestResult] = Field(description="one per number, in the request's order")


class CloneIn(_Strict):
    model_config = ConfigDict(json_schema_extra={"example": {"name": "Diwali (failed, again)",
                                                             "recipients": "failed"}})

    name: Annotated[str | None, Field(min_length=1, max_length=200, description=(
        "the new campaign's name (default: the source's, with \" (copy)\")"))] = None
    recipients: Pick = Field(Pick.NONE, description=(
        "which of the source's recipients the clone gets, with their variables: none (default), all, failed, "
        "not_delivered (no delivered_at: pending, failed, in doubt, expired, sent but never reported delivered), "
        "not_read (no read_at: those, and delivered but never reported read); not_delivered and not_read leave "
        "out the skipped (opted-out) and those being sent"))


class ClonedCampaign(CreatedCampaign):
    cloned_from: str = Field(description="the source campaign's id")


class ErrorBody(BaseModel):
    code: str
    message: str
    field: str | None
    current_status: str | None = Field(None, description="409: the campaign's status that refused the action")


class ErrorOut(BaseModel):
    error: ErrorBody
