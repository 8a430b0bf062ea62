"""Real processes for the deployment tests: the relay as `python -m proxy serve` (a supervisor and
its workers) and the shipped nginx/ config run by the real nginx, adapted only in ports and paths.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import tomli_w

from tests.support.ports import free_port
from tests.support.waits import eventually

REPO = Path(__file__).resolve().parents[2]
SHIPPED_NGINX = REPO / "nginx"
_LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")


class RelayProcess:
    """`python -m proxy serve --config FILE` with stdout/stderr captured to files."""

    def __init__(self, workdir: Path, config: dict[str, Any]) -> None:
        self.workdir = workdir
        self.config_path = workdir / "relay.toml"
        self.write_config(config)
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    def write_config(self, config: dict[str, Any]) -> None:
        data = {**config, "server": {"listen": "127.0.0.1:0", **config.get("server", {})}}
        self.config_path.write_text(tomli_w.dumps(data))

    async def start(self) -> None:
        with open(self.workdir / "relay.out", "wb") as out, \
                open(self.workdir / "relay.err", "wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "proxy", "serve", "--config", str(self.config_path)],
                stdout=out, stderr=err, cwd=REPO)
        await eventually(lambda: _LISTENING.search(self.stdout) or self.process_exited(),
                         timeout=30, what="the relay to listen")
        match = _LISTENING.search(self.stdout)
        assert match, f"relay did not start:\n{self.stderr}"
        self.port = int(match.group(1))

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def stdout(self) -> str:
        return (self.workdir / "relay.out").read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return (self.workdir / "relay.err").read_text(errors="replace")

    def process_exited(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    def worker_pids(self) -> list[int]:
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        return [int(pid) for pid in children.read_text().split()] if children.exists() else []

    def send(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def kill_all(self) -> None:
        """SIGKILL the workers and the supervisor: no cleanup of any kind runs (a crash)."""
        for pid in self.worker_pids():
            os.kill(pid, signal.SIGKILL)
        self.send(signal.SIGKILL)

    async def reload(self) -> None:
        """SIGHUP, then wait for the supervisor to report the new generation (or a refusal)."""
        done = self.stderr.count("reloaded ") + self.stderr.count("reload refused")
        self.send(signal.SIGHUP)
        await eventually(lambda: self.stderr.count("reloaded ")
                         + self.stderr.count("reload refused") > done, what="the reload")

    async def wait(self, timeout: float = 30.0) -> int:
        await eventually(self.process_exited, timeout=timeout, what="the relay to exit")
        assert self.process is not None
        code = self.process.returncode
        assert isinstance(code, int)
        return code

    async def stop(self) -> None:
        if self.process is not None and not self.process_exited():
            self.send(signal.SIGTERM)
            try:
                await self.wait(timeout=20)
            except AssertionError:
                self.process.kill()
                self.process.wait()


class NginxFront:
    """The shipped nginx/ directory, copied and adapted only in ports and paths, run in the
    foreground by the real nginx. Loopback listen addresses stand in for the public ones."""

    def __init__(self, relay_port: int) -> None:
        # Not pytest's tmp_path: that is mode 0700, and nginx's unprivileged workers must reach
        # the cache directories under it.
        self.root = Path(tempfile.mkdtemp(prefix="mixpanel-nginx-"))
        self.root.chmod(0o755)
        self.conf = self.root / "conf"
        self.http_port = free_port()
        self.https_port = free_port()
        self.relay_port = relay_port
        self.process: subprocess.Popen[bytes] | None = None

    def substitutions(self) -> dict[str, str]:
        return {
            "/etc/nginx/mixpanel-proxy": str(self.conf),
            "/etc/ssl/mixpanel-proxy": str(self.root / "tls"),
            "/var/cache/nginx/mixpanel-proxy": str(self.root / "cache"),
            "/var/log/nginx": str(self.root / "log"),
            "/var/www/html": str(self.root / "www"),      # the ACME challenge web root
            "/run/nginx-mixpanel-proxy.pid": str(self.root / "nginx.pid"),
            "server 127.0.0.1:8080 ": f"server 127.0.0.1:{self.relay_port} ",
            "listen 443 ": f"listen 127.0.0.1:{self.https_port} ",
            "listen [::]:443 ": f"listen [::1]:{self.https_port} ",
            "listen 80;": f"listen 127.0.0.1:{self.http_port};",
            "listen [::]:80;": f"listen [::1]:{self.http_port};",
        }

    def prepare(self) -> None:
        shutil.copytree(SHIPPED_NGINX, self.conf)
        used = dict.fromkeys(self.substitutions(), 0)
        for path in self.conf.rglob("*.conf"):
            text = path.read_text()
            for old, new in self.substitutions().items():
                used[old] += text.count(old)
                text = text.replace(old, new)
            directives = re.sub(r"#.*", "", text)
            leftover = re.findall(r"(?<![\w.])/(?:etc|var|run)/\S*", directives)
            assert not leftover, f"{path.name}: unadapted paths {leftover}"
            path.write_text(text)
        assert all(used.values()), f"substitutions that no longer match: {used}"
        for name in ("cache", "log"):
            (self.root / name).mkdir()
        subprocess.run([str(SHIPPED_NGINX / "self-signed.sh"), str(self.root / "tls")],
                       check=True, capture_output=True)

    def command(self, *extra: str) -> list[str]:
        return ["nginx", "-p", str(self.root), "-c", str(self.conf / "nginx.conf"),
                "-e", "stderr", *extra]

    def test_config(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command("-t"), capture_output=True, text=True)

    async def start(self) -> None:
        self.prepare()
        with open(self.root / "nginx.err", "wb") as err:
            self.process = subprocess.Popen(self.command("-g", "daemon off;"),
                                            stdout=err, stderr=err)
        await eventually(self._accepting, what="nginx to listen")

    def _accepting(self) -> bool:
        assert self.process is not None
        assert self.process.poll() is None, (self.root / "nginx.err").read_text()
        try:
            socket.create_connection(("127.0.0.1", self.https_port), timeout=0.2).close()
        except OSError:
            return False
        return True

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    def errors(self) -> str:
        """nginx's stderr and error log, for assertion messages."""
        logs = [self.root / "nginx.err", *sorted((self.root / "log").glob("*error*"))]
        return "\n".join(path.read_text(errors="replace") for path in logs if path.exists())

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)
