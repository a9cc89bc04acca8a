"""What crosses nodes: contracts, with an in-memory twin (the embedded default)."""
