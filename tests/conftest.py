"""Fixtures shared by the test files."""

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread, for modules whose tensors are tiny.

    On a shared 2-core CPU, OpenMP threads waiting on each other cost far more
    than they save for such tensors; exact-resume tests also need the same
    thread count on both sides of a kill.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
