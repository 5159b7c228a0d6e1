"""torchbert.train and jaxbert.train end to end, held to the same behaviour: run files, exact
resume (also after SIGKILL and SIGTERM, also of two processes), held-out evaluation, the time
budget, one-line errors for bad input, --init-from across the twins. Each test that takes
`twin` runs once per twin: `test_resume_is_bit_exact[torch]`, `test_resume_is_bit_exact[jax]`.

What only one twin has (DDP, pmap and sharded layouts, multi-host, the step functions' own
checks) is in test_torch_train.py and test_jax_train.py."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import (ROOT, assert_one_line_error, base_args, checkpoint_steps, metrics,
                     prepared_data, run_cli, signal_when, temp_dirs, train_cli, train_in_process,
                     wait_all,
                     write_corpus)


def curve(rundir: Path, keys=("loss", "mlm_loss", "nsp_loss", "grad_norm", "mlm_accuracy",
                              "learning_rate")) -> list[tuple]:
    return [tuple([m["step"]] + [m[k] for k in keys]) for m in metrics(rundir)]


@pytest.mark.slow
def test_run_files_and_summary(twin, tmp_path, cache_env):
    """A RUNDIR's files, metrics.jsonl's keys, summary.json; --overwrite starts over. jax also
    runs `--parallel pmap` on this one-device machine: a note, the run goes on, and its six
    steps compile one program."""
    corpus = write_corpus(tmp_path)
    out = tmp_path / "run"
    pmap = ("--parallel", "pmap") if twin == "jax" else ()
    p = train_cli(twin, *base_args(corpus, out, "--steps", "6", "--log-every", "2", *pmap),
                  env=cache_env)
    assert str(out) in p.stdout
    for f in ("config.json", "train_config.json", "run.json", "metrics.jsonl", "summary.json",
              "loss.png", "tokenizer/vocab.txt"):
        assert (out / f).exists(), f
    rows = metrics(out)
    assert [r["step"] for r in rows] == [2, 4, 6]
    for key in ("loss", "mlm_loss", "nsp_loss", "mlm_accuracy", "nsp_accuracy", "learning_rate",
                "grad_norm", "tokens_per_second"):
        assert key in rows[0], key
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 6 and summary["peak_rss_mb"] > 0
    if twin == "jax":
        assert "pmap with a single device" in p.stdout + p.stderr
        assert summary["first_step_seconds"] > 0
        assert summary["step_compilations"] == 1  # six steps, one compiled program
    # --overwrite starts over
    train_cli(twin, *base_args(corpus, out, "--steps", "2", "--overwrite"), env=cache_env)
    assert [r["step"] for r in metrics(out)] == [1, 2]


@pytest.mark.slow
def test_resume_is_bit_exact(twin, tmp_path, cache_env):
    """20 steps straight == 10 steps (--stop-after 10) + --resume 10, bit for bit."""
    corpus = write_corpus(tmp_path)
    common = ("--steps", "20", "--checkpoint-every", "5", "--warmup-steps", "4")
    a, b = tmp_path / "straight", tmp_path / "resumed"
    train_cli(twin, *base_args(corpus, a, *common), env=cache_env)
    train_cli(twin, *base_args(corpus, b, *common, "--stop-after", "10"), env=cache_env)
    assert [m["step"] for m in metrics(b)] == list(range(1, 11))
    train_cli(twin, *base_args(corpus, b, *common, "--resume"), env=cache_env)
    assert len(curve(a)) == 20
    assert curve(b) == curve(a)
    # dropout was on: a different seed gives a different curve (the comparison has teeth)
    c = tmp_path / "other-seed"
    train_cli(twin, *base_args(corpus, c, *common, "--seed", "1", "--stop-after", "3"),
              env=cache_env)
    assert curve(c)[:3] != curve(a)[:3]


@pytest.mark.slow
def test_sigkill_right_after_checkpoint_then_resume(twin, tmp_path, cache_env):
    """20 steps straight == (killed right after the step-10 checkpoint) + --resume to 20."""
    corpus = write_corpus(tmp_path)
    common = ("--schedule", "constant", "--warmup-steps", "5", "--checkpoint-every", "10")
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    train_cli(twin, *base_args(corpus, straight, "--steps", "20", *common), env=cache_env)
    env = {**os.environ, "PYTHONPATH": str(ROOT), **cache_env}
    proc = subprocess.Popen([sys.executable, "-m", f"{twin}bert.train",
                             *base_args(corpus, killed, "--steps", "100000", *common)],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    ckpt_root = killed / "checkpoints"
    deadline = time.time() + 300
    try:
        while time.time() < deadline:
            if proc.poll() is not None:
                raise AssertionError("the run ended before it could be killed")
            # torchbert writes step_00000010/, orbax writes 10/ (temp dirs have other names)
            if ckpt_root.is_dir() and any(p.name.startswith("step_") or p.name.isdigit()
                                          for p in ckpt_root.iterdir()):
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    train_cli(twin, *base_args(corpus, killed, "--steps", "20", "--resume", *common),
              env=cache_env)
    assert curve(killed) == curve(straight)


@pytest.mark.slow
def test_bad_inputs_one_line_errors(twin, tmp_path, cache_env):
    corpus = write_corpus(tmp_path)
    run_dir = tmp_path / "run"

    def fails(*args: str, needles=()):
        # In this process: each of these is refused before any training (the subprocess below
        # and the other tests hold the real CLI process to the same one-line contract).
        p = train_in_process(twin, *args, env=cache_env)
        assert_one_line_error(p, *needles)

    # --resume with no run / no checkpoint (a real CLI process: exit status, no traceback)
    p = train_cli(twin, *base_args(corpus, tmp_path / "none", "--steps", "2", "--resume"),
                  env=cache_env, check=False)
    assert_one_line_error(p, "--resume")
    # a good run to misuse
    train_cli(twin, *base_args(corpus, run_dir, "--steps", "2", "--checkpoint-every", "2"),
              env=cache_env)
    before = (run_dir / "metrics.jsonl").read_text()
    # RUNDIR of another run without --resume/--overwrite: refused, nothing touched
    fails(*base_args(corpus, run_dir, "--steps", "2"), needles=(str(run_dir), "--overwrite"))
    assert (run_dir / "metrics.jsonl").read_text() == before
    # tokenizer vocab size != config vocab size
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"vocab_size": 999, "hidden_size": 32, "num_hidden_layers": 1,
                               "num_attention_heads": 2, "intermediate_size": 64}))
    fails(*base_args(corpus, tmp_path / "v", "--config", str(cfg), "--steps", "1"),
          needles=("vocab_size=999",))
    # batch size not divisible by accumulation steps
    fails(*base_args(corpus, tmp_path / "acc", "--grad-accum", "3", "--steps", "1"),
          needles=("grad-accum",))
    # unknown preset is argparse's own one-line error (exit 2)
    p = train_in_process(twin, *base_args(corpus, tmp_path / "u", "--preset", "huge"),
                         env=cache_env)
    assert p.returncode == 2 and "Traceback" not in p.stderr and "huge" in p.stderr
    # seq-len beyond the model's positions
    fails(*base_args(corpus, tmp_path / "s", "--seq-len", "1024", "--steps", "1"),
          needles=("seq-len=1024",))
    # resuming with changed settings
    fails(*base_args(corpus, run_dir, "--steps", "4", "--resume", "--lr", "0.5"),
          needles=("lr",))
    # resuming with another total for a schedule that decays to 0 at --steps (linear here)
    fails(*base_args(corpus, run_dir, "--steps", "4", "--resume"),
          needles=("--steps 4", "linear", "--steps 2"))
    # the other twin's run
    other = "jax" if twin == "torch" else "torch"
    info = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps({**info, "framework": other}))
    fails(*base_args(corpus, run_dir, "--steps", "4", "--resume"), needles=(f"{other}bert",))
    (run_dir / "run.json").write_text(json.dumps(info))
    # fill-mask: text without [MASK]
    p = run_cli("-m", f"{twin}bert.fill_mask", str(run_dir), "no mask here")
    assert_one_line_error(p, "[MASK]")
    p = run_cli("-m", f"{twin}bert.fill_mask", str(run_dir), "the movie was [MASK] .")
    assert p.returncode == 0, p.stderr
    assert "[MASK] #1" in p.stdout and "%" in p.stdout
    if twin == "torch":
        # a torch-only flag, checked by the entry point before any thread starts
        fails(*base_args(corpus, tmp_path / "t", "--threads", "-1"), needles=("--threads -1",))
    if twin == "jax":
        # a global batch that the 4 devices cannot split (subprocess: 4 CPU devices)
        env = {**cache_env, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
        p = train_cli(twin, *base_args(corpus, tmp_path / "d", "--batch-size", "6",
                                       "--steps", "1", "--parallel", "sharded"),
                      env=env, check=False)
        assert_one_line_error(p, "does not split into 4 devices")
        # an orbax checkpoint from another config
        cfg = json.loads((run_dir / "config.json").read_text())
        (run_dir / "config.json").write_text(json.dumps({**cfg, "intermediate_size": 64}))
        p = train_cli(twin, *base_args(corpus, run_dir, "--steps", "2", "--resume"),
                      env=cache_env, check=False)
        assert_one_line_error(p, "another model config", "intermediate_size")


@pytest.mark.slow
def test_eval_is_fixed_and_resumes_exactly(twin, tmp_path, cache_env):
    """Held-out evaluation on `prepare --eval-fraction` data: eval lines at each checkpoint and
    at the end, perplexity = exp(MLM loss), the same lines after a --resume as straight through,
    and the last one in summary.json."""
    import math

    data = prepared_data(tmp_path, cache_env)
    common = ["--preset", "tiny", "--data", str(data), "--seq-len", "32", "--batch-size", "8",
              "--max-predictions", "5", "--no-progress", "--log-every", "2", "--steps", "6",
              "--checkpoint-every", "3", "--eval-batches", "3"]
    a, b = tmp_path / "straight", tmp_path / "resumed"
    train_cli(twin, *common, "--out", str(a), env=cache_env)
    train_cli(twin, *common, "--out", str(b), "--stop-after", "3", env=cache_env)
    train_cli(twin, *common, "--out", str(b), "--resume", env=cache_env)
    evals = [m for m in metrics(a) if m.get("split") == "eval"]
    assert [m["step"] for m in evals] == [3, 6]
    assert evals == [m for m in metrics(b) if m.get("split") == "eval"]
    for m in evals:
        assert m["perplexity"] == math.exp(m["mlm_loss"]) and 0 <= m["mlm_accuracy"] <= 1
        assert {"nsp_loss", "nsp_accuracy", "loss"} <= set(m)
    summary = json.loads((a / "summary.json").read_text())
    assert summary["eval"] == {k: v for k, v in evals[-1].items() if k != "step"}
    assert summary["steps"] == 6      # eval lines are not training steps


@pytest.mark.slow
def test_init_from_a_run_of_either_twin(tmp_path, cache_env):
    """--init-from: a torchbert run continues from a torchbert RUNDIR (its checkpoint), a
    jaxbert run from the same RUNDIR (through the hf/ export every run writes at its end, which
    is also a plain Hugging Face directory); both start from exactly those weights (an LR of
    1e-12 leaves them where they started). A tokenizer with another vocabulary is refused."""
    from safetensors.numpy import load_file

    corpus = write_corpus(tmp_path)
    src = tmp_path / "src"
    train_cli("torch", *base_args(corpus, src, "--steps", "3"), env=cache_env)
    exported = load_file(str(src / "hf" / "model.safetensors"))
    assert (src / "hf" / "config.json").is_file() and (src / "hf" / "vocab.txt").is_file()
    still = ("--steps", "1", "--lr", "1e-12", "--no-dropout", "--warmup-steps", "0")
    for twin in ("torch", "jax"):
        out = tmp_path / f"from-{twin}"
        p = train_cli(twin, *base_args(corpus, out, *still, "--init-from", str(src),
                                       "--preset", "mini"), env=cache_env)
        assert "starting from the weights of" in p.stdout + p.stderr
        info = json.loads((out / "run.json").read_text())
        assert info["init_from"] == str(src.resolve()) if twin == "torch" else \
            info["init_from"] == str((src / "hf").resolve())
        # the model is the source's (tiny), not --preset mini
        assert json.loads((out / "config.json").read_text())["hidden_size"] == 128
        after = load_file(str(out / "hf" / "model.safetensors"))
        assert after.keys() == exported.keys()
        for k, a in exported.items():
            assert abs(after[k] - a).max() <= 1e-6, (twin, k)
    # another vocabulary: one line, nothing written
    tok = tmp_path / "tok"
    p = run_cli("-m", "bertcore.tokenizer", "train", "--corpus", str(corpus), "--vocab-size",
                "200", "--out", str(tok), env=cache_env)
    assert p.returncode == 0, p.stderr
    bad = train_cli("jax", *base_args(corpus, tmp_path / "bad", "--init-from", str(src),
                                      "--tokenizer", str(tok), "--steps", "1"),
                    env=cache_env, check=False)
    assert_one_line_error(bad, "another vocabulary", "--tokenizer")
    assert not (tmp_path / "bad").exists()


# ---- stopping cleanly (bertcore.train.stopping) --------------------------------------------------

@pytest.mark.slow
def test_sigterm_mid_run_checkpoints_then_resume_is_exact(twin, tmp_path, cache_env):
    """SIGTERM mid-run: the step in progress ends, a checkpoint of it is written, exit 75 with
    the resume command; --resume to the end == a straight run, bit for bit."""
    corpus = write_corpus(tmp_path)
    common = ("--schedule", "constant", "--warmup-steps", "5", "--checkpoint-every", "1000")
    stopped = tmp_path / "stopped"
    path = stopped / "metrics.jsonl"
    rc, out, err = signal_when(
        ["-m", f"{twin}bert.train", *base_args(corpus, stopped, "--steps", "100000", *common)],
        cache_env, lambda: path.is_file() and len(path.read_text().splitlines()) >= 3)
    assert rc == 75, out[-2000:] + err[-3000:]
    assert "Traceback" not in err, err
    steps = checkpoint_steps(twin, stopped)
    assert len(steps) == 1, steps          # no checkpoint was due: this one is the stop's
    stop = steps[0]
    assert 3 <= stop < 100000
    assert metrics(stopped)[-1]["step"] == stop
    lines = [ln for ln in out.splitlines() if ln.startswith("stopped by SIGTERM")]
    assert len(lines) == 1 and f"after step {stop}" in lines[0] and "--resume" in lines[0], out
    summary = json.loads((stopped / "summary.json").read_text())
    assert summary["stopped"] == "SIGTERM" and summary["steps"] == stop
    assert (stopped / "loss.png").is_file() and (stopped / "hf" / "model.safetensors").is_file()
    end = str(stop + 4)
    train_cli(twin, *base_args(corpus, stopped, "--steps", end, "--resume", *common),
              env=cache_env)
    straight = tmp_path / "straight"
    train_cli(twin, *base_args(corpus, straight, "--steps", end, *common), env=cache_env)
    assert len(curve(straight)) == stop + 4
    assert curve(stopped) == curve(straight)


# A compilation cannot be interrupted, so jax's budget leaves room for the first step's (the
# session's XLA cache usually has this program already; ~10-20 s when it has not).
TIME_BUDGET = {"torch": 40, "jax": 60}


@pytest.mark.slow
def test_time_budget_stops_with_a_checkpoint_in_time(twin, tmp_path, cache_env):
    """--time-budget: the run stops, checkpointed and summarised, before the budget elapses
    (counted from the process start), and exits 0."""
    budget = TIME_BUDGET[twin]
    corpus = write_corpus(tmp_path)
    out = tmp_path / "budget"
    t = time.time()
    p = train_cli(twin, *base_args(corpus, out, "--steps", "100000", "--checkpoint-every",
                                   "100000", "--schedule", "constant", "--time-budget",
                                   f"{budget}s"), env=cache_env)
    # Checkpoint, summary, plot and hf/ were written before the budget ran out (the
    # interpreter's own exit, seconds on a loaded machine, comes after them).
    for f in ("summary.json", "loss.png", "hf/model.safetensors"):
        assert (out / f).stat().st_mtime < t + budget, (f, (out / f).stat().st_mtime - t)
    steps = checkpoint_steps(twin, out)
    assert len(steps) == 1 and steps[0] == metrics(out)[-1]["step"] >= 1, steps
    ckpt = out / "checkpoints" / (f"step_{steps[0]:08d}" if twin == "torch" else str(steps[0]))
    assert ckpt.stat().st_mtime < t + budget
    assert "stopped by --time-budget" in p.stdout and "--resume" in p.stdout, p.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped"].startswith("--time-budget")
    assert temp_dirs(out) == []


def torchrun(cache_env: dict):
    """(launch, resume) for 2 gloo ranks under torchrun; the victim is rank 1."""
    import psutil

    env = {**os.environ, "PYTHONPATH": str(ROOT), **cache_env, "OMP_NUM_THREADS": "1"}

    def cmd(corpus, out, *args):
        return [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc-per-node", "2", "-m", "torchbert.train",
                *base_args(corpus, out, *args)]

    def launch(corpus, out, *args):
        agent = subprocess.Popen(cmd(corpus, out, *args), cwd=ROOT, env=env, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

        def rank1():
            for c in psutil.Process(agent.pid).children(recursive=True):
                if c.environ().get("RANK") == "1" and "torchbert.train" in c.cmdline():
                    return c.pid
            raise AssertionError("rank 1 not found")
        return [agent], rank1

    def resume(corpus, out, *args):
        p = subprocess.run(cmd(corpus, out, *args), cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=600)
        assert p.returncode == 0, p.stderr[-3000:]

    return launch, resume


def jax_distributed(cache_env: dict):
    """(launch, resume) for 2 jax.distributed CPU processes on localhost; the victim is
    process 1."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **cache_env}

    def start(corpus, out, *args):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        return [subprocess.Popen(
            [sys.executable, "-m", "jaxbert.train", *base_args(corpus, out, *args),
             "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
             "--process-id", str(i)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for i in range(2)]

    def launch(corpus, out, *args):
        procs = start(corpus, out, *args)
        return procs, lambda: procs[1].pid

    def resume(corpus, out, *args):
        wait_all(start(corpus, out, *args))

    return launch, resume


@pytest.mark.slow
def test_sigterm_to_one_of_two_processes_stops_both_at_one_step_then_resume(twin, tmp_path,
                                                                            cache_env):
    """Two processes, SIGTERM to one of them: torchrun's 2 gloo ranks (rank 1's flag rides the
    metrics all-reduce, so rank 0 stops at the same step and writes the checkpoint), or 2
    jax.distributed CPU processes (JAX's preemption sync point makes both stop at the same
    step). Both stop at the same step with one checkpoint of it and exit 75; both resume to
    the end, and the curve matches one process's straight run (dropout off, float tolerance).

    `launch(corpus, out, *args)` -> (procs to wait for, a function returning the pid of the
    worker to signal); `resume(corpus, out, *args)` runs the two processes to the end."""
    launch, resume = (torchrun if twin == "torch" else jax_distributed)(cache_env)
    corpus = write_corpus(tmp_path)
    common = ("--schedule", "constant", "--warmup-steps", "5", "--checkpoint-every", "1000",
              "--no-dropout")
    out = tmp_path / "two"
    procs, victim = launch(corpus, out, "--steps", "100000", *common)
    deadline = time.time() + 400
    try:
        while time.time() < deadline:
            if any(p.poll() is not None for p in procs):
                raise AssertionError("a process ended before SIGTERM: " +
                                     "".join((p.communicate()[0] or "")[-2000:] for p in procs))
            path = out / "metrics.jsonl"
            if path.is_file() and len(path.read_text().splitlines()) >= 3:
                break
            time.sleep(0.05)
        os.kill(victim(), signal.SIGTERM)
        outs = [p.communicate(timeout=300)[0] or "" for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    text = "".join(o[-3000:] for o in outs)
    if twin == "jax":
        assert [p.returncode for p in procs] == [75, 75], text
    else:   # torchrun reports its workers' exit codes
        assert "exitcode  : 75" in text or procs[0].returncode == 75, text
    steps = checkpoint_steps(twin, out)
    assert len(steps) == 1, (steps, text)
    stop = steps[0]
    assert metrics(out)[-1]["step"] == stop, text
    assert "stopped by" in text and f"after step {stop}" in text, text
    assert json.loads((out / "summary.json").read_text())["stopped"], text
    end = str(stop + 3)
    resume(corpus, out, "--steps", end, "--resume", *common)
    one = tmp_path / "one"
    train_cli(twin, *base_args(corpus, one, "--steps", end, *common), env=cache_env)
    a, b = metrics(one), metrics(out)
    assert [m["step"] for m in a] == [m["step"] for m in b] == list(range(1, stop + 4))
    for x, y in zip(a, b):
        for k in ("loss", "mlm_loss", "nsp_loss", "grad_norm"):
            assert abs(x[k] - y[k]) <= 1e-5 * max(1.0, abs(x[k])), (k, x["step"], x[k], y[k])
