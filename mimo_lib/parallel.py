"""Many processes, one model: start-up, checks, data and tensor parallelism for the megatron backend.

A run on ``W`` processes (``torchrun --nproc_per_node=W``) with tensor-parallel
size ``T`` has ``D = W / T`` data-parallel replicas::

    W = 4, T = 2:   TP group 0 = ranks {0, 1}   TP group 1 = ranks {2, 3}     (each holds one model, in 2 shards)
                    DP group 0 = ranks {0, 2}   DP group 1 = ranks {1, 3}     (same shard, different data)

* **Start-up** (:func:`init_parallel`): NCCL and the rank's GPU when CUDA is
  available, gloo and the CPU otherwise; then megatron-core's
  ``initialize_model_parallel`` makes the groups. On the CPU the adaptations of
  :mod:`mimo_lib.megatron_compat` are installed; on a GPU nothing is changed.
* **Checks before any work** (``check_*``): each raises a
  :class:`ParallelConfigError` saying what to change.
* **Data parallelism**: each DP rank takes its own contiguous slice of every
  global batch (:func:`shard_batch_indices`), and gradients are averaged over
  the DP group by torch's ``DistributedDataParallel`` on megatron's DP group
  (:func:`wrap_data_parallel`). Why torch's and not megatron-core's: megatron's
  ``DistributedDataParallel`` allocates its gradient buffer on CUDA and does not
  start on a CPU; torch's runs on gloo and NCCL alike, so the CPU run and the GPU
  run execute the same code. (Megatron's overlapping, bucketed DDP and its
  distributed optimizer are GPU-only options this book does not use.)
  :func:`data_parallel_loss` makes the averaged gradient the gradient of the mean
  over *all* answer tokens of the global batch, so DP = 2 with micro-batch ``b``
  equals one process with ``2 b`` exactly, even when the shards hold different
  numbers of answer tokens.
* **Checkpoints**: one TP=1 layout on disk, whatever the TP size of the run.
  :func:`full_state_dict` gathers the shards over the TP group,
  :func:`load_full_state_dict` cuts out this rank's; :func:`save_model_parallel`
  and :func:`load_model_parallel` use the usual safetensors model folder.
* **Exact resume**: :func:`capture_parallel_rng_state` /
  :func:`restore_parallel_rng_state` add megatron's RNG-tracker states (per rank)
  to what :func:`mimo_lib.checkpoint.capture_rng_state` saves.

Megatron-core is imported only inside the functions that need it, so the
checks can run (and fail clearly) where it is missing.
"""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mimo_lib.config import LanguageModelConfig
from mimo_lib.errors import MimoInputError
from mimo_lib.tp_convert import check_tensor_parallel_size, merge_tensors, split_kind, split_state_dict

if TYPE_CHECKING:  # pragma: no cover
    from mimo_lib.model import MIMOModel

#: The megatron-core versions this code is written and tested for (pyproject.toml states the same range).
#: 0.16.1 is what Python 3.11 resolves (measured); >= 0.17 needs Python >= 3.12.
MEGATRON_CORE_RANGE = ("0.16", "0.20")

LM_PREFIX = "language_model."  # where MIMOModel keeps its decoder


class ParallelConfigError(MimoInputError):
    """The parallel layout (TP size, world size, batch sizes, launch) does not fit together."""


class MegatronCoreError(MimoInputError):
    """megatron-core is missing, or its version is outside :data:`MEGATRON_CORE_RANGE`."""


# ----------------------------------------------------------------------------- checks, before any work


def check_megatron_core(version: str | None = None) -> str:
    """Return megatron-core's version, or raise :class:`MegatronCoreError` saying what to install."""
    from packaging.version import Version

    low, high = MEGATRON_CORE_RANGE
    wanted = f"pip install 'megatron-core>={low},<{high}'"
    if version is None:
        try:
            version = importlib.metadata.version("megatron-core")
        except importlib.metadata.PackageNotFoundError:
            raise MegatronCoreError(f"--backend megatron needs megatron-core, which is not installed: {wanted}") from None
    if not Version(low) <= Version(version) < Version(high):
        raise MegatronCoreError(
            f"megatron-core {version} is outside the supported range >={low},<{high}: {wanted} "
            "(on Python 3.11 pip resolves 0.16.1)"
        )
    return version


def check_world_size(world_size: int, tp_size: int) -> int:
    """The data-parallel size ``world_size / tp_size``, or a :class:`ParallelConfigError`."""
    if tp_size < 1 or world_size % tp_size:
        raise ParallelConfigError(
            f"{world_size} processes cannot be split into tensor-parallel groups of {tp_size}: launch a multiple "
            f"of {tp_size} processes (torchrun --nproc_per_node={tp_size} or {2 * tp_size}, ...) or change "
            "--tensor-model-parallel-size"
        )
    return world_size // tp_size


def check_batch_sizes(global_batch_size: int, micro_batch_size: int, dp_size: int) -> int:
    """Gradient-accumulation steps ``global / (micro x DP)``, or a :class:`ParallelConfigError`.

    As in Megatron: ``--micro-batch-size`` samples per process per forward,
    ``--global-batch-size`` samples per optimizer step over all DP ranks.
    """
    if micro_batch_size < 1 or global_batch_size < 1:
        raise ParallelConfigError(
            f"--micro-batch-size ({micro_batch_size}) and --global-batch-size ({global_batch_size}) must be positive"
        )
    per_step = micro_batch_size * dp_size
    if global_batch_size % per_step:
        raise ParallelConfigError(
            f"--global-batch-size {global_batch_size} is not divisible by --micro-batch-size {micro_batch_size} x "
            f"{dp_size} data-parallel ranks = {per_step}; use a multiple of {per_step}, e.g. "
            f"{max(1, round(global_batch_size / per_step)) * per_step}"
        )
    return global_batch_size // per_step


def check_distributed_environment(backend: str, tp_size: int, environ: Mapping[str, str] | None = None) -> None:
    """Raise unless TP > 1 runs on the megatron backend under a launcher that set ``WORLD_SIZE``."""
    environ = os.environ if environ is None else environ
    if tp_size > 1 and backend != "megatron":
        raise ParallelConfigError(
            f"--tensor-model-parallel-size {tp_size} needs --backend megatron (the local backend is one process)"
        )
    if backend == "megatron" and tp_size > 1 and "WORLD_SIZE" not in environ:
        raise ParallelConfigError(
            f"--tensor-model-parallel-size {tp_size} needs {tp_size} processes, but this is a plain Python process: "
            f"launch with torchrun --nproc_per_node={tp_size} -m mimo_lib.train ... (or use "
            "--tensor-model-parallel-size 1)"
        )


def check_parallel_setup(
    config: LanguageModelConfig,
    backend: str,
    tp_size: int,
    micro_batch_size: int,
    global_batch_size: int,
    world_size: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[int, int]:
    """Every check above, in order; returns ``(dp_size, gradient accumulation steps)``.

    ``world_size`` defaults to ``WORLD_SIZE`` from the environment (1 without a launcher).
    """
    from mimo_lib.language_backends import LANGUAGE_BACKENDS, BackendError

    environ = os.environ if environ is None else environ
    if backend not in LANGUAGE_BACKENDS:
        raise BackendError(f"unknown --backend {backend!r}; choose one of {LANGUAGE_BACKENDS}")
    if backend == "megatron":
        check_megatron_core()
    check_distributed_environment(backend, tp_size, environ)
    check_tensor_parallel_size(config, tp_size)
    if world_size is None:
        world_size = int(environ.get("WORLD_SIZE", "1"))
    dp_size = check_world_size(world_size, tp_size)
    return dp_size, check_batch_sizes(global_batch_size, micro_batch_size, dp_size)


# ----------------------------------------------------------------------------- start-up


@dataclass(frozen=True)
class ParallelContext:
    """Who this process is in the run."""

    rank: int
    world_size: int
    tp_rank: int
    tp_size: int
    dp_rank: int
    dp_size: int
    device: torch.device  # cuda:<local rank> with NCCL, cpu with gloo
    backend: str  # "nccl" or "gloo"

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files and prints."""
        return self.rank == 0


def init_parallel(tensor_model_parallel_size: int = 1, seed: int = 0, device: str | None = None) -> ParallelContext:
    """Start ``torch.distributed`` and megatron-core's groups; returns this process's :class:`ParallelContext`.

    ``device``: ``"cuda"`` or ``"cpu"``; default ``"cuda"`` when available. Under
    ``torchrun`` the process joins torchrun's group, otherwise it makes a group of
    one on a free local port (TP must then be 1). Safe to call twice.
    """
    from megatron.core import parallel_state
    from megatron.core.tensor_parallel.random import model_parallel_cuda_manual_seed

    from mimo_lib import megatron_compat as mc

    use_cuda = torch.cuda.is_available() if device is None else device == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise ParallelConfigError("--device cuda was asked for, but torch sees no CUDA device; use --device cpu")
    dist_backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if not torch.distributed.is_initialized():
        if "WORLD_SIZE" in os.environ:  # torchrun set RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT
            torch.distributed.init_process_group(dist_backend)
        else:
            check_distributed_environment("megatron", tensor_model_parallel_size, os.environ)
            port = mc._free_port()
            torch.distributed.init_process_group(
                dist_backend, init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1
            )
    world_size = torch.distributed.get_world_size()
    check_world_size(world_size, tensor_model_parallel_size)
    if not parallel_state.model_parallel_is_initialized():
        parallel_state.initialize_model_parallel(tensor_model_parallel_size=tensor_model_parallel_size)
    elif parallel_state.get_tensor_model_parallel_world_size() != tensor_model_parallel_size:
        raise ParallelConfigError(
            f"megatron-core is already set up with tensor-parallel size "
            f"{parallel_state.get_tensor_model_parallel_world_size()}, not {tensor_model_parallel_size}: "
            "call destroy_parallel() first"
        )
    if use_cuda:
        torch.manual_seed(seed)
        model_parallel_cuda_manual_seed(seed)  # the usual GPU seeding: a tracker state per TP rank
    else:
        mc.install_cpu_memory_buffer()
        mc.seed_megatron_cpu(seed)
    return current_context()


def current_context() -> ParallelContext:
    """The :class:`ParallelContext` of an already started run."""
    from megatron.core import parallel_state

    backend = torch.distributed.get_backend()
    return ParallelContext(
        rank=torch.distributed.get_rank(),
        world_size=torch.distributed.get_world_size(),
        tp_rank=parallel_state.get_tensor_model_parallel_rank(),
        tp_size=parallel_state.get_tensor_model_parallel_world_size(),
        dp_rank=parallel_state.get_data_parallel_rank(),
        dp_size=parallel_state.get_data_parallel_world_size(),
        device=torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu"),
        backend=backend,
    )


def ensure_parallel() -> None:
    """Start a one-process TP=1 run if none was started (a notebook); leaves torch's RNG state as it was."""
    from megatron.core import parallel_state

    if torch.distributed.is_initialized() and parallel_state.model_parallel_is_initialized():
        return
    state = torch.get_rng_state()
    init_parallel(1)
    torch.set_rng_state(state)


def destroy_parallel() -> None:
    """Undo :func:`init_parallel`."""
    from megatron.core import parallel_state

    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


# ----------------------------------------------------------------------------- data parallelism


def shard_batch_indices(global_indices: Sequence[int], dp_rank: int, dp_size: int) -> list[int]:
    """This DP rank's contiguous slice of one global (or micro-step) batch, as Megatron's sampler cuts it.

    ``[0, 1, 2, 3]`` on DP = 2: rank 0 reads ``[0, 1]``, rank 1 ``[2, 3]``.
    """
    indices = list(global_indices)
    if not 0 <= dp_rank < dp_size:
        raise ValueError(f"dp_rank {dp_rank} is not in [0, {dp_size})")
    if len(indices) % dp_size:
        raise ParallelConfigError(
            f"a batch of {len(indices)} samples does not split evenly over {dp_size} data-parallel ranks; "
            f"make the global batch a multiple of {dp_size}"
        )
    per_rank = len(indices) // dp_size
    return indices[dp_rank * per_rank : (dp_rank + 1) * per_rank]


def wrap_data_parallel(model: torch.nn.Module, find_unused_parameters: bool = True) -> torch.nn.Module:
    """torch ``DistributedDataParallel`` over megatron's data-parallel group; the model itself when DP = 1.

    ``find_unused_parameters``: a batch without audio leaves the audio projector
    unused, which DDP must be told about. Towers that are frozen are ignored.
    """
    from megatron.core import parallel_state

    if parallel_state.get_data_parallel_world_size() == 1:
        return model
    device = next(model.parameters()).device
    return torch.nn.parallel.DistributedDataParallel(
        model,
        device_ids=[device.index] if device.type == "cuda" else None,
        process_group=parallel_state.get_data_parallel_group(),
        find_unused_parameters=find_unused_parameters,
    )


def data_parallel_loss(mean_loss: torch.Tensor, num_tokens: int | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss to backward, global mean loss to log)`` for one micro-batch on this DP rank.

    ``mean_loss`` is this rank's mean over its ``num_tokens`` answer tokens. DDP
    averages gradients over the ``D`` ranks, so backwarding
    ``mean_loss * num_tokens * D / total_tokens`` gives the gradient of the mean
    over all ``total_tokens`` of the global batch — what one process with the
    whole batch computes. The logged value is that global mean (no gradient).
    """
    from megatron.core import parallel_state

    group = parallel_state.get_data_parallel_group()
    dp_size = parallel_state.get_data_parallel_world_size()
    counts = torch.tensor([float(num_tokens), mean_loss.detach().float().item() * float(num_tokens)])
    if mean_loss.is_cuda:
        counts = counts.to(mean_loss.device)
    if dp_size > 1:
        torch.distributed.all_reduce(counts, group=group)  # [total tokens, total loss sum]
    total_tokens = counts[0].clamp(min=1)
    scaled = mean_loss * (float(num_tokens) * dp_size / total_tokens.item())
    return scaled, counts[1] / total_tokens


# ----------------------------------------------------------------------------- tensor-parallel state dicts


def _tp_group():
    from megatron.core import parallel_state

    return parallel_state.get_tensor_model_parallel_group(), parallel_state.get_tensor_model_parallel_world_size()


def gather_named_tensors(
    named: Mapping[str, torch.Tensor], config: LanguageModelConfig, prefix: str = LM_PREFIX
) -> dict[str, torch.Tensor]:
    """Full (TP=1) tensors from this rank's shards, gathered over the TP group (every rank gets them).

    Works for parameters and for anything shaped like them (Adam's moments),
    keyed by parameter name; keys outside ``prefix`` are replicated and kept.
    """
    group, tp_size = _tp_group()
    full = {}
    for key, value in named.items():
        if key.endswith("._extra_state"):
            continue
        kind, dim = split_kind(key[len(prefix):], config) if key.startswith(prefix) else ("replicated", -1)
        if tp_size == 1 or kind == "replicated":
            full[key] = value.detach().clone()
            continue
        parts = [torch.empty_like(value) for _ in range(tp_size)]
        torch.distributed.all_gather(parts, value.detach().contiguous(), group=group)
        full[key] = merge_tensors(parts, kind, dim)
    return full


def full_state_dict(model: MIMOModel) -> dict[str, torch.Tensor]:
    """``model.state_dict()`` in the TP=1 layout: what a one-process local model would hold (collective)."""
    return gather_named_tensors(model.state_dict(), model.config.language_model)


def shard_for_this_rank(
    full: Mapping[str, torch.Tensor], config: LanguageModelConfig, prefix: str = LM_PREFIX
) -> dict[str, torch.Tensor]:
    """This TP rank's slice of a full (TP=1) state dict (no communication)."""
    from megatron.core import parallel_state

    tp_size = parallel_state.get_tensor_model_parallel_world_size()
    if tp_size == 1:
        return dict(full)
    return split_state_dict(full, config, tp_size, prefix)[parallel_state.get_tensor_model_parallel_rank()]


def load_full_state_dict(model: MIMOModel, full: Mapping[str, torch.Tensor]) -> None:
    """Load a full (TP=1) state dict — from a local model or a checkpoint — into a model of any TP size."""
    model.load_state_dict(shard_for_this_rank(full, model.config.language_model), strict=True)


def save_model_parallel(model: MIMOModel, path: str | Path, tokenizer=None) -> Path | None:
    """Gather the shards and write the usual model folder (TP=1 layout) from rank 0; collective.

    The folder is exactly what :func:`mimo_lib.checkpoint.save_model_only` writes for a
    local model, so :func:`mimo_lib.checkpoint.load_model` (local backend) and
    :func:`load_model_parallel` (any TP size) read it. Returns the path on rank 0, None elsewhere.
    """
    from mimo_lib.checkpoint import save_model_only
    from mimo_lib.model import MIMOModel

    full = full_state_dict(model)
    written = None
    if torch.distributed.get_rank() == 0:
        with torch.device("meta"):  # no memory: the gathered tensors are assigned, not copied
            shell = MIMOModel(model.config)
        shell.load_state_dict(full, strict=True, assign=True)
        written = save_model_only(shell, path, tokenizer)
    torch.distributed.barrier()
    return written


def load_model_parallel(path: str | Path, backend: str = "megatron") -> MIMOModel:
    """A :class:`MIMOModel` on ``backend`` (at the running TP size) from a model, run or step folder; eval mode."""
    from mimo_lib.checkpoint import load_model
    from mimo_lib.model import MIMOModel

    local = load_model(path)  # checks the files, builds the local model
    model = MIMOModel(local.config, backend=backend)
    load_full_state_dict(model, local.state_dict())
    return model.eval()


# ----------------------------------------------------------------------------- RNG states for exact resume


def capture_parallel_rng_state() -> dict[str, torch.Tensor]:
    """This rank's megatron RNG-tracker states (``{"tracker.<name>": state}``; empty on the CPU).

    On the CPU the tracker is the inference tracker (adaptation 3): dropout then
    draws from torch's CPU generator, which ``checkpoint.capture_rng_state`` saves.
    Save one of these per rank (they differ across TP ranks on GPUs).
    """
    from megatron.core.tensor_parallel.random import get_cuda_rng_tracker

    states = get_cuda_rng_tracker().get_states()
    return {f"tracker.{name}": state.detach().cpu().clone() for name, state in states.items()}


def restore_parallel_rng_state(state: Mapping[str, Any]) -> None:
    """Put back what :func:`capture_parallel_rng_state` returned on this rank."""
    from megatron.core.tensor_parallel.random import get_cuda_rng_tracker

    tracker = {key[len("tracker."):]: value for key, value in state.items() if key.startswith("tracker.")}
    if tracker:
        get_cuda_rng_tracker().set_states(tracker)


__all__ = [
    "MEGATRON_CORE_RANGE",
    "MegatronCoreError",
    "ParallelConfigError",
    "ParallelContext",
    "capture_parallel_rng_state",
    "check_batch_sizes",
    "check_distributed_environment",
    "check_megatron_core",
    "check_parallel_setup",
    "check_tensor_parallel_size",
    "check_world_size",
    "current_context",
    "data_parallel_loss",
    "destroy_parallel",
    "ensure_parallel",
    "full_state_dict",
    "gather_named_tensors",
    "init_parallel",
    "load_full_state_dict",
    "load_model_parallel",
    "restore_parallel_rng_state",
    "save_model_parallel",
    "shard_batch_indices",
    "shard_for_this_rank",
    "wrap_data_parallel",
]
