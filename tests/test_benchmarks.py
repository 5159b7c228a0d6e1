"""The benchmark command lines: bad input, the no-GPU note, a tiny real run, out of memory.

Speed itself is measured by the benchmarks, never asserted here. The runs use a small synthetic
corpus (its tokenizer and shards build in a second, in a per-session TWINBERT_CACHE) instead of
the built-in one, which takes tens of seconds to tokenize.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from helpers import ROOT, assert_one_line_error, run_cli, synthetic_documents


@pytest.fixture(scope="module")
def bench_env(tmp_path_factory) -> tuple[dict, str]:
    """(environment with a fresh TWINBERT_CACHE, path of a small .txt corpus)."""
    tmp = tmp_path_factory.mktemp("bench")
    corpus = tmp / "corpus.txt"
    corpus.write_text("\n\n".join(synthetic_documents(300)) + "\n", encoding="utf-8")
    return {"TWINBERT_CACHE": str(tmp / "cache")}, str(corpus)


def tiny(seq_len: int = 16, batch_size: int = 4) -> list[str]:
    return ["--preset", "tiny", "--seq-len", str(seq_len), "--batch-size", str(batch_size),
            "--max-predictions", "3", "--steps", "1", "--warmup", "1", "--vocab-size", "300"]


@pytest.mark.parametrize("args, needle", [
    (["benchmarks.train_speed", "--only", "torchbert,hf-tensorflow"], "hf-tensorflow"),
    (["benchmarks.train_speed", "--preset", "gigantic"], "gigantic"),
    (["benchmarks.scaling", "--presets", "tiny,gigantic"], "gigantic"),
    (["benchmarks.scaling", "--contenders", "torchbert,nope"], "nope"),
    (["benchmarks.gpu", "--contenders", "nope"], "nope"),
    (["benchmarks.profile", "--contenders", "hf-torch"], "hf-torch"),
    (["benchmarks.attention", "--preset", "gigantic"], "gigantic"),
    (["benchmarks.attention", "--preset", "mini,tiny"], "one preset"),
])
def test_unknown_contender_or_preset_is_one_line_error(args, needle, tmp_path):
    proc = run_cli("-m", *args, env={"TWINBERT_CACHE": str(tmp_path)}, timeout=120)
    assert proc.returncode == 2
    assert_one_line_error(proc, needle)


def test_hf_flax_peer_is_left_out_with_a_reason_where_transformers_has_no_flax(capsys):
    """transformers 5 ships no Flax models: the hf-flax peer is skipped with one line saying
    why (and how to get it), the other contenders still run; asked alone, it is an error."""
    from importlib.metadata import version

    from benchmarks.contenders import parse_contenders
    from bertcore.infra.errors import UserError

    names = parse_contenders("torchbert,hf-torch,hf-flax")
    if int(version("transformers").split(".")[0]) < 5:      # the hf4 environment
        assert names == ["torchbert", "hf-torch", "hf-flax"]
        return
    assert names == ["torchbert", "hf-torch"]
    line = capsys.readouterr().err.strip()
    assert line.startswith("skipping hf-flax: transformers 5") and "[hf4]" in line
    with pytest.raises(UserError, match="none of hf-flax can run here"):
        parse_contenders("hf-flax")


def test_each_architecture_keeps_the_other_ones_peers_out_with_a_reason(capsys):
    """transformers has no Flax ModernBERT and hf-torch is BERT's model: under --arch
    modernbert both are left out with one line each; hf-modernbert is left out of BERT's."""
    from benchmarks.contenders import parse_contenders

    names = parse_contenders("torchbert,jaxbert,hf-torch,hf-flax,hf-modernbert",
                             arch="modernbert")
    assert names == ["torchbert", "jaxbert", "hf-modernbert"]
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["skipping hf-torch: hf-torch is BERT's peer; ModernBERT's is hf-modernbert",
                     "skipping hf-flax: transformers has no Flax ModernBERT (its ModernBERT is "
                     "PyTorch only)"]
    assert parse_contenders("torchbert,hf-modernbert") == ["torchbert"]
    assert "pass --arch modernbert" in capsys.readouterr().err
    # ELECTRA: its peer is hf-electra alone, and hf-electra is no other architecture's
    assert parse_contenders("torchbert,hf-torch,hf-modernbert,hf-electra",
                            arch="electra") == ["torchbert", "hf-electra"]
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["skipping hf-torch: hf-torch is bert's peer; ELECTRA's is hf-electra",
                     "skipping hf-modernbert: hf-modernbert is modernbert's peer; ELECTRA's is "
                     "hf-electra"]
    assert parse_contenders("torchbert,hf-electra") == ["torchbert"]
    assert "hf-electra is ELECTRA's peer; pass --arch electra" in capsys.readouterr().err


@pytest.mark.parametrize("arch", ["bert", "modernbert"])
def test_gpu_benchmark_without_gpu_prints_a_note_and_exits_0(arch):
    # CUDA_VISIBLE_DEVICES="" hides any GPU, so this checks the no-GPU path on every machine.
    proc = run_cli("-m", "benchmarks.gpu", "--arch", arch, env={"CUDA_VISIBLE_DEVICES": ""},
                   timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "no GPU found" in proc.stdout and "device tool" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_scaling_help():
    proc = run_cli("-m", "benchmarks.scaling", "--help", timeout=60)
    assert proc.returncode == 0, proc.stderr
    for flag in ("--presets", "--seq-lens", "--contenders", "--steps", "--warmup",
                 "--batch-size", "--threads", "--out"):
        assert flag in proc.stdout


def test_gpu_flop_count_matches_the_models_parameters():
    from bertcore.model.config import BertConfig
    from benchmarks.gpu import flops_per_sequence, param_counts, peak_tflops
    from torchbert.model import BertForPreTraining

    for ln in ("post", "pre"):
        cfg = BertConfig.from_preset("tiny", vocab_size=300, layer_norm_position=ln)
        assert param_counts(cfg)["total"] == BertForPreTraining(cfg).num_parameters()
    base = BertConfig.from_preset("base")
    # 6 * 128 * 85.05M encoder + attention 12*12*768*128^2 + 6 * 20 * (MLM head + 768 x 30522)
    # + 6 * (pooler + NSP), worked out by hand.
    assert flops_per_sequence(base, 128, 20) == 70_024_945_980
    assert peak_tflops("NVIDIA H100 80GB HBM3") == 989
    assert peak_tflops("NVIDIA H100 PCIe") == 756
    assert peak_tflops("NVIDIA A100-SXM4-40GB") == 312
    assert peak_tflops("NVIDIA L4") == 121
    assert peak_tflops("Tesla T4") is None


def test_gpu_flop_count_of_modernbert_matches_its_parameters_and_window():
    from bertcore.model.config import ModernBertConfig
    from benchmarks.gpu import flops_per_sequence, param_counts
    from torchbert.modernbert import ModernBertForMaskedLM

    for biases in (False, True):
        cfg = ModernBertConfig.from_preset(
            "tiny", vocab_size=300, pad_token_id=0, bos_token_id=2, cls_token_id=2,
            eos_token_id=3, sep_token_id=3, norm_bias=biases, attention_bias=biases,
            mlp_bias=biases, classifier_bias=biases, decoder_bias=not biases)
        assert param_counts(cfg)["total"] == ModernBertForMaskedLM(cfg).num_parameters()
    # 3 layers (global, local, local), H=8, I=12, V=10, no biases but the decoder's; L=4 and a
    # window of |i - j| <= 1: 4 + 2 * 3 = 10 (query, key) pairs in a local layer, 16 in a global.
    small = ModernBertConfig(vocab_size=10, hidden_size=8, intermediate_size=12,
                             num_hidden_layers=3, num_attention_heads=2, local_attention=2,
                             global_attn_every_n_layers=3, pad_token_id=0, bos_token_id=1,
                             eos_token_id=2, cls_token_id=1, sep_token_id=2)
    encoder = 3 * (4 * 64 + 3 * 8 * 12 + 2 * 8)               # final norm for layer 0's
    mlm = 64 + 8 + 10 + 8 * 10                                 # dense, norm, bias, decoder
    assert flops_per_sequence(small, 4, 2) == 6 * 4 * encoder + 12 * 8 * (16 + 2 * 10) + 6 * 2 * mlm


def test_train_speed_tiny_run_prints_both_rows_and_the_ratio(bench_env):
    env, corpus = bench_env
    proc = run_cli("-m", "benchmarks.train_speed", *tiny(), "--corpus", corpus,
                   "--only", "torchbert,hf-torch", env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = {ln.split("|")[1].strip(): ln for ln in proc.stdout.splitlines()
            if ln.startswith("| ") and "---" not in ln}
    assert set(rows) == {"contender", "torchbert", "hf-torch"}, proc.stdout
    assert "error" not in proc.stdout, proc.stdout
    assert "vs hf-torch" in rows["contender"], rows["contender"]
    assert "x tokens/s" in rows["torchbert"] and "x RSS" in rows["torchbert"]
    assert "x tokens/s" not in rows["hf-torch"]   # the peer is the reference, no ratio


@pytest.mark.slow
def test_train_speed_modernbert_tiny_run_compares_both_twins_with_transformers(bench_env):
    """--arch modernbert: both twins and transformers' ModernBertForMaskedLM train on the same
    MLM-only batches (L=48 > tiny's 64-token window's reach of 32: local layers mask), each twin
    with its ratio to hf-modernbert; hf-flax is left out with its reason."""
    env, corpus = bench_env
    proc = run_cli("-m", "benchmarks.train_speed", "--arch", "modernbert", *tiny(seq_len=48),
                   "--steps", "2", "--corpus", corpus, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "skipping hf-flax: transformers has no Flax ModernBERT" in proc.stderr, proc.stderr
    rows = {ln.split("|")[1].strip(): ln for ln in proc.stdout.splitlines()
            if ln.startswith("| ") and "---" not in ln}
    assert set(rows) == {"contender", "torchbert", "jaxbert", "hf-modernbert"}, proc.stdout
    assert "error" not in proc.stdout, proc.stdout
    assert "### train_speed: modernbert tiny, MLM only" in proc.stdout, proc.stdout
    assert rows["contender"].rstrip().endswith("| vs hf-modernbert |"), rows["contender"]
    for twin in ("torchbert", "jaxbert"):
        assert "x tokens/s" in rows[twin] and "x RSS" in rows[twin], rows[twin]
    assert "x tokens/s" not in rows["hf-modernbert"]


@pytest.mark.slow
def test_train_speed_electra_tiny_run_compares_the_twins_with_transformers_pair(bench_env):
    """--arch electra: both twins and transformers' ElectraForMaskedLM + ElectraForPreTraining
    (sharing their embeddings) train replaced-token detection on the same batches, each twin
    with its ratio to hf-electra."""
    env, corpus = bench_env
    proc = run_cli("-m", "benchmarks.train_speed", "--arch", "electra", *tiny(seq_len=32),
                   "--steps", "2", "--corpus", corpus, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    rows = {ln.split("|")[1].strip(): ln for ln in proc.stdout.splitlines()
            if ln.startswith("| ") and "---" not in ln}
    assert set(rows) == {"contender", "torchbert", "jaxbert", "hf-electra"}, proc.stdout
    assert "error" not in proc.stdout, proc.stdout
    assert "### train_speed: electra tiny (generator 1/4 wide)" in proc.stdout, proc.stdout
    assert rows["contender"].rstrip().endswith("| vs hf-electra |"), rows["contender"]
    for twin in ("torchbert", "jaxbert"):
        assert "x tokens/s" in rows[twin] and "x RSS" in rows[twin], rows[twin]


def test_hf_electra_pair_shares_the_embeddings_and_trains_on_a_twin_batch():
    """The peer's two transformers models share one embedding module (the generator's tied
    decoder is its word embeddings); one step of its loss on a bertcore ELECTRA batch is finite
    and its held-out sums are consistent (replaced tokens are among the masked slots)."""
    import numpy as np
    import torch

    from benchmarks.contenders import (electra_rates, hf_electra_forward, hf_electra_pair,
                                       hf_electra_parameters)
    from bertcore.model.config import ElectraConfig

    c = ElectraConfig.from_preset("tiny", vocab_size=50)
    gen, disc = hf_electra_pair(c)
    emb = disc.electra.embeddings
    assert gen.electra.embeddings is emb
    assert gen.generator_lm_head.weight is emb.word_embeddings.weight
    assert gen.config.hidden_size == 32 and disc.config.hidden_size == 128   # a quarter
    n = len(hf_electra_parameters(gen, disc))
    assert n == len({id(p) for p in [*gen.parameters(), *disc.parameters()]})
    rng = np.random.default_rng(0)
    B, L, P = 2, 12, 3
    ids = rng.integers(5, 50, (B, L)).astype(np.int32)
    b = {"input_ids": ids, "token_type_ids": np.zeros((B, L), np.int32),
         "attention_mask": np.ones((B, L), np.int32),
         "masked_positions": np.array([[1, 2, 3], [4, 5, 0]], np.int32),
         "masked_ids": np.array([[7, 8, 9], [10, 11, 0]], np.int32),
         "masked_weights": np.array([[1, 1, 1], [1, 1, 0]], np.float32)}
    loss, sums = hf_electra_forward(gen, disc, b, torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and emb.word_embeddings.weight.grad is not None
    assert sums["predictions"] == 5 and sums["tokens"] == B * L and sums["replaced"] <= 5
    rates = electra_rates(sums)
    assert 0 <= rates["disc_accuracy"] <= 1 and rates["replaced"] == sums["replaced"] / (B * L)


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS is enforced on Linux")
def test_train_speed_batch_that_does_not_fit_names_its_size(bench_env):
    env, corpus = bench_env

    # tiny at 512 x 256 needs several GB of activations (attention scores alone: 256 MB a
    # layer); importing torch and the model take under 1 GB of address space. The limit is set
    # by the shell (`ulimit -v`, in KiB), not a preexec_fn: forking a process that has JAX's
    # threads running and then running Python code before exec can deadlock.
    cmd = [sys.executable, "-m", "benchmarks.train_speed", *tiny(seq_len=256, batch_size=512),
           "--corpus", corpus, "--only", "torchbert"]
    proc = subprocess.run(
        ["bash", "-c", f"ulimit -v {2 << 20} && exec \"$@\"", "bash", *cmd],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **env}, capture_output=True,
        text=True, timeout=300)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "out of memory at batch 512 x seq-len 256" in proc.stdout, proc.stdout + proc.stderr
    assert_one_line_error(proc, "torchbert failed")  # and the run exits non-zero


def test_profile_tiny_run_names_the_top_operations_of_both_twins(bench_env, tmp_path):
    env, corpus = bench_env
    proc = run_cli("-m", "benchmarks.profile", *tiny(), "--corpus", corpus, "--top", "10000",
                   "--trace-dir", str(tmp_path), env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "### torchbert" in out and "### jaxbert" in out and "error" not in out, out
    torch_part, jax_part = out.split("### jaxbert")
    assert "aten::" in torch_part                       # torch.profiler's operators
    # XLA instructions (all of them with --top 10000), each named with the model code it came
    # from, in both passes
    assert "forward: bert/encoder/layer/0/" in jax_part, jax_part
    assert "backward: " in jax_part, jax_part
    for part in (torch_part, jax_part):
        rows = [ln for ln in part.splitlines() if ln.startswith("| ") and "---" not in ln]
        assert len(rows) > 10, part                     # header + every operation
        assert "matrix multiplies" in part
    # --trace-dir keeps both raw traces
    assert (tmp_path / "torchbert" / "trace.json").is_file()
    assert list((tmp_path / "jaxbert").glob("plugins/profile/*/perfetto_trace.json.gz"))


@pytest.mark.parametrize("arch", ["bert", "modernbert"])
def test_attention_tiny_run_times_both_paths_and_they_train_alike(bench_env, arch):
    env, corpus = bench_env
    proc = run_cli("-m", "benchmarks.attention", *tiny(), "--steps", "3", "--arch", arch,
                   "--corpus", corpus, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = [ln for ln in proc.stdout.splitlines()
            if ln.startswith("| training step |") or ln.startswith("| evaluation forward |")]
    assert len(rows) == 2, proc.stdout
    # the explicit path really was swapped in: traced once per layer in the training step and
    # once per layer in the forward (tiny has 2 layers) ...
    traced = int(proc.stdout.split("through the explicit path: ")[1].split()[0])
    assert traced == 2 * 2, proc.stdout
    # ... and computes the op's math: the same weights and batches give the same training
    # losses (float rounding apart)
    drift = float(proc.stdout.split("between the paths: ")[1].split()[0])
    assert drift < 1e-4, proc.stdout
    assert "command: python -m benchmarks.attention" in proc.stdout


def test_attention_benchmarks_explicit_path_is_the_op_with_its_window():
    """benchmarks.attention's stand-in for jax.nn.dot_product_attention computes what the op
    computes with the arguments jaxbert passes it: the padding mask, and ModernBERT's window."""
    import jax
    import numpy as np

    from benchmarks.attention import explicit_attention

    q, k, v = np.random.default_rng(0).standard_normal((3, 2, 12, 4, 8), np.float32)
    mask = (np.arange(12)[None, :] < np.array([12, 9])[:, None])[:, None, None, :]
    for window in (None, (2, 2)):
        op = jax.nn.dot_product_attention(q, k, v, mask=mask, local_window_size=window)
        ours = explicit_attention(q, k, v, mask=mask, local_window_size=window)
        real = np.arange(12)[None, :] < np.array([12, 9])[:, None]     # real queries
        np.testing.assert_allclose(np.asarray(ours)[real], np.asarray(op)[real], atol=1e-5)


def test_measure_reports_a_worker_that_dies_instead_of_waiting_for_it():
    from benchmarks.contenders import measure

    results = measure(["torchbert"], [], 2, module="benchmarks.no_such_module")
    assert len(results) == 1, results
    (r,) = results
    # the contender's name and an error, no measurements
    assert set(r) == {"contender", "error"} and r["contender"] == "torchbert", r
    assert "No module named benchmarks.no_such_module" in r["error"], r
