"""The mesh model the translator reasons about (istiod's `pilot/pkg/model`).

Built from a store view, memoised across generations, and free of Envoy messages:
- `proxy`: who is asking (node id, metadata, addresses, interception mode);
- `workload`: which Sidecar applies to a proxy (workloadSelector, namespace, root namespace);
- `services`: Kubernetes Services and ServiceEntries as one registry of hosts, ports, endpoints;
- `scope`: what a Sidecar's egress imports (hosts, exportTo, ports, outbound traffic policy);
- `names`: the Envoy names derived from the model (cluster names, as istiod's `BuildSubsetKey`);
- `virtual_services`, `destination_rules`, `exports`: which VirtualService and DestinationRule a
  proxy sees (exportTo, egress imports, delegates, lookup order, merging).
"""
