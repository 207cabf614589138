"""pynamodb models of the one table: campaign, its history, shard, recipient, suppression.

Keys (the table itself is defined in template.yaml):
  campaign     PK=CAMPAIGN#<id>                SK=META
  event        PK=CAMPAIGN#<id>                SK=EVENT#<epoch ms, 13 digits>#<6 hex>  (its history;
               a Query with begins_with(SK, "EVENT#") reads it in time order; TTL expires_at)
  shard        PK=CAMPAIGN#<id>#SHARD#<n>      SK=SHARD
  recipient    PK=CAMPAIGN#<id>#SHARD#<n>      SK=R#<seq>
  suppression  PK=SUPPRESSED#<phone>           SK=SUPPRESSED
  number book  PK=CAMPAIGN#<id>#NUMBERS#<b>   SK=IMPORT#<id>  (import dedupe: bucket b's numbers of one import)
  import lock  PK=CAMPAIGN#<id>#IMPORT         SK=IMPORT_LOCK  (one import at a time)

A shard item lives in its own recipients' partition rather than in the campaign's: every
write of the per-message path (claims, checkpoints, webhook updates, counters) then lands
in the shard's partition, so a campaign's write load spreads over its N shard partitions
instead of piling its counters onto the campaign's one (DESIGN.md invariant 10).
"""

from __future__ import annotations

from pynamodb.attributes import (
    JSONAttribute,
    ListAttribute,
    MapAttribute,
    NumberAttribute,
    NumberSetAttribute,
    UnicodeAttribute,
    UnicodeSetAttribute,
)
from pynamodb.connection import TableConnection
from pynamodb.constants import ALL_OLD
from pynamodb.exceptions import DeleteError, UpdateError
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex, KeysOnlyProjection
from pynamodb.models import Model

from .config import settings
from .states import CampaignStatus, InDoubtPolicy, RecipientStatus

DUE_SHARD = "shard"
DUE_CAMPAIGN = "campaign"
LIST_CAMPAIGNS = "CAMPAIGN"
LIST_NUMBERS = "NUMBER"
LIST_SUPPRESSIONS = "SUPPRESSION"
EVENT_PREFIX = "EVENT#"  # the sort keys of a campaign's history, in its partition


class _Meta:
    # table_name, region and max_pool_connections come from settings() when a model first needs a
    # connection (_TableModel), not at import: pynamodb reads them only then.
    table_name = None
    # pynamodb passes host=None to botocore, which then honours AWS_ENDPOINT_URL(_DYNAMODB).
    max_retry_attempts = 3
    connect_timeout_seconds = 5
    read_timeout_seconds = 10


class _TableModel(Model):
    """A model of the one table: its Meta's table name, region and pool size are settings(), read when
    the model is first used rather than when this module is imported.

    pynamodb reads `Meta.table_name` at every operation (`Model._get_connection`, which every
    operation goes through) and makes a new connection, reading region and pool size for it, whenever
    the name differs from its cached connection's (`Model._connection`). This fills the three in just
    before: at a model's first operation, then again only when TABLE_NAME changed (after
    `config.reload()`, in the tests and the local stack), so that pynamodb connects anew to that table.
    (They cannot be descriptors that read settings() lazily: pynamodb's metaclass probes Meta's region,
    pool size and timeouts with hasattr when the class is created, which would read them at import.)
    """

    @classmethod
    def _get_connection(cls) -> TableConnection:
        current = settings()
        if cls.Meta.table_name != current.table_name:
            cls.Meta.region = current.aws_region
            # Every send in flight writes its claim and checkpoint on its own connection, beside the
            # heartbeat and the read-ahead: a smaller pool (pynamodb's default is 10) opens and drops a
            # connection for each write beyond it.
            cls.Meta.max_pool_connections = current.max_in_flight + 4
            cls.Meta.table_name = current.table_name  # last: a thread that sees it finds the others set
        return super()._get_connection()


class DueIndex(GlobalSecondaryIndex):
    """Sparse index of what needs attention: shards sending (by lease expiry), scheduled campaigns."""

    class Meta:
        index_name = "DueIndex"
        projection = KeysOnlyProjection()

    due_kind = UnicodeAttribute(hash_key=True)
    due_at = NumberAttribute(range_key=True)


class ListIndex(GlobalSecondaryIndex):
    class Meta:
        index_name = "ListIndex"
        projection = AllProjection()

    list_pk = UnicodeAttribute(hash_key=True)
    created_at = UnicodeAttribute(range_key=True)


def campaign_pk(campaign_id: str) -> str:
    return f"CAMPAIGN#{campaign_id}"


def shard_pk(campaign_id: str, shard: int) -> str:
    return f"CAMPAIGN#{campaign_id}#SHARD#{shard}"


def recipient_sk(seq: int) -> str:
    return f"R#{seq:09d}"


def recipient_place(index: int, shards: int) -> tuple[int, int]:
    """(shard, seq) of a campaign's recipient number `index` (0-based, in import order): dealt
    round the shards, so each shard sends its part in the order the recipients came."""
    return index % shards, index // shards


class Campaign(_TableModel):
    class Meta(_Meta):
        pass

    PK = UnicodeAttribute(hash_key=True)
    SK = UnicodeAttribute(range_key=True, default="META")
    id = UnicodeAttribute()
    name = UnicodeAttribute()
    phone_number_id = UnicodeAttribute()
    template = JSONAttribute()
    # The hours it may send in (campaigns.windows): {start, end, timezone, days}; None: any time.
    send_window = JSONAttribute(null=True)
    status = UnicodeAttribute(default=CampaignStatus.DRAFT.value)
    rate = NumberAttribute(default=80)
    shard_count = NumberAttribute(default=1)
    in_doubt_policy = UnicodeAttribute(default=InDoubtPolicy.AUTO.value)
    # The Graph endpoint its sends go to (whatsapp.SendApi): "messages" or "marketing_messages".
    api = UnicodeAttribute(default="messages")
    paused_reason = UnicodeAttribute(null=True)
    paused_by = UnicodeAttribute(null=True)  # "person", "provider" (Meta paused its template), "error"
    # A pause of the provider's that ends at a known time (an account restriction's expiration):
    # the campaign is in the DueIndex then, and recovery resumes it.
    paused_until = NumberAttribute(null=True)
    paused_from = UnicodeAttribute(null=True)  # a provider's pause: "sending" or "scheduled", where it goes back
    # A provider's pause: each of its causes, hold -> {reason, until} (campaigns.holds), and the
    # count of the map's changes, which every write of it is conditioned on.
    provider_holds = MapAttribute(null=True)
    holds_version = NumberAttribute(null=True)
    last_error = UnicodeAttribute(null=True)
    # Still `sending`, but waiting for a limit to free room (campaigns.reach): why, and until when.
    waiting_reason = UnicodeAttribute(null=True)
    waiting_until = NumberAttribute(null=True)
    send_at = NumberAttribute(null=True)
    # No send starts after it; what is still pending then ends `expired` (None: no expiry). Stored
    # under another name: `expires_at` is the table's TTL attribute, and DynamoDB would delete the item.
    expires_at = NumberAttribute(null=True, attr_name="sends_expire_at")
    # Recipients imported so far: the next one gets this index (it picks shard and seq).
    recipient_count = NumberAttribute(default=0)
    # Imports whose recipients are all written: only their recipients exist for senders.
    imports = UnicodeSetAttribute(null=True)
    # Shards that still owe work; the campaign completes when the last one leaves the set.
    open_shards = NumberSetAttribute(null=True)
    created_at = UnicodeAttribute()
    updated_at = UnicodeAttribute(null=True)
    started_at = NumberAttribute(null=True)
    completed_at = NumberAttribute(null=True)
    list_pk = UnicodeAttribute(default=LIST_CAMPAIGNS)
    due_kind = UnicodeAttribute(null=True)
    due_at = NumberAttribute(null=True)

    due = DueIndex()
    listing = ListIndex()

    @classmethod
    def key(cls, campaign_id: str) -> tuple[str, str]:
        return campaign_pk(campaign_id), "META"


class CampaignEvent(_TableModel):
    """One entry of a campaign's history (campaigns.history): a pause, resume, wait, start, completion...
    In the campaign's own partition, after its META item; written once a status change or a wait, never
    per message. Deleted by the table's TTL (`expires_at`) once older than history.KEEP_SECONDS."""

    class Meta(_Meta):
        pass

    PK = UnicodeAttribute(hash_key=True)
    SK = UnicodeAttribute(range_key=True)
    kind = UnicodeAttribute()  # history.Kind
    by = UnicodeAttribute()  # "person", "provider", "error", "system"
    cause = UnicodeAttribute()  # the reason, the provider's event, the error, the limit waited for
    at = NumberAttribute()  # epoch seconds (the writer's clock), to the millisecond
    until = NumberAttribute(null=True)  # a wait's end, a schedule's start (epoch seconds)
    code = NumberAttribute(null=True)  # the Graph error code of a fatal error's pause
    expires_at = NumberAttribute()  # the table's TTL attribute

    @classmethod
    def key(cls, campaign_id: str, at_ms: int, tag: str) -> tuple[str, str]:
        return campaign_pk(campaign_id), f"{EVENT_PREFIX}{at_ms:013d}#{tag}"

    @property
    def campaign_id(self) -> str:
        return self.PK.split("#", 1)[1]


class Shard(_TableModel):
    """One partition of a campaign's recipients, with its lease, cursor and counters."""

    class Meta(_Meta):
        pass

    PK = UnicodeAttribute(hash_key=True)
    SK = UnicodeAttribute(range_key=True, default="SHARD")
    campaign_id = UnicodeAttribute()
    shard = NumberAttribute()
    # Lease: who may send for this shard, until when, and a monotonic fencing generation.
    # lease_token names the invocation the lease was handed to; the batch that takes it
    # then writes its own lease_owner, so a second delivery of the same event loses.
    lease_owner = UnicodeAttribute(null=True)
    lease_token = UnicodeAttribute(null=True)
    lease_gen = NumberAttribute(default=0)
    lease_expires = NumberAttribute(default=0)
    due_kind = UnicodeAttribute(null=True)
    due_at = NumberAttribute(null=True)
    # Lowest seq that may still be open: batches read from here, not from the start.
    cursor = NumberAttribute(default=0)
    total = NumberAttribute(default=0)
    # Counters by outcome, flushed by the sender with its heartbeat and made exact by a
    # recount when a shard is taken over or finishes; delivery counters come from webhooks.
    sent = NumberAttribute(default=0)
    failed = NumberAttribute(default=0)
    skipped = NumberAttribute(default=0)
    in_doubt = NumberAttribute(default=0)
    expired = NumberAttribute(default=0)
    delivered = NumberAttribute(default=0)
    read = NumberAttribute(default=0)
    # How in-doubt sends were resolved (states.IN_DOUBT_COUNTERS): proven sent by a webhook, sent
    # again after proof of absence (policy auto), and sends that happened twice after all (a late
    # status for a recipient already sent again). Counted from the recipients' flags by a recount.
    in_doubt_proven = NumberAttribute(default=0)
    resent_after_absence = NumberAttribute(default=0)
    duplicates = NumberAttribute(default=0)
    # Bumped by every webhook that moves a recipient's status: a recount that raced one retries.
    webhook_moves = NumberAttribute(default=0)
    # Set by the batch that takes the lease, removed when it lets go cleanly (its counters
    # flushed): a batch that finds it already set knows its predecessor died, and recounts.
    dirty_since = NumberAttribute(null=True)
    # The live figures, measured by the holding batch and flushed with each heartbeat: the sends
    # the provider accepted over a trailing window (campaigns.achieved), the limiter's pace, and
    # when both were measured (a status counts them only while that is recent).
    achieved_rate = NumberAttribute(default=0)
    pace = NumberAttribute(default=0)
    measured_at = NumberAttribute(null=True)
    last_error = UnicodeAttribute(null=True)
    heartbeat_at = NumberAttribute(null=True)
    finished_at = NumberAttribute(null=True)
    # Bumped by every pause or cancel after it wrote the campaign's status (lease.request_halt).
    halt_requests = NumberAttribute(null=True)

    due = DueIndex()

    @classmethod
    def key(cls, campaign_id: str, shard: int) -> tuple[str, str]:
        return shard_pk(campaign_id, shard), "SHARD"


class Recipient(_TableModel):
    class Meta(_Meta):
        pass

    PK = UnicodeAttribute(hash_key=True)
    SK = UnicodeAttribute(range_key=True)
    phone = UnicodeAttribute()
    variables = ListAttribute(of=UnicodeAttribute, default=list)
    import_id = UnicodeAttribute()
    status = UnicodeAttribute(default=RecipientStatus.PENDING.value)
    attempts = NumberAttribute(default=0)
    # The batch (lease owner) that claimed it: only that batch may checkpoint it.
    claimed_by = UnicodeAttribute(null=True)
    not_before = NumberAttribute(null=True)
    wamid = UnicodeAttribute(null=True)
    error_code = NumberAttribute(null=True)
    error_message = UnicodeAttribute(null=True)
    claimed_at = NumberAttribute(null=True)
    sent_at = NumberAttribute(null=True)
    in_doubt_at = NumberAttribute(null=True)
    delivered_at = NumberAttribute(null=True)
    read_at = NumberAttribute(null=True)
    failed_at = NumberAttribute(null=True)
    expired_at = NumberAttribute(null=True)
    # The in-doubt resolution (see campaigns.proof): when a webhook proved it sent, when proof of
    # absence sent it again, and when a late status showed both sends had happened.
    proven_at = NumberAttribute(null=True)
    absent_proven_at = NumberAttribute(null=True)
    duplicate_at = NumberAttribute(null=True)

    @property
    def seq(self) -> int:
        return int(self.SK[2:])

    @property
    def shard(self) -> int:
        return int(self.PK.rsplit("#", 1)[1])

    @property
    def campaign_id(self) -> str:
        return self.PK.split("#")[1]

    @property
    def callback_key(self) -> str:
        """What we put in biz_opaque_callback_data: the webhook finds the item from it."""
        return f"{self.campaign_id}:{self.shard}:{self.seq}"


def conditional_failed(error: UpdateError | DeleteError) -> bool:
    return error.cause_response_code == "ConditionalCheckFailedException"


def write_if(item: Model, actions: list, condition=None, read_back: bool = False) -> bool:
    """One conditional UpdateItem; False if its condition does not hold (any other error raises).
    With `read_back`, `item` holds the item as the write left it; without, nothing is read back."""
    try:
        if read_back:
            item.update(actions=actions, condition=condition)
        else:
            update_without_read_back(item, actions, condition)
        return True
    except UpdateError as error:
        if conditional_failed(error):
            return False
        raise


def write_if_returning_old(model: type[Model], hash_key: str, range_key: str, actions: list,
                           condition) -> dict | None:
    """One conditional UpdateItem; the item's attributes before it (DynamoDB JSON), or None if its
    condition does not hold (any other error raises)."""
    try:
        answer = model._get_connection().update_item(hash_key, range_key=range_key, actions=actions,
                                                     condition=condition, return_values=ALL_OLD)
    except UpdateError as error:
        if conditional_failed(error):
            return None
        raise
    return answer.get("Attributes") or {}


def update_without_read_back(item: Model, actions: list, condition=None) -> None:
    """One UpdateItem, as item.update() makes it, but without reading the item back.

    pynamodb's Model.update always asks for ALL_NEW. The hot writes (claims, checkpoints, lease
    renewals) use nothing of the answer; serialising the item (in DynamoDB, and in moto most of
    all) and parsing it back would cost CPU on both sides of each. Raises UpdateError as
    item.update() does; `item` is not refreshed.
    """
    type(item)._get_connection().update_item(item.PK, range_key=item.SK, actions=actions, condition=condition)


# The callback data of a test send (campaigns.test_sends) starts with this: it names no recipient, so
# the status webhooks of a test send are known for what they are and change nothing.
TEST_CALLBACK_PREFIX = "test:"


def callback_for_test_send(campaign_id: str, token: str) -> str:
    return f"{TEST_CALLBACK_PREFIX}{campaign_id}:{token}"


def is_test_send_callback(key: object) -> bool:
    return isinstance(key, str) and key.startswith(TEST_CALLBACK_PREFIX)


def parse_callback_key(key: str) -> tuple[str, int, int] | None:
    if is_test_send_callback(key):
        return None  # a test send's: no recipient
    try:
        campaign_id, shard, seq = key.rsplit(":", 2)
        return campaign_id, int(shard), int(seq)
    except (ValueError, AttributeError):
        return None


class Number(_TableModel):
    """A phone number as a resource shared by every campaign sending from it (campaigns.budget):
    the limits its owner set (`PUT /numbers/{id}`; Meta's defaults when unset) and the roster of
    the shards sending from it now, each kept by its batch's heartbeat."""

    class Meta(_Meta):
        pass

    PK = UnicodeAttribute(hash_key=True)
    SK = UnicodeAttribute(range_key=True, default="NUMBER")
    phone_number_id = UnicodeAttribute(null=True)
    throughput_mps = NumberAttribute(null=True)
    messaging_limit = NumberAttribute(null=True)
    portfolio = UnicodeAttribute(null=True)
    # Its WhatsApp Business Account (the `entry.id` of Meta's account webhooks); None: any account.
    business_account_id = UnicodeAttribute(null=True)
    secret = UnicodeAttribute(null=True)
    updated_at = NumberAttribute(null=True)
    # shard key (campaign:shard) -> {"ask": its rate, "owner": its batch, "until": when it stops counting}
    roster = MapAttribute(null=True)
    # Set when its owner configures it: GET /numbers lists the numbers configured, oldest first.
    list_pk = UnicodeAttribute(null=True)
    created_at = UnicodeAttribute(null=True)
    listing = ListIndex()

    @classmethod
    def key(cls, phone_number_id: str) -> tuple[str, str]:
        return f"NUMBER#{phone_number_id}", "NUMBER"


class Reach(_TableModel):
    """A user a portfolio reached with a business-initiated message, and when (campaigns.reach)."""

    class Meta(_Meta):
        pass

    PK = UnicodeAttribute(hash_key=True)
    SK = UnicodeAttribute(range_key=True, default="REACH")
    reached_at = NumberAttribute(null=True)

    @classmethod
    def key(cls, portfolio: str, phone: str) -> tuple[str, str]:
        return f"REACH#{portfolio}#{phone}", "REACH"


class Quota(_TableModel):
    """A portfolio's unique users reached, counted by hour of the rolling window (campaigns.reach)."""

    class Meta(_Meta):
        pass

    PK = UnicodeAttribute(hash_key=True)
    SK = UnicodeAttribute(range_key=True, default="QUOTA")
    hours = MapAttribute(null=True)  # the bucket's number (its start / its length) -> users counted in it
    version = NumberAttribute(null=True)  # the optimistic lock of a batch taking room

    @classmethod
    def key(cls, portfolio: str) -> tuple[str, str]:
        return f"PORTFOLIO#{portfolio}", "QUOTA"


class NumberProof(_TableModel):
    """What the status webhooks have proven for one phone number: the latest claim time of a send
    of that number that Meta reported on (campaigns.proof). Raised, never lowered."""

    class Meta(_Meta):
        pass

    PK = UnicodeAttribute(hash_key=True)
    SK = UnicodeAttribute(range_key=True, default="PROOF")
    proven_claimed_at = NumberAttribute(default=0)
    updated_at = NumberAttribute(null=True)

    @classmethod
    def key(cls, phone_number_id: str) -> tuple[str, str]:
        return f"NUMBER#{phone_number_id}", "PROOF"


class Suppression(_TableModel):
    """A number that asked not to get marketing messages: an opt-out reply, Graph error 131050, or a
    person's PUT (campaigns.suppressions). Imports drop it; GET /suppressions lists it, newest first."""

    class Meta(_Meta):
        pass

    PK = UnicodeAttribute(hash_key=True)
    SK = UnicodeAttribute(range_key=True, default="SUPPRESSED")
    phone = UnicodeAttribute()
    reason = UnicodeAttribute()
    source = UnicodeAttribute(null=True)  # "reply", "graph_131050", "person"
    suppressed_at = NumberAttribute(null=True)  # epoch seconds
    # The listing index's keys: its range key is a String, so the moment is kept as ISO 8601 here.
    list_pk = UnicodeAttribute(default=LIST_SUPPRESSIONS)
    created_at = UnicodeAttribute()
    listing = ListIndex()

    @classmethod
    def key(cls, phone: str) -> tuple[str, str]:
        return f"SUPPRESSED#{phone}", "SUPPRESSED"


class NumberBook(_TableModel):
    """The numbers one import put into a campaign that fall in one bucket of the number's hash, each
    with its recipient's index (campaigns.imports: why in books rather than an item per number)."""

    class Meta(_Meta):
        pass

    PK = UnicodeAttribute(hash_key=True)
    SK = UnicodeAttribute(range_key=True)
    numbers = MapAttribute(default=dict)  # E.164 digits -> the recipient's index (models.recipient_place)

    @classmethod
    def key(cls, campaign_id: str, bucket: int, import_id: str) -> tuple[str, str]:
        return cls.bucket_pk(campaign_id, bucket), f"IMPORT#{import_id}"

    @staticmethod
    def bucket_pk(campaign_id: str, bucket: int) -> str:
        return f"{campaign_pk(campaign_id)}#NUMBERS#{bucket}"

    @property
    def import_id(self) -> str:
        return self.SK.removeprefix("IMPORT#")


class ImportLock(_TableModel):
    """One import per campaign at a time: batch writes cannot be conditional (see campaigns.imports)."""

    class Meta(_Meta):
        pass

    PK = UnicodeAttribute(hash_key=True)
    SK = UnicodeAttribute(range_key=True, default="IMPORT_LOCK")
    owner = UnicodeAttribute()
    expires = NumberAttribute()
    expires_at = NumberAttribute()  # the table's TTL attribute: DynamoDB deletes stale locks

    @classmethod
    def key(cls, campaign_id: str) -> tuple[str, str]:
        return f"{campaign_pk(campaign_id)}#IMPORT", "IMPORT_LOCK"
