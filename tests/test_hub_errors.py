"""A Hub push that fails (unreachable endpoint, offline mode, 401, 403, 5xx) ends in one line naming the endpoint.

Everything runs against 127.0.0.1: a port with nothing listening, or a tiny http.server that answers one status to
every request. `create_repo` makes a single request without retry/backoff in huggingface_hub, so no timeout or
retry constant needs patching and each case takes milliseconds.
"""

from __future__ import annotations

import http.server
import socket
import threading

import pytest

from sgpo_data.errors import SgpoError
from sgpo_data.export.hub import push_to_hub

hub = pytest.importorskip("huggingface_hub")
constants = pytest.importorskip("huggingface_hub.constants")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

TOKEN = "hf_" + "s3cr3t" * 6
REPO = "my-org/sgpo-demo"


@pytest.fixture
def export_folder(tmp_path):
    folder = tmp_path / "export"
    (folder / "flat").mkdir(parents=True)
    (folder / "README.md").write_text("---\nlicense: mit\n---\n# demo\n")
    table = pa.table({"prompt": ["1+1?"], "completion": ["2"]})
    pq.write_table(table, folder / "flat" / "train-00000-of-00001.parquet")
    return folder


@pytest.fixture(autouse=True)
def online(monkeypatch):
    """Whatever the environment says, these tests decide offline mode themselves (read at import time)."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def hub_answering():
    """Start a local server answering `status` with a JSON error to every request; return its endpoint."""
    servers = []

    def start(status: int) -> str:
        class Handler(http.server.BaseHTTPRequestHandler):
            def answer(self):
                if length := int(self.headers.get("content-length") or 0):
                    self.rfile.read(length)
                body = b'{"error": "nope"}'
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = answer

            def log_message(self, *args):
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def push_error(folder, endpoint: str) -> str:
    with pytest.raises(SgpoError) as info:
        push_to_hub(folder, REPO, token=TOKEN, api=hub.HfApi(endpoint=endpoint))
    message = str(info.value)
    assert "\n" not in message
    assert TOKEN not in message and "s3cr3t" not in message
    assert endpoint in message
    return message


def test_unreachable_endpoint_is_one_line_naming_it(export_folder):
    message = push_error(export_folder, f"http://127.0.0.1:{free_port()}")
    assert message.startswith("cannot reach the Hub at http://127.0.0.1:")
    assert "check the network or HF_ENDPOINT" in message


def test_offline_mode_is_one_line(export_folder, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    message = push_error(export_folder, "http://127.0.0.1:9")
    assert message.startswith("cannot reach the Hub at http://127.0.0.1:9")
    assert "HF_HUB_OFFLINE" in message


def test_401_says_the_token_was_rejected(export_folder, hub_answering):
    message = push_error(export_folder, hub_answering(401))
    assert "rejected the token (401" in message
    assert "HF_TOKEN" in message and "hf auth login" in message


def test_403_says_no_write_access(export_folder, hub_answering):
    message = push_error(export_folder, hub_answering(403))
    assert f"no write access to {REPO} (403" in message


@pytest.mark.parametrize("status", [404, 500])
def test_other_http_errors_name_the_status(export_folder, hub_answering, status):
    message = push_error(export_folder, hub_answering(status))
    assert f"failed: {status}" in message


def test_a_server_that_is_not_a_hub_is_one_line_naming_it(export_folder, hub_answering):
    """200 with a body that is no Hub answer: huggingface_hub's KeyError is told as the server's fault."""
    message = push_error(export_folder, hub_answering(200))
    assert "does not answer as a Hugging Face Hub" in message and "HF_ENDPOINT" in message
