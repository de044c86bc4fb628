"""How many CPU threads torch uses: one policy for every chapter, test and command line.

Call :func:`apply_thread_policy` once, before any heavy tensor work (every
chapter's first code cell and every command line do: ``--threads`` with
:data:`THREADS_HELP`, checked by :func:`check_threads_flag`). ``python -m mimo_lib.doctor``
prints what it chose and why.

Precedence, first match wins:

1. the ``num_threads`` argument (the command lines' ``--threads``);
2. the ``MIMO_NUM_THREADS`` environment variable;
3. ``OMP_NUM_THREADS``, if set: torch already read it at start-up, so it is kept;
4. the default: 1 thread on a machine with at most 2 usable cores, torch's own
   choice otherwise.

Why 1 thread on 2 cores: a student's 2-core laptop also runs the browser and
JupyterLab, and torch's 2 OpenMP threads then spin waiting for each other —
measured while other work shared the 2 cores (issue 12), chapter 6 took 78 s
with 2 threads and 20 s with 1, and 24 tokens of KV-cache generation 2,282 ms
against 68 ms.

Rendering synthetic clips is numpy on one core, so :func:`map_in_processes` renders them in
worker processes (as many as torch has threads, or ``MIMO_RENDER_PROCESSES``) while the caller
waits: the feature cache of ``mimo_lib.train`` and the tower pretraining sets use it. The workers
never run beside torch's threads, so the policy above still holds.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

ENV_VAR = "MIMO_NUM_THREADS"
SMALL_MACHINE_CORES = 2  # at most this many usable cores -> 1 thread by default


def usable_cores() -> int:
    """CPU cores this process may run on (the affinity mask where the OS has one, as in containers)."""
    if hasattr(os, "sched_getaffinity"):
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except OSError:
            pass
    return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class ThreadChoice:
    """The number of torch intra-op threads chosen (``None``: leave torch's own) and why."""

    num_threads: int | None
    reason: str


def count_from_environment(environ: Mapping[str, str], name: str, unit: str, units: str) -> int | None:
    """The whole number of at least 1 in ``environ[name]``, None if unset; anything else is a one-line ValueError."""
    text = environ.get(name, "").strip()
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{name}={text!r} is not a whole number of {units}") from None
    if value < 1:
        raise ValueError(f"{name}={text!r}: need at least 1 {unit}")
    return value


def choose_threads(
    num_threads: int | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    cores: int | None = None,
) -> ThreadChoice:
    """The policy alone, with no side effect (see the module docstring for the order)."""
    environ = os.environ if environ is None else environ
    cores = usable_cores() if cores is None else cores
    if num_threads is not None:
        if int(num_threads) < 1:
            raise ValueError(f"num_threads must be at least 1, got {num_threads}")
        return ThreadChoice(int(num_threads), "asked for by the caller")
    value = count_from_environment(environ, ENV_VAR, "thread", "threads")
    if value is not None:
        return ThreadChoice(value, f"set by {ENV_VAR}")
    if environ.get("OMP_NUM_THREADS", "").strip():
        return ThreadChoice(None, "OMP_NUM_THREADS is set, torch's start-up choice is kept")
    if cores <= SMALL_MACHINE_CORES:
        return ThreadChoice(1, f"{cores} usable core(s): 1 thread leaves a core for the browser and JupyterLab")
    return ThreadChoice(None, f"{cores} usable cores: torch's own choice")


def apply_thread_policy(num_threads: int | None = None) -> int:
    """Set torch's intra-op thread count by the book's policy and return the number in use.

    One sentence: on a laptop with 2 cores or fewer, 1 torch thread is several
    times faster once the browser and JupyterLab share the CPU, so that is the
    default; pass ``num_threads`` or set ``MIMO_NUM_THREADS`` to choose otherwise.
    """
    import torch

    choice = choose_threads(num_threads)
    if choice.num_threads is not None and torch.get_num_threads() != choice.num_threads:
        torch.set_num_threads(choice.num_threads)
    return torch.get_num_threads()


THREADS_HELP = f"torch CPU threads (default: mimo_lib.threads' policy: {ENV_VAR}, else 1 on a machine of 2 cores or fewer)"


def check_threads_flag(num_threads: int | None) -> str | None:
    """What is wrong with a command line's ``--threads``, ``MIMO_NUM_THREADS`` or ``MIMO_RENDER_PROCESSES`` (None if nothing)."""
    if num_threads is not None and num_threads < 1:
        return f"--threads must be at least 1 (got {num_threads})"
    try:
        choose_threads(num_threads)
        render_processes_setting()  # the variable alone: the default would import torch
    except ValueError as error:
        return str(error)
    return None


def describe_thread_policy() -> str:
    """One line for ``mimo_lib.doctor``: threads in use now, what the policy chooses, and why."""
    import torch

    choice = choose_threads()
    chosen = "torch's default" if choice.num_threads is None else f"{choice.num_threads}"
    return (
        f"policy chooses {chosen} ({choice.reason}); torch uses {torch.get_num_threads()} now; "
        f"override with {ENV_VAR}=N"
    )


# --------------------------------------------------------------------------- #
# Rendering in worker processes
# --------------------------------------------------------------------------- #

PROCESSES_ENV_VAR = "MIMO_RENDER_PROCESSES"
MAX_RENDER_PROCESSES = 8  # past this, pickling the clips back costs more than the rendering saves


def choose_render_processes(processes: int | None = None, *, environ: Mapping[str, str] | None = None) -> int:
    """How many processes render synthetic clips: ``processes``, else ``MIMO_RENDER_PROCESSES``, else as many
    as torch has threads (the thread policy's choice: 1 on a 2-core laptop, every core in ``benchmarks/recipe.py``).

    Rendering is numpy on one core; on the 2-core reference machine two processes rendered 512 instruct clips
    in 1.8 s instead of 2.9 s, and made their whole feature cache in 7.7 s instead of 9.2 s
    (``benchmarks/render_processes.py``, ``benchmarks/results/render_processes.json``). They run only
    while the caller waits for them (:func:`map_in_processes`), never beside torch's threads, so they
    cannot make those collapse. 1 renders in this process; so does a platform
    without ``fork``.
    """
    import multiprocessing

    if processes is None:
        processes = render_processes_setting(environ)
    if processes is None:
        import torch

        processes = max(1, min(torch.get_num_threads(), MAX_RENDER_PROCESSES))
    if processes < 1:
        raise ValueError(f"processes={processes}: need at least 1 rendering process")
    if "fork" not in multiprocessing.get_all_start_methods():
        return 1
    return processes


def render_processes_setting(environ: Mapping[str, str] | None = None) -> int | None:
    """``MIMO_RENDER_PROCESSES`` as a number (None if unset); anything but a whole number of at least 1 is a ValueError."""
    return count_from_environment(os.environ if environ is None else environ, PROCESSES_ENV_VAR, "rendering process",
                                  "processes")


_WORK = None  # the function the forked workers call: set just before they fork, so it is never pickled


def _work_in_child(item):
    return _to_numpy(_WORK(item))


def _child_threads() -> None:
    import torch

    torch.set_num_threads(1)  # a worker is one core's worth of work, as a DataLoader worker is


def _to_numpy(value):
    """``value`` with every tensor made a numpy array, to travel back by pickle (not by shared-memory handles)."""
    import torch

    if isinstance(value, torch.Tensor):
        return _Array(value.numpy())
    if isinstance(value, dict):
        return {k: _to_numpy(v) for k, v in value.items()}
    if type(value) in (list, tuple):  # plain ones only: a named tuple is returned whole
        return type(value)(_to_numpy(v) for v in value)
    return value


def _to_torch(value):
    import torch

    if isinstance(value, _Array):
        return torch.from_numpy(value.array)
    if isinstance(value, dict):
        return {k: _to_torch(v) for k, v in value.items()}
    if type(value) in (list, tuple):
        return type(value)(_to_torch(v) for v in value)
    return value


@dataclass(frozen=True)
class _Array:
    """A tensor on its way back from a worker (a wrapper, so that a numpy array the function returned stays one)."""

    array: object


class ProcessMap:
    """``pool.map(items)``: ``[function(item) for item in items]``, in order, computed by forked workers.

    Use as a context manager (:func:`map_in_processes`); with one process it calls ``function`` here.
    ``function`` must be pure (the clips of a seed), which is what makes the result the same with any
    number of processes.
    """

    def __init__(self, function, processes: int) -> None:
        self.function = function
        self.processes = processes
        self._pool = None

    def __enter__(self) -> ProcessMap:
        global _WORK
        if self.processes > 1:
            import multiprocessing

            _WORK = self.function
            self._pool = multiprocessing.get_context("fork").Pool(self.processes, initializer=_child_threads)
        return self

    def __exit__(self, *exc) -> None:
        global _WORK
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None
        _WORK = None

    def map(self, items) -> list:
        items = list(items)
        if self._pool is None or len(items) < 2:
            return [self.function(item) for item in items]
        chunk = max(1, len(items) // (4 * self.processes))
        return [_to_torch(r) for r in self._pool.map(_work_in_child, items, chunksize=chunk)]


def map_in_processes(function, processes: int | None = None) -> ProcessMap:
    """A :class:`ProcessMap` of ``function`` over :func:`choose_render_processes` processes.

    ::

        with map_in_processes(dataset.__getitem__) as pool:
            samples = pool.map(range(64))   # == [dataset[i] for i in range(64)], two cores at work
    """
    return ProcessMap(function, choose_render_processes(processes))
