"""Sentence pairs and regression in both twins' `classify` (issue 36): a second text field
(--text-pair-column) encoded as transformers' fast tokenizer encodes a pair, a float label
(--task regression: one output, MSE, Pearson and Spearman), the pair and regression heads
against transformers (forward, loss, gradients, one step), fine-tunes that train, evaluate,
predict and export what transformers loads, and bad input refused in one line naming the file
and line. Single-text classification: test_classify.py."""

from __future__ import annotations

import json
import math
from pathlib import Path

import jax
import numpy as np
import pytest
import torch
import transformers

from bertcore.classify.cli import ClassifyConfig
from bertcore.classify.data import (Columns, Example, average_ranks, encode, open_classifier,
                                    pearson, read_examples, regression_scores)
from bertcore.infra.errors import UserError
from bertcore.model.hf import classifier_flax_to_hf
from helpers import (NEGATIVE, POSITIVE, ClassifyCli, assert_one_line_error, epoch_rows, hf_dir,
                     review_tokenizer, reviews, write_aclimdb, write_jsonl)
from jaxbert import classify as jc
from parity import thresholds as T
from torchbert import classify as tc

CPU = torch.device("cpu")
FAST = ("--max-len", "32", "--batch-size", "8", "--no-progress")
# STS-B's columns in GLUE's .tsv files.
STS = ("--text-column", "sentence1", "--text-pair-column", "sentence2")


def sentence_pairs(n: int, seed: int) -> list[dict]:
    """Pairs of reviews: `label` says whether the two agree ("same"/"different"), `score` (an
    STS-like 0-5 number) is 4 for agreeing sentiment, 1 for opposite, plus a fraction per cue
    word in the second: both follow from the words of both texts."""
    a, b = reviews(n, seed), reviews(n, seed + 100)
    rng = np.random.default_rng(seed)
    rng.shuffle(b)
    out = []
    for x, y in zip(a, b):
        same = x["label"] == y["label"]
        cues = sum(w in POSITIVE or w in NEGATIVE for w in y["text"].split())
        out.append({"sentence1": x["text"], "sentence2": y["text"],
                    "label": "same" if same else "different",
                    "score": (4.0 if same else 1.0) + 0.25 * cues})
    return out


def write_tsv(path: Path, rows: list[dict], label: str) -> Path:
    path.write_text("sentence1\tsentence2\tscore\n" + "".join(
        f"{r['sentence1']}\t{r['sentence2']}\t{r[label]}\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("tok")
    review_tokenizer().save(d)
    return d


def twin_logits(twin: str, clf, b: dict[str, np.ndarray]) -> np.ndarray:
    if twin == "torch":
        return tc.predict_logits(tc.load_classifier(clf, CPU), b, CPU)
    model, params = jc.load_classifier(clf)
    return jc.logits_fn(model)(params, b)


def transformers_out(path_or_model, b: dict[str, np.ndarray], labels=None):
    """transformers' logits (and loss, given labels) of a batch, dropout off."""
    model = path_or_model
    if isinstance(model, Path):
        model, info = transformers.AutoModelForSequenceClassification.from_pretrained(
            model, output_loading_info=True)
        assert not info["missing_keys"] and not info["unexpected_keys"], info
    model.eval()
    with torch.no_grad():
        return model(**{k: torch.from_numpy(b[k]).long() for k in
                        ("input_ids", "token_type_ids", "attention_mask")},
                     labels=None if labels is None else torch.from_numpy(labels))


# ---- encoding and metrics (no framework) -----------------------------------------------------

def test_pair_encoding_equals_transformers(tok_dir):
    """[CLS] A [SEP] B [SEP], token types 0 then 1, truncated longest first: the ids, types and
    mask transformers' BertTokenizerFast(text, text_pair, truncation=True, max_length=L) gives
    for the same vocabulary, at budgets where nothing, the longer text only, or both texts are
    cut (odd and even budgets, either text the longer, ties)."""
    from bertcore.data.tokenizer import load_tokenizer

    tok = load_tokenizer(tok_dir)
    hf = transformers.BertTokenizerFast.from_pretrained(tok_dir)
    rows = reviews(6, 3)
    long_ = " ".join(r["text"] for r in rows[:3])
    texts = [(rows[0]["text"], rows[1]["text"]), (long_, rows[2]["text"]),
             (rows[3]["text"], long_), (long_, long_), (rows[4]["text"], "dull"),
             (long_ + " great", long_)]
    for max_len in (8, 9, 16, 17, 24, 64):
        ex = [Example(a, b) for a, b in texts]
        enc = encode(tok, ex, None, max_len)
        want = hf([a for a, _ in texts], [b for _, b in texts], truncation=True,
                  max_length=max_len, padding="max_length")
        assert enc.input_ids.tolist() == want["input_ids"], max_len
        assert enc.token_type_ids.tolist() == want["token_type_ids"], max_len
        assert enc.attention_mask.tolist() == want["attention_mask"], max_len
        full = hf([a for a, _ in texts], [b for _, b in texts])["input_ids"]
        assert enc.truncated == sum(len(f) > max_len for f in full)
    # the comparison has teeth: among the cases, only the longer text cut and both cut to half
    # the budget, each at odd and even budgets, and a tie of two long texts
    lengths = [(len(tok.encode_batch([a])[0]), len(tok.encode_batch([b])[0])) for a, b in texts]
    cuts = {("longer" if min(la, lb) <= budget - min(la, lb) else "both", budget % 2, la == lb)
            for budget in (m - 3 for m in (8, 9, 16, 17, 24, 64)) for la, lb in lengths
            if la + lb > budget}
    assert {(k, odd) for k, odd, _ in cuts} == {("longer", 0), ("longer", 1), ("both", 0),
                                                ("both", 1)} and ("both", 1, True) in cuts


def test_correlations_by_hand():
    """Pearson, Spearman (Pearson of average ranks) and MSE against numbers worked out on paper."""
    y = np.array([1.0, 2.0, 2.0, 4.0, np.nan], np.float32)   # NaN: an unlabelled row, skipped
    p = np.array([0.5, 1.0, 3.0, 2.0, 9.0])
    assert average_ranks([1.0, 2.0, 2.0, 4.0]).tolist() == [1.0, 2.5, 2.5, 4.0]
    assert average_ranks([3, 1, 2, 1, 3]).tolist() == [4.5, 1.5, 3.0, 1.5, 4.5]
    s = regression_scores(y, p)
    # deviations from the means (2.25; 1.625): y (-1.25, -.25, -.25, 1.75), p (-1.125, -.625,
    # 1.375, .375); products sum to 1.875, squares to 4.75 and 3.6875
    assert s["pearson"] == pytest.approx(1.875 / math.sqrt(4.75 * 3.6875), abs=1e-12)
    # ranks y (1, 2.5, 2.5, 4), p (1, 2, 4, 3): deviations (-1.5, 0, 0, 1.5), (-1.5, -.5, 1.5, .5)
    assert s["spearman"] == pytest.approx(3.0 / math.sqrt(4.5 * 5.0), abs=1e-12)
    assert s["mse"] == pytest.approx((0.25 + 1 + 1 + 4) / 4, abs=1e-12)
    # x deviations (-1, 0, 1), y (-7/3, -1/3, 8/3): 5 / sqrt(2 * 114/9) = 15 / sqrt(228)
    assert pearson([1, 2, 3], [2, 4, 7]) == pytest.approx(15 / math.sqrt(228), abs=1e-12)
    assert math.isnan(pearson([1, 1, 1], [1, 2, 3]))      # a constant prediction: undefined
    assert regression_scores(np.array([3.0, 1.0, 2.0]), np.array([30.0, 10.0, 20.0]))[
        "spearman"] == pytest.approx(1.0)


def test_correlations_equal_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    y = rng.integers(0, 6, 200).astype(np.float64)           # many ties, as STS-B's scores have
    p = y + rng.normal(0, 2, 200)
    s = regression_scores(y, p)
    assert s["pearson"] == pytest.approx(stats.pearsonr(p, y)[0], abs=1e-12)
    assert s["spearman"] == pytest.approx(stats.spearmanr(p, y)[0], abs=1e-12)


def test_reading_pairs_and_scores(tmp_path, caplog):
    """The fields named by the flags; a pair's second text missing or empty, a regression label
    that is not a number: refused, naming the file and line; a text_pair field not asked for is
    said once and left unread."""
    cols = Columns("sentence1", "sentence2", "score")
    rows = sentence_pairs(4, 0)
    tsv = write_tsv(tmp_path / "sts.tsv", rows, "score")
    got = read_examples(tsv, columns=cols, regression=True)
    assert [(e.text, e.text_pair, e.label) for e in got] == \
        [(r["sentence1"], r["sentence2"], r["score"]) for r in rows]
    jl = write_jsonl(tmp_path / "p.jsonl", rows)
    got = read_examples(jl, columns=Columns("sentence1", "sentence2", "label"))
    assert [e.label for e in got] == [r["label"] for r in rows] and got[2].text_pair

    def refused(text: str, *needles: str, suffix=".jsonl", columns=cols, regression=True):
        path = tmp_path / f"bad{suffix}"
        path.write_text(text, encoding="utf-8")
        with pytest.raises(UserError) as e:
            read_examples(path, columns=columns, regression=regression)
        assert "\n" not in str(e.value)
        for n in needles:
            assert n in str(e.value), str(e.value)

    ok = '{"sentence1": "a", "sentence2": "b", "score": 2.5}\n'
    refused(ok + '{"sentence1": "a", "score": 1}\n', "bad.jsonl:2", '"sentence2"', "missing",
            "--text-pair-column sentence2")
    refused(ok * 2 + '{"sentence1": "a", "sentence2": " ", "score": 1}\n', "bad.jsonl:3",
            "is empty")
    refused(ok + '{"sentence1": "a", "sentence2": "b", "score": "high"}\n', "bad.jsonl:2",
            "'high' is not a number", "--task regression")
    refused(ok + '{"sentence1": "a", "sentence2": "b", "score": NaN}\n', "bad.jsonl:2",
            "not a number")
    refused("sentence1\tsentence2\tscore\na\tb\t1\nc\t\t2\n", "bad.tsv:3", "is empty",
            suffix=".tsv")
    refused("sentence1\tsentence2\tscore\na\tb\tfive\n", "bad.tsv:2", "'five' is not a number",
            suffix=".tsv")
    refused("sentence1\tscore\na\t1\n", "'sentence2' column", "sentence1, score", suffix=".tsv")
    with pytest.raises(UserError, match="aclImdb tree.*--text-pair-column"):
        read_examples(write_aclimdb(tmp_path / "aclImdb", 2, 2), columns=cols)
    # a text_pair field without --text-pair-column: single texts, and a warning says so
    with caplog.at_level("WARNING"):
        got = read_examples(write_jsonl(tmp_path / "tp.jsonl", [
            {"text": "a b", "text_pair": "c", "label": "x"}]))
    assert got[0].text_pair is None and "--text-pair-column text_pair" in caplog.text
    # the flags' own mistakes
    with pytest.raises(UserError, match="same column twice"):
        ClassifyConfig(text_column="s", text_pair_column="s").validate()
    with pytest.raises(UserError, match="task='ranking'"):
        ClassifyConfig(task="ranking").validate()


# ---- the heads against transformers: a pair batch, both problem types ------------------------

@pytest.fixture(scope="module")
def hf_pair_models(tmp_path_factory) -> dict[str, Path]:
    """Random tiny transformers BertForSequenceClassification directories, dropout off: three
    labels (NLI-style), and a regressor (num_labels 1, problem_type regression)."""
    tok = review_tokenizer()
    out = {}
    for problem, labels in (("classification", ("contradiction", "entailment", "neutral")),
                            ("regression", ("LABEL_0",))):
        d = tmp_path_factory.mktemp(problem)
        tok.save(d)
        torch.manual_seed(0)
        cfg = transformers.BertConfig(
            vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2,
            num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
            id2label=dict(enumerate(labels)), label2id={k: i for i, k in enumerate(labels)},
            problem_type="regression" if problem == "regression" else None)
        model = transformers.BertForSequenceClassification(cfg)
        with torch.no_grad():   # token type 1's embedding far from 0's: a pair's types matter
            model.bert.embeddings.token_type_embeddings.weight[1].normal_(0.0, 1.0)
            model.classifier.bias.normal_(0.0, 0.5)
        model.save_pretrained(d)
        out[problem] = d
    return out


def pair_batch(clf, n: int = 6) -> dict[str, np.ndarray]:
    rows = sentence_pairs(n, 2)
    names = clf.labels.labels
    ex = [Example(r["sentence1"], r["sentence2"],
                  r["score"] if clf.labels.regression else names[i % len(names)])
          for i, r in enumerate(rows)]
    b = encode(clf.tokenizer, ex, clf.labels, 40).rows(np.arange(n))
    assert (b["token_type_ids"] == 1).any(axis=1).all()     # every row a pair
    return b


@pytest.mark.slow
@pytest.mark.parametrize("problem", ["classification", "regression"])
def test_pair_heads_agree_with_transformers(problem, hf_pair_models, tmp_path):
    """On a pair batch (token types 0 and 1), from the same weights, dropout off: both twins'
    logits, loss (cross-entropy; MSE for the regressor, as transformers' problem_type
    "regression" computes it) and gradients of every tensor against transformers'
    (parity/thresholds.py's bars), and one AdamW step of torch against JAX. (parity.check has no
    classifier rows; these are the pair and regression-loss rows.)"""
    from jaxbert.classifier import sequence_loss as jax_loss
    from torchbert.classifier import sequence_loss as torch_loss

    clf = open_classifier(hf_pair_models[problem])
    regression = clf.labels.regression
    assert regression == (problem == "regression") and len(clf.labels) == (1 if regression else 3)
    b = pair_batch(clf)
    hf_model = transformers.BertForSequenceClassification.from_pretrained(
        hf_pair_models[problem])
    labels = torch.from_numpy(b["labels"]).float() if regression else \
        torch.from_numpy(b["labels"]).long()
    hf = hf_model(**{k: torch.from_numpy(b[k]).long() for k in
                     ("input_ids", "token_type_ids", "attention_mask")}, labels=labels)
    hf.loss.backward()
    hf_grads = {n: p.grad.numpy() for n, p in hf_model.named_parameters()}
    # torch twin
    model = tc.load_classifier(clf, CPU)
    logits_t = model(*(torch.from_numpy(b[k]).long() for k in
                       ("input_ids", "token_type_ids", "attention_mask")))
    loss_t, _ = torch_loss(regression)(logits_t, torch.from_numpy(b["labels"]))
    loss_t.backward()
    grads_t = {n: p.grad.numpy() for n, p in model.named_parameters()}
    # JAX twin
    with jax.default_matmul_precision("highest"):
        jmodel, params = jc.load_classifier(clf)

        def loss_fn(p):
            z = jmodel.apply({"params": p}, b["input_ids"], b["token_type_ids"],
                             b["attention_mask"])
            return jax_loss(regression)(z, b["labels"])[0], z

        (loss_j, logits_j), g = jax.value_and_grad(loss_fn, has_aux=True)(params)
    grads_j = classifier_flax_to_hf(jax.tree_util.tree_map(np.asarray, g), clf.config,
                                    len(clf.labels))
    want = hf.logits.detach().numpy()
    assert want.shape == (6, len(clf.labels))
    for got in (logits_t.detach().numpy(), np.asarray(logits_j)):
        assert np.abs(got - want).max() < T.FORWARD_MAX_ABS
    for got in (loss_t.item(), float(loss_j)):
        assert abs(got - hf.loss.item()) / hf.loss.item() < T.LOSS_REL
    assert set(grads_t) == set(grads_j) == set(hf_grads)
    norm = lambda a: float(np.linalg.norm(np.asarray(a, np.float64)))
    floor = T.GRAD_ZERO_FLOOR * math.sqrt(sum(norm(g) ** 2 for g in hf_grads.values()))
    for name, want_g in hf_grads.items():
        for got in (grads_t[name], grads_j[name]):
            if norm(want_g) < floor:      # zero in exact arithmetic (the key bias): noise only
                assert norm(got) < floor, name
            else:
                assert norm(got - want_g) / norm(want_g) < T.GRAD_REL, name
    # the token types matter: a pair read as one segment moves the logits far more than the
    # twins differ from transformers (a random tiny model's logits barely vary, hence relative)
    one_segment = {**b, "token_type_ids": np.zeros_like(b["token_type_ids"])}
    moved = np.abs(tc.predict_logits(model, one_segment, CPU) - want).max()
    assert moved > 100 * np.abs(logits_t.detach().numpy() - want).max()
    # one AdamW step (schedule, decay mask, clipping) in both twins from these weights
    from types import SimpleNamespace
    run = SimpleNamespace(classify_config=ClassifyConfig(lr=1e-3, batch_size=6, dropout=False),
                          model_config=clf.config, labels=clf.labels, rundir=tmp_path,
                          total_steps=10)
    torch_twin = tc.ClassifierTwin(run, clf.state, CPU)
    with jax.default_matmul_precision("highest"):
        jax_twin = jc.ClassifierTwin(run, clf.state)
        lr = float(run.classify_config.lr_at(run.total_steps)(0))
        lt, lj = float(torch_twin.step(1, b, lr)["loss"]), float(jax_twin.step(1, b, lr)["loss"])
    assert abs(lt - lj) / lt < T.LOSS_REL and abs(lt - hf.loss.item()) / lt < T.LOSS_REL
    after_t, after_j = torch_twin.weights(), jax_twin.weights()
    assert max(np.abs(after_t[k] - clf.state[k]).max() for k in clf.state) > \
        100 * T.ADAMW_STEP_MAX_ABS                    # the step moved the weights
    assert max(np.abs(after_t[k] - after_j[k]).max() for k in after_t) < T.ADAMW_STEP_MAX_ABS


def test_modernbert_pair_has_no_token_types(tmp_path):
    """ModernBERT has no token-type embedding: a pair is [CLS] A [SEP] B [SEP] alone, and both
    twins' logits on a pair batch (types 0/1 in it) are transformers' given no types at all."""
    from test_modernbert_classify import hf_classifier_dir, transformers_logits

    clf = open_classifier(hf_classifier_dir(tmp_path / "mb", "cls"))
    rows = sentence_pairs(6, 4)
    b = encode(clf.tokenizer, [Example(r["sentence1"], r["sentence2"]) for r in rows], None,
               24).rows(np.arange(6))
    want = transformers_logits(tmp_path / "mb", b)
    for twin in ("torch", "jax"):
        np.testing.assert_allclose(twin_logits(twin, clf, b), want, rtol=0, atol=1e-5)


# ---- the command line, both twins -------------------------------------------------------------

def test_pair_and_regression_refusals(twin, tmp_path, capsys):
    """Refused in one line before anything is trained: a pair file missing a second text, a
    regression label that is not a number (each naming the file and line), --max-len beyond
    the model's positions with pairs, an aclImdb tree for a pair task."""
    cli = ClassifyCli(twin, capsys)
    model = hf_dir(tmp_path / "hf")

    def train(data: Path, *args: str):
        return cli("train", "--init-from", str(model), "--data", str(data), *STS,
                   "--out", str(tmp_path / "run"), *FAST, *args, check=False)

    rows = sentence_pairs(20, 0)
    gap = [dict(r) for r in rows]
    del gap[6]["sentence2"]
    p = train(write_jsonl(tmp_path / "gap.jsonl", gap))
    assert_one_line_error(p, "gap.jsonl:7", '"sentence2"', "needs both texts")
    bad = [dict(r) for r in rows]
    bad[3]["score"] = "very similar"
    p = train(write_jsonl(tmp_path / "bad.jsonl", bad), "--label-column", "score",
              "--task", "regression")
    assert_one_line_error(p, "bad.jsonl:4", "'very similar' is not a number")
    tsv = write_tsv(tmp_path / "sts.tsv", rows, "score")
    p = train(tsv, "--label-column", "score", "--task", "regression", "--max-len", "100")
    assert_one_line_error(p, "max-len=100", "max_position_embeddings=64")
    p = train(tsv, "--label-column", "score", "--task", "regression", "--val-fraction", "0.1",
              "--text-column", "sentence2")
    assert_one_line_error(p, "same column twice")
    assert not (tmp_path / "run").exists()


def _train(cli, model: Path, data: Path, out: Path, *args: str) -> list[dict]:
    cli("train", "--init-from", str(model), "--data", str(data), "--out", str(out), *STS, *FAST,
        *args)
    return epoch_rows(out)


@pytest.mark.slow
def test_pair_classification(twin, tmp_path, capsys):
    """A pair fine-tune (jsonl, sentence1/sentence2): the run records its columns, evaluate reads
    them, predict shows both texts of each pair, best/ loads in transformers'
    AutoModelForSequenceClassification with the twin's logits on pairs; labels the model does
    not know, and an odd number of texts to predict, refused in one line."""
    cli = ClassifyCli(twin, capsys)
    model = hf_dir(tmp_path / "hf")
    out = tmp_path / "run"
    rows = _train(cli, model, write_jsonl(tmp_path / "train.jsonl", sentence_pairs(64, 0)), out,
                  "--epochs", "2", "--lr", "2e-3")
    assert [r["epoch"] for r in rows] == [1, 2] and "val_accuracy" in rows[0]
    settings = json.loads((out / "classify_config.json").read_text())
    assert (settings["task"], settings["text_column"], settings["text_pair_column"],
            settings["label_column"]) == ("classification", "sentence1", "sentence2", "label")
    assert "sequence classifier (2 labels: `different`, `same`) of sentence pairs" in \
        (out / "best" / "README.md").read_text()
    test = sentence_pairs(16, 1)
    res = json.loads(cli("evaluate", str(out), "--data",
                         str(write_jsonl(tmp_path / "test.jsonl", test)), "--json").stdout)
    assert res["examples"] == 16 and 0.0 <= res["accuracy"] <= 1.0
    # the export: transformers' logits on pairs are the twin's
    clf = open_classifier(out)
    assert clf.columns == Columns("sentence1", "sentence2", "label")
    ex = [Example(r["sentence1"], r["sentence2"], r["label"]) for r in test]
    b = encode(clf.tokenizer, ex, clf.labels, clf.max_len).rows(np.arange(8))
    assert (b["token_type_ids"] == 1).any()
    hf = transformers_out(out / "best", b)
    np.testing.assert_allclose(twin_logits(twin, clf, b), hf.logits.numpy(), rtol=0, atol=1e-5)
    # predict: pairs two texts at a time; the label and both texts printed
    p = cli("predict", str(out), test[0]["sentence1"], test[0]["sentence2"], "great film",
            "awful film")
    lines = p.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[1].split()[0] in ("different", "same")
    assert lines[1].endswith("great film [SEP] awful film")
    got = json.loads(cli("predict", str(out), "great film", "awful film", "--json").stdout)
    assert got[0]["text"] == "great film" and got[0]["text_pair"] == "awful film"
    assert got[0]["label"] in ("different", "same")
    assert sum(got[0]["probabilities"].values()) == pytest.approx(1.0)
    assert_one_line_error(cli("predict", str(out), "a", "b", "c", check=False),
                          "3 texts for a sentence-pair model", "two at a time")
    odd = write_jsonl(tmp_path / "odd.jsonl", [{**test[0], "label": "maybe"}])
    assert_one_line_error(cli("evaluate", str(out), "--data", str(odd), check=False),
                          "label sets differ", "'maybe'")


@pytest.mark.slow
def test_regression(twin, tmp_path, capsys):
    """STS-B style (a .tsv of sentence1, sentence2, score, --task regression): the epochs report
    Pearson, Spearman and MSE (val_loss is the MSE), best/ is the best Pearson's epoch, evaluate
    reports what the predictions score, and best/ is transformers' regressor (problem_type
    regression, num_labels 1) with the twin's outputs and an MSE loss equal to evaluate's."""
    cli = ClassifyCli(twin, capsys)
    model = hf_dir(tmp_path / "hf")
    out = tmp_path / "run"
    rows = _train(cli, model, write_tsv(tmp_path / "train.tsv", sentence_pairs(64, 0), "score"),
                  out, "--label-column", "score", "--task", "regression", "--epochs", "3",
                  "--lr", "2e-3")
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    for r in rows:
        assert -1.0 <= r["val_pearson"] <= 1.0 and -1.0 <= r["val_spearman"] <= 1.0
        assert r["val_loss"] == r["val_mse"] and "val_accuracy" not in r
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]      # it learns (the scores' level)
    best = json.loads((out / "best" / "classifier.json").read_text())
    assert best["val_pearson"] == max(r["val_pearson"] for r in rows)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "regression"
    # evaluate scores what predict predicts
    test = sentence_pairs(24, 1)
    test_tsv = write_tsv(tmp_path / "test.tsv", test, "score")
    res = json.loads(cli("evaluate", str(out), "--data", str(test_tsv), "--json").stdout)
    pred = json.loads(cli("predict", str(out), "--file", str(test_tsv), "--json").stdout)
    assert [p["text_pair"] for p in pred] == [r["sentence2"] for r in test]
    scores = regression_scores(np.array([r["score"] for r in test]),
                               np.array([p["score"] for p in pred]))
    for k in ("pearson", "spearman", "mse"):
        assert res[k] == pytest.approx(scores[k], abs=1e-6)
    assert res["loss"] == res["mse"]
    # the export: transformers' regressor, its outputs and loss the twin's
    cfg = json.loads((out / "best" / "config.json").read_text())
    assert cfg["problem_type"] == "regression" and len(cfg["id2label"]) == 1
    card = (out / "best" / "README.md").read_text()
    assert "sequence regressor" in card and "sentence pairs: `sentence1`, `sentence2`" in card
    assert f"Pearson {best['val_pearson']:.4f}" in card and "accuracy" not in card
    clf = open_classifier(out)
    assert clf.labels.regression
    ex = [Example(r["sentence1"], r["sentence2"], r["score"]) for r in test]
    enc = encode(clf.tokenizer, ex, clf.labels, clf.max_len)
    b = enc.rows(np.arange(len(test)))
    hf = transformers_out(out / "best", b, labels=b["labels"])
    assert hf.logits.shape == (24, 1)
    np.testing.assert_allclose(twin_logits(twin, clf, b), hf.logits.numpy(), rtol=0, atol=1e-5)
    assert float(hf.loss) == pytest.approx(res["mse"], rel=1e-5)
    # a class label where a score belongs: named with its line
    words = write_tsv(tmp_path / "words.tsv", [{**t, "label": "high"} for t in test[:3]],
                      "label")
    assert_one_line_error(cli("evaluate", str(out), "--data", str(words), check=False),
                          "words.tsv:2", "'high' is not a number")
