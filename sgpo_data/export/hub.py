"""Publishing an export folder to the Hugging Face Hub as a dataset repository.

Everything is checked before the first request: the repo id, the token (flag, then `HF_TOKEN`, then the
user's `hf auth login`), the files. The token is passed to `HfApi` only; it is never written anywhere.
Any failure of the Hub itself (network, offline mode, 401/403, other HTTP errors) becomes a one-line `SgpoError`
that names the endpoint and the cause, never the token.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from sgpo_data.errors import SgpoError

UPLOAD_SUFFIXES = (".parquet", ".md", ".yaml", ".png")


def resolve_token(token: str | None) -> str:
    from huggingface_hub import get_token

    token = token or os.environ.get("HF_TOKEN") or get_token()
    if not token:
        raise SgpoError("no Hugging Face token: set HF_TOKEN, pass --token, or run `hf auth login` before --push-to-hub")
    return token


def check_repo_id(repo_id: str) -> None:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise SgpoError(f"invalid Hub repo id {repo_id!r}: {str(exc).splitlines()[0]} (expected owner/name)") from None
    if "/" not in repo_id:
        raise SgpoError(f"invalid Hub repo id {repo_id!r}: expected owner/name, e.g. my-org/{repo_id}")


def upload_files(folder: Path) -> list[Path]:
    """The files of an export folder that belong on the Hub: the card, the recipe, view Parquet, plots."""
    files = sorted(
        p for p in folder.rglob("*")
        if p.is_file() and p.suffix in UPLOAD_SUFFIXES and "hf" not in p.relative_to(folder).parts[:1]
        and not p.name.startswith("part-")
    )
    if not any(p.name == "README.md" for p in files) or not any(p.suffix == ".parquet" for p in files):
        raise SgpoError(f"{folder} has no dataset card or no view Parquet files; run `sgpo-data export` first")
    return files


def network_errors() -> tuple[type[BaseException], ...]:
    """Connection, DNS and timeout errors of whichever HTTP client this huggingface_hub uses
    (requests before 1.0, httpx, httpx2); `OfflineModeIsEnabled` is a `ConnectionError`."""
    errors: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module, names in (("httpx2", ("TransportError",)), ("httpx", ("TransportError",)),
                          ("requests", ("ConnectionError", "Timeout"))):
        if module in sys.modules:  # only the client huggingface_hub already imported
            errors += [getattr(sys.modules[module], name) for name in names if hasattr(sys.modules[module], name)]
    return tuple(errors)


def hub_error_message(exc: BaseException, endpoint: str, repo_id: str) -> str:
    """One line for a failed Hub request: where, why and what to do."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    def first_line(text: object) -> str:
        lines = str(text or "").strip().splitlines()
        return lines[0][:200] if lines else ""

    if isinstance(exc, HfHubHTTPError):
        response = getattr(exc, "response", None)
        status = getattr(response, "status_code", None)
        reason = getattr(response, "reason_phrase", None) or getattr(response, "reason", None) or ""
        code = f"{status} {reason}".strip() if status else "HTTP error"
        if status == 401:
            return f"the Hub at {endpoint} rejected the token ({code}); check HF_TOKEN or run `hf auth login`"
        if status == 403:
            return (f"the Hub at {endpoint} gave the token no write access to {repo_id} ({code}); "
                    "use a token with write access to that namespace (check HF_TOKEN or run `hf auth login`)")
        detail = first_line(exc.server_message) or first_line(exc)
        return f"the Hub at {endpoint} failed: {code}" + (f" ({detail})" if detail else "")
    if isinstance(exc, OfflineModeIsEnabled):
        return f"cannot reach the Hub at {endpoint}: offline mode is enabled; unset HF_HUB_OFFLINE to push"
    if isinstance(exc, network_errors()):
        cause = first_line(exc)
        cause = f"{type(exc).__name__}: {cause}" if cause else type(exc).__name__
        return f"cannot reach the Hub at {endpoint}: {cause}; check the network or HF_ENDPOINT"
    # A server that answers, but not as the Hub does (a wrong HF_ENDPOINT, a proxy's page): huggingface_hub fails
    # reading the answer (KeyError, JSON errors), which is still the server's fault, not the export's.
    detail = first_line(exc)
    return (f"the server at {endpoint} does not answer as a Hugging Face Hub ({type(exc).__name__}"
            f"{': ' + detail if detail else ''}); check HF_ENDPOINT")


def push_to_hub(folder: str | Path, repo_id: str, token: str | None = None, private: bool = True,
                revision: str | None = None, commit_message: str | None = None, api=None) -> str:
    """Create the dataset repo (if needed) and upload the export folder in one commit; return the commit URL."""
    from huggingface_hub import CommitOperationAdd, HfApi

    folder = Path(folder)
    check_repo_id(repo_id)
    token = resolve_token(token)
    files = upload_files(folder)
    from sgpo_data.card import render_for_push

    card = render_for_push(folder, repo_id)  # titled and loaded by the repo id it now has
    if card is not None:
        (folder / "README.md").write_text(card)
    api = api or HfApi()
    try:
        api.create_repo(repo_id, token=token, private=private, repo_type="dataset", exist_ok=True)
        if revision:
            api.create_branch(repo_id, branch=revision, token=token, repo_type="dataset", exist_ok=True)
        operations = [CommitOperationAdd(path_in_repo=p.relative_to(folder).as_posix(), path_or_fileobj=str(p))
                      for p in files]
        info = api.create_commit(
            repo_id, operations, commit_message=commit_message or "Upload SGPO dataset made with sgpo-data",
            token=token, repo_type="dataset", revision=revision,
        )
    except Exception as exc:
        from huggingface_hub import constants

        message = hub_error_message(exc, getattr(api, "endpoint", None) or constants.ENDPOINT, repo_id)
        raise SgpoError(message.replace(token, "***")) from None
    return getattr(info, "commit_url", str(info))
