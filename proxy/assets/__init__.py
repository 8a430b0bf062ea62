"""The asset relay: the SDK loader and every async bundle under the CDN's `/libs/`, served
first-party from a cache that never serves a broken file. `wire.add_assets` wires it into an
app; the modules below it are the cache, the CDN fetcher, the disk store and the handler."""
