"""The lean edge: the relay's HTTP/1.1 front door for SDK API requests.

aiohttp's server machinery (request objects, streams, middleware, timers) cost more per /track
request than everything the relay itself does; the edge frames and answers the plain requests
the SDKs send with llhttp and a few lines of its own, and hands every other connection, bytes
intact, to aiohttp (see connection.py).
"""

from .site import EdgeSite

__all__ = ["EdgeSite"]
