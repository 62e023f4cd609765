from xds_server.store.store import Store
from xds_server.store.view import StoreView

__all__ = ["Store", "StoreView"]
