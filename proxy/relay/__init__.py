"""The handler: one SDK request in, one answer out (`handler.ApiRelay`), with the answer
shapes, the request protocol both servers satisfy, and rate limits."""
