"""Models: resolve a spec to weights, wrap a backbone into a classifier, decide what trains."""
