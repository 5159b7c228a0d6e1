import json

import numpy as np
import pytest

from bertcore.model.config import PRESETS, BertConfig, TrainConfig
from bertcore.infra.errors import UserError


def test_presets_match_google_miniatures():
    expect = {"tiny": (2, 128, 2), "mini": (4, 256, 4), "small": (4, 512, 8),
              "medium": (8, 512, 8), "base": (12, 768, 12), "large": (24, 1024, 16)}
    assert PRESETS == expect
    for name, (layers, hidden, heads) in expect.items():
        c = BertConfig.from_preset(name)
        assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads) == (layers, hidden, heads)
        assert c.intermediate_size == 4 * hidden


def test_unknown_preset_names_choices():
    with pytest.raises(UserError, match="unknown preset 'huge'.*tiny"):
        BertConfig.from_preset("huge")


def test_reads_real_hf_config_and_ignores_unknown_keys(tmp_path):
    # bert-base-uncased's config.json, as published.
    hf = {"architectures": ["BertForMaskedLM"], "attention_probs_dropout_prob": 0.1,
          "gradient_checkpointing": False, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
          "hidden_size": 768, "initializer_range": 0.02, "intermediate_size": 3072,
          "layer_norm_eps": 1e-12, "max_position_embeddings": 512, "model_type": "bert",
          "num_attention_heads": 12, "num_hidden_layers": 12, "pad_token_id": 0,
          "position_embedding_type": "absolute", "transformers_version": "4.6.0.dev0",
          "type_vocab_size": 2, "use_cache": True, "vocab_size": 30522}
    (tmp_path / "config.json").write_text(json.dumps(hf))
    c = BertConfig.from_json_file(tmp_path)
    assert c == BertConfig()
    assert c.layer_norm_position == "post"


def test_written_config_loads_in_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    c = BertConfig.from_preset("mini", vocab_size=1234, layer_norm_position="pre")
    c.to_json_file(tmp_path / "config.json")
    hf = transformers.BertConfig.from_pretrained(tmp_path)
    assert (hf.vocab_size, hf.hidden_size, hf.num_hidden_layers, hf.num_attention_heads) == \
        (1234, 256, 4, 4)
    assert BertConfig.from_json_file(tmp_path / "config.json") == c


@pytest.mark.parametrize("kw, msg", [
    (dict(hidden_size=100, num_attention_heads=3), "not divisible"),
    (dict(layer_norm_position="middle"), "layer_norm_position"),
    (dict(hidden_act="relu"), "hidden_act"),
    (dict(hidden_dropout_prob=1.5), "hidden_dropout_prob"),
    (dict(vocab_size=0), "vocab_size"),
])
def test_bad_model_config(kw, msg):
    with pytest.raises(UserError, match=msg):
        BertConfig(**kw)


@pytest.mark.parametrize("kw, msg", [
    (dict(seq_len=4), "seq-len=4 is too short"),
    (dict(seq_len=16, max_predictions=20), "max-predictions=20 exceeds seq-len=16"),
    (dict(batch_size=10, grad_accum=3), "does not split into 1 process x grad-accum=3"),
    (dict(schedule="step"), "unknown schedule"),
    (dict(mask_prob=0.0), "mask-prob"),
])
def test_bad_train_config(kw, msg):
    with pytest.raises(UserError, match=msg):
        TrainConfig(**kw)


def test_seq_len_beyond_positions():
    with pytest.raises(UserError, match="max_position_embeddings=64"):
        TrainConfig(seq_len=128).validate(BertConfig(max_position_embeddings=64))


def test_corrupt_config_file(tmp_path):
    p = tmp_path / "config.json"
    p.write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        BertConfig.from_json_file(p)
    with pytest.raises(UserError, match="does not exist"):
        BertConfig.from_json_file(tmp_path / "nope.json")


# ---- ModernBertConfig ---------------------------------------------------------------------------

def _modern(**kw):
    from bertcore.model.config import ModernBertConfig
    ids = dict(pad_token_id=0, cls_token_id=2, bos_token_id=2, sep_token_id=3, eos_token_id=3)
    return ModernBertConfig.from_preset("tiny", vocab_size=100, **{**ids, **kw})


@pytest.mark.parametrize("layers,every", [(2, 3), (4, 3), (6, 2), (3, 1)])
def test_modernbert_config_round_trips_through_transformers(tmp_path, layers, every):
    """Our config.json loads in transformers' ModernBertConfig (its layer_types and RoPE thetas
    as ours), and transformers' own save loads back equal; the dispatch picks the class."""
    import transformers
    from bertcore.model.config import ModernBertConfig, load_model_config

    ours = _modern(num_hidden_layers=layers, global_attn_every_n_layers=every,
                   global_rope_theta=1234.0, local_rope_theta=56.0)
    ours.to_json_file(tmp_path / "config.json")
    hf = transformers.ModernBertConfig.from_pretrained(tmp_path)
    assert hf.layer_types == ours.layer_types
    assert ["full_attention" if i % every == 0 else "sliding_attention"
            for i in range(layers)] == hf.layer_types
    assert hf.rope_parameters["full_attention"]["rope_theta"] == 1234.0
    assert hf.rope_parameters["sliding_attention"]["rope_theta"] == 56.0
    assert hf.sliding_window == ours.local_attention // 2
    hf.save_pretrained(tmp_path / "hf")
    back = load_model_config(tmp_path / "hf")
    assert isinstance(back, ModernBertConfig) and back == ours
    # the published default config (transformers' defaults are ModernBERT-base's)
    assert ModernBertConfig.from_dict(transformers.ModernBertConfig().to_dict()) == \
        ModernBertConfig()


def test_modernbert_config_refuses_what_it_cannot_build():
    from bertcore.model.config import ModernBertConfig, model_config_from_dict
    from bertcore.infra.errors import UserError

    with pytest.raises(UserError, match="even size"):
        _modern(hidden_size=130, num_attention_heads=26)          # head size 5: odd
    with pytest.raises(UserError, match="only pattern supported"):
        ModernBertConfig.from_dict({**_modern().to_dict(), "global_attn_every_n_layers": None,
                                    "layer_types": ["sliding_attention", "full_attention"]})
    with pytest.raises(UserError, match="rope_type"):
        ModernBertConfig.from_dict({**_modern().to_dict(), "rope_parameters": {
            "full_attention": {"rope_type": "yarn", "rope_theta": 1.0}}})
    with pytest.raises(UserError, match="token id"):
        _modern(pad_token_id=100)
    with pytest.raises(UserError, match="model_type 'gpt2'"):
        model_config_from_dict({"model_type": "gpt2"})


def test_modernbert_presets_match_bert_sizes():
    """A ModernBERT preset has about the parameters of the BERT preset of the same name (its
    GeGLU width is chosen so), base and large as published."""
    from bertcore.model.config import BertConfig, ModernBertConfig
    from bertcore.model.hf import param_table

    def count(c):
        return sum(int(np.prod(p.hf_shape)) for p in param_table(c))

    for name in ("tiny", "mini", "small", "medium"):
        b = count(BertConfig.from_preset(name, vocab_size=30522))
        m = count(ModernBertConfig.from_preset(name, vocab_size=30522, pad_token_id=0,
                                               cls_token_id=2, bos_token_id=2, sep_token_id=3,
                                               eos_token_id=3))
        assert abs(m - b) / b < 0.05, (name, m, b)
    base = ModernBertConfig.from_preset("base")
    assert (base.num_hidden_layers, base.intermediate_size, base.local_attention,
            base.max_position_embeddings) == (22, 1152, 128, 8192)
    assert 149e6 < count(base) < 150e6          # ModernBERT-base: 149M parameters


def test_a_config_of_the_other_architecture_is_refused_by_name(tmp_path):
    import argparse

    from bertcore.model.config import ModernBertConfig
    from bertcore.infra.errors import UserError
    from bertcore.train.configs import model_config_from_args

    with pytest.raises(UserError, match="modernbert config"):
        BertConfig.from_dict(_modern().to_dict())
    with pytest.raises(UserError, match="bert config"):
        ModernBertConfig.from_dict(BertConfig().to_dict())
    # A ModernBERT --config must name the tokenizer's special tokens (torchbert's padding_idx is
    # the pad id: another one would make the twins train different models).
    path = tmp_path / "config.json"
    _modern(pad_token_id=5).to_json_file(path)
    tok = argparse.Namespace(vocab_size=100, pad_id=0, cls_id=2, sep_id=3)
    args = argparse.Namespace(config=str(path), preset=None, layer_norm_position=None,
                              attention_dropout=None, arch=None)
    with pytest.raises(UserError, match=r"pad_token_id=5 \(tokenizer: 0\)"):
        model_config_from_args(args, tok)
    _modern().to_json_file(path)
    assert model_config_from_args(args, tok) == _modern()


def test_a_bpe_tokenizer_is_refused(tmp_path):
    """Published ModernBERT checkpoints ship a BPE tokenizer.json; the pipeline is WordPiece's."""
    from tokenizers import Tokenizer, models

    from bertcore.data.tokenizer import load_tokenizer
    from bertcore.infra.errors import UserError

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    bpe = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(specials + ["a", "b", "ab"])},
                               merges=[("a", "b")], unk_token="[UNK]"))
    bpe.save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(UserError, match="is a BPE tokenizer; this project reads WordPiece"):
        load_tokenizer(tmp_path)
