"""What every ``mimo_lib`` command line shares: one clear line for a user's mistake, a traceback only for bugs.

Each ``python -m mimo_lib.X`` ends with ``sys.exit(run_command("mimo-X", main, argv))``. It

* keeps messages that are not the user's business off the terminal (torch's "No CUDA runtime is found"
  log line on CPU machines, the megatron-core note that Transformer Engine is absent);
* turns a :class:`~mimo_lib.errors.MimoInputError` (bad flags, files, samples, checkpoints) into
  ``prog: error: message`` on stderr and exit status 2, as ``argparse`` does for a bad flag;
* lets every other exception through as a traceback: that is a bug, and the traceback is what a bug
  report needs.
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Callable, Sequence

from mimo_lib.errors import MimoInputError

#: Exit status for a user error (argparse uses 2 too) and for a run stopped by a non-finite loss.
USER_ERROR = 2


def quiet_startup() -> None:
    """Silence start-up messages that say nothing about the user's run."""
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # "No CUDA runtime is found"
    warnings.filterwarnings("ignore", message="Transformer Engine and Apex are not installed")


def run_command(prog: str, main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run ``main(argv)``; a :class:`MimoInputError` becomes one line on stderr and exit status 2."""
    quiet_startup()
    try:
        return int(main(argv) or 0)
    except MimoInputError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return USER_ERROR
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
