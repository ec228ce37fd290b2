"""Configuration: `aiq_sync.yaml` parsed into pydantic models.

Secrets never live in the file: a source names the environment variable that holds each
secret (`*_env` fields) and the value is read only when a connector needs it.
Every problem is reported with the path of the field at fault, e.g.
`sources[drops].enroll_after: requires age_gate_confirmed: true`.
"""

from __future__ import annotations

import os
import re
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

CONFIG_ENV = "AIQ_SYNC_CONFIG"
DEFAULT_CONFIG = "aiq_sync.yaml"

SOURCE_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")


class _Strict(BaseModel):
    # Unknown keys are almost always typos ("enrol_after"); reject them loudly.
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_timezone(value: str | None) -> str | None:
    if value is None:
        return value
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:  # OSError: 'America' is a folder
        raise ValueError(
            f"unknown time zone {value!r} (use an IANA name like America/Denver)"
        ) from exc
    return value


class Schedule(_Strict):
    cron: str = "0 3 * * *"
    timezone: str = "UTC"

    _tz = field_validator("timezone")(_check_timezone)

    @field_validator("cron")
    @classmethod
    def _cron_has_five_fields(cls, value: str) -> str:
        if len(value.split()) != 5:
            raise ValueError(
                f"cron {value!r} must have five fields (minute hour day month weekday)"
            )
        return value


class Store(_Strict):
    id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    name: str
    # source name -> that source's location key(s) for this store
    keys: dict[str, str | list[str]] = Field(default_factory=dict)

    def keys_for(self, source: str) -> list[str]:
        value = self.keys.get(source, [])
        return [value] if isinstance(value, str) else list(value)


class SourceBase(_Strict):
    name: str
    freeze: bool = False
    age_gate_confirmed: bool = False
    enroll_after: date | None = None
    sms_double_opt_in_after: date | None = None
    sync_contacts: bool = False
    # Local time zone of the source: decides partition days and which local day a rule date means.
    timezone: str | None = None
    # First day to back-fill from; partitions start here.
    start_date: date = date(2024, 1, 1)
    # Days re-read before each window so rows modified while paging are not missed.
    lookback_days: int = Field(default=1, ge=0, le=31)

    _tz = field_validator("timezone")(_check_timezone)

    @field_validator("name")
    @classmethod
    def _name_is_a_key(cls, value: str) -> str:
        if not SOURCE_NAME.match(value):
            raise ValueError(
                f"source name {value!r} must be lower-case letters, digits, '-' or '_', "
                "starting with a letter (it becomes an asset key and keys stored data)"
            )
        return value

    @model_validator(mode="before")
    @classmethod
    def _secrets_are_env_names(cls, data: Any) -> Any:
        # The value is never echoed: a pasted token must not end up in logs or terminals.
        if isinstance(data, dict):
            for field, value in data.items():
                if field.endswith("_env") and not (
                    isinstance(value, str) and ENV_NAME.match(value)
                ):
                    raise ValueError(
                        f"{field} must name an environment variable (like BC_MAIN_TOKEN) that "
                        "holds the secret, not the secret itself"
                    )
        return data

    @model_validator(mode="after")
    def _rules_need_age_gate(self) -> SourceBase:
        for rule in ("enroll_after", "sms_double_opt_in_after"):
            if getattr(self, rule) is not None and not self.age_gate_confirmed:
                raise ValueError(
                    f"{rule} is set but age_gate_confirmed is not true: a source feeds loyalty "
                    "and SMS only when the retailer attests all its shoppers passed an age gate"
                )
        return self

    @property
    def secret_envs(self) -> dict[str, str]:
        """field name -> environment variable name, for every secret this source needs."""
        return {
            field: getattr(self, field)
            for field in type(self).model_fields
            if field.endswith("_env") and getattr(self, field)
        }


ONEDRIVE_SCHEME = "onedrive://"
GRAPH_BASE_URL = "https://graph.microsoft.com/v1.0/"
LOGIN_BASE_URL = "https://login.microsoftonline.com/"
_ONEDRIVE_FIELDS = (
    "tenant_id_env", "client_id_env", "client_secret_env", "graph_base_url", "login_base_url",
)  # fmt: skip


class FileDropSource(SourceBase):
    type: Literal["file_drop"]
    source_type: Literal["file_drop"] = "file_drop"
    # A local folder, or `onedrive://<drive-id>/<folder>` (a OneDrive for Business drive).
    location: str
    pattern: str = "*.csv"
    # OneDrive only: the app registration (client credentials), by environment variable name.
    tenant_id_env: str | None = None
    client_id_env: str | None = None
    client_secret_env: str | None = None
    # OneDrive only: where Graph and the token endpoint live (the sandbox sets loopback URLs).
    graph_base_url: str | None = None
    login_base_url: str | None = None

    @field_validator("location")
    @classmethod
    def _local_folder_or_onedrive(cls, value: str) -> str:
        if value.startswith(ONEDRIVE_SCHEME):
            drive, _, _ = value[len(ONEDRIVE_SCHEME) :].partition("/")
            if not drive.strip() or any(c.isspace() for c in drive):
                raise ValueError(
                    f"location {value!r} names no drive; use onedrive://<drive-id>/<folder> "
                    "(the drive id from GET /drives or /users/<upn>/drive)"
                )
            return value
        if "://" in value:
            scheme = value.split("://", 1)[0]
            raise ValueError(
                f"location scheme {scheme!r}:// is not supported; use a folder path or "
                "onedrive://<drive-id>/<folder>"
            )
        return value

    @field_validator("graph_base_url", "login_base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s]+(/\S*)?$", value):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value if value is None or value.endswith("/") else value + "/"

    @model_validator(mode="after")
    def _no_contact_sync(self) -> FileDropSource:
        if self.sync_contacts:
            raise ValueError("sync_contacts is only available on bigcommerce sources")
        return self

    @model_validator(mode="after")
    def _onedrive_needs_credentials(self) -> FileDropSource:
        if self.is_onedrive:
            missing = [f for f in _ONEDRIVE_FIELDS[:3] if getattr(self, f) is None]
            if missing:
                raise ValueError(
                    f"{', '.join(missing)} required for an onedrive:// location (the names of "
                    "the environment variables holding the app registration's tenant id, "
                    "client id and client secret)"
                )
        else:
            extra = [f for f in _ONEDRIVE_FIELDS if getattr(self, f) is not None]
            if extra:
                raise ValueError(f"{', '.join(extra)} only apply to onedrive:// locations")
        return self

    @property
    def is_onedrive(self) -> bool:
        return self.location.startswith(ONEDRIVE_SCHEME)

    @property
    def onedrive_drive_id(self) -> str:
        return self.location[len(ONEDRIVE_SCHEME) :].partition("/")[0]

    @property
    def onedrive_folder(self) -> str:
        """The folder path inside the drive, without surrounding slashes ('' = drive root)."""
        return self.location[len(ONEDRIVE_SCHEME) :].partition("/")[2].strip("/")


_BC_API_PATH = re.compile(r"^(https?://[^/]+)/stores/([A-Za-z0-9]+)(/v[23])?/?$")


class BigCommerceSource(SourceBase):
    type: Literal["bigcommerce"]
    source_type: Literal["bigcommerce"] = "bigcommerce"
    # The "API Path" a merchant copies, e.g. https://api.bigcommerce.com/stores/abc123/v3/
    api_path: str
    access_token_env: str
    # Requests in flight at once; pacing from the rate-limit headers does the rest.
    max_concurrency: int = Field(default=4, ge=1, le=32)

    @field_validator("api_path")
    @classmethod
    def _api_path_has_store_hash(cls, value: str) -> str:
        if not _BC_API_PATH.match(value.strip()):
            raise ValueError(
                f"api_path {value!r} is not a BigCommerce API Path; expected "
                "https://api.bigcommerce.com/stores/<store_hash>/v3/"
            )
        return value.strip()

    @property
    def store_hash(self) -> str:
        match = _BC_API_PATH.match(self.api_path)
        assert match
        return match.group(2)

    @property
    def store_root(self) -> str:
        """https://host/stores/<hash>/ — v2 and v3 paths hang off it."""
        match = _BC_API_PATH.match(self.api_path)
        assert match
        return f"{match.group(1)}/stores/{match.group(2)}/"


class WebjointSource(SourceBase):
    type: Literal["webjoint"]
    source_type: Literal["webjoint"] = "webjoint"
    api_key_env: str
    company_id: int
    # Empty: every facility of the company, discovered on each run.
    facility_ids: list[int] = Field(default_factory=list)
    base_url: str = "https://app.webjoint.com/prod/api/"
    max_concurrency: int = Field(default=2, ge=1, le=16)

    @model_validator(mode="after")
    def _no_contact_sync(self) -> WebjointSource:
        if self.sync_contacts:
            raise ValueError("sync_contacts is only available on bigcommerce sources")
        return self


# What a SQL table (or query) of sale lines maps onto: the flat-file line fields (the names of
# connectors/file_drop/reader.COLUMNS) plus `sold_at`, one timestamp standing in for
# TransactionDate + Completed Time. docs/sql.md lists them with their flat-file headers.
SQL_LINE_FIELDS = (
    "transaction_id", "refund_of", "customer_id", "location_id", "order_type", "item_id",
    "product_name", "category", "vendor", "quantity", "subtotal", "tax", "discount",
    "allocated_price", "transaction_date", "completed_time", "postal_code", "address",
    "patient_name", "email", "phone", "birth_date", "facility_name", "sold_at",
)  # fmt: skip
SQL_REQUIRED_FIELDS = ("transaction_id", "customer_id", "item_id")
SQL_ENTITIES = ("lines",)


class SqlEntity(_Strict):
    """One entity of a SQL source: a table or a query, its time cursor, its column mapping."""

    # `[schema.]table`, or a SELECT wrapped as a sub-query (exactly one of the two).
    table: str | None = None
    query: str | None = None
    # Column holding each row's time (sale time, or last change): windows and partitions.
    cursor: str
    # Time zone of naive timestamps in the database (default: the source's time zone).
    cursor_timezone: str | None = None
    # canonical field -> column of the table or query
    columns: dict[str, str]

    _tz = field_validator("cursor_timezone")(_check_timezone)

    @field_validator("table", "query", "cursor")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be blank")
        return value.strip().rstrip(";").strip() if value is not None else None

    @field_validator("columns")
    @classmethod
    def _known_fields(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(SQL_LINE_FIELDS))
        if unknown:
            raise ValueError(
                f"unknown field(s) {', '.join(unknown)}; map columns onto: "
                + ", ".join(SQL_LINE_FIELDS)
            )
        missing = [f for f in SQL_REQUIRED_FIELDS if f not in value]
        if missing:
            raise ValueError(f"required field(s) {', '.join(missing)} not mapped")
        blank = sorted(f for f, column in value.items() if not column.strip())
        if blank:
            raise ValueError(f"{', '.join(blank)}: empty column name")
        if "sold_at" in value and ({"transaction_date", "completed_time"} & set(value)):
            raise ValueError(
                "map either sold_at (a timestamp) or transaction_date/completed_time, not both"
            )
        return value

    @model_validator(mode="after")
    def _table_or_query(self) -> SqlEntity:
        if (self.table is None) == (self.query is None):
            raise ValueError("give exactly one of table or query")
        return self


class SqlSource(SourceBase):
    type: Literal["sql"]
    source_type: Literal["sql"] = "sql"
    # Environment variable holding the SQLAlchemy URL (it carries the password).
    url_env: str
    entities: dict[str, SqlEntity]
    # Rows fetched per server-side batch: what bounds memory.
    batch_rows: int = Field(default=10_000, ge=100, le=200_000)

    @field_validator("entities", mode="before")
    @classmethod
    def _supported_entities(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value  # pydantic reports the type
        unknown = sorted(set(value) - set(SQL_ENTITIES))
        if unknown:
            raise ValueError(
                f"unknown entity {', '.join(unknown)}; supported: {', '.join(SQL_ENTITIES)}"
            )
        if not value:
            raise ValueError("map at least one entity (lines)")
        return value

    @model_validator(mode="after")
    def _no_contact_sync(self) -> SqlSource:
        if self.sync_contacts:
            raise ValueError("sync_contacts is only available on bigcommerce sources")
        return self


SourceConfig = Annotated[
    FileDropSource | BigCommerceSource | WebjointSource | SqlSource, Field(discriminator="type")
]


class LoyaltySettings(_Strict):
    points_per_currency_unit: int = Field(default=1, ge=0)
    minimum_age: int = Field(default=21, ge=0, le=120)
    # CSV of explicit SMS opt-outs (phone, keyword, opted_out_at); relative to the config file.
    opt_out_file: str | None = None


_MEMORY = re.compile(r"^\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)$", re.IGNORECASE)


class DuckDBSettings(_Strict):
    """Resources of every warehouse connection (docs/warehouse.md#memory). DuckDB's own
    default memory limit is 80 % of RAM, which a nightly worker sharing a host must not take;
    above the limit, DuckDB spills to `temp_directory` instead of growing."""

    memory_limit: str = "128MB"
    # None: DuckDB's default, one thread per core.
    threads: int | None = Field(default=None, ge=1, le=256)
    # None: DuckDB's default, `<warehouse>.tmp` next to the database file.
    temp_directory: str | None = None

    @field_validator("memory_limit")
    @classmethod
    def _size(cls, value: str) -> str:
        if not _MEMORY.match(value.strip()):
            raise ValueError(f"{value!r} is not a size like 256MB or 1GB")
        return value.strip()


class AppConfig(_Strict):
    warehouse: str = "data/aiq.duckdb"
    duckdb: DuckDBSettings = DuckDBSettings()
    landing: str = "data/landing"
    schedule: Schedule = Schedule()
    stores: list[Store] = Field(default_factory=list)
    sources: list[SourceConfig] = Field(default_factory=list)
    loyalty: LoyaltySettings = LoyaltySettings()
    # Share of quarantined rows above which the quarantine asset check fails.
    quarantine_threshold: float = Field(default=0.05, ge=0, le=1)
    # Relative paths in the file resolve against this folder (the config file's folder).
    base_dir: Path = Field(default=Path("."), exclude=True)

    @model_validator(mode="after")
    def _cross_checks(self) -> AppConfig:
        names = [s.name for s in self.sources]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"sources: duplicate source name(s) {', '.join(dupes)}")
        # Dagster job and pool names use '_' for '-': 'pos-a' and 'pos_a' would collide.
        folded = [n.replace("-", "_") for n in names]
        clashes = sorted({n for n, f in zip(names, folded, strict=True) if folded.count(f) > 1})
        if clashes:
            raise ValueError(
                f"sources: names {', '.join(clashes)} differ only by '-' and '_'; rename one"
            )
        for label in ("warehouse", "landing"):
            if "://" in getattr(self, label):
                raise ValueError(
                    f"{label}: URLs are not supported yet ({getattr(self, label).split('://')[0]}"
                    "://); use a local path"
                )
        store_ids = [s.id for s in self.stores]
        dupes = sorted({n for n in store_ids if store_ids.count(n) > 1})
        if dupes:
            raise ValueError(f"stores: duplicate store id(s) {', '.join(dupes)}")
        seen: dict[tuple[str, str], str] = {}
        for store in self.stores:
            for source, _ in store.keys.items():
                if source not in names:
                    raise ValueError(
                        f"stores[{store.id}].keys.{source}: no source named {source!r}"
                    )
                for key in store.keys_for(source):
                    other = seen.setdefault((source, key), store.id)
                    if other != store.id:
                        raise ValueError(
                            f"stores[{store.id}].keys.{source}: location key {key!r} "
                            f"is already mapped to store {other!r}"
                        )
        return self

    def source(self, name: str) -> SourceConfig:
        for source in self.sources:
            if source.name == name:
                return source
        raise KeyError(f"no source named {name!r}; configured: {', '.join(self.source_names)}")

    @property
    def source_names(self) -> list[str]:
        return [s.name for s in self.sources]

    def source_timezone(self, source: SourceBase) -> str:
        return source.timezone or self.schedule.timezone

    def resolve(self, path: str) -> Path:
        candidate = Path(path).expanduser()
        return candidate if candidate.is_absolute() else (self.base_dir / candidate).resolve()

    @property
    def warehouse_path(self) -> Path:
        return self.resolve(self.warehouse)

    @property
    def landing_path(self) -> Path:
        return self.resolve(self.landing)

    @property
    def duckdb_settings(self) -> DuckDBSettings:
        """`duckdb` with a relative temp_directory resolved against the config's folder."""
        if self.duckdb.temp_directory is None:
            return self.duckdb
        resolved = str(self.resolve(self.duckdb.temp_directory))
        return self.duckdb.model_copy(update={"temp_directory": resolved})

    def store_map(self) -> dict[tuple[str, str], str]:
        """(source, location key) -> store id."""
        return {
            (source, key): store.id
            for store in self.stores
            for source in store.keys
            for key in store.keys_for(source)
        }


class ConfigError(Exception):
    """The configuration is invalid; `problems` holds one 'field.path: why' line each."""

    def __init__(self, path: Path | str, problems: list[str]):
        self.path = str(path)
        self.problems = problems
        super().__init__(f"{self.path}: " + "; ".join(problems))


def _field_path(loc: tuple[Any, ...], raw: dict[str, Any]) -> str:
    """Turn a pydantic error location into `sources[name].field`, naming list items by name."""
    parts: list[str] = []
    node: Any = raw
    for item in loc:
        if isinstance(item, int):
            label = str(item)
            if isinstance(node, list) and item < len(node) and isinstance(node[item], dict):
                label = str(node[item].get("name") or node[item].get("id") or item)
            parts.append(f"[{label}]")
            node = node[item] if isinstance(node, list) and item < len(node) else None
        elif isinstance(node, dict) and item == node.get("type") and item not in node:
            continue  # the discriminated union's tag (e.g. 'file_drop'), not a field
        else:
            parts.append(("." if parts else "") + str(item))
            node = node.get(item) if isinstance(node, dict) else None
    return "".join(parts) or "(top level)"


def _messages(exc: ValidationError, raw: dict[str, Any]) -> list[str]:
    problems = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown field (check the spelling)"
        elif err["type"] == "union_tag_invalid":
            message = (
                f"unknown source type {err.get('input', {}).get('type')!r}; supported: "
                "file_drop, bigcommerce, webjoint, sql"
            )
        elif err["type"] == "union_tag_not_found":
            message = "missing field 'type'"
        path = _field_path(loc, raw)
        if err["type"] == "missing":
            message = "required field is missing"
        if path == "(top level)" and ": " in message:
            # cross-field checks already carry their own path
            problems.append(message)
        else:
            problems.append(f"{path}: {message}")
    return problems


def parse_config(
    raw: Any, *, path: Path | str = "<config>", base_dir: Path | None = None
) -> AppConfig:
    if not isinstance(raw, dict):
        raise ConfigError(path, ["(top level): expected a mapping of settings"])
    try:
        return AppConfig.model_validate({**raw, "base_dir": base_dir or Path(".").resolve()})
    except ValidationError as exc:
        raise ConfigError(path, _messages(exc, raw)) from None


def config_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    return Path(explicit or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG)


def load_config(explicit: str | os.PathLike[str] | None = None) -> AppConfig:
    path = config_path(explicit)
    if not path.is_file():
        raise ConfigError(path, [f"config file not found (set {CONFIG_ENV} or pass --config)"])
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        raise ConfigError(path, [f"(yaml) {where}: {getattr(exc, 'problem', exc)}"]) from None
    return parse_config(raw, path=path, base_dir=path.resolve().parent)


def missing_secrets(config: AppConfig, environ: dict[str, str] | None = None) -> list[str]:
    """One problem line per secret env var that is not set (values are never read out)."""
    env = os.environ if environ is None else environ
    return [
        f"sources[{source.name}].{field}: environment variable {var} is not set"
        for source in config.sources
        for field, var in source.secret_envs.items()
        if not env.get(var)
    ]
