"""BigCommerce: customers, orders with line items, products with variants, inventory and store
facts, extracted by time window from the REST API and normalised into the canonical tables.
See docs/bigcommerce.md."""

from connectors.bigcommerce.extract import BigCommerceConnector
from connectors.bigcommerce.normalise import NORMALISERS

__all__ = ["NORMALISERS", "BigCommerceConnector"]
