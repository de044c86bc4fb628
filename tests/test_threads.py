"""The book's one thread policy (mimo_lib.threads) and its report in mimo_lib.doctor."""

from __future__ import annotations

import collections
import os

import pytest
import torch

from mimo_lib import doctor, evaluate, generate, pretrain_towers
from mimo_lib.threads import ENV_VAR, apply_thread_policy, check_threads_flag, choose_threads, describe_thread_policy


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


def test_check_threads_flag_names_what_is_wrong(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert check_threads_flag(None) is None and check_threads_flag(2) is None
    assert check_threads_flag(0) == "--threads must be at least 1 (got 0)"
    monkeypatch.setenv(ENV_VAR, "lots")
    assert "is not a whole number" in check_threads_flag(None)
    assert check_threads_flag(1) is None  # the flag wins over the environment


#: Each command line, with arguments that pass every other check (the loads fail only later, on purpose).
COMMANDS = {
    "pretrain_towers": (pretrain_towers.main, ["--out", "/no/such/folder"]),
    "evaluate": (evaluate.main, ["--load", "/no/such/run"]),
    "generate": (generate.main, ["--load", "/no/such/run", "--prompt", "Hi?", "--video", "/no/clip.mp4"]),
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_line_refuses_a_bad_thread_count_before_work(command, monkeypatch, capsys):
    main, argv = COMMANDS[command]
    monkeypatch.delenv(ENV_VAR, raising=False)
    with pytest.raises(SystemExit) as refused:
        main([*argv, "--threads", "0"])
    assert refused.value.code == 2 and "--threads must be at least 1 (got 0)" in capsys.readouterr().err
    monkeypatch.setenv(ENV_VAR, "lots")
    with pytest.raises(SystemExit) as refused:
        main(argv)
    assert refused.value.code == 2 and f"{ENV_VAR}='lots' is not a whole number" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["evaluate", "generate"])
def test_every_command_line_applies_the_thread_policy(command, restore_threads, monkeypatch, capsys):
    main, argv = COMMANDS[command]
    torch.set_num_threads(2)
    monkeypatch.setenv(ENV_VAR, "1")
    assert _exit_status(main, argv) == 2  # the missing run: a user error, after the policy was applied
    assert torch.get_num_threads() == 1
    assert "/no/such/run" in capsys.readouterr().err
    assert _exit_status(main, [*argv, "--threads", "2"]) == 2 and torch.get_num_threads() == 2


def _exit_status(main, argv) -> int:
    """What the command line exits with, whether it returns it or argparse raises it."""
    try:
        return main(argv)
    except SystemExit as stopped:
        return stopped.code


def test_render_processes_follow_the_argument_then_the_environment(restore_threads):
    from mimo_lib.threads import PROCESSES_ENV_VAR, choose_render_processes

    assert choose_render_processes(3, environ={PROCESSES_ENV_VAR: "1"}) == 3
    assert choose_render_processes(environ={PROCESSES_ENV_VAR: "1"}) == 1
    assert choose_render_processes(environ={PROCESSES_ENV_VAR: " 2 "}) == 2
    torch.set_num_threads(3)  # put back by the restore_threads fixture
    assert choose_render_processes(environ={}) == 3  # as many as torch has threads
    with pytest.raises(ValueError, match="whole number"):
        choose_render_processes(environ={PROCESSES_ENV_VAR: "two"})
    with pytest.raises(ValueError, match="at least 1"):
        choose_render_processes(0)
    with pytest.raises(ValueError, match=f"{PROCESSES_ENV_VAR}='0': need at least 1 rendering process"):
        choose_render_processes(environ={PROCESSES_ENV_VAR: "0"})


def test_a_bad_render_processes_variable_is_one_line_before_work(monkeypatch, capsys):
    from mimo_lib.threads import PROCESSES_ENV_VAR

    monkeypatch.setenv(PROCESSES_ENV_VAR, "many")
    assert check_threads_flag(None) == f"{PROCESSES_ENV_VAR}='many' is not a whole number of processes"
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(["--load", "nowhere"])
    assert exit_info.value.code == 2
    assert f"{PROCESSES_ENV_VAR}='many'" in capsys.readouterr().err


Point = collections.namedtuple("Point", "x y")


def _clip_and_label(i):
    return {"clip": torch.full((2, 3), float(i)), "label": f"clip {i}", "pair": (torch.arange(i + 1), i),
            "where": (Point(i, [i]), Point(0, 1))}


def _process_id(_):
    return os.getpid()


def test_a_process_map_returns_what_the_function_returns_in_order():
    from mimo_lib.threads import map_in_processes

    items = list(range(9))
    with map_in_processes(_clip_and_label, 2) as pool:
        forked = pool.map(items)
    here = [_clip_and_label(i) for i in items]
    assert [r["label"] for r in forked] == [r["label"] for r in here]
    for mine, theirs in zip(forked, here):
        assert isinstance(mine["clip"], torch.Tensor) and torch.equal(mine["clip"], theirs["clip"])
        assert isinstance(mine["pair"], tuple) and torch.equal(mine["pair"][0], theirs["pair"][0])
        assert mine["where"] == theirs["where"] and isinstance(mine["where"][0], Point)  # named tuples come back whole
    with map_in_processes(_process_id, 2) as pool:
        workers = set(pool.map(range(8)))
    assert os.getpid() not in workers and len(workers) >= 1  # the work was done in other processes
    with map_in_processes(_process_id, 1) as pool:
        assert set(pool.map(range(3))) == {os.getpid()}  # one process: here
