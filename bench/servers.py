"""The processes a benchmark runs: nginx (the fake upstream, and the baselines), the relay, the
shipped nginx front, and the bare callback relay (bench/ceiling.py). Each is a context manager
that yields once the server answers and stops it afterwards."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.common import free_port, nginx_conf, running, wait_for
from bench.workloads import BUNDLE, DIST, ROOT

UPSTREAM_BODY = '{"status":1,"error":null}'

# The shipped front's TLS (nginx/snippets/tls.conf) and access log line (mixpanel-proxy.conf), for
# the nginx that does the front's job alone.
FRONT_TLS = """
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_prefer_server_ciphers off;
    ssl_session_cache shared:bench_tls:10m;
    ssl_session_timeout 1d;
    ssl_session_tickets off;"""
FRONT_LOG_FORMAT = """
  log_format front '$remote_addr [$time_local] "$request_method $uri $server_protocol" '
                   '$status $body_bytes_sent $request_length $request_time '
                   '$upstream_response_time $upstream_cache_status';"""


@dataclass(frozen=True)
class Ports:
    """Every port a run listens on, chosen once."""
    upstream: int = 0           # the fake Mixpanel API and CDN, plain HTTP
    upstream_tls: int = 0       # the same over TLS
    nginx: int = 0              # proxy_pass, plain in, plain out, no access log
    nginx_tls: int = 0          # TLS in, plain out
    nginx_https: int = 0        # plain in, HTTPS out
    nginx_logged: int = 0       # plain in, plain out, nginx's default access log
    nginx_tls_https: int = 0    # TLS in, HTTPS out: the front's job, alone

    @classmethod
    def choose(cls) -> Ports:
        return cls(**{name: free_port() for name in cls.__dataclass_fields__})


def fake_upstream_servers(ports: Ports, tls: Path) -> str:
    """The fake Mixpanel API, and the fake CDN serving the npm package's bundles under /libs/, on
    plain HTTP and on TLS. Keep-alive connections are never closed by request count, so the
    ceiling's one-upstream-connection-per-client holds for a whole run."""
    return f"""
  server {{
    listen 127.0.0.1:{ports.upstream} reuseport;
    listen 127.0.0.1:{ports.upstream_tls} ssl reuseport;
    ssl_certificate {tls}/fullchain.pem;
    ssl_certificate_key {tls}/privkey.pem;
    keepalive_requests 10000000;
    client_max_body_size 20m;
    client_body_buffer_size 1m;
    location /libs/ {{ alias {DIST}/async-modules/; default_type application/javascript; }}
    location / {{ default_type application/json; return 200 '{UPSTREAM_BODY}'; }}
  }}"""


def _proxy_to(upstream: str, tls: Path) -> str:
    """proxy_pass with keep-alive; to the TLS upstream, verified and with sessions reused."""
    directives = f"""
      proxy_pass {upstream};
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For $remote_addr;"""
    if upstream.startswith("https"):
        directives += f"""
      proxy_ssl_session_reuse on;
      proxy_ssl_verify on;
      proxy_ssl_trusted_certificate {tls}/fullchain.pem;
      proxy_ssl_name localhost;"""
    return directives


def proxy_pass_servers(ports: Ports, static_dir: Path, tls: Path, workdir: Path) -> str:
    """The baselines: nginx proxy_pass with an upstream keep-alive pool, one server per way in and
    out, and the same bundle served statically (client bodies in memory, as the relay holds them:
    like for like)."""
    common = f"""
    client_max_body_size 20m;
    client_body_buffer_size 1m;
    ssl_certificate {tls}/fullchain.pem;
    ssl_certificate_key {tls}/privkey.pem;
    location /static/ {{
      alias {static_dir}/;
      default_type application/javascript;
      add_header Content-Encoding br;
    }}"""
    plain, https = "http://fake", "https://fake_tls"
    return f"""
  upstream fake {{ server 127.0.0.1:{ports.upstream}; keepalive 64; }}
  upstream fake_tls {{ server 127.0.0.1:{ports.upstream_tls}; keepalive 64; }}
  {FRONT_LOG_FORMAT}
  server {{
    listen 127.0.0.1:{ports.nginx} reuseport;
    listen 127.0.0.1:{ports.nginx_tls} ssl reuseport;{common}
    location / {{{_proxy_to(plain, tls)}
    }}
  }}
  server {{
    listen 127.0.0.1:{ports.nginx_https} reuseport;{common}
    location / {{{_proxy_to(https, tls)}
    }}
  }}
  server {{
    listen 127.0.0.1:{ports.nginx_logged} reuseport;{common}
    access_log {workdir}/access.log combined;   # what nginx logs when nothing is configured
    location / {{{_proxy_to(plain, tls)}
    }}
  }}
  server {{
    listen 127.0.0.1:{ports.nginx_tls_https} ssl http2 reuseport;{common}{FRONT_TLS}
    access_log {workdir}/front.access.log front buffer=64k flush=5s;   # the front's line
    location / {{{_proxy_to(https, tls)}
    }}
  }}"""


@contextmanager
def nginx(workdir: Path, servers: str, probe: str) -> Iterator[int]:
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "nginx.conf"
    conf.write_text(nginx_conf(workdir, f"""
  client_body_temp_path {workdir}/body;
  proxy_temp_path {workdir}/proxy;
  {servers}""", workers=2, error_log="error.log"))
    with running(["nginx", "-c", str(conf), "-p", str(workdir), "-g", "daemon off;"], probe,
                 workdir / "nginx.err") as pid:
        yield pid


@dataclass(frozen=True)
class RelaySetup:
    """How a relay contender is configured: its upstream's scheme and its access logging."""
    https: bool = False                 # regions and CDN over TLS, trusted by [upstream] ca_file
    default_log: bool = False           # the embedded [log] defaults; otherwise access = false


def relay_config(port: int, ports: Ports, workers: int, setup: RelaySetup, tls: Path) -> str:
    upstream = (f"https://127.0.0.1:{ports.upstream_tls}" if setup.https
                else f"http://127.0.0.1:{ports.upstream}")
    sections = [f"[server]\nlisten = \"127.0.0.1:{port}\"\nworkers = {workers}"]
    if not setup.default_log:
        sections.append("[log]\naccess = false")
    if setup.https:
        sections.append(f"[upstream]\nca_file = \"{tls}/fullchain.pem\"")
    sections += ["[health]\nprobe_interval = 0",
                 f"[assets]\ncdn_url = \"{upstream}/libs/\"\nprefetch = [\"{BUNDLE}\"]"]
    sections += [f"[regions.{region}]\nurl = \"{upstream}\"" for region in ("us", "eu", "in")]
    return "\n".join(sections) + "\n"


@contextmanager
def relay(workdir: Path, config: str, port: int, python: str = sys.executable,
          checkout: Path = ROOT) -> Iterator[int]:
    """The relay on `config` (its stderr, where the access log goes by default, to a file),
    run from `checkout` (`python -m proxy` imports the package of the directory it runs in)."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "relay.toml"
    path.write_text(config)
    with running([python, "-m", "proxy", "serve", "--config", str(path)],
                 f"http://127.0.0.1:{port}/healthz", workdir / "relay.log", checkout) as pid:
        wait_for(f"http://127.0.0.1:{port}/libs/{BUNDLE}")   # the prefetched bundle is cached
        yield pid


@contextmanager
def ceiling(port: int, upstream_port: int, workers: int,
            python: str = sys.executable) -> Iterator[int]:
    """bench/ceiling.py in front of the plain fake upstream."""
    with running([python, str(ROOT / "bench" / "ceiling.py"), "--listen", f"127.0.0.1:{port}",
                  "--upstream", f"127.0.0.1:{upstream_port}", "--workers", str(workers)],
                 f"http://127.0.0.1:{port}/track/") as pid:
        yield pid


@contextmanager
def front(relay_port: int) -> Iterator[tuple[int, int]]:
    """The shipped nginx front (tests/support/processes.py adapts ports and paths):
    (https port, pid)."""
    from tests.support.processes import NginxFront

    nginx_front = NginxFront(relay_port)
    asyncio.run(nginx_front.start())
    try:
        assert nginx_front.process is not None
        yield nginx_front.https_port, nginx_front.process.pid
    finally:
        nginx_front.stop()


def make_certificate(directory: Path) -> Path:
    """The self-signed certificate the shipped nginx/self-signed.sh makes (127.0.0.1, localhost):
    the TLS baselines and the TLS upstream present it, the relay trusts it as its ca_file."""
    subprocess.run([str(ROOT / "nginx" / "self-signed.sh"), str(directory)], check=True,
                   capture_output=True)
    return directory
