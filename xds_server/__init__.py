"""xds-server: a small Istio-compatible xDS control plane for Envoy sidecars."""

__version__ = "0.1.0"
