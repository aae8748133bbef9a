"""argusrank.models: the ARGUS transformer, its losses, the XGBoost ranker and the ANN index."""
