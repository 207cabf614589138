"""Template variables: the `{{n}}` placeholders a campaign's template takes from each recipient.

whatsapp.template_payload fills exactly `{{1}}`, `{{2}}`, ... (no spaces, no names) with the
recipient's variables in order, so that is the one form accepted here: a template whose
placeholders have gaps, spaces or names would send literal braces or the wrong values.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

_PLACEHOLDER = re.compile(r"\{\{(\d+)\}\}")
_ANY_BRACES = re.compile(r"\{\{(.*?)\}\}")


class TemplateError(ValueError):
    """A template whose placeholders the sender could not fill as written."""


def _strings(value) -> Iterator[str]:
    if isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, str):
        yield value


def variable_count(template: dict) -> int:
    """How many variables each recipient must bring: k for placeholders {{1}}..{{k}}."""
    numbers: set[int] = set()
    for text in _strings(template.get("components", [])):
        for match in _ANY_BRACES.finditer(text):
            if not _PLACEHOLDER.fullmatch(match.group(0)):
                raise TemplateError(
                    f"placeholder {match.group(0)!r} is not of the form {{{{1}}}}, {{{{2}}}}, ..."
                )
            numbers.add(int(match.group(1)))
    if numbers and numbers != set(range(1, max(numbers) + 1)):
        raise TemplateError(
            f"placeholders must be numbered {{{{1}}}}..{{{{{max(numbers)}}}}} without gaps; found "
            + ", ".join(f"{{{{{n}}}}}" for n in sorted(numbers))
        )
    return max(numbers, default=0)
