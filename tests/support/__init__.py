"""Support for the tests: real fake upstreams and CDN, relay and nginx processes, raw-socket
clients, payload builders and waits. No test lives here."""
