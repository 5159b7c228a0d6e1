"""The first run a newcomer makes: `python -m {torch,jax}bert.train` with no arguments learns
more than word frequencies (issue 16). Both twins run the no-argument settings on the built-in
corpus, shortened only in --steps, and must end with an MLM loss below the corpus's unigram
entropy: a model that predicts every masked word from frequencies alone cannot get there, only
one that uses the context can."""

import json

import pytest

from bertcore.config import BertConfig, TrainConfig
from helpers import run_cli

# The full no-argument run: 600 steps were measured to end on the baseline (torchbert 6.19 vs
# 6.29 - 0.1), too close for a test.
STEPS = TrainConfig().steps


# Not yet reliable (README "What a first run shows"): with these defaults the escape from the
# unigram plateau comes at a different step in each twin (different dropout masks) and some runs
# are still on it at step 1000; and one that escapes only reaches the loss of a model that copies
# the visible 20% of the predicted slots, not context use (bertcore.baseline.context_free).
@pytest.mark.xfail(strict=False, reason="issue 16 open: the defaults do not escape the unigram "
                   "plateau in every twin within 1000 steps")
@pytest.mark.slow
@pytest.mark.parametrize("twin", ["torch", "jax"])
def test_no_argument_run_beats_word_frequencies(twin, tmp_path, cache_env):
    out = tmp_path / "run"
    p = run_cli("-m", f"{twin}bert.train", "--out", str(out), "--no-progress",
                "--steps", str(STEPS), env=cache_env, timeout=1500)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]

    # the no-argument settings, but for --steps
    assert json.loads((out / "train_config.json").read_text()) == \
        TrainConfig(steps=STEPS).to_dict()
    tiny = BertConfig.from_preset("tiny")
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["num_hidden_layers"], cfg["hidden_size"]) == (tiny.num_hidden_layers,
                                                              tiny.hidden_size)

    learned = json.loads((out / "summary.json").read_text())["learned"]
    h, share = learned["unigram_entropy"], learned["unigram_top_share"]
    assert 5.0 < h < 8.0 and 0.0 < share < 0.2, learned      # the built-in corpus's baseline
    assert learned["final_mlm_loss"] < h - 0.1, learned
    assert learned["final_mlm_accuracy_mean"] > 2 * share, learned

    # what the run prints at its end: the figures next to the baseline, and what to try next
    lines = p.stdout.splitlines()
    said = [ln for ln in lines if ln.startswith("learned: MLM loss")]
    assert said and "word frequencies alone" in said[0] and "blind to context" in said[0]
    assert "NOT below" not in said[0], p.stdout[-2000:]
    nxt = [ln for ln in lines if ln.startswith("next: ")]
    assert nxt and f"{twin}bert.fill_mask {out}" in nxt[0] and "parity.convert" in nxt[0]
    pytest.importorskip("matplotlib")
    assert (out / "loss.png").is_file()
