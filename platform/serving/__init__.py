"""Serving: the request flow (candidates -> features -> ranker), the Ray Serve deployments, HTTP, run/stop."""
