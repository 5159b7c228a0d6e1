"""bertcore.train.stopping, and a checkpoint write that fails (disk full): bertcore.infra.files'
one-line error and the twins' handling of it.

The subprocess tests (SIGTERM mid-run then --resume, --time-budget) are in test_train.py, run
for both twins."""

import errno
import logging
import os
import signal
import sys
import time
from types import SimpleNamespace

import pytest

from bertcore.infra.errors import UserError
from bertcore.infra.files import os_error_in, write_failure
from bertcore.train.stopping import (EXIT_SIGNAL, EXIT_WRITE_FAILED, Stopper, parse_duration,
                                     parse_signals, resume_command, run_train)
from helpers import base_args, checkpoint_steps, temp_dirs, write_corpus


def test_parse_duration_and_signals():
    assert parse_duration("2h") == 7200 and parse_duration("90m") == 5400
    assert parse_duration("1h30m") == 5400 and parse_duration("45s") == 45
    assert parse_duration("3600") == 3600
    for bad in ("2 hours", "h", "-5", "0", "1x"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    assert parse_signals("TERM,INT,USR1") == [signal.SIGTERM, signal.SIGINT, signal.SIGUSR1]
    assert parse_signals("sigterm") == [signal.SIGTERM] and parse_signals("none") == []
    with pytest.raises(ValueError):
        parse_signals("KILL")


def test_time_budget_keeps_room_for_a_step_a_checkpoint_and_the_end():
    now = time.time()
    s = Stopper([], time_budget=100, start=now - 50, reserve=10)
    s._t_poll = time.time() - 1.0          # a step of ~1 s
    assert not s.poll()                    # 50 s left > 1 + 0 + 10
    s.checkpoint_seconds = 40.5            # a slow checkpoint: no room for another step
    assert s.poll() and s.budget_reached and s.exit_code == 0
    assert s.reason.startswith("--time-budget")


def test_signal_sets_a_flag_and_a_second_ctrl_c_aborts():
    before = signal.getsignal(signal.SIGINT)   # SIG_IGN when pytest runs in the background
    s = Stopper([signal.SIGINT, signal.SIGUSR1]).install()
    s.begin()   # training has begun (before it, see the set-up test below)
    try:
        assert not s.poll()
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.05)
        assert s.poll() and s.reason == "SIGUSR1" and s.exit_code == EXIT_SIGNAL == 75
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.5)
    finally:
        s.uninstall()
    assert signal.getsignal(signal.SIGINT) is before


def test_two_ctrl_c_during_one_c_call_still_abort():
    """Both Ctrl-Cs arrive while the main thread is inside one C call (here a sleep; in a run
    a long step or an fsync): Python then runs the handler once, which must still see two."""
    import threading

    before = signal.getsignal(signal.SIGINT)
    s = Stopper([signal.SIGINT]).install()
    s.begin()

    def ctrl_c_twice():   # delivered to this thread: the main thread's sleep goes on
        for _ in range(2):
            time.sleep(0.1)
            signal.pthread_kill(threading.get_ident(), signal.SIGINT)

    try:
        with pytest.raises(KeyboardInterrupt):
            t = threading.Thread(target=ctrl_c_twice)
            t.start()
            time.sleep(0.5)
            t.join()
            time.sleep(0.1)
    finally:
        s.uninstall()
    assert signal.getsignal(signal.SIGINT) is before and signal.set_wakeup_fd(-1) == -1


def test_a_signal_during_the_set_up_ends_the_command_at_once(caplog):
    """Before the first step there is no step to finish: a blocked set-up (a worker pool, a
    lock, a barrier; here a sleep) unwinds at once and the command exits 128 + N, one line."""
    def train(args, argv, stopper):
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(5)                        # interrupted: the handler raises
        raise AssertionError("the set-up went on after the signal")

    before = signal.getsignal(signal.SIGUSR1)
    t = time.perf_counter()
    with caplog.at_level(logging.ERROR):
        rc = run_train(train, SimpleNamespace(stop_signals="USR1", time_budget=None), [])
    assert rc == 128 + signal.SIGUSR1 and time.perf_counter() - t < 4
    assert "SIGUSR1 received during the set-up" in caplog.text
    assert signal.getsignal(signal.SIGUSR1) is before


def test_resume_command_and_bad_flags():
    cmd = resume_command("python -m torchbert.train",
                         ["--out", "r", "--overwrite", "--init-from", "x", "--steps", "9"], "r")
    assert cmd == "python -m torchbert.train --out r --steps 9 --resume"

    class A:
        stop_signals, time_budget = "TERM", "soon"
    with pytest.raises(UserError, match="soon"):
        Stopper.from_args(A())


def test_write_failure_is_one_line_with_needed_and_free_bytes(tmp_path):
    e = write_failure(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), tmp_path / "step_9",
                      123 * 2**20, tmp_path / "step_8")
    msg = str(e)
    assert "\n" not in msg and "No space left on device" in msg and "123.0 MB needed" in msg
    assert "free" in msg and str(tmp_path / "step_8") in msg and e.exit_code == EXIT_WRITE_FAILED
    # orbax/tensorstore wrap the OSError, or only name it in a message
    wrapped = ValueError("write failed")
    wrapped.__cause__ = OSError(errno.ENOSPC, "No space left on device")
    assert os_error_in(wrapped).errno == errno.ENOSPC
    assert os_error_in(ValueError("tensorstore: No space left on device")).errno == errno.ENOSPC
    assert os_error_in(ValueError("a bug")) is None


def test_low_disk_is_warned_about_once_before_a_save(tmp_path):
    from bertcore.infra.files import free_bytes, warn_if_low_space

    notes = []
    warn_if_low_space(tmp_path, 10**6, notes.append)           # plenty of space: quiet
    assert notes == []
    huge = free_bytes(tmp_path)
    warn_if_low_space(tmp_path, huge, notes.append)
    warn_if_low_space(tmp_path, huge, notes.append)
    assert len(notes) == 1 and "free" in notes[0] and str(tmp_path) in notes[0]


def _no_space(*a, **k):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _one_line_no_traceback(capsys, rc, *needles):
    err = capsys.readouterr().err
    assert rc == EXIT_WRITE_FAILED, err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return err


@pytest.mark.slow
def test_torch_checkpoint_write_without_space(tmp_path, cache_env, monkeypatch, capsys):
    """The 2nd checkpoint's writer raises ENOSPC: one line naming the path, the bytes needed
    and free and the kept checkpoint; exit 74; step 2 untouched, no temp directory."""
    import torchbert.checkpoint as tc
    from torchbert.train import main     # the CLI, in this process

    for k, v in cache_env.items():
        monkeypatch.setenv(k, v)
    corpus = write_corpus(tmp_path)
    out = tmp_path / "run"
    real, calls = tc.save_file, []

    def save_file(*a, **k):
        calls.append(1)
        if len(calls) > 2:                 # two files per checkpoint: fail in the second one
            # what safetensors raises on a full disk (not an OSError)
            from safetensors import SafetensorError
            raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: '
                                  'StorageFull, message: "No space left on device" })')
        return real(*a, **k)
    monkeypatch.setattr(tc, "save_file", save_file)
    rc = main(base_args(corpus, out, "--steps", "4", "--checkpoint-every", "2"))
    _one_line_no_traceback(capsys, rc, "No space left on device", "needed", "free",
                           str(out / "checkpoints" / "step_00000004"),
                           str(out / "checkpoints" / "step_00000002"))
    assert checkpoint_steps("torch", out) == [2]
    assert temp_dirs(out) == []
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL    # handlers given back


@pytest.mark.slow
def test_jax_checkpoint_write_without_space(tmp_path, cache_env, monkeypatch, capsys, caplog):
    """The same for orbax: its writer fails mid-save, leaving `4.orbax-checkpoint-tmp-*`
    behind as a full disk does; the twin removes it and keeps step 2."""
    import orbax.checkpoint as ocp

    from jaxbert.train import main       # the CLI, in this process

    for k, v in cache_env.items():
        monkeypatch.setenv(k, v)
    corpus = write_corpus(tmp_path)
    out = tmp_path / "run"
    real = ocp.CheckpointManager.save

    def save(self, step, *a, **k):
        if step < 4:
            return real(self, step, *a, **k)
        tmp = out.absolute() / "checkpoints" / f"{step}.orbax-checkpoint-tmp-1234" / "state"
        tmp.mkdir(parents=True)
        (tmp / "part").write_bytes(b"\0" * 100)
        try:
            _no_space()
        except OSError as e:   # as orbax reports it: wrapped, the OSError as the cause
            # and as its writer threads report it meanwhile: an absl error with a traceback per
            # failed write, and tensorstore's "Event loop is closed" per write that ends later
            logging.getLogger("absl").error("_SignalingThread.run() raised an exception",
                                            exc_info=True)
            sys.unraisablehook(SimpleNamespace(
                exc_type=RuntimeError, exc_value=RuntimeError("Event loop is closed"),
                exc_traceback=None, err_msg=None, object=None))
            raise ValueError("Failed to write checkpoint") from e
    monkeypatch.setattr(ocp.CheckpointManager, "save", save)
    with caplog.at_level(logging.INFO):
        rc = main(base_args(corpus, out, "--steps", "4", "--checkpoint-every", "2"))
    err = _one_line_no_traceback(capsys, rc, "No space left on device", "needed", "free",
                                 str(out.absolute() / "checkpoints" / "4"),
                                 str(out.absolute() / "checkpoints" / "2"))
    assert "Event loop is closed" not in err
    assert not [r for r in caplog.records if r.name == "absl"]     # held back, not shown
    assert checkpoint_steps("jax", out) == [2]
    assert temp_dirs(out) == []
