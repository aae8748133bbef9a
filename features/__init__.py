"""argusrank.features: event schema, importers, synthetic data, histories, Feast repo."""
