"""The first run a newcomer makes: `python -m {torch,jax}bert.train` with no arguments (issue 16).
Both twins run the no-argument settings on the built-in corpus, shortened only in --steps, and
end by saying what they learned next to the corpus's baselines (word frequencies, and a model
blind to context) and what to try next."""

import json

import pytest

from bertcore.config import BertConfig, TrainConfig
from helpers import run_cli

# Shortened in --steps only, to keep the suite's time: this checks that the no-argument settings
# run in both twins and report what they learned against the corpus's baselines. Whether the full
# run ends below word frequencies in both twins is issue 16, still open (README "What a first run
# shows": jaxbert's run stayed on the unigram plateau at step 1000 when measured), so that claim
# is not asserted here.
STEPS = 60


@pytest.mark.slow
@pytest.mark.parametrize("twin", ["torch", "jax"])
def test_no_argument_run_reports_what_it_learned(twin, tmp_path, cache_env):
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
    assert learned["final_mlm_loss"] > 0 and 0 <= learned["final_mlm_accuracy_mean"] <= 1

    # what the run prints at its end: the figures next to the baseline, and what to try next
    lines = p.stdout.splitlines()
    said = [ln for ln in lines if ln.startswith("learned: MLM loss")]
    assert said and "word frequencies alone" in said[0] and "blind to context" in said[0]
    nxt = [ln for ln in lines if ln.startswith("next: ")]
    assert nxt and f"{twin}bert.fill_mask {out}" in nxt[0] and "parity.convert" in nxt[0]
    pytest.importorskip("matplotlib")
    assert (out / "loss.png").is_file()
