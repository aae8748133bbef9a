"""Training jobs: config checks, the Ray Train worker loop and driver, evaluation, promotion, quality."""
