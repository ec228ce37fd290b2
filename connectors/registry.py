"""Per source type: the API connector that extracts it (if any) and the normalisers that
turn its landed records into canonical rows. Add a source type here and in config.py."""

from __future__ import annotations

from aiq_sync.canonical import Normaliser
from aiq_sync.extract import ApiConnector
from connectors.bigcommerce import NORMALISERS as BIGCOMMERCE_NORMALISERS
from connectors.bigcommerce import BigCommerceConnector
from connectors.file_drop import FileDropNormaliser
from connectors.webjoint import WebjointConnector
from connectors.webjoint import normalisers as webjoint_normalisers

NORMALISERS: dict[str, list[Normaliser]] = {
    "file_drop": [FileDropNormaliser()],
    "bigcommerce": BIGCOMMERCE_NORMALISERS,
    "webjoint": webjoint_normalisers(),
    # SQL sources land flat-file raw lines (connectors/sql/extract.py).
    "sql": [FileDropNormaliser()],
}


API_CONNECTORS: dict[str, ApiConnector] = {
    "bigcommerce": BigCommerceConnector(),
    "webjoint": WebjointConnector(),
}


def has_connector(source_type: str) -> bool:
    return source_type in NORMALISERS


def normalisers_for(source_type: str) -> list[Normaliser]:
    try:
        return NORMALISERS[source_type]
    except KeyError:
        raise KeyError(f"no connector for source type {source_type!r}") from None
