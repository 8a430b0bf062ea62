"""mixpanel-proxy: a self-hosted relay for Mixpanel SDK traffic."""

__version__ = "0.1.0"
