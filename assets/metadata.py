"""Small helpers for materialisation metadata."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dagster as dg


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> dg.MetadataValue:
    def cell(value: Any) -> str:
        return "" if value is None else str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return dg.MetadataValue.md("\n".join(lines))
