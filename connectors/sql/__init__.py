"""SQL sources: a table (or query) of sale lines in the retailer's own database, read through
SQLAlchemy by time window and landed as flat-file raw lines, so the flat-file normaliser
loads them (docs/sql.md)."""

from connectors.sql.database import Database, SqlSourceError
from connectors.sql.extract import ENTITY, SqlLinesExtractor
from connectors.sql.land import check, land_sql_days, open_extractors

__all__ = [
    "ENTITY",
    "Database",
    "SqlLinesExtractor",
    "SqlSourceError",
    "check",
    "land_sql_days",
    "open_extractors",
]
