from xds_server.store.store import ConfigSink, Store
from xds_server.store.view import StoreView

__all__ = ["ConfigSink", "Store", "StoreView"]
