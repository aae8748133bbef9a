"""argusrank.features: event schema, importers, synthetic data, histories, Feast repo."""
from argusrank.features.feast_import import skip_feast_typechecks

skip_feast_typechecks()  # before any `import feast` of this process (see feast_import.py)
