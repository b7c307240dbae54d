#!/usr/bin/env python3
"""Debian's Prometheus on loopback, scraping simulator processes listed in a file_sd JSON file.

Used by the tests and the demo. The targets file carries the labels a PodMonitor would give real pods
(namespace, pod, deployment, specdeploy_k), so the operator's queries are the same here and in a cluster.

    python hack/prometheus.py --dir /tmp/prom   # runs until interrupted, prints its URL
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from procs import free_port, stop


@dataclass
class Prometheus:
    workdir: Path
    scrape_interval: str = "1s"
    port: int = 0
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def targets_file(self) -> Path:
        return self.workdir / "targets.json"

    def start(self, timeout: float = 30) -> Prometheus:
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError("prometheus not found: apt-get install prometheus (hack/setup.sh does)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.targets_file.exists():
            self.targets_file.write_text("[]")
        config = self.workdir / "prometheus.yml"
        config.write_text(
            f"global: {{scrape_interval: {self.scrape_interval}, evaluation_interval: {self.scrape_interval}}}\n"
            "scrape_configs:\n"
            "  - job_name: vllm\n"
            f"    scrape_timeout: {self.scrape_interval}\n"
            f"    file_sd_configs: [{{files: ['{self.targets_file}'], refresh_interval: 1s}}]\n"
        )
        self.port = self.port or free_port()
        log = open(self.workdir / "prometheus.log", "wb")  # noqa: SIM115 - handed to the child process
        self.proc = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={self.workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=2h",
             "--query.lookback-delta=30s", "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError((self.workdir / "prometheus.log").read_text()[-2000:])
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        raise TimeoutError(f"Prometheus not ready in {timeout}s")

    def stop(self) -> None:
        stop(self.proc)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, required=True)
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    prom = Prometheus(args.dir.resolve(), port=args.port).start()
    print(prom.url, flush=True)
    try:
        prom.proc.wait()  # type: ignore[union-attr]
    except KeyboardInterrupt:
        prom.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
