"""The request-head limits of both parsers, the lean edge's (edge/head.py) and aiohttp's.

64 KiB for the request line, for any one field and for the whole head: browsers send a
first-party relay the site's cookies (often past 8 KiB on big sites), and mixpanel-node sends a
whole event in `GET /track?data=`. The nginx front's `large_client_header_buffers` must allow as
much, or it refuses first.
"""

from typing import Final

MAX_HEAD: Final = 64 * 1024
MAX_FIELDS: Final = 128        # header fields per request (aiohttp's default max_headers)
