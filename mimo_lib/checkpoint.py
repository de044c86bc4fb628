"""Checkpoints that lose nothing, written so that a crash never leaves a broken one.

A *run folder* (``--save``) holds numbered checkpoints and a pointer to the newest::

    runs/instruct/
      latest                    "step-000200": the newest COMPLETE checkpoint
      metrics.jsonl             one JSON line per training step (written by mimo_lib.train)
      step-000100/
        model.safetensors       model.state_dict()
        optimizer.safetensors   optimizer.state.<param_index>.<name>: exp_avg, exp_avg_sq, step
        state.safetensors       rng.torch_cpu, rng.cuda.<i>, sampler.<name>: the other tensors of the state
        state.json              everything else: config, step, stage, optimizer param groups, LR schedule,
                                Python/numpy RNG, sampler position, metrics so far, command-line arguments,
                                and the size and SHA-256 of every file above
        tokenizer.json
      step-000200/ ...
      final/                    save_model_only: model.safetensors + config.json + tokenizer.json + manifest.json

Nothing is pickled: tensors go to safetensors, everything else to JSON, so
loading a checkpoint can never run code that came with it (``torch.load`` of a
pickle can).

**Atomic writes.** A checkpoint is written into a temporary folder
(``.tmp-step-000200-xxxx``) next to its final place, every file flushed to
disk, and only then renamed to ``step-000200``: a rename within one folder is
atomic, so the step folder either does not exist or is complete. After that
the ``latest`` file is replaced the same way (temporary file, then
``os.replace``), and only after *that* are checkpoints older than the last
``keep`` deleted. A process killed at any instant therefore leaves ``latest``
pointing at either the previous checkpoint or the new one, and both are whole.
Folders starting with a dot are never read as checkpoints, and leftovers of a
killed writer are removed by the next save.

**Integrity.** Every file of a step folder is listed in its ``state.json`` with its size and SHA-256,
and every file of a model folder (``final/``, the shipped ``mimo_toy``) in its ``manifest.json``; loading
checks them all, so a damaged or edited file is refused by name. The model's config is also written into
``model.safetensors``' own metadata, so an edit of ``config.json`` or ``state.json`` that no tensor shape
shows (``num_attention_heads`` 4 -> 8) is refused too. Before any weight is allocated, the config's
parameter count is estimated and compared with the tensors in the file and with the machine's memory;
after loading, non-finite weights (NaN, inf) are refused.

**Movable.** A model folder loads from itself alone: for an ``hf-clip`` / ``hf-whisper`` tower the folder
keeps a copy of the transformers ``config.json`` it was built from (``hf-vision-config.json``,
``hf-audio-config.json``), and the tower is rebuilt from that and the weights in ``model.safetensors``,
never from the absolute ``pretrained_path`` recorded in the config.

Two writers saving into one run folder at the same time are not supported.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import random
import re
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from mimo_lib.atomic import (
    TEMPORARY_PREFIXES,
    atomic_save_tensors,
    atomic_write_json,
    atomic_write_text,
    fsync_dir,
    fsync_file,
    remove_tree,
    replace_folder,
)
from mimo_lib.config import MIMOConfig
from mimo_lib.errors import MimoInputError
from mimo_lib.model import MIMOModel
from mimo_lib.tokenizer import Tokenizer

CHECKPOINT_FORMAT = "mimo-checkpoint-v1"
MODEL_FORMAT = "mimo-model-v1"
LATEST = "latest"
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_TENSORS_FILE = "state.safetensors"
STATE_FILE = "state.json"
CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
MANIFEST_FILE = "manifest.json"
TRAIN_CONFIG_FILE = "train_config.json"
#: Copies of the transformers config.json an hf-clip / hf-whisper tower was built from (see "Movable" above).
HF_CONFIG_FILES = {"vision": "hf-vision-config.json", "audio": "hf-audio-config.json"}
HF_BACKBONES = {"vision": "hf-clip", "audio": "hf-whisper"}
#: Bytes one parameter takes when a model is loaded (float32) and when it is trained (weights, gradients and
#: AdamW's two moments, all float32).
LOAD_BYTES_PER_PARAMETER = 4
TRAIN_BYTES_PER_PARAMETER = 16
STEP_FOLDER = re.compile(r"^step-(\d+)$")
_TEMPORARY_PREFIXES = TEMPORARY_PREFIXES


class CheckpointError(MimoInputError):
    """A checkpoint is missing, incomplete, corrupt, or does not fit the model or optimizer."""


def step_folder_name(step: int) -> str:
    """``step-000200``: zero-padded so that folders sort by step in a file browser."""
    return f"step-{step:06d}"


# --------------------------------------------------------------------------- #
# Writing files durably
# --------------------------------------------------------------------------- #


def _write_json(path: Path, data: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())


def _tensor_metadata(format_name: str, config: MIMOConfig) -> dict[str, str]:
    """``model.safetensors`` metadata: the format, and the config the weights were saved with (see "Integrity")."""
    return {"format": format_name, "config": json.dumps(config.to_dict(), sort_keys=True)}


def _write_tensors(path: Path, tensors: Mapping[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    # safetensors wants contiguous CPU tensors; .cpu() on a CPU tensor is free. The file lives in a temporary
    # folder that is renamed into place whole, so it needs no atomic write of its own.
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
    fsync_file(path)


def _write_hf_configs(folder: Path, config: MIMOConfig) -> dict[str, Path]:
    """Copy the transformers ``config.json`` of each hf-* tower into ``folder``, so it loads from there alone."""
    written = {}
    for modality, backbone in HF_BACKBONES.items():
        tower = getattr(config, modality)
        if tower.backbone_type == backbone and tower.pretrained_path is not None:
            source = Path(tower.pretrained_path).expanduser() / CONFIG_FILE
            if source.is_file():
                target = folder / HF_CONFIG_FILES[modality]
                shutil.copyfile(source, target)
                fsync_file(target)
                written[modality] = target
    return written


def _file_record(path: Path) -> dict[str, Any]:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return {"bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def _clean_leftovers(run_dir: Path) -> None:
    """Remove temporary folders and files that a killed writer left behind."""
    for child in run_dir.iterdir():
        if child.name.startswith(_TEMPORARY_PREFIXES):
            if child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)


# --------------------------------------------------------------------------- #
# Flattening state into tensors + JSON
# --------------------------------------------------------------------------- #


def flatten_optimizer_state(state_dict: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into safetensors tensors and a JSON-able rest.

    ``{"state": {0: {"step": t, "exp_avg": t, ...}}, "param_groups": [...]}`` becomes
    tensors ``optimizer.state.0.step``, ``optimizer.state.0.exp_avg`` ... and JSON
    ``{"param_groups": [...], "scalars": {"0": {...}}}`` for any non-tensor per-parameter entry.
    """
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entries in state_dict["state"].items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.state.{index}.{name}"] = value
            else:
                scalars.setdefault(str(index), {})[name] = value
    return tensors, {"param_groups": list(state_dict["param_groups"]), "scalars": scalars}


def unflatten_optimizer_state(tensors: Mapping[str, torch.Tensor], rest: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`flatten_optimizer_state`: a dict for ``optimizer.load_state_dict``."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, _, index, name = key.split(".", 3)  # "optimizer", "state", "<index>", "<name>"
        state.setdefault(int(index), {})[name] = value
    for index, entries in rest.get("scalars", {}).items():
        state.setdefault(int(index), {}).update(entries)
    groups = []
    for group in rest["param_groups"]:
        # JSON has no tuples: give back the tuples torch wrote (AdamW's betas), keep 'params' a list.
        groups.append({k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in group.items()})
    return {"state": dict(sorted(state.items())), "param_groups": groups}


def _split_tensors(prefix: str, state: Mapping[str, Any] | None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """One level of a dict: tensors to ``{prefix.key: tensor}``, everything else kept for JSON."""
    tensors, rest = {}, {}
    for key, value in (state or {}).items():
        if isinstance(value, torch.Tensor):
            tensors[f"{prefix}.{key}"] = value
        else:
            rest[key] = value
    return tensors, rest


def _join_tensors(prefix: str, tensors: Mapping[str, torch.Tensor], rest: Mapping[str, Any] | None) -> dict | None:
    if rest is None:
        return None
    joined = dict(rest)
    for key, value in tensors.items():
        if key.startswith(prefix + "."):
            joined[key[len(prefix) + 1 :]] = value
    return joined


# --------------------------------------------------------------------------- #
# Random number generators
# --------------------------------------------------------------------------- #


def capture_rng_state() -> dict[str, Any]:
    """Every global random generator training may touch: torch (CPU and CUDA), Python ``random``, numpy."""
    version, internal, gauss_next = random.getstate()
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    state: dict[str, Any] = {
        "torch_cpu": torch.get_rng_state(),  # (5056,) uint8
        "python": {"version": version, "state": list(internal), "gauss_next": gauss_next},
        "numpy": {
            "kind": kind,
            "keys": keys.tolist(),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, cuda_state in enumerate(torch.cuda.get_rng_state_all()):
            state[f"cuda.{i}"] = cuda_state
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Put back what :func:`capture_rng_state` captured."""
    torch.set_rng_state(state["torch_cpu"])
    python = state["python"]
    random.setstate((python["version"], tuple(python["state"]), python["gauss_next"]))
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], np.asarray(n["keys"], dtype=np.uint32), n["position"], n["has_gauss"], n["cached_gaussian"])
    )
    cuda_states = [state[k] for k in sorted((k for k in state if k.startswith("cuda.")), key=lambda k: int(k[5:]))]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states)


# --------------------------------------------------------------------------- #
# Saving a training checkpoint
# --------------------------------------------------------------------------- #


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """``[(step, folder), ...]`` of the step folders in ``run_dir``, oldest first (complete or not)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = []
    for child in run_dir.iterdir():
        match = STEP_FOLDER.match(child.name)
        if match and child.is_dir():
            found.append((int(match.group(1)), child))
    return sorted(found)


def save_checkpoint(
    run_dir: str | Path,
    model: MIMOModel,
    step: int,
    stage: str | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    parameter_names: Iterable[str] | None = None,
    scheduler_state: Mapping[str, Any] | None = None,
    sampler_state: Mapping[str, Any] | None = None,
    metrics: Iterable[Mapping[str, Any]] = (),
    args: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    tokenizer: Tokenizer | None = None,
    rng_state: Mapping[str, Any] | None = None,
    keep: int = 2,
    train_config: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``run_dir/step-<step>/`` atomically, point ``latest`` at it, keep the last ``keep``.

    Args:
        run_dir: the run folder (created if needed).
        model: its ``state_dict()`` and config are saved.
        step: optimizer updates done so far; names the folder.
        stage: ``"align"`` or ``"instruct"`` (any string), so a later run knows what it loads.
        optimizer: its state, flattened (see :func:`flatten_optimizer_state`).
        parameter_names: the names of the optimizer's parameters, in its order; checked on load.
        scheduler_state, sampler_state: small dicts; tensors among their values go to safetensors.
        metrics: every metrics record so far (one dict per step).
        args: the command line, for the record.
        extra: anything else JSON-able.
        tokenizer: saved as ``tokenizer.json`` (default: none is written).
        rng_state: from :func:`capture_rng_state` (default: captured now).
        keep: how many step folders to keep (the new one included); older ones are deleted
            only after the new one is complete and ``latest`` points to it.
        train_config: the run's training settings (data path, validation fraction, seed ...), JSON-able;
            read back by :func:`read_train_config` so a resumed run and ``evaluate`` use the run's own data.

    Returns:
        The new step folder.
    """
    if keep < 1:
        raise ValueError(f"keep must be at least 1 (got {keep})")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    _clean_leftovers(run_dir)
    name = step_folder_name(step)
    temporary = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=run_dir))
    try:
        _write_checkpoint_files(
            temporary, model, step, stage, optimizer, parameter_names, scheduler_state, sampler_state,
            metrics, args, extra, tokenizer, rng_state if rng_state is not None else capture_rng_state(),
            train_config,
        )
        fsync_dir(temporary)
        final = run_dir / name
        replace_folder(temporary, final)
    except BaseException:
        # An error (or Ctrl-C) while writing: remove our half-written folder. A process killed
        # outright leaves it behind, but its dot-name keeps it from ever being read.
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    atomic_write_text(run_dir / LATEST, name + "\n")
    _prune(run_dir, step, keep)
    return final


def _write_checkpoint_files(
    folder: Path, model, step, stage, optimizer, parameter_names, scheduler_state, sampler_state,
    metrics, args, extra, tokenizer, rng_state, train_config=None,
) -> None:
    files: dict[str, dict[str, Any]] = {}

    _write_tensors(folder / MODEL_FILE, model.state_dict(), _tensor_metadata(CHECKPOINT_FORMAT, model.config))
    files[MODEL_FILE] = _file_record(folder / MODEL_FILE)
    for written in _write_hf_configs(folder, model.config).values():
        files[written.name] = _file_record(written)

    optimizer_json = None
    if optimizer is not None:
        optimizer_tensors, optimizer_json = flatten_optimizer_state(optimizer.state_dict())
        _write_tensors(folder / OPTIMIZER_FILE, optimizer_tensors, {"format": CHECKPOINT_FORMAT})
        files[OPTIMIZER_FILE] = _file_record(folder / OPTIMIZER_FILE)

    rng_tensors, rng_json = _split_tensors("rng", rng_state)
    sampler_tensors, sampler_json = _split_tensors("sampler", sampler_state)
    _write_tensors(folder / STATE_TENSORS_FILE, {**rng_tensors, **sampler_tensors}, {"format": CHECKPOINT_FORMAT})
    files[STATE_TENSORS_FILE] = _file_record(folder / STATE_TENSORS_FILE)

    if tokenizer is not None:
        tokenizer.save(folder / TOKENIZER_FILE)
        fsync_file(folder / TOKENIZER_FILE)
        files[TOKENIZER_FILE] = _file_record(folder / TOKENIZER_FILE)

    # state.json last: it lists the files above, so it is the folder's table of contents.
    state = {
        "format": CHECKPOINT_FORMAT,
        "step": int(step),
        "stage": stage,
        "config": model.config.to_dict(),
        "optimizer": optimizer_json,
        "parameter_names": None if parameter_names is None else list(parameter_names),
        "scheduler": None if scheduler_state is None else dict(scheduler_state),
        "sampler": None if sampler_state is None else sampler_json,
        "rng": rng_json,
        "metrics": [dict(m) for m in metrics],
        "args": None if args is None else dict(args),
        "extra": dict(extra or {}),
        "train_config": None if train_config is None else dict(train_config),
        "files": files,
    }
    _write_json(folder / STATE_FILE, state)


def _prune(run_dir: Path, new_step: int, keep: int) -> None:
    """Delete older step folders beyond the newest ``keep`` (the new one counts; later steps are left alone)."""
    older = [(s, p) for s, p in list_checkpoints(run_dir) if s < new_step]
    for _, path in older[: max(0, len(older) - (keep - 1))]:
        remove_tree(path)


# --------------------------------------------------------------------------- #
# Reading the small JSON files, checked
# --------------------------------------------------------------------------- #


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: the checkpoint folder {path.parent} is incomplete or not a checkpoint")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise CheckpointError(f"{path} is corrupt (not valid JSON: {error}); use an older checkpoint") from None


def _read_json_object(path: Path) -> dict[str, Any]:
    data = _read_json(path)
    if not isinstance(data, dict):
        raise CheckpointError(
            f"{path} is corrupt: it holds a JSON {type(data).__name__}, not an object; use an older checkpoint"
        )
    return data


def _config_from_dict(data: Any, where: Path) -> MIMOConfig:
    if not isinstance(data, dict):
        raise CheckpointError(f"{where}: the saved config is a JSON {type(data).__name__}, not an object")
    try:
        return MIMOConfig.from_dict(data)
    except (TypeError, ValueError, AttributeError) as error:
        raise CheckpointError(f"{where}: the saved config is not a valid MIMOConfig ({error})") from None


def _check_step(state: Mapping[str, Any], where: Path) -> int:
    step = state.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise CheckpointError(f"{where}: 'step' must be a non-negative integer, got {step!r}; use an older checkpoint")
    return step


# --------------------------------------------------------------------------- #
# Integrity: recorded SHA-256 of every file, and the config the weights were saved with
# --------------------------------------------------------------------------- #


def _check_file(path: Path, record: Any) -> None:
    """Check a file against its recorded ``{"bytes": ..., "sha256": ...}``."""
    if not isinstance(record, dict) or not {"bytes", "sha256"} <= set(record):
        raise CheckpointError(f"{path}: its recorded size and hash are malformed ({record!r}); use an older checkpoint")
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: the checkpoint folder {path.parent} is incomplete")
    actual = _file_record(path)
    if actual != {"bytes": record["bytes"], "sha256": record["sha256"]}:
        raise CheckpointError(
            f"{path} is corrupt: it has {actual['bytes']} bytes (sha256 {actual['sha256'][:12]}...) but the "
            f"checkpoint recorded {record['bytes']} bytes (sha256 {str(record['sha256'])[:12]}...); "
            "was it truncated, edited or copied incompletely? Use an older checkpoint"
        )


def record_model_folder(path: str | Path) -> Path:
    """Write ``path/manifest.json``: the size and SHA-256 of every file in a model folder, and its config.

    :func:`save_model_only` calls this; call it yourself after changing a model folder's files on purpose
    (``python -m mimo_lib.checkpoint record FOLDER``). Returns the manifest's path.
    """
    folder = Path(path)
    config = _config_from_dict(_read_json(folder / CONFIG_FILE), folder / CONFIG_FILE)
    files = {
        child.name: _file_record(child)
        for child in sorted(folder.iterdir())
        if child.is_file() and child.name != MANIFEST_FILE and not child.name.startswith(".")
    }
    if MODEL_FILE not in files:
        raise CheckpointError(f"{folder} has no {MODEL_FILE}: not a model folder")
    manifest = {"format": MODEL_FORMAT, "config": config.to_dict(), "files": files}
    return atomic_write_json(folder / MANIFEST_FILE, manifest)


def check_model_folder(path: str | Path) -> None:
    """Check every file of a model folder against its ``manifest.json``; raise :class:`CheckpointError` if any differs."""
    folder = Path(path)
    if not (folder / MANIFEST_FILE).is_file():
        raise CheckpointError(
            f"{folder} has no {MANIFEST_FILE} recording its files' SHA-256, so it cannot be checked; if you trust "
            f"it, record it with `python -m mimo_lib.checkpoint record {folder}`"
        )
    manifest = _read_json_object(folder / MANIFEST_FILE)
    files = manifest.get("files")
    if not isinstance(files, dict) or MODEL_FILE not in files or CONFIG_FILE not in files:
        raise CheckpointError(f"{folder / MANIFEST_FILE} does not list {MODEL_FILE} and {CONFIG_FILE}; it is corrupt")
    for name, record in files.items():
        if not isinstance(name, str) or "/" in name or "\\" in name or name.startswith("."):
            raise CheckpointError(f"{folder / MANIFEST_FILE} lists {name!r}, which is not a file name; it is corrupt")
        _check_file(folder / name, record)


def _recorded_files(folder: Path) -> dict[str, Any]:
    """``{file name: record}`` of a step folder (its state.json) or a model folder (its checked manifest)."""
    if (folder / STATE_FILE).is_file():
        files = _read_json_object(folder / STATE_FILE).get("files")
        if not isinstance(files, dict) or MODEL_FILE not in files:
            raise CheckpointError(f"{folder / STATE_FILE} does not record {MODEL_FILE}'s hash; it is corrupt")
        return files
    check_model_folder(folder)
    return _read_json_object(folder / MANIFEST_FILE)["files"]


def _config_differences(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            out += _config_differences(x, y, f"{prefix}{key}.")
        elif x != y:
            out.append(f"{prefix}{key}: {y!r} in the weights' record, {x!r} in the config")
    return out


def _check_config_matches_weights(config: MIMOConfig, metadata: Mapping[str, str], where: Path) -> None:
    """The config read from JSON must equal the one written into ``model.safetensors`` (what no shape shows)."""
    if "config" not in metadata:
        return  # a file written before configs were recorded in it: its hash was checked, nothing more to do
    try:
        saved = json.loads(metadata["config"])
    except json.JSONDecodeError:
        raise CheckpointError(f"{where}: its recorded config is not valid JSON; the file is corrupt") from None
    if not isinstance(saved, dict):
        raise CheckpointError(f"{where}: its recorded config is not a JSON object; the file is corrupt")
    differences = _config_differences(config.to_dict(), saved)
    if differences:
        raise CheckpointError(
            f"{where}: the config does not match the one these weights were saved with ("
            + "; ".join(differences[:5]) + ("; ..." if len(differences) > 5 else "")
            + "); restore the original config.json / state.json"
        )


# --------------------------------------------------------------------------- #
# Model size, before anything is allocated
# --------------------------------------------------------------------------- #


def _count_on_meta(config: MIMOConfig) -> int:
    with torch.device("meta"):
        model = MIMOModel(config)
    return sum(t.numel() for t in model.state_dict().values())


def estimate_num_parameters(config: MIMOConfig) -> int | None:
    """Elements of ``MIMOModel(config).state_dict()`` (parameters and buffers), without allocating any.

    Every block of a tower or of the decoder has the same size, so the count is ``a + b_v L_v + b_a L_a +
    b_l L_l`` in the three depths: it is measured on models of depth 1 and 2 built on the ``meta`` device
    (no memory, milliseconds) and extrapolated, so ``num_layers=100000`` costs nothing either.
    None for hf-* towers, whose size is the transformers checkpoint's.
    """
    if config.vision.backbone_type == HF_BACKBONES["vision"] or config.audio.backbone_type == HF_BACKBONES["audio"]:
        return None

    def with_depths(v: int, a: int, lm: int) -> MIMOConfig:
        return replace(
            config,
            vision=replace(config.vision, num_layers=v, select_layer=-1),
            audio=replace(config.audio, num_layers=a),
            language_model=replace(config.language_model, num_layers=lm),
        )

    base = _count_on_meta(with_depths(1, 1, 1))
    per_vision = _count_on_meta(with_depths(2, 1, 1)) - base
    per_audio = _count_on_meta(with_depths(1, 2, 1)) - base
    per_lm = _count_on_meta(with_depths(1, 1, 2)) - base
    return (
        base
        + per_vision * (config.vision.num_layers - 1)
        + per_audio * (config.audio.num_layers - 1)
        + per_lm * (config.language_model.num_layers - 1)
    )


def memory_bytes() -> int | None:
    """This machine's physical memory in bytes (None where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


class ModelSizeError(MimoInputError):
    """A config asks for a model that cannot fit in this machine's memory."""


def check_model_size(
    config: MIMOConfig,
    bytes_per_parameter: int = LOAD_BYTES_PER_PARAMETER,
    what: str = "the model",
    count: int | None = None,
) -> int | None:
    """Refuse a config whose model would not fit in memory, before building it; returns the parameter estimate.

    ``bytes_per_parameter``: :data:`LOAD_BYTES_PER_PARAMETER` to load a model, :data:`TRAIN_BYTES_PER_PARAMETER`
    to train one (weights, gradients and AdamW's moments). ``count``: an estimate already made.
    """
    count = estimate_num_parameters(config) if count is None else count
    available = memory_bytes()
    if count is not None and available is not None and count * bytes_per_parameter > available:
        raise ModelSizeError(
            f"{what} would have {count:,} parameters, {count * bytes_per_parameter / 1e9:.1f} GB at "
            f"{bytes_per_parameter} bytes each, more than this machine's {available / 1e9:.1f} GB of memory; "
            "use fewer layers or a smaller hidden size"
        )
    return count


# --------------------------------------------------------------------------- #
# Reading weights, checked
# --------------------------------------------------------------------------- #


def _read_header(path: Path) -> tuple[dict[str, str], dict[str, tuple[int, ...]]]:
    """``(metadata, {name: shape})`` of a safetensors file, without reading its tensors."""
    try:
        with safe_open(str(path), framework="pt") as f:
            shapes = {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}
            return dict(f.metadata() or {}), shapes
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path} is corrupt or not a safetensors file ({error}); use an older checkpoint") from None


def _read_tensors(path: Path, record: Mapping[str, Any] | None = None) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: the checkpoint folder {path.parent} is incomplete")
    if record is not None:
        _check_file(path, record)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path} is corrupt or not a safetensors file ({error}); use an older checkpoint") from None


def _check_finite(tensors: Mapping[str, torch.Tensor], where: Path) -> None:
    bad = [k for k, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise CheckpointError(
            f"{where} holds NaN or infinite values in {len(bad)} tensor(s) ({', '.join(bad[:3])}"
            f"{', ...' if len(bad) > 3 else ''}): training diverged or the file is damaged; use an older checkpoint"
        )


def _read_model_weights(folder: Path, config: MIMOConfig, record: Mapping[str, Any] | None) -> dict[str, torch.Tensor]:
    """``model.safetensors`` of ``folder``: hash, recorded config and size checked before reading, finiteness after."""
    path = folder / MODEL_FILE
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: the checkpoint folder {folder} is incomplete")
    if record is not None:
        _check_file(path, record)
    metadata, shapes = _read_header(path)
    _check_config_matches_weights(config, metadata, path)
    expected = estimate_num_parameters(config)
    stored = sum(math.prod(shape) for shape in shapes.values())
    if expected is not None and expected != stored:
        raise CheckpointError(
            f"{path} holds {stored:,} numbers but its config describes a model of {expected:,}: the config "
            "does not belong to these weights; restore the original config"
        )
    check_model_size(config, what=f"the model of {folder}", count=expected)
    state = _read_tensors(path)
    _check_finite(state, path)
    return state


# --------------------------------------------------------------------------- #
# Loading a training checkpoint
# --------------------------------------------------------------------------- #


@dataclass
class Checkpoint:
    """Everything :func:`save_checkpoint` wrote, read back (tensors on the CPU)."""

    path: Path  # the step folder that was read
    config: MIMOConfig
    step: int
    stage: str | None
    model_state: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any] | None  # ready for optimizer.load_state_dict
    parameter_names: list[str] | None
    scheduler_state: dict[str, Any] | None
    sampler_state: dict[str, Any] | None  # tensors put back among the JSON values
    rng_state: dict[str, Any] | None  # for restore_rng_state
    metrics: list[dict[str, Any]] = field(default_factory=list)
    args: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def train_config(self) -> dict[str, Any] | None:
        """The training settings the run saved (``extra["train_config"]`` or ``state["train_config"]``), if any."""
        found = self.extra.get("train_config")
        return found if isinstance(found, dict) else None


def resolve_checkpoint(path: str | Path) -> Path:
    """The folder to read for ``path``: a run folder's ``latest``, or the step/model folder itself."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist: pass a run folder (--save of a run) or a step folder")
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a file; pass its folder (a run folder or a step folder)")
    pointer = path / LATEST
    if pointer.is_file():
        try:
            name = pointer.read_text(encoding="utf-8").strip()
        except UnicodeDecodeError:
            name = ""
        target = path / name
        if not name or not STEP_FOLDER.match(name) or not target.is_dir():
            raise CheckpointError(
                f"{pointer} points to {name!r}, which is not a step folder in {path}; pass a step folder "
                f"({', '.join(p.name for _, p in list_checkpoints(path)) or 'none found'}) instead"
            )
        return target
    if (path / STATE_FILE).is_file() or (path / CONFIG_FILE).is_file():
        return path
    steps = list_checkpoints(path)
    hint = f"; it holds {', '.join(p.name for _, p in steps)}: pass one of them" if steps else ""
    raise CheckpointError(
        f"{path} is not a checkpoint: expected a run folder with a '{LATEST}' file, a step folder with "
        f"{STATE_FILE}, or a model folder with {CONFIG_FILE}{hint}"
    )


def is_training_checkpoint(path: str | Path) -> bool:
    """True for a run folder or step folder (with optimizer state), False for a :func:`save_model_only` folder."""
    return (resolve_checkpoint(path) / STATE_FILE).is_file()


def read_checkpoint_config(path: str | Path) -> MIMOConfig:
    """The model config of a checkpoint or model folder, without reading any weights."""
    folder = resolve_checkpoint(path)
    if (folder / STATE_FILE).is_file():
        return _config_from_dict(_read_json_object(folder / STATE_FILE).get("config"), folder / STATE_FILE)
    return _config_from_dict(_read_json_object(folder / CONFIG_FILE), folder / CONFIG_FILE)


def read_checkpoint_state(path: str | Path) -> dict[str, Any]:
    """``state.json`` of a training checkpoint (step, stage, args, metrics ...), without reading tensors."""
    folder = resolve_checkpoint(path)
    if not (folder / STATE_FILE).is_file():
        raise CheckpointError(f"{folder} is a model folder (save_model_only), not a training checkpoint")
    state = _read_json_object(folder / STATE_FILE)
    _check_step(state, folder / STATE_FILE)
    return state


def read_train_config(path: str | Path) -> dict[str, Any] | None:
    """The training settings a run saved with its checkpoint (``data_path``, ``valid_fraction``, ``seed`` ...).

    Looks in ``state.json`` under ``"train_config"`` (or ``extra["train_config"]``) of a step folder, and in
    ``train_config.json`` of a model folder. None when the checkpoint has none (older runs, chapters' models)
    or it is not a JSON object: callers fall back to their own defaults.
    """
    folder = resolve_checkpoint(path)
    if (folder / STATE_FILE).is_file():
        state = read_checkpoint_state(folder)
        found = state.get("train_config")
        if found is None and isinstance(state.get("extra"), dict):
            found = state["extra"].get("train_config")
    elif (folder / TRAIN_CONFIG_FILE).is_file():
        found = _read_json(folder / TRAIN_CONFIG_FILE)
    else:
        found = None
    return found if isinstance(found, dict) else None


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a training checkpoint: a run folder (follows ``latest``) or one of its step folders.

    Every file is checked against the size and SHA-256 that ``state.json`` recorded,
    so a truncated or damaged file is reported by name instead of loading garbage;
    the config against the one recorded in ``model.safetensors``; every tensor for NaN and inf.
    """
    folder = resolve_checkpoint(path)
    state = read_checkpoint_state(folder)
    if state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{folder / STATE_FILE}: unknown format {state.get('format')!r} (expected {CHECKPOINT_FORMAT})")
    files = state.get("files")
    if not isinstance(files, dict) or MODEL_FILE not in files:
        raise CheckpointError(f"{folder / STATE_FILE} does not record {MODEL_FILE}'s hash; it is corrupt")
    config = read_checkpoint_config(folder)
    model_state = _read_model_weights(folder, config, files[MODEL_FILE])
    optimizer_state = None
    if state.get("optimizer") is not None:
        optimizer_tensors = _read_tensors(folder / OPTIMIZER_FILE, files.get(OPTIMIZER_FILE))
        _check_finite(optimizer_tensors, folder / OPTIMIZER_FILE)
        try:
            optimizer_state = unflatten_optimizer_state(optimizer_tensors, state["optimizer"])
        except (KeyError, ValueError, TypeError, AttributeError) as error:
            raise CheckpointError(f"{folder / STATE_FILE}: the optimizer record is malformed ({error!r})") from None
    other = _read_tensors(folder / STATE_TENSORS_FILE, files.get(STATE_TENSORS_FILE))
    for name, record in files.items():
        if name not in (MODEL_FILE, OPTIMIZER_FILE, STATE_TENSORS_FILE):
            _check_file(folder / name, record)
    extra = state.get("extra")
    extra = dict(extra) if isinstance(extra, dict) else {}
    if isinstance(state.get("train_config"), dict):
        extra.setdefault("train_config", state["train_config"])
    return Checkpoint(
        path=folder,
        config=config,
        step=_check_step(state, folder / STATE_FILE),
        stage=state.get("stage"),
        model_state=model_state,
        optimizer_state=optimizer_state,
        parameter_names=state.get("parameter_names"),
        scheduler_state=state.get("scheduler"),
        sampler_state=_join_tensors("sampler", other, state.get("sampler")),
        rng_state=_join_tensors("rng", other, state.get("rng")),
        metrics=list(state.get("metrics") or []),
        args=state.get("args"),
        extra=extra,
    )


def _load_weights(model: torch.nn.Module, state: Mapping[str, torch.Tensor], where: Path) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise CheckpointError(f"{where} does not fit the model built from its config: {error}") from None


# --------------------------------------------------------------------------- #
# Building a model from a folder alone (hf-* towers included)
# --------------------------------------------------------------------------- #


@contextlib.contextmanager
def _hf_towers_from_folder(folder: Path, config: MIMOConfig, state: Mapping[str, torch.Tensor]) -> Iterator[MIMOConfig]:
    """A config whose hf-* towers build from ``folder`` alone: its copy of each transformers config plus the
    tower's weights out of ``model.safetensors``, in a temporary folder (the recorded ``pretrained_path`` is
    not read, so a model folder can be moved or copied to another machine)."""
    prefixes = {"vision": "vision_tower.model.", "audio": "audio_tower.encoder."}
    hf_prefix = {"vision": "", "audio": "encoder."}  # CLIPVisionModel's own keys; WhisperModel's encoder keys
    with tempfile.TemporaryDirectory(prefix=".tmp-hf-") as temporary:
        built = config
        for modality, backbone in HF_BACKBONES.items():
            tower = getattr(config, modality)
            saved_config = folder / HF_CONFIG_FILES[modality]
            if tower.backbone_type != backbone or not saved_config.is_file():
                continue  # an older folder without the copy: the tower is built from pretrained_path as before
            hf_folder = Path(temporary) / modality
            hf_folder.mkdir()
            shutil.copyfile(saved_config, hf_folder / CONFIG_FILE)
            weights = {
                hf_prefix[modality] + k[len(prefixes[modality]):]: v
                for k, v in state.items() if k.startswith(prefixes[modality])
            }
            save_file({k: v.contiguous() for k, v in weights.items()}, str(hf_folder / MODEL_FILE))
            built = replace(built, **{modality: replace(tower, pretrained_path=str(hf_folder))})
        yield built


def _build_model(folder: Path, config: MIMOConfig, state: Mapping[str, torch.Tensor]) -> MIMOModel:
    with _hf_towers_from_folder(folder, config, state) as build_config:
        if build_config is config:
            model = MIMOModel(config)
        else:
            with _quiet_transformers():
                model = MIMOModel(build_config)
            # the model remembers the config it was saved with, not the temporary folder
            model.config = config
            model.vision_tower.config = config.vision
            model.audio_tower.config = config.audio
    _load_weights(model, state, folder / MODEL_FILE)
    return model


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """transformers reports the Whisper decoder weights that a tower does not need; they are not the user's business."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        yield
        return
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


# --------------------------------------------------------------------------- #
# The small final checkpoint: weights + config (+ tokenizer)
# --------------------------------------------------------------------------- #


def save_model_only(
    model: MIMOModel, path: str | Path, tokenizer: Tokenizer | None = None, train_config: Mapping[str, Any] | None = None
) -> Path:
    """Write ``path/`` with ``model.safetensors``, ``config.json`` (and ``tokenizer.json``) and ``manifest.json``, atomically.

    This is what chapters, ``python -m mimo_lib.generate`` and ``python -m mimo_lib.evaluate`` load:
    no optimizer, no RNG, a fraction of a training checkpoint's size. ``train_config`` (the run's training
    settings) goes to ``train_config.json``, so ``evaluate`` can default to the run's own data.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".tmp-{path.name}-", dir=path.parent))
    try:
        _write_tensors(temporary / MODEL_FILE, model.state_dict(), _tensor_metadata(MODEL_FORMAT, model.config))
        _write_hf_configs(temporary, model.config)
        if tokenizer is not None:
            tokenizer.save(temporary / TOKENIZER_FILE)
            fsync_file(temporary / TOKENIZER_FILE)
        if train_config is not None:
            _write_json(temporary / TRAIN_CONFIG_FILE, dict(train_config))
        _write_json(temporary / CONFIG_FILE, model.config.to_dict())
        record_model_folder(temporary)  # last: lists every file above, marks the folder complete
        fsync_dir(temporary)
        replace_folder(temporary, path)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return path


def load_model(path: str | Path, device: str | torch.device = "cpu") -> MIMOModel:
    """A :class:`MIMOModel` in eval mode from a model folder, a run folder or a step folder.

    Every file is checked against its recorded SHA-256, the config against the one recorded with the weights
    and against the machine's memory before anything is allocated, and the weights for NaN and inf.
    """
    folder = resolve_checkpoint(path)
    config = read_checkpoint_config(folder)
    files = _recorded_files(folder)
    state = _read_model_weights(folder, config, files[MODEL_FILE])
    model = _build_model(folder, config, state)
    return model.to(device).eval()


def load_tokenizer(path: str | Path) -> Tokenizer:
    """The tokenizer saved with a checkpoint, or :meth:`Tokenizer.default` if none was saved."""
    folder = resolve_checkpoint(path)
    if (folder / TOKENIZER_FILE).is_file():
        try:
            return Tokenizer.from_file(folder / TOKENIZER_FILE)
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as error:
            raise CheckpointError(f"{folder / TOKENIZER_FILE} is corrupt ({error}); use an older checkpoint") from None
    return Tokenizer.default()


# --------------------------------------------------------------------------- #
# Towers out of a trained model
# --------------------------------------------------------------------------- #

TOWER_KEYS = {"vision": "vision_tower.", "audio": "audio_tower."}


def read_tower_weights(path: str | Path, modality: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``(tower config dict, tower state dict)`` of the ``"vision"`` or ``"audio"`` tower of a trained model
    (model folder, run folder or step folder), checked like :func:`load_model` checks it.

    This is what ``MIMOModel.load_towers`` needs to take a trained model folder instead of a pretraining file.
    """
    if modality not in TOWER_KEYS:
        raise ValueError(f"modality must be one of {tuple(TOWER_KEYS)}, got {modality!r}")
    folder = resolve_checkpoint(path)
    config = read_checkpoint_config(folder)
    state = _read_model_weights(folder, config, _recorded_files(folder)[MODEL_FILE])
    prefix = TOWER_KEYS[modality]
    tower_state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return getattr(config, modality).__dict__.copy(), tower_state


def export_towers(path: str | Path, out_dir: str | Path) -> dict[str, Path]:
    """Write the towers of a trained model as ``out_dir/{vision,audio}_tower.safetensors``.

    The files have the layout of ``mimo_lib.pretrain_towers``' checkpoints (keys ``tower.*``, metadata
    ``modality`` and ``tower_config``), so ``MIMOModel.load_towers`` and ``load_tower_weights`` read them
    like pretrained towers. Returns ``{modality: file}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    folder = resolve_checkpoint(path)
    written = {}
    for modality in TOWER_KEYS:
        tower_config, state = read_tower_weights(folder, modality)
        metadata = {
            "modality": modality,
            "tower_config": json.dumps(tower_config),
            "extra": json.dumps({"exported_from": str(folder)}),
        }
        target = out / f"{modality}_tower.safetensors"
        atomic_save_tensors(target, {f"tower.{k}": v for k, v in state.items()}, metadata)
        written[modality] = target
    return written


# --------------------------------------------------------------------------- #
# Command line: record or check a model folder, export towers
# --------------------------------------------------------------------------- #


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mimo_lib.checkpoint",
        description="Record or check the SHA-256 of a model folder's files; export a trained model's towers.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("record", help="write FOLDER/manifest.json (after changing its files on purpose)").add_argument(
        "folder", type=Path
    )
    commands.add_parser("check", help="check a model, run or step folder and its weights").add_argument(
        "folder", type=Path
    )
    export = commands.add_parser("export-towers", help="write a trained model's towers as pretrained tower files")
    export.add_argument("folder", type=Path)
    export.add_argument("out_dir", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "record":
            if not args.folder.is_dir() or not (args.folder / CONFIG_FILE).is_file():
                parser.error(f"{args.folder} is not a model folder (no {CONFIG_FILE})")
            print(record_model_folder(args.folder))
        elif args.command == "check":
            load_model(args.folder)
            print(f"{args.folder}: every file matches its record; the weights fit the config")
        else:
            for path in export_towers(args.folder, args.out_dir).values():
                print(path)
    except MimoInputError as error:
        parser.error(str(error))
    return 0


__all__ = [
    "Checkpoint",
    "CheckpointError",
    "ModelSizeError",
    "atomic_write_text",
    "capture_rng_state",
    "check_model_folder",
    "check_model_size",
    "estimate_num_parameters",
    "export_towers",
    "flatten_optimizer_state",
    "is_training_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_model",
    "load_tokenizer",
    "read_checkpoint_config",
    "read_checkpoint_state",
    "read_tower_weights",
    "read_train_config",
    "record_model_folder",
    "resolve_checkpoint",
    "restore_rng_state",
    "save_checkpoint",
    "save_model_only",
    "step_folder_name",
    "unflatten_optimizer_state",
]


if __name__ == "__main__":
    sys.exit(main())
