"""Cached-bundle throughput: the relay's asset cache vs nginx serving the same bytes statically.

    python bench/assets.py [--duration 5] [--connections 32] [--workers 1]

nginx plays the CDN (the real mixpanel-browser 2.83.0 files from tests/js, under their CDN names)
and, on another port, the static baseline: the identity file via sendfile, and the br/gzip
variants as precompressed files. The relay prefetches the bundles, so every measured request is
a cache hit. Each case is one bounded wrk run on loopback; the report is a markdown table with
relay/nginx ratios. A contender is a name and a base URL (see `contenders`): the relay behind
the shipped nginx front can be added there as a third one.
"""

from __future__ import annotations

import argparse
import gzip
import re
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import brotli

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import free_port, nginx_conf, running  # noqa: E402
from tests.support.fake_cdn import cdn_files  # noqa: E402  (the bundles, under their CDN names)

BUNDLES = ("mixpanel-2-latest.min.js", "mixpanel-recorder-CZqK2y7C.min.js")
CODINGS = ("br", "gzip", "identity")


def write_files(workdir: Path) -> Path:
    """<workdir>/files/{identity,gzip,br}/<name>: the CDN's bytes and nginx's static variants."""
    files = workdir / "files"
    for name, body in cdn_files().items():
        if name not in BUNDLES:
            continue
        variants = {"identity": body, "gzip": gzip.compress(body, 9, mtime=0),
                    "br": brotli.compress(body, quality=11)}
        for coding, data in variants.items():
            (files / coding).mkdir(parents=True, exist_ok=True)
            (files / coding / name).write_bytes(data)
    files.chmod(0o755)
    return files


def nginx_config(workdir: Path, files: Path, cdn_port: int, static_port: int) -> str:
    encoded = "".join(f"""
    location /{coding}/ {{
      alias {files}/{coding}/;
      add_header Content-Encoding {coding};
      add_header Vary Accept-Encoding;
    }}""" for coding in ("br", "gzip"))
    return nginx_conf(workdir, f"""
  sendfile on;
  tcp_nopush on;
  types {{ application/javascript js; application/json map; }}
  server {{
    listen 127.0.0.1:{cdn_port};
    location /libs/ {{ alias {files}/identity/; etag on; }}
  }}
  server {{
    listen 127.0.0.1:{static_port};
    location /identity/ {{ alias {files}/identity/; }}{encoded}
  }}""")


def relay_config(workdir: Path, port: int, cdn_port: int, workers: int) -> Path:
    cdn = f"http://127.0.0.1:{cdn_port}"
    regions = "".join(f'[regions.{name}]\nurl = "{cdn}"\n' for name in ("us", "eu", "in"))
    config = workdir / "relay.toml"
    config.write_text(f"""
[server]
listen = "127.0.0.1:{port}"
workers = {workers}
{regions}
[assets]
cdn_url = "{cdn}/libs/"
prefetch = {list(BUNDLES)!r}
""".replace("'", '"'))
    return config


def run_wrk(url: str, coding: str, connections: int, duration: int) -> tuple[float, int]:
    headers = [] if coding == "identity" else ["-H", f"Accept-Encoding: {coding}"]
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{duration}s", *headers, url],
                         capture_output=True, text=True, timeout=duration + 60,
                         check=True).stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout|responses:) (\d+)",
                                            out))
    assert rate is not None, out
    return float(rate.group(1)), errors


def contenders(relay_port: int, static_port: int) -> dict[str, str]:
    """Contender -> URL template; `{coding}` and `{name}` are filled in per case."""
    return {
        "relay": f"http://127.0.0.1:{relay_port}/libs/{{name}}",
        "nginx static": f"http://127.0.0.1:{static_port}/{{coding}}/{{name}}",
    }


def check_answer(url: str, coding: str, expected: bytes) -> None:
    request = urllib.request.Request(url, headers={"Accept-Encoding": coding})
    with urllib.request.urlopen(request, timeout=5) as answer:
        body = answer.read()
        encoding = answer.headers.get("Content-Encoding") or "identity"
    decoders = {"br": brotli.decompress, "gzip": gzip.decompress, "identity": bytes}
    assert encoding == coding and decoders[coding](body) == expected, (url, coding)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1, help="relay worker processes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-assets-") as tmp:
        workdir = Path(tmp)
        workdir.chmod(0o755)
        files = write_files(workdir)
        cdn_port, static_port, relay_port = free_port(), free_port(), free_port()
        conf = workdir / "nginx.conf"
        conf.write_text(nginx_config(workdir, files, cdn_port, static_port))
        nginx = ["nginx", "-c", str(conf), "-p", str(workdir), "-g", "daemon off;"]
        relay = [sys.executable, "-m", "proxy", "serve", "--config",
                 str(relay_config(workdir, relay_port, cdn_port, args.workers))]
        probe = f"http://127.0.0.1:{relay_port}/libs/{BUNDLES[0]}"
        with running(nginx, f"http://127.0.0.1:{static_port}/identity/{BUNDLES[0]}",
                     workdir / "nginx.err"), \
                running(relay, probe, workdir / "relay.log"):
            rows = measure_all(contenders(relay_port, static_port), files, args)
    print_table(rows, args)
    return 0


def measure_all(urls: dict[str, str], files: Path,
                args: argparse.Namespace) -> list[tuple[str, str, dict[str, float]]]:
    rows = []
    for name in BUNDLES:
        expected = (files / "identity" / name).read_bytes()
        for coding in CODINGS:
            rates = {}
            for contender, template in urls.items():
                url = template.format(coding=coding, name=name)
                check_answer(url, coding, expected)
                rate, errors = run_wrk(url, coding, args.connections, args.duration)
                assert errors == 0, f"{contender} {name} {coding}: {errors} errors"
                rates[contender] = rate
            rows.append((name, coding, rates))
    return rows


def print_table(rows: list[tuple[str, str, dict[str, float]]], args: argparse.Namespace) -> None:
    print(f"wrk -t2 -c{args.connections} -d{args.duration}s per case; relay workers="
          f"{args.workers}; nginx worker_processes=1; cached bundles, loopback\n")
    print("| bundle | coding | relay req/s | nginx static req/s | relay / nginx |")
    print("|---|---|---:|---:|---:|")
    for name, coding, rates in rows:
        relay, static = rates["relay"], rates["nginx static"]
        print(f"| {name} | {coding} | {relay:,.0f} | {static:,.0f} | {relay / static:.2f} |")


if __name__ == "__main__":
    sys.exit(main())
