"""What the vision and audio towers share: fixed sinusoids, local Hugging Face folders, pretrained checkpoints.

Three things both towers need, written once:

* :func:`sinusoids`: the fixed sine/cosine table that codes a position (Whisper's audio positions, the
  vision tower's initial patch positions and frame embeddings);
* :func:`hf_checkpoint_folder` and :func:`import_transformers`: the ``hf-clip`` and ``hf-whisper``
  backbones read a ``save_pretrained`` folder from the local disk, never from the network;
* tower checkpoints: ``python -m mimo_lib.pretrain_towers`` writes one safetensors file per tower, the
  tower's weights under ``tower.`` and its config in the file's metadata. :func:`load_tower_weights` loads
  one into a tower after :func:`tower_config_differences` has checked that it was trained for that tower;
  :func:`shipped_checkpoint` is where the committed ones live.

This module builds no tower (it imports neither :mod:`mimo_lib.vision_tower` nor
:mod:`mimo_lib.audio_tower`), so both can import it.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mimo_lib.errors import MimoInputError

#: The committed tower checkpoints (``{modality}_tower_{preset}.safetensors``) and the committed model.
PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"

#: Tower config fields that may differ between a checkpoint and the tower it is loaded into.
IGNORED_TOWER_FIELDS = ("pretrained_path",)


class TowerCheckpointError(MimoInputError):
    """A tower checkpoint is missing, is not a tower checkpoint, or was trained for another tower."""


# --------------------------------------------------------------------------- #
# Fixed sinusoids
# --------------------------------------------------------------------------- #


def sinusoids(num_positions: int, dim: int, max_timescale: float = 10_000.0, whisper_spacing: bool = True) -> torch.Tensor:
    """``(num_positions, dim)``: ``dim // 2`` sines, then ``dim // 2`` cosines (then one zero column if ``dim`` is odd).

    Channel ``i`` of each half turns at ``max_timescale ** (-i / n)`` radians per position, from 1 down:

    * ``whisper_spacing=True``: ``n = dim/2 - 1``, so the slowest channel turns at exactly
      ``1 / max_timescale`` (Whisper's ``sinusoids``, the audio tower's positions);
    * ``whisper_spacing=False``: ``n = dim/2``, the Transformer's and MAE's spacing, one step short of it
      (the vision tower's initial positions and frame embeddings).
    """
    half = dim // 2
    steps = max(half - 1, 1) if whisper_spacing else max(half, 1)
    rates = torch.exp(-math.log(max_timescale) * torch.arange(half) / steps)  # (dim/2,)
    angles = torch.arange(num_positions)[:, None] * rates[None, :]  # (P, dim/2)
    table = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)  # (P, 2 * (dim/2))
    return torch.nn.functional.pad(table, (0, dim - 2 * half))  # (P, dim)


# --------------------------------------------------------------------------- #
# transformers checkpoints in a local folder (hf-clip, hf-whisper)
# --------------------------------------------------------------------------- #


def import_transformers(backbone_type: str):
    """The ``transformers`` module, or an ImportError that says how to install it."""
    try:
        import transformers
    except ImportError as error:
        raise ImportError(
            f'backbone_type "{backbone_type}" needs the optional transformers library: pip install -e ".[hf]"'
        ) from error
    return transformers


def hf_checkpoint_folder(path: str | Path | None, backbone_type: str, hub_name: str) -> Path:
    """``path`` as a local folder holding a ``config.json`` (what ``save_pretrained`` writes), or a clear error.

    ``hub_name`` (e.g. ``"openai/whisper-base"``) only shows in the messages, as an example to download.
    Nothing is ever downloaded: a hub name given as ``path`` is refused like any missing folder.
    """
    local_name = "checkpoints/" + hub_name.split("/")[-1]
    how = (
        f"mimo_lib never downloads weights: download the checkpoint beforehand, e.g. "
        f"`hf download {hub_name} --local-dir {local_name}` (or from_pretrained(...).save_pretrained({local_name!r}) "
        f"on a machine with internet access), and point pretrained_path at that folder"
    )
    if path is None:
        raise ValueError(f'backbone_type "{backbone_type}" needs pretrained_path, a local checkpoint folder; {how}')
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{backbone_type} pretrained_path {str(path)!r} is not a local folder (a hub name such as "
            f"{hub_name!r} is not fetched); {how}"
        )
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"{backbone_type} pretrained_path {str(path)!r} has no config.json: point it at a folder written by "
            f"save_pretrained (config.json + model.safetensors); {how}"
        )
    return folder


# --------------------------------------------------------------------------- #
# Tower checkpoints of mimo_lib.pretrain_towers
# --------------------------------------------------------------------------- #


def shipped_checkpoint(modality: str, preset: str = "toy") -> Path:
    """Path of the committed tower checkpoint of ``modality`` (``"vision"`` or ``"audio"``) for a preset."""
    return PRETRAINED_DIR / f"{modality}_tower_{preset}.safetensors"


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata (text) of a safetensors file: for a tower checkpoint, ``modality``, ``tower_config``, ..."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.metadata() or {}


def _check_tower_checkpoint_file(path: Path, expected: str) -> None:
    if not path.is_file():
        raise TowerCheckpointError(
            f"{expected} checkpoint {path} not found; `python -m mimo_lib.pretrain_towers` makes one"
        )


def read_tower_config(path: str | Path, expected: str = "tower") -> dict[str, Any]:
    """The tower config (a dict of fields) a tower checkpoint was trained for."""
    path = Path(path)
    _check_tower_checkpoint_file(path, expected)
    try:
        return json.loads(read_metadata(path)["tower_config"])
    except Exception as error:  # not safetensors, no metadata, or no tower config in it
        raise TowerCheckpointError(
            f"{path} is not a tower checkpoint of mimo_lib.pretrain_towers ({type(error).__name__}: {error})"
        ) from None


def tower_config_differences(saved: dict[str, Any], current: Any) -> list[str]:
    """Every field in which a checkpoint's tower config and ``current`` differ, one line each, sorted.

    ``saved`` is the dict a checkpoint recorded (:func:`read_tower_config`); ``current`` a tower config
    (dataclass) or its dict. ``pretrained_path`` never counts. An empty list: the weights fit.
    """
    now = asdict(current) if is_dataclass(current) else dict(current)
    return [
        f"{field}: checkpoint {saved.get(field)!r}, model {now.get(field)!r}"
        for field in sorted(set(saved) | set(now))
        if field not in IGNORED_TOWER_FIELDS and saved.get(field) != now.get(field)
    ]


def load_tower_weights(tower: nn.Module, path: str | Path, expected: str = "tower") -> None:
    """Load the tower's weights of a pretraining checkpoint into ``tower`` (``tower.``-prefixed keys only).

    The checkpoint's tower config must equal ``tower.config`` (:func:`tower_config_differences`); the
    error names every field that differs. ``expected`` names the tower in messages (``"vision_tower"``).
    """
    path = Path(path)
    differences = tower_config_differences(read_tower_config(path, expected), tower.config)
    if differences:
        raise TowerCheckpointError(f"{path} was trained for a different {expected} ({'; '.join(differences)})")
    from safetensors.torch import load_file

    state = {k.removeprefix("tower."): v for k, v in load_file(str(path)).items() if k.startswith("tower.")}
    tower.load_state_dict(state)


__all__ = [
    "IGNORED_TOWER_FIELDS",
    "PRETRAINED_DIR",
    "TowerCheckpointError",
    "hf_checkpoint_folder",
    "import_transformers",
    "load_tower_weights",
    "read_metadata",
    "read_tower_config",
    "shipped_checkpoint",
    "sinusoids",
    "tower_config_differences",
]
