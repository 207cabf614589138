"""WhatsApp Cloud API client: template sends over one pooled requests.Session.

Retries live in the sender's loop (one layer only), so the session retries nothing itself.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum

import requests
from requests.adapters import HTTPAdapter

from . import graph_errors
from .config import Settings


class SendApi(StrEnum):
    """Which Graph endpoint a campaign's sends go to (its `api`): the Cloud API's `/messages`, or the
    Marketing Messages API's `/marketing_messages` (marketing templates only; the same body, answers,
    errors and status webhooks)."""

    MESSAGES = "messages"
    MARKETING_MESSAGES = "marketing_messages"


def send_path(phone_number_id: str, api: str | None = None) -> str:
    """The one rule for where a send goes: `/{phone_number_id}/{api}` (default `/messages`)."""
    return f"/{phone_number_id}/{SendApi(api or SendApi.MESSAGES).value}"


class Outcome(StrEnum):
    ACCEPTED = "accepted"
    ERROR = "error"  # Meta answered with an error: it did not send
    NOT_SENT = "not_sent"  # the request never reached Meta (connection refused, connect timeout)
    UNKNOWN = "unknown"  # sent, but no answer came back (read timeout, connection dropped)


@dataclass(frozen=True)
class SendResult:
    outcome: Outcome
    wamid: str | None = None
    code: int | None = None
    http_status: int | None = None
    message: str = ""
    latency_ms: float = 0.0


def template_payload(to: str, template: dict, variables: list[str], callback: str) -> dict:
    """The send body; `{{n}}` in the template's components is filled with the recipient's n-th variable."""
    return {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to,
        "type": "template",
        "template": {
            "name": template["name"],
            "language": {"code": template.get("language", "en_US")},
            "components": [_fill(component, variables) for component in template.get("components", [])],
        },
        "biz_opaque_callback_data": callback,
    }


def _fill(value, variables: list[str]):
    if isinstance(value, dict):
        return {key: _fill(item, variables) for key, item in value.items()}
    if isinstance(value, list):
        return [_fill(item, variables) for item in value]
    if isinstance(value, str):
        for n, variable in enumerate(variables, start=1):
            value = value.replace(f"{{{{{n}}}}}", variable)
    return value


class WhatsAppClient:
    def __init__(self, settings: Settings, token: str, pool_size: int = 16):
        self._base = f"{settings.graph_api_url.rstrip('/')}/{settings.graph_api_version}"
        self._timeout = (settings.connect_timeout_seconds, settings.read_timeout_seconds)
        self._session = requests.Session()
        self._session.headers.update({"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool_size, max_retries=0)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)

    def send_template(self, phone_number_id: str, payload: dict, api: str | None = None) -> SendResult:
        """One POST of `payload` to the campaign's endpoint (`api`: SendApi, default /messages)."""
        started = time.monotonic()
        try:
            response = self._session.post(
                f"{self._base}{send_path(phone_number_id, api)}", json=payload, timeout=self._timeout
            )
        except (requests.ConnectTimeout, requests.exceptions.InvalidURL) as error:
            return SendResult(Outcome.NOT_SENT, code=graph_errors.CONNECTION, message=str(error))
        except requests.ConnectionError as error:
            # A refused connection never carried the request; a dropped one may have.
            refused = "refused" in str(error).lower() or "NewConnectionError" in repr(error)
            outcome = Outcome.NOT_SENT if refused else Outcome.UNKNOWN
            return SendResult(outcome, code=graph_errors.CONNECTION, message=str(error))
        except requests.Timeout as error:
            return SendResult(Outcome.UNKNOWN, code=graph_errors.CONNECTION, message=str(error))
        latency = (time.monotonic() - started) * 1000
        return _result(response, latency)

    def close(self) -> None:
        self._session.close()


def _result(response: requests.Response, latency_ms: float) -> SendResult:
    try:
        body = response.json()
    except ValueError:
        body = {}
    if response.status_code == 200 and body.get("messages"):
        return SendResult(Outcome.ACCEPTED, wamid=body["messages"][0]["id"], http_status=200, latency_ms=latency_ms)
    error = body.get("error") or {}
    code = error.get("code")
    if not isinstance(code, int):
        code = graph_errors.HTTP_5XX if response.status_code >= 500 else 0
    details = (error.get("error_data") or {}).get("details") or error.get("message") or response.reason
    return SendResult(
        Outcome.ERROR, code=code, http_status=response.status_code, message=str(details), latency_ms=latency_ms
    )
