"""docs/design.md's module map names every module of the domain package, and only those."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "layers/common/python/campaigns"


def test_the_module_map_matches_the_package():
    design = (REPO / "docs/design.md").read_text()
    section = design.split("## Module map", 1)[1].split("\n## ", 1)[0]
    mapped = set(re.findall(r"^\|[^|]*\| `(\w+)\.py` \|", section, flags=re.MULTILINE))
    modules = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    assert mapped == modules, {"not in the map": sorted(modules - mapped), "no such module": sorted(mapped - modules)}
