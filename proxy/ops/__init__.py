"""What an operator sees: metrics, region health and readiness, the status page, the ops
routes that serve them, the access log and `check --online`."""
