"""Flat-file (CSV) drops from a local folder: one landing partition per file."""

from connectors.file_drop.extract import land_drop_file
from connectors.file_drop.normalise import ENTITY, FileDropNormaliser
from connectors.file_drop.reader import COLUMNS, DropFile, discover, parse_drop_file

__all__ = [
    "COLUMNS",
    "ENTITY",
    "DropFile",
    "FileDropNormaliser",
    "discover",
    "land_drop_file",
    "parse_drop_file",
]
