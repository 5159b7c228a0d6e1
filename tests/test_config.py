import json

import pytest

from bertcore.config import PRESETS, BertConfig, TrainConfig
from bertcore.errors import UserError


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
