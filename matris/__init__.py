"""MatRIS: invariant message-passing interatomic potential (model only)."""
