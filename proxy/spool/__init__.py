"""Durable store-and-forward: requests the upstream could not take are kept on disk and sent later.

`store` owns the SQLite file, `drain` sends it upstream per region, `service` decides what is
stored and answers for it, `admin` backs the `mixpanel-proxy spool ...` commands.
"""

from .entry import SpoolEntry
from .service import Spool
from .store import SpoolError

__all__ = ["Spool", "SpoolEntry", "SpoolError"]
