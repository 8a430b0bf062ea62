"""End-to-end tests: the real mixpanel-browser in real headless Chromium, through the relay."""
