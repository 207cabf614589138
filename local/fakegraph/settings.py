"""The fake's run-time settings and how each one is validated."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from urllib.parse import urlsplit

from .wire import digits_of


@dataclass(frozen=True)
class Settings:
    """Everything that can be changed at run time. Immutable: a change swaps the whole object, so a
    request reads one consistent snapshot without taking a lock."""

    token: str | None = None  # expected bearer token; None accepts any (or none)
    latency_ms: float = 0.0  # mean time between a request's arrival and its response
    latency_jitter: float = 0.0  # fraction: 0.2 means each latency is drawn in mean ± 20 %
    rate_cap_mps: float | None = None  # accepted sends per phone_number_id per sliding second
    fail_ratio: float = 0.0  # fraction of requests answered with fail_code
    fail_code: int = 131000
    seed: int | None = None  # makes fail_ratio and webhook_failed_ratio repeatable
    reject_numbers: dict[str, int] = field(default_factory=dict)  # {phone digits: error code}
    fatal_code: int | None = None  # every request gets this error (190: a revoked token)
    webhook_url: str | None = None  # where status webhooks go; None posts nothing
    app_secret: str | None = None  # signs webhooks (X-Hub-Signature-256); None leaves them unsigned
    webhook_failed_ratio: float = 0.0  # fraction of accepted sends that get `failed` after `sent`
    webhook_delay_ms: float = 10.0  # pause between one message's successive statuses

    def updated(self, changes: dict) -> Settings:
        """A validated copy with `changes` applied; ValueError names the first bad setting."""
        unknown = set(changes) - SETTING_NAMES
        if unknown:
            raise ValueError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        normalized = {}
        for name, value in changes.items():
            try:
                normalized[name] = _NORMALIZERS[name](value)
            except (TypeError, ValueError) as error:
                raise ValueError(f"bad value for {name}: {value!r} ({error})") from None
        return replace(self, **normalized)

    def as_dict(self) -> dict:
        settings = {f.name: getattr(self, f.name) for f in fields(self)}
        settings["reject_numbers"] = dict(self.reject_numbers)  # a copy: callers must not edit the snapshot
        return settings


def _optional(convert: Callable) -> Callable:
    return lambda value: None if value is None else convert(value)


def _at_least_zero(value) -> float:
    number = float(value)
    if not number >= 0:
        raise ValueError("must be >= 0")
    return number


def _positive(value) -> float:
    number = float(value)
    if not number > 0:
        raise ValueError("must be > 0 (None for no cap)")
    return number


def _fraction(value) -> float:
    number = float(value)
    if not 0 <= number <= 1:
        raise ValueError("must be between 0 and 1")
    return number


def _integer(value) -> int:
    if isinstance(value, bool) or int(value) != float(value):
        raise ValueError("must be an integer")
    return int(value)


def _text(value) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("must be a non-empty string")
    return value


def _http_url(value) -> str:
    if not isinstance(value, str) or urlsplit(value).scheme not in ("http", "https"):
        raise ValueError("must be an http(s) URL")
    return value


def _reject_numbers(value) -> dict[str, int]:
    if not isinstance(value, dict):
        raise ValueError("must be a mapping of phone number to error code")
    return {digits_of(str(number)): _integer(code) for number, code in value.items()}


_NORMALIZERS: dict[str, Callable] = {
    "token": _optional(_text),
    "latency_ms": _at_least_zero,
    "latency_jitter": _fraction,
    "rate_cap_mps": _optional(_positive),
    "fail_ratio": _fraction,
    "fail_code": _integer,
    "seed": _optional(_integer),
    "reject_numbers": _reject_numbers,
    "fatal_code": _optional(_integer),
    "webhook_url": _optional(_http_url),
    "app_secret": _optional(_text),
    "webhook_failed_ratio": _fraction,
    "webhook_delay_ms": _at_least_zero,
}
SETTING_NAMES = frozenset(f.name for f in fields(Settings))
