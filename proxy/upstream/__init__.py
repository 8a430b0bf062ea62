"""The way out to Mixpanel: `client.UpstreamClient` (one error boundary, `UpstreamFailure`)
over `http1`, a lean keep-alive HTTP/1.1 connection pool."""
