"""`transformers serve MODEL_DIR` on a free loopback port: a real OpenAI-compatible server for the
slow tests and the benchmarks (never used by the app)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import openai

from core.engines.openai_client import make_client, served_models


class LocalServer:
    """`transformers serve MODEL_DIR` on a free loopback port, for tests and benchmarks:

        with LocalServer(folder) as server:
            model = RemoteChatModel.connect(server.base_url, None, server.model)

    server.model is the name to ask for: transformers 5.24 lists the served folder at /v1/models,
    5.17 lists only its hub cache (and fails when that folder does not exist: one is made here).
    """

    def __init__(self, model_dir: str, continuous_batching: bool = False, start_timeout_s: float = 180.0):
        self.model_dir = str(model_dir)
        self.continuous_batching = continuous_batching
        self.start_timeout_s = start_timeout_s
        self.process: subprocess.Popen | None = None
        self.log = tempfile.TemporaryFile()  # noqa: SIM115  (its stdout and stderr while it runs; read by output())
        self.base_url = ""
        self.model = self.model_dir  # what requests name; the server is pinned to it

    def __enter__(self) -> "LocalServer":
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        command = [str(Path(sys.executable).with_name("transformers")), "serve", self.model_dir,
                   "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
        if self.continuous_batching:
            command.append("--continuous-batching")
        self.cache = tempfile.TemporaryDirectory()  # an empty hub cache for /v1/models to scan
        env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": self.cache.name, **os.environ}
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.base_url = f"http://127.0.0.1:{port}/v1"
        client = make_client(self.base_url, None, 5.0, max_retries=0)
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if served_models(client) is not None:  # it answers /v1/models (the list may be empty)
                    return self
            except openai.APIError:
                time.sleep(0.5)
        self.__exit__()
        raise RuntimeError(f"transformers serve did not start: {self.output()[-2000:]}")

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def kill(self) -> None:
        """End the server at once (SIGKILL), as a crash would."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)

    def __exit__(self, *exc) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
