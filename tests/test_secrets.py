"""Credentials written into a server URL (`http://user:password@host/v1`, `?api_key=...`) never reach a file of
the run, the dataset card or a printed message: they are masked, and a rotated password is the same config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from sgpo_data.errors import ServiceError, SgpoError
from sgpo_data.pipeline.cache import request_key
from sgpo_data.pipeline.folder import StageFolder
from sgpo_data.redaction import find_credentials, redact, redact_url
from sgpo_data.report import check_no_secrets

PASSWORD = "hunter2secret"


@pytest.mark.parametrize("text, expected", [
    ("http://user:hunter2@host/v1", "http://user:***@host/v1"),
    ("cannot reach https://me:hunter2@10.0.0.1:8000/v1 after 3 retries",
     "cannot reach https://me:***@10.0.0.1:8000/v1 after 3 retries"),
    ("https://sk-abc123@api.example.com/v1", "https://***@api.example.com/v1"),
    ("http://user:p@ss@host:1/v1", "http://user:***@host:1/v1"),  # an unencoded @ in the password
    ("{base_url: 'http://u:hunter2@h:8000', timeout_s: 3}", "{base_url: 'http://u:***@h:8000', timeout_s: 3}"),
    ("https://h/v1?api_key=abc&model=x&access_token=t#top", "https://h/v1?api_key=***&model=x&access_token=***#top"),
    ("https://h/v1?key=abc&X-Amz-Signature=f00&sig=1", "https://h/v1?key=***&X-Amz-Signature=***&sig=***"),
])
def test_redact_url_masks_passwords_single_token_userinfo_and_secret_parameters(text, expected):
    assert redact_url(text) == expected
    assert find_credentials(text) is not None and find_credentials(expected) is None
    assert redact_url(expected) == expected  # masking twice changes nothing


@pytest.mark.parametrize("text", ["http://127.0.0.1:8000/v1", "https://api.openai.com/v1?model=x&monkey=1",
                                  "3 + 4 = 7, so key = 7", "mail me at someone@example.com", "http://user:***@h/v1"])
def test_text_without_credentials_is_unchanged(text):
    assert redact_url(text) == text and find_credentials(text) is None


def test_redact_masks_every_string_of_a_tree_and_keeps_the_rest():
    tree = {"generate": {"backend_options": {"base_url": f"http://u:{PASSWORD}@h/v1", "timeout_s": 3.0}},
            "list": [f"http://{PASSWORD}@h", 1, None, True], "plain": "text"}
    masked = redact(tree)
    assert PASSWORD not in json.dumps(masked)
    assert masked["generate"]["backend_options"] == {"base_url": "http://u:***@h/v1", "timeout_s": 3.0}
    assert masked["list"][1:] == [1, None, True] and masked["plain"] == "text"


def test_the_card_check_refuses_url_credentials_and_accepts_masked_ones():
    with pytest.raises(SgpoError, match="line 2 holds a password in the URL") as raised:
        check_no_secrets(f"# card\nbase_url: http://u:{PASSWORD}@h/v1\n", "dataset card")
    assert PASSWORD not in str(raised.value)
    with pytest.raises(SgpoError, match="secret query parameter 'api_key'"):
        check_no_secrets(f"url: https://h/v1?api_key={PASSWORD}", "dataset card")
    check_no_secrets("base_url: http://u:***@h/v1\nurl: https://h/v1?api_key=***", "dataset card")


def _config(password: str, host: str = "h") -> dict:
    return {"generate": {"model": "m", "backend_options": {"base_url": f"http://u:{password}@{host}/v1"}}}


def test_the_manifest_records_the_config_masked_and_a_rotated_password_is_the_same_config(tmp_path):
    folder = StageFolder(tmp_path, "generate")
    folder.start(_config(PASSWORD), "input", 2)
    text = folder.manifest_path.read_text()
    assert PASSWORD not in text and "http://u:***@h/v1" in text
    identity = folder.manifest()["identity"]
    folder.start(_config("rotated-password"), "input", 2)  # no --overwrite asked for
    assert folder.manifest()["identity"] == identity
    with pytest.raises(SgpoError, match="another config"):
        folder.start(_config(PASSWORD, host="other"), "input", 2)


def test_a_manifest_written_with_a_clear_password_is_masked_when_the_stage_resumes(tmp_path):
    folder = StageFolder(tmp_path, "generate")
    folder.start({"generate": {"model": "m"}}, "input", 1)
    manifest = folder.manifest()
    manifest["config"] = _config(PASSWORD)  # as an older version recorded it
    folder.manifest_path.write_text(json.dumps(manifest))
    folder.start(_config(PASSWORD), "input", 1)
    assert PASSWORD not in folder.manifest_path.read_text()


def test_the_cache_key_ignores_the_password_of_the_engine_url_but_not_the_messages():
    def key(password: str, host: str = "h", message: str = "hi"):
        return request_key(model="m", options={"base_url": f"http://u:{password}@{host}/v1"},
                           messages=[{"role": "user", "content": message}])

    assert key("one") == key("two") != key("one", host="other")
    assert key("one", message="http://a:x@h") != key("one", message="http://a:y@h")  # messages are data
    no_url = {"model": "m", "options": {"timeout_s": 3}, "messages": ["x"]}
    assert request_key(**no_url) == request_key(**json.loads(json.dumps(no_url)))


def test_service_and_request_errors_of_the_openai_backend_mask_the_url():
    from sgpo_data.backends import SamplingParams, get_backend
    from sgpo_data.backends.openai_backend import OpenAIOptions, classify
    from tests.fault_server import FaultServer

    with FaultServer() as server:
        url = server.base_url.replace("http://", f"http://u:{PASSWORD}@")
    backend = get_backend("openai", "fake", {"base_url": url, "max_retries": 0})  # nothing listens there now
    try:
        [error] = backend.generate([[{"role": "user", "content": "1 + 1?"}]], SamplingParams())
    finally:
        backend.close()
    assert isinstance(error, ServiceError) and f"cannot reach http://u:***@127.0.0.1:{server.port}/v1" in str(error)
    assert PASSWORD not in str(error)
    row_error = classify(RuntimeError(f"unexpected answer from {url}"), url, OpenAIOptions(base_url=url))
    assert row_error.kind == "invalid_response" and "http://u:***@" in row_error.message
    assert PASSWORD not in row_error.message


def test_the_cli_error_printer_masks_every_message(capsys):
    from sgpo_data_cli.app import _fail

    with pytest.raises(typer.Exit) as exited:
        _fail(ServiceError(f"cannot reach http://u:{PASSWORD}@h/v1 after 3 retries"))
    assert exited.value.exit_code == 4
    err = capsys.readouterr().err
    assert "cannot reach http://u:***@h/v1" in err and PASSWORD not in err


# -- a real run against a server behind a URL with credentials ------------------------------------------------------

def _run(out: Path, policy_url: str, judge_url: str, *stages: str) -> tuple[int, str]:
    from sgpo_data_cli.app import app
    from tests.helpers import LLM_JUDGE

    demo = Path(__file__).resolve().parents[1] / "recipes" / "demo.yaml"
    args = [*(stages or ("run", str(demo))), *(["--recipe", str(demo)] if stages else []), "--out", str(out),
            "--set", "data.arithmetic.num_problems=4", "--set", "generate.sampling.num_samples=2",
            "--set", "generate.prompts_per_shard=2", *[arg for s in LLM_JUDGE for arg in ("--set", s)]]
    for section, url in (("generate", policy_url), ("judge", judge_url)):
        args += ["--set", f"{section}.backend=openai", "--set", f"{section}.model=fake",
                 "--set", f"{section}.backend.options={{base_url: '{url}', max_retries: 0, timeout_s: 5}}"]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    return result.exit_code, result.output


def _with_credentials(base_url: str, userinfo: str) -> str:
    return base_url.replace("http://", f"http://{userinfo}@")


@pytest.mark.slow
def test_no_file_of_the_run_nor_the_output_holds_the_password(tmp_path):
    from tests.fault_server import FaultServer

    with FaultServer() as policy, FaultServer() as judge:
        code, output = _run(tmp_path, _with_credentials(policy.base_url, f"user:{PASSWORD}"),
                            _with_credentials(judge.base_url, f"judge:{PASSWORD}"))
    assert code == 0, output
    assert PASSWORD not in output
    files = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert any(path.name == "README.md" for path in files) and (tmp_path / "export" / "recipe.yaml").is_file()
    leaks = [str(path.relative_to(tmp_path)) for path in files if PASSWORD.encode() in path.read_bytes()]
    assert not leaks
    recipe = (tmp_path / "export" / "recipe.yaml").read_text()
    assert f"user:***@127.0.0.1:{policy.port}" in recipe and f"judge:***@127.0.0.1:{judge.port}" in recipe


@pytest.mark.slow
def test_a_server_that_is_down_stops_with_exit_4_and_the_url_masked(tmp_path):
    from tests.fault_server import FaultServer

    with FaultServer() as policy:
        url = _with_credentials(policy.base_url, f"user:{PASSWORD}")
    code, output = _run(tmp_path, url, url, "generate")  # the server has stopped: nothing listens there
    assert code == 4, output
    [line] = [line for line in output.splitlines() if line.startswith("error:")]
    assert f"cannot reach http://user:***@127.0.0.1:{policy.port}/v1" in line
    assert PASSWORD not in output
    leaks = [p for p in tmp_path.rglob("*") if p.is_file() and PASSWORD.encode() in p.read_bytes()]
    assert not leaks
