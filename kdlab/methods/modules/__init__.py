"""Building blocks shared by methods: connectors, embeddings, memories (no methods are registered here)."""
