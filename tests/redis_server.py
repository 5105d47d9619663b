"""A real Redis server for the tests that need one: Debian's ``redis-server`` (installed with apt-get when
absent), started on a free loopback port with no persistence, stopped afterwards. Nothing is assumed to
be running and nothing is left running."""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _install() -> str:
    """The path of redis-server, installed from Debian's packages if it is not on the PATH. Test workers
    running at once (pytest-xdist) take turns: apt-get holds dpkg's lock, so a second one would fail."""
    with open(Path(tempfile.gettempdir()) / "duet-redis-install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _install_locked()


def _install_locked() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    prefix = [] if os.geteuid() == 0 else (["sudo", "-n"] if shutil.which("sudo") else None)
    if prefix is None or not shutil.which("apt-get"):
        raise RuntimeError("redis-server is not installed and cannot be installed here (needs apt-get and "
                           "root or passwordless sudo): apt-get install redis-server")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [*prefix, "apt-get", "install", "-y", "-q", "--no-install-recommends", "redis-server"]
    if subprocess.run(install, env=env, capture_output=True, timeout=600).returncode != 0:
        subprocess.run([*prefix, "apt-get", "update", "-q"], env=env, capture_output=True, timeout=600,
                       check=True)
        subprocess.run(install, env=env, capture_output=True, timeout=600, check=True)
    found = shutil.which("redis-server") or ("/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists()
                                             else None)
    if not found:
        raise RuntimeError("apt-get installed redis-server but it is not on the PATH")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def redis_server(workdir: Path, password: str | None = None) -> Iterator[str]:
    """Yield ``127.0.0.1:<port>`` of a fresh Redis (``password``: clients must AUTH with it, given in a
    config file, not on the command line); the process is stopped and waited for at the end."""
    binary = _install()
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
               "--dir", str(workdir), "--daemonize", "no"]
    hello = b"PING\r\n"
    if password is not None:
        config = workdir / "redis.conf"
        config.write_text(f'requirepass "{password}"\n')
        command.insert(1, str(config))
        hello = f"AUTH {password}\r\nPING\r\n".encode()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                    s.sendall(hello)
                    reply = b""
                    while reply.count(b"\r\n") < hello.count(b"\r\n"):
                        chunk = s.recv(64)
                        if not chunk:
                            break
                        reply += chunk
                    if reply.endswith(b"+PONG\r\n"):
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {port}")
            time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
