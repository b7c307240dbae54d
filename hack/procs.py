"""Process helpers shared by the local environment (control plane, Prometheus, stand-in kubelet), the demo and
the tests. Not part of the shipped package."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path


def memory_mib(pid: int, field: str = "VmRSS") -> float:
    """A process's memory from /proc/PID/status: ``VmRSS`` (resident now) or ``VmHWM`` (its peak); 0 if absent."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def free_port() -> int:
    """A loopback port nothing listens on now (the caller binds it soon after)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop(proc: subprocess.Popen[bytes] | None, timeout: float = 10) -> None:
    """Terminate a child process, and kill it if it has not exited within ``timeout`` seconds."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
