"""The way out to Mixpanel: `client.UpstreamClient` (one error boundary, `UpstreamFailure`)
over `pool`, pooled keep-alive connections per origin, each an `http1` connection."""
