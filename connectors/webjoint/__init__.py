"""Webjoint (cannabis POS / e-commerce): facilities, orders, customers, inventory.

The API shape is reconstructed and uncertain; every guess lives in `api.py` (checklist in
docs/webjoint.md). Modules: `api` (vendor facts), `models` (payloads), `paging` (range paging,
concurrent listings), `extract` (connector, facility discovery, extractors), `orders`,
`customers`, `inventory` (normalisers), `common` (versions, quarantine).
"""

from connectors.webjoint.customers import WebjointCustomersNormaliser
from connectors.webjoint.extract import (
    CUSTOMERS,
    FACILITIES,
    INVENTORY,
    ORDERS,
    WebjointConnector,
    WebjointSetupError,
)
from connectors.webjoint.inventory import WebjointFacilitiesNormaliser, WebjointInventoryNormaliser
from connectors.webjoint.orders import WebjointOrdersNormaliser


def normalisers() -> list:
    """One normaliser per landed entity, in load order."""
    return [
        WebjointFacilitiesNormaliser(),
        WebjointOrdersNormaliser(),
        WebjointCustomersNormaliser(),
        WebjointInventoryNormaliser(),
    ]


__all__ = [
    "CUSTOMERS",
    "FACILITIES",
    "INVENTORY",
    "ORDERS",
    "WebjointConnector",
    "WebjointCustomersNormaliser",
    "WebjointFacilitiesNormaliser",
    "WebjointInventoryNormaliser",
    "WebjointOrdersNormaliser",
    "WebjointSetupError",
    "normalisers",
]
