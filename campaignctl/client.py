"""A small client of the campaigns HTTP API: requests Session with timeouts, SigV4 for the deployed API."""

from __future__ import annotations

import ipaddress
import os
import re
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

DEFAULT_API_URL = "http://127.0.0.1:3000"
# (connect, read): an import of 10,000 rows takes a while; nothing else should.
TIMEOUT = (3.05, 60.0)
_EXECUTE_API_HOST = re.compile(r"^[a-z0-9]+\.execute-api\.([a-z0-9-]+)\.amazonaws\.com$")


class ApiError(Exception):
    """An answer that is not 2xx, with the API's `{"error": {code, message, field}}` when it sent one."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None, body: Any = None):
        super().__init__(message)
        self.status, self.code, self.message, self.field, self.body = status, code, message, field, body

    def __str__(self) -> str:
        where = f" (field {self.field})" if self.field else ""
        return f"{self.status} {self.code}: {self.message}{where}"


class Unreachable(Exception):
    """The API did not answer (nothing listens there, or it timed out)."""


def raise_refusal(response: requests.Response) -> None:
    """The ApiError of an answer that is not 2xx: the API's error envelope, or what came instead."""
    try:
        body = response.json() if response.content else None
    except ValueError:
        body = response.text
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        raise ApiError(response.status_code, str(error.get("code")), str(error.get("message")),
                       error.get("field"), body)
    message = body.get("message") if isinstance(body, dict) else str(body or response.reason)
    raise ApiError(response.status_code, "http_error", str(message)[:300], None, body)


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def region_for(url: str, explicit: str | None = None) -> str | None:
    """--region, else AWS_REGION / AWS_DEFAULT_REGION / the AWS config, else the execute-api host's region."""
    if explicit:
        return explicit
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        return region
    import botocore.session

    region = botocore.session.get_session().get_config_variable("region")
    if region:
        return region
    found = _EXECUTE_API_HOST.match(urlsplit(url).hostname or "")
    return found.group(1) if found else None


class SigV4Auth(requests.auth.AuthBase):
    """Signs each request with botocore's SigV4Auth for API Gateway (service `execute-api`), with the
    credentials of the default chain (environment, profile, SSO, instance role...)."""

    SIGNED_HEADERS = ("content-type", "idempotency-key")

    def __init__(self, region: str, credentials=None):
        self.region = region
        self._credentials = credentials

    def credentials(self):
        if self._credentials is None:
            import botocore.session

            self._credentials = botocore.session.get_session().get_credentials()
            if self._credentials is None:
                raise ApiError(0, "no_credentials", "no AWS credentials found for signing requests to the "
                                                    "deployed API (set AWS_PROFILE or AWS_ACCESS_KEY_ID...)")
        return self._credentials

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        from botocore.auth import SigV4Auth as BotocoreSigV4
        from botocore.awsrequest import AWSRequest

        body = request.body or b""
        if isinstance(body, str):
            body = body.encode()
        headers = {k: v for k, v in request.headers.items() if k.lower() in self.SIGNED_HEADERS}
        signed = AWSRequest(method=request.method, url=request.url, data=body, headers=headers)
        frozen = self.credentials().get_frozen_credentials()
        BotocoreSigV4(frozen, "execute-api", self.region).add_auth(signed)
        for name in ("Authorization", "X-Amz-Date", "X-Amz-Security-Token"):
            if name in signed.headers:
                request.headers[name] = signed.headers[name]
        return request


class Client:
    def __init__(self, base_url: str = DEFAULT_API_URL, region: str | None = None, timeout=TIMEOUT,
                 credentials=None):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        # Reads are retried on connection errors and gateway errors; writes are not (send twice = 409 anyway,
        # and a create carries an Idempotency-Key so that a person can simply run it again).
        retries = Retry(total=3, connect=3, read=2, backoff_factor=0.3, status_forcelist=(502, 503, 504),
                        allowed_methods=frozenset({"GET"}), raise_on_status=False)
        self.session.mount("http://", HTTPAdapter(max_retries=retries))
        self.session.mount("https://", HTTPAdapter(max_retries=retries))
        self.signed = not is_loopback(self.base_url)
        if self.signed:
            resolved = region_for(self.base_url, region)
            if not resolved:
                raise ApiError(0, "no_region", "cannot tell the deployed API's region: pass --region or set "
                                               "AWS_REGION")
            self.session.auth = SigV4Auth(resolved, credentials)

    def request(self, method: str, path: str, *, json: Any = None, data: bytes | None = None,
                headers: dict | None = None, params: dict | None = None) -> Any:
        response = self._send(method, self.base_url + path, json=json, data=data, headers=headers, params=params)
        if not 200 <= response.status_code < 300:
            raise_refusal(response)
        try:
            return response.json() if response.content else None
        except ValueError:
            return response.text

    def _send(self, method: str, url: str, **options) -> requests.Response:
        try:
            return self.session.request(method, url, timeout=self.timeout, **options)
        except (requests.ConnectionError, requests.Timeout) as error:
            hint = " (is `make up` running?)" if not self.signed else ""
            raise Unreachable(f"cannot reach the API at {self.base_url}{hint}: {type(error).__name__}") from None

    # -- the API's operations

    def create(self, spec: dict) -> dict:
        return self.request("POST", "/campaigns", json=spec, headers={"Idempotency-Key": uuid.uuid4().hex})

    def import_csv(self, campaign_id: str, csv_bytes: bytes) -> dict:
        return self.request("POST", f"/campaigns/{campaign_id}/recipients", data=csv_bytes,
                            headers={"Content-Type": "text/csv"})

    def action(self, campaign_id: str, action: str) -> dict:
        return self.request("POST", f"/campaigns/{campaign_id}/{action}")

    def test_send(self, campaign_id: str, recipients: list[dict]) -> dict:
        return self.request("POST", f"/campaigns/{campaign_id}/test", json={"recipients": recipients})

    def clone(self, campaign_id: str, name: str | None = None, recipients: str = "none") -> dict:
        body = {"recipients": recipients, **({"name": name} if name else {})}
        return self.request("POST", f"/campaigns/{campaign_id}/clone", json=body)

    def get(self, campaign_id: str) -> dict:
        return self.request("GET", f"/campaigns/{campaign_id}")

    def number(self, phone_number_id: str) -> dict:
        return self.request("GET", f"/numbers/{phone_number_id}")

    def numbers(self) -> dict:
        return self.request("GET", "/numbers")

    def set_number(self, phone_number_id: str, limits: dict) -> dict:
        return self.request("PUT", f"/numbers/{phone_number_id}", json=limits)

    def list(self, status: str | None = None, limit: int = 20, next_token: str | None = None) -> dict:
        params = {"limit": limit, **({"status": status} if status else {}), **({"next": next_token} if next_token else {})}
        return self.request("GET", "/campaigns", params=params)

    def recipients(self, campaign_id: str, status: str | None = None, limit: int = 100,
                   next_token: str | None = None) -> dict:
        params = {"limit": limit, **({"status": status} if status else {}), **({"next": next_token} if next_token else {})}
        return self.request("GET", f"/campaigns/{campaign_id}/recipients", params=params)

    def suppressions(self, limit: int = 100, next_token: str | None = None) -> dict:
        params = {"limit": limit, **({"next": next_token} if next_token else {})}
        return self.request("GET", "/suppressions", params=params)

    def suppression(self, phone: str) -> dict:
        return self.request("GET", f"/suppressions/{quote(phone, safe='')}")

    def suppress(self, phone: str, reason: str | None = None) -> dict:
        return self.request("PUT", f"/suppressions/{quote(phone, safe='')}", json={"reason": reason} if reason else None)

    def unsuppress(self, phone: str) -> None:
        self.request("DELETE", f"/suppressions/{quote(phone, safe='')}")

    def events(self, campaign_id: str, limit: int = 100, next_token: str | None = None,
               newest_first: bool = False) -> dict:
        params = {"limit": limit, **({"next": next_token} if next_token else {}),
                  **({"order": "newest"} if newest_first else {})}
        return self.request("GET", f"/campaigns/{campaign_id}/events", params=params)

    # -- the CSV export: pages followed through their Link rel="next" (RFC 8288)

    def export_pages(self, campaign_id: str, status: str | None = None, limit: int | None = None) -> Iterator[str]:
        """Each page of GET /campaigns/{id}/recipients.csv, a complete CSV (its header, then its rows)."""
        url = f"{self.base_url}/campaigns/{quote(campaign_id, safe='')}/recipients.csv"
        params: dict | None = {**({"status": status} if status else {}), **({"limit": limit} if limit else {})}
        while url:
            response = self._send("GET", url, params=params)
            if not 200 <= response.status_code < 300 or not response.headers.get("Content-Type", "").startswith(
                    "text/csv"):
                raise_refusal(response)
            yield response.text
            link = response.links.get("next")
            # The link is relative to the URL it came from (RFC 3986, 5.2) and carries the query on.
            url, params = (urljoin(response.url, link["url"]), None) if link else (None, None)
