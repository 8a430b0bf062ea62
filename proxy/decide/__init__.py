"""Pure decisions on a request: which endpoint a path is, which region a token goes to,
which headers cross, which client IP is the real one. No I/O."""
