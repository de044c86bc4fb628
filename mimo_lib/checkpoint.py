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
      final/                    save_model_only: model.safetensors + config.json + tokenizer.json

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

Two writers saving into one run folder at the same time are not supported.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

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
STEP_FOLDER = re.compile(r"^step-(\d+)$")
_TEMPORARY_PREFIXES = (".tmp-", ".trash-")


class CheckpointError(MimoInputError):
    """A checkpoint is missing, incomplete, corrupt, or does not fit the model or optimizer."""


def step_folder_name(step: int) -> str:
    """``step-000200``: zero-padded so that folders sort by step in a file browser."""
    return f"step-{step:06d}"


# --------------------------------------------------------------------------- #
# Writing files durably
# --------------------------------------------------------------------------- #


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # Windows cannot open a folder; its renames are durable enough for us
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json(path: Path, data: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())


def _write_tensors(path: Path, tensors: Mapping[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    # safetensors wants contiguous CPU tensors; .cpu() on a CPU tensor is free.
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
    _fsync_file(path)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically: a reader sees the old content or the new, never half."""
    path = Path(path)
    fd, temporary = tempfile.mkstemp(prefix=f".tmp-{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _file_record(path: Path) -> dict[str, Any]:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return {"bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def _remove_tree(path: Path) -> None:
    """Delete a folder: first rename it to a dot-name, so a half-deleted folder never looks like a checkpoint."""
    trash = path.with_name(f".trash-{path.name}-{os.getpid()}-{os.urandom(4).hex()}")
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def _publish_folder(temporary: Path, final: Path) -> None:
    """Rename the complete ``temporary`` folder to ``final``, replacing an older folder of that name."""
    if final.exists():
        # A folder of this name exists only if a previous run wrote this step and was stopped before
        # ``latest`` pointed at it (or we re-save a model folder). Move it aside, then put ours in place.
        _remove_tree(final)
    os.replace(temporary, final)
    _fsync_dir(final.parent)


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
        )
        _fsync_dir(temporary)
        final = run_dir / name
        _publish_folder(temporary, final)
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
    metrics, args, extra, tokenizer, rng_state,
) -> None:
    files: dict[str, dict[str, Any]] = {}

    _write_tensors(folder / MODEL_FILE, model.state_dict(), {"format": CHECKPOINT_FORMAT})
    files[MODEL_FILE] = _file_record(folder / MODEL_FILE)

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
        _fsync_file(folder / TOKENIZER_FILE)
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
        "files": files,
    }
    _write_json(folder / STATE_FILE, state)


def _prune(run_dir: Path, new_step: int, keep: int) -> None:
    """Delete older step folders beyond the newest ``keep`` (the new one counts; later steps are left alone)."""
    older = [(s, p) for s, p in list_checkpoints(run_dir) if s < new_step]
    for _, path in older[: max(0, len(older) - (keep - 1))]:
        _remove_tree(path)


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

    def build_model(self) -> MIMOModel:
        """A :class:`MIMOModel` of the saved config with the saved weights (in training mode)."""
        model = MIMOModel(self.config)
        _load_weights(model, self.model_state, self.path / MODEL_FILE)
        return model


def resolve_checkpoint(path: str | Path) -> Path:
    """The folder to read for ``path``: a run folder's ``latest``, or the step/model folder itself."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist: pass a run folder (--save of a run) or a step folder")
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a file; pass its folder (a run folder or a step folder)")
    pointer = path / LATEST
    if pointer.is_file():
        name = pointer.read_text(encoding="utf-8").strip()
        target = path / name
        if not name or not target.is_dir():
            raise CheckpointError(
                f"{pointer} points to {name!r}, which is not a folder in {path}; pass a step folder "
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


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: the checkpoint folder {path.parent} is incomplete or not a checkpoint")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path} is corrupt (not valid JSON: {error}); use an older checkpoint") from None


def _read_tensors(path: Path, record: Mapping[str, Any] | None = None) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: the checkpoint folder {path.parent} is incomplete")
    if record is not None:
        actual = _file_record(path)
        if actual != dict(record):
            raise CheckpointError(
                f"{path} is corrupt: it has {actual['bytes']} bytes (sha256 {actual['sha256'][:12]}...) but the "
                f"checkpoint recorded {record['bytes']} bytes (sha256 {record['sha256'][:12]}...); "
                "was it truncated or copied incompletely? Use an older checkpoint"
            )
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path} is corrupt or not a safetensors file ({error}); use an older checkpoint") from None


def read_checkpoint_config(path: str | Path) -> MIMOConfig:
    """The model config of a checkpoint or model folder, without reading any weights."""
    folder = resolve_checkpoint(path)
    if (folder / STATE_FILE).is_file():
        data = _read_json(folder / STATE_FILE)["config"]
    else:
        data = _read_json(folder / CONFIG_FILE)
    try:
        return MIMOConfig.from_dict(data)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{folder}: the saved config is not a valid MIMOConfig ({error})") from None


def read_checkpoint_state(path: str | Path) -> dict[str, Any]:
    """``state.json`` of a training checkpoint (step, stage, args, metrics ...), without reading tensors."""
    folder = resolve_checkpoint(path)
    if not (folder / STATE_FILE).is_file():
        raise CheckpointError(f"{folder} is a model folder (save_model_only), not a training checkpoint")
    return _read_json(folder / STATE_FILE)


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a training checkpoint: a run folder (follows ``latest``) or one of its step folders.

    Every file is checked against the size and SHA-256 that ``state.json`` recorded,
    so a truncated or damaged file is reported by name instead of loading garbage.
    """
    folder = resolve_checkpoint(path)
    state = read_checkpoint_state(folder)
    if state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{folder / STATE_FILE}: unknown format {state.get('format')!r} (expected {CHECKPOINT_FORMAT})")
    files = state.get("files", {})
    model_state = _read_tensors(folder / MODEL_FILE, files.get(MODEL_FILE))
    optimizer_state = None
    if state.get("optimizer") is not None:
        optimizer_tensors = _read_tensors(folder / OPTIMIZER_FILE, files.get(OPTIMIZER_FILE))
        optimizer_state = unflatten_optimizer_state(optimizer_tensors, state["optimizer"])
    other = _read_tensors(folder / STATE_TENSORS_FILE, files.get(STATE_TENSORS_FILE))
    if TOKENIZER_FILE in files:
        _check_file(folder / TOKENIZER_FILE, files[TOKENIZER_FILE])
    return Checkpoint(
        path=folder,
        config=read_checkpoint_config(folder),
        step=int(state["step"]),
        stage=state.get("stage"),
        model_state=model_state,
        optimizer_state=optimizer_state,
        parameter_names=state.get("parameter_names"),
        scheduler_state=state.get("scheduler"),
        sampler_state=_join_tensors("sampler", other, state.get("sampler")),
        rng_state=_join_tensors("rng", other, state.get("rng")),
        metrics=list(state.get("metrics", [])),
        args=state.get("args"),
        extra=dict(state.get("extra", {})),
    )


def _check_file(path: Path, record: Mapping[str, Any]) -> None:
    """Check a non-tensor file against its recorded size and hash."""
    if not path.is_file() or _file_record(path) != dict(record):
        raise CheckpointError(f"{path} is missing or corrupt (it does not match state.json); use an older checkpoint")


def _load_weights(model: torch.nn.Module, state: Mapping[str, torch.Tensor], where: Path) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise CheckpointError(f"{where} does not fit the model built from its config: {error}") from None


# --------------------------------------------------------------------------- #
# The small final checkpoint: weights + config (+ tokenizer)
# --------------------------------------------------------------------------- #


def save_model_only(model: MIMOModel, path: str | Path, tokenizer: Tokenizer | None = None) -> Path:
    """Write ``path/`` with ``model.safetensors`` and ``config.json`` (and ``tokenizer.json``), atomically.

    This is what chapters, ``python -m mimo_lib.generate`` and ``python -m mimo_lib.evaluate`` load:
    no optimizer, no RNG, a fraction of a training checkpoint's size.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".tmp-{path.name}-", dir=path.parent))
    try:
        _write_tensors(temporary / MODEL_FILE, model.state_dict(), {"format": MODEL_FORMAT})
        if tokenizer is not None:
            tokenizer.save(temporary / TOKENIZER_FILE)
            _fsync_file(temporary / TOKENIZER_FILE)
        _write_json(temporary / CONFIG_FILE, model.config.to_dict())  # last: marks the folder complete
        _fsync_dir(temporary)
        _publish_folder(temporary, path)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return path


def load_model(path: str | Path, device: str | torch.device = "cpu") -> MIMOModel:
    """A :class:`MIMOModel` in eval mode from a model folder, a run folder or a step folder."""
    folder = resolve_checkpoint(path)
    config = read_checkpoint_config(folder)
    record = None
    if (folder / STATE_FILE).is_file():
        record = read_checkpoint_state(folder).get("files", {}).get(MODEL_FILE)
    state = _read_tensors(folder / MODEL_FILE, record)
    model = MIMOModel(config)
    _load_weights(model, state, folder / MODEL_FILE)
    return model.to(device).eval()


def load_tokenizer(path: str | Path) -> Tokenizer:
    """The tokenizer saved with a checkpoint, or :meth:`Tokenizer.default` if none was saved."""
    folder = resolve_checkpoint(path)
    if (folder / TOKENIZER_FILE).is_file():
        return Tokenizer.from_file(folder / TOKENIZER_FILE)
    return Tokenizer.default()


__all__ = [
    "Checkpoint",
    "CheckpointError",
    "atomic_write_text",
    "capture_rng_state",
    "flatten_optimizer_state",
    "is_training_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_model",
    "load_tokenizer",
    "read_checkpoint_config",
    "read_checkpoint_state",
    "resolve_checkpoint",
    "restore_rng_state",
    "save_checkpoint",
    "save_model_only",
    "step_folder_name",
    "unflatten_optimizer_state",
]
