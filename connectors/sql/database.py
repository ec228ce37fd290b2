"""The retailer's database: a SQLAlchemy engine built from the URL in `url_env`, and error
messages that never carry the URL or its password.

The URL is read from the environment when a run starts, never stored. SQLAlchemy is told to
hide bound parameters in its errors, and every message leaving this package is built from
the driver's first line with the URL, the password and the raw environment value scrubbed.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from aiq_sync.config import SqlSource

CONNECT_TIMEOUT_S = 15


class SqlSourceError(Exception):
    """A SQL source cannot be read; the message says why and never holds the URL or password."""


def _driver_url(url: URL) -> URL:
    # A pasted `postgresql://` means psycopg2 to SQLAlchemy; use psycopg (v3) when that is
    # the driver installed.
    if url.drivername in ("postgresql", "postgres"):
        if importlib.util.find_spec("psycopg2") is None and importlib.util.find_spec("psycopg"):
            return url.set(drivername="postgresql+psycopg")
        return url.set(drivername="postgresql")
    return url


class Database:
    """One engine per run (no pool: a nightly run needs one connection at a time)."""

    def __init__(self, source: SqlSource, environ: Mapping[str, str]) -> None:
        self.source = source
        var = source.url_env
        raw = environ.get(var) or ""
        if not raw.strip():
            raise SqlSourceError(
                f"sources[{source.name}].url_env: environment variable {var} is not set"
            )
        self._secrets = [raw.strip()]
        try:
            url = _driver_url(make_url(raw.strip()))
        except ArgumentError:
            raise SqlSourceError(
                f"sources[{source.name}].url_env: {var} does not hold a SQLAlchemy URL "
                "(like postgresql+psycopg://user:password@host:5432/database)"
            ) from None
        if url.password:
            self._secrets += [str(url.password), url.render_as_string(hide_password=False)]
        self.dialect = url.get_backend_name()
        # user@host/database, password hidden: safe for messages.
        self.label = url.render_as_string(hide_password=True)
        for secret in self._secrets:
            self.label = self.label.replace(secret, "***")
        connect_args: dict[str, Any] = {}
        if self.dialect == "postgresql":
            connect_args["connect_timeout"] = CONNECT_TIMEOUT_S
        try:
            self.engine: Engine = sa.create_engine(
                url, poolclass=NullPool, hide_parameters=True, connect_args=connect_args
            )
        except (NoSuchModuleError, ModuleNotFoundError) as exc:
            raise SqlSourceError(
                f"sources[{source.name}]: no SQLAlchemy driver for {url.drivername!r} "
                f"({self.scrub(str(exc).splitlines()[0])}); install it (PostgreSQL: psycopg)"
            ) from None

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """A connection; failing to connect raises SqlSourceError (statement errors are the
        caller's to describe)."""
        try:
            conn = self.engine.connect()
        except SQLAlchemyError as exc:
            raise self.error(exc, "") from None
        try:
            if self.dialect == "postgresql":
                # Belt and braces next to a read-only account: this run never writes.
                conn = conn.execution_options(postgresql_readonly=True)
            yield conn
        finally:
            conn.close()

    def error(self, exc: BaseException, what: str) -> SqlSourceError:
        """A one-line, secret-free description of a driver or SQLAlchemy error."""
        if isinstance(exc, SqlSourceError):
            return exc
        orig = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
        lines = [line.strip() for line in str(orig).splitlines() if line.strip()]
        detail = self.scrub(lines[0] if lines else type(orig).__name__)
        if (isinstance(exc, DBAPIError) and exc.connection_invalidated) or _is_connect(exc):
            return SqlSourceError(
                f"sources[{self.source.name}]: cannot connect to {self.label}: {detail}"
            )
        prefix = f"sources[{self.source.name}]{('.' + what) if what else ''}"
        return SqlSourceError(f"{prefix}: query failed: {detail}")

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            if secret:
                text = text.replace(secret, "***")
        return text

    def close(self) -> None:
        self.engine.dispose()


def _is_connect(exc: BaseException) -> bool:
    # OperationalError raised before any statement ran: the connection itself failed.
    return isinstance(exc, DBAPIError) and exc.statement is None
