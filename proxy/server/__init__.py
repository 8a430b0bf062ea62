"""The process side of the relay: the supervisor and its forked workers, the lean HTTP/1.1
edge that answers plain SDK requests, and the count of aiohttp's own parser refusals."""
