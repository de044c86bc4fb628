"""The book's one thread policy (mimo_lib.threads) and its report in mimo_lib.doctor."""

from __future__ import annotations

import pytest
import torch

from mimo_lib import doctor
from mimo_lib.threads import ENV_VAR, apply_thread_policy, choose_threads, describe_thread_policy


@pytest.fixture
def restore_threads():
    previous = torch.get_num_threads()
    yield
    torch.set_num_threads(previous)


@pytest.mark.parametrize("cores", [1, 2])
def test_small_machine_gets_one_thread(cores):
    assert choose_threads(environ={}, cores=cores).num_threads == 1


def test_larger_machine_keeps_torch_default():
    assert choose_threads(environ={}, cores=8).num_threads is None


def test_argument_beats_environment_beats_default():
    env = {ENV_VAR: "3", "OMP_NUM_THREADS": "5"}
    assert choose_threads(2, environ=env, cores=2).num_threads == 2
    assert choose_threads(environ=env, cores=2).num_threads == 3
    assert choose_threads(environ={"OMP_NUM_THREADS": "5"}, cores=2).num_threads is None


@pytest.mark.parametrize("bad", ["0", "-1", "two"])
def test_bad_environment_value_is_a_clear_error(bad):
    with pytest.raises(ValueError, match=ENV_VAR):
        choose_threads(environ={ENV_VAR: bad}, cores=2)


def test_bad_argument_is_a_clear_error():
    with pytest.raises(ValueError, match="at least 1"):
        choose_threads(0, environ={}, cores=2)


def test_apply_returns_the_threads_in_use(restore_threads, monkeypatch):
    monkeypatch.setenv(ENV_VAR, "1")
    assert apply_thread_policy() == 1 == torch.get_num_threads()
    assert apply_thread_policy(2) == 2 == torch.get_num_threads()


def test_doctor_reports_the_policy(restore_threads, monkeypatch, capsys):
    monkeypatch.setenv(ENV_VAR, "1")
    assert ENV_VAR in describe_thread_policy()
    doctor.main()
    out = capsys.readouterr().out
    assert "threads: policy chooses 1 (set by MIMO_NUM_THREADS)" in out
