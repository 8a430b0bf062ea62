"""The shipped nginx site inside Debian's own, unmodified /etc/nginx/nginx.conf, run by the real
nginx: the install steps of README "Production on Debian", in a temporary prefix.

Debian's main file and its default site are copied and adapted only in where they write (pid,
logs) and which ports they listen on; the site goes in as the README says (the directory as
`mixpanel-proxy/`, the site file symlinked from `sites-enabled/`).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from pathlib import Path

from tests.support.processes import NginxFront
from tests.support.waits import eventually

DEBIAN_NGINX = Path("/etc/nginx")


class RecordingBackend:
    """A raw HTTP/1.1 server standing in for the relay: records each request head it gets and
    answers `{"status":1}`. Raw, so that no server-side head limit of its own gets in the way."""

    def __init__(self) -> None:
        self.heads: list[bytes] = []
        self.server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            for _ in range(1000):           # bounded: one keep-alive connection's requests
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head)
                length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
                if length:
                    await reader.readexactly(int(length.group(1)))
                body = b'{"status":1}'
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def stop(self) -> None:
        writers = list(self._writers)        # nginx's idle keep-alive connections
        for writer in writers:
            writer.close()
        await asyncio.gather(*(writer.wait_closed() for writer in writers),
                             return_exceptions=True)
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


class DebianNginx(NginxFront):
    """Debian's nginx.conf + Debian's default site + the shipped site, in a temporary prefix."""

    def __init__(self, relay_port: int) -> None:
        super().__init__(relay_port)
        self.main = self.root / "nginx.conf"

    def prepare(self) -> None:
        super().prepare()            # the shipped directory, adapted, in root/conf
        enabled = self.root / "sites-enabled"
        enabled.mkdir()
        (self.root / "conf.d").mkdir()
        (self.root / "debian-log").mkdir()
        # README: "sudo ln -s /etc/nginx/mixpanel-proxy/mixpanel-proxy.conf
        #          /etc/nginx/sites-enabled/mixpanel-proxy"
        (enabled / "mixpanel-proxy").symlink_to(self.conf / "mixpanel-proxy.conf")
        default = (DEBIAN_NGINX / "sites-available" / "default").read_text()
        default = _replace_all(default, {
            "listen 80 default_server;": f"listen 127.0.0.1:{self.http_port} default_server;",
            "listen [::]:80 default_server;": f"listen [::1]:{self.http_port} default_server;",
        })
        (enabled / "default").write_text(default)
        self.main.write_text(_replace_all((DEBIAN_NGINX / "nginx.conf").read_text(), {
            "pid /run/nginx.pid;": f"pid {self.root / 'debian.pid'};",
            "error_log /var/log/nginx/error.log;": f"error_log {self.root}/debian-log/error.log;",
            "access_log /var/log/nginx/access.log;":
                f"access_log {self.root}/debian-log/access.log;",
            "include /etc/nginx/conf.d/*.conf;": f"include {self.root}/conf.d/*.conf;",
            "include /etc/nginx/sites-enabled/*;": f"include {enabled}/*;",
        }))
        # The workers run as Debian's `www-data` (nginx.conf's `user`): let them write the cache.
        shutil.chown(self.root / "cache", "www-data")

    def command(self, *extra: str) -> list[str]:
        return ["nginx", "-p", str(self.root), "-c", str(self.main), "-e", "stderr", *extra]

    async def start(self) -> None:
        self.prepare()
        checked = subprocess.run(self.command("-t"), capture_output=True, text=True)
        assert checked.returncode == 0, checked.stderr
        self.config_test_output = checked.stderr
        with open(self.root / "nginx.err", "wb") as err:
            self.process = subprocess.Popen(self.command("-g", "daemon off;"),
                                            stdout=err, stderr=err)
        await eventually(self._accepting, what="nginx to listen")


def _replace_all(text: str, substitutions: dict[str, str]) -> str:
    for old, new in substitutions.items():
        assert old in text, f"Debian's file no longer has {old!r}"
        text = text.replace(old, new)
    return text
