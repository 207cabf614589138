"""Why the provider holds a campaign: one hold per cause, and the campaign goes on when the last lifts.

Meta's limits belong to the template and the account, so two can stop one campaign at once: a
template paused for its quality while the account is restricted. A campaign the provider paused
keeps every such cause in `Campaign.provider_holds`, a map of hold -> {reason, until}:

- `template <name> <language>`: Meta paused or disabled the template (its status event, or a send
  refused with 132015/132016). Its UNPAUSE or REINSTATED event lifts it.
- `account <id>`: the account may not start conversations until `until`. Recovery lifts it then.
- `code <n>`: a send refused with another code of Meta's own (131048 spam rate limit, 368 a policy
  block). No event lifts it: a person resumes.

The campaign's `paused_reason`, `paused_until` and DueIndex entry are derived from its holds, here.
Holds gather only on a campaign the provider paused: a person's or an error's pause is left alone,
and a person's resume clears every hold. Every change of the map is one write conditioned on
`holds_version`, the count of its changes (lifecycle.pause_for_provider, service.lift_holds).
"""

from __future__ import annotations

from .models import DUE_CAMPAIGN, Campaign

TEMPLATE_CODES = frozenset({132015, 132016})  # the template is paused / disabled for low quality
MAX_REASON = 500


def template_hold(name: str, language: str | None) -> str:
    return f"template {name} {language or '*'}"


def account_hold(account_id: str) -> str:
    return f"account {account_id}"


def code_hold(code: int) -> str:
    return f"code {code}"


def is_template_hold(key: str, name: str, language: str | None) -> bool:
    """`key` is a hold of template `name` (in `language`; an event that names none means any)."""
    prefix = f"template {name} "
    return key.startswith(prefix) and (language is None or key[len(prefix):] in (language, "*"))


def of_template(template: dict | None) -> str:
    """The hold a campaign's own template would take (its `language` a code or `{code}`)."""
    template = template or {}
    language = template.get("language")
    return template_hold(str(template.get("name")), language.get("code") if isinstance(language, dict) else language)


def for_code(template: dict | None, code: int) -> str:
    """The hold a send refused with `code` (one of Meta's own) puts on its campaign."""
    return of_template(template) if code in TEMPLATE_CODES else code_hold(code)


def hold(reason: str, until: float | None = None) -> dict:
    return {"reason": reason[:MAX_REASON]} if until is None else {"reason": reason[:MAX_REASON], "until": until}


def of(campaign: Campaign) -> dict[str, dict]:
    """The campaign's holds. One the provider paused before holds were kept has none recorded: it
    reads as the one hold its fields describe (a restriction if it has an end, else its template),
    so it goes on exactly as it did then."""
    if campaign.provider_holds is not None:
        return {key: dict(value) for key, value in campaign.provider_holds.as_dict().items()}
    if campaign.paused_by != "provider":
        return {}
    if campaign.paused_until:
        return {account_hold("(before holds)"): hold(campaign.paused_reason or "", float(campaign.paused_until))}
    return {of_template(campaign.template): hold(campaign.paused_reason or "")}


def ends(holds: dict[str, dict]) -> tuple[float | None, float | None]:
    """(when the next hold lifts by itself, when the campaign goes on by itself): the earliest end,
    and the latest if every hold has one (None if some hold waits for an event or a person)."""
    untils = [float(h["until"]) for h in holds.values() if h.get("until") is not None]
    if not untils:
        return None, None
    return min(untils), (max(untils) if len(untils) == len(holds) else None)


def written(holds: dict[str, dict]) -> list:
    """The update actions that store `holds` (non-empty) and what is derived from them."""
    next_end, resumes_at = ends(holds)
    reason = "; ".join(holds[key]["reason"] for key in sorted(holds))[:MAX_REASON]
    return [
        Campaign.provider_holds.set(holds),
        Campaign.holds_version.add(1),
        Campaign.paused_reason.set(reason),
        Campaign.paused_until.set(resumes_at) if resumes_at is not None else Campaign.paused_until.remove(),
        *([Campaign.due_kind.set(DUE_CAMPAIGN), Campaign.due_at.set(next_end)] if next_end is not None
          else [Campaign.due_kind.remove(), Campaign.due_at.remove()]),
    ]


def cleared() -> list:
    """The update actions of a resume: no hold left, and the map's version moves on (an event's
    write conditioned on the version it read then fails, and reads again)."""
    return [Campaign.provider_holds.remove(), Campaign.holds_version.add(1)]


def unchanged_since(version: int | None):
    """The condition that the campaign's holds are as they were read (`holds_version`)."""
    return Campaign.holds_version.does_not_exist() if version is None else Campaign.holds_version == version
