"""Layer groups: every parameter in exactly one group, bottom (embeddings) to top (head), for each architecture."""

import warnings

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn
from ulmfit_tiny_models import tiny_awd_lstm_classifier, tiny_bert, tiny_models

from tl_nlp.training import discriminative_param_groups, layer_group_summary, layer_groups

MODELS = tiny_models()


def assert_partition(model, groups):
    names = [name for name, _ in model.named_parameters()]
    grouped = [name for group in groups for name in group.parameter_names]
    assert sorted(grouped) == sorted(names)  # every parameter is somewhere ...
    assert len(grouped) == len(set(grouped))  # ... and only once


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_parameter_lands_in_exactly_one_group(name):
    factory, expected_names = MODELS[name]
    model = factory()
    groups = layer_groups(model)
    assert [group.name for group in groups] == expected_names
    assert_partition(model, groups)


@pytest.mark.parametrize(
    "name, bottom, block_zero, top",
    [
        ("awd_lstm_classifier", {"awd_lstm.embeddings.weight"}, "awd_lstm.layers.0.", {"classifier."}),
        ("bert", {"bert.embeddings.word_embeddings.weight"}, "bert.encoder.layer.0.", {"bert.pooler.", "classifier."}),
        ("roberta", {"roberta.embeddings.word_embeddings.weight"}, "roberta.encoder.layer.0.", {"classifier."}),
        (
            "distilbert",
            {"distilbert.embeddings.word_embeddings.weight"},
            "distilbert.transformer.layer.0.",
            {"pre_classifier.", "classifier."},
        ),
        # ELECTRA's projection from embedding_size to hidden_size sits below the first block.
        (
            "electra",
            {"electra.embeddings.word_embeddings.weight", "electra.embeddings_project.weight"},
            "electra.encoder.layer.0.",
            {"classifier."},
        ),
        # The LM head reads the tied token embeddings: they train with the head (fastai's rule for AWD-LSTM too).
        (
            "gpt2",
            {"transformer.wpe.weight"},
            "transformer.h.0.",
            {"transformer.ln_f.", "transformer.wte.weight"},
        ),
        ("llama_lm", {"model.embed_tokens.weight"}, "model.layers.0.", {"model.norm.weight", "lm_head.weight"}),
        ("llama_classifier", {"model.embed_tokens.weight"}, "model.layers.0.", {"model.norm.weight", "score."}),
        ("mistral", {"model.embed_tokens.weight"}, "model.layers.0.", {"model.norm.weight", "lm_head.weight"}),
        ("qwen2", {"model.embed_tokens.weight"}, "model.layers.0.", {"model.norm.weight", "lm_head.weight"}),
    ],
)
def test_groups_hold_the_expected_parameters(name, bottom, block_zero, top):
    groups = layer_groups(MODELS[name][0]())
    assert bottom <= set(groups[0].parameter_names)
    assert groups[1].parameter_names and all(n.startswith(block_zero) for n in groups[1].parameter_names)
    for prefix in top:
        assert any(n == prefix or n.startswith(prefix) for n in groups[-1].parameter_names), prefix
    assert not any(n.startswith(block_zero) for n in groups[-1].parameter_names)


def test_peft_lora_parameters_go_with_the_layer_they_adapt():
    model = get_peft_model(tiny_bert(), LoraConfig(r=2, target_modules=["query", "value"], task_type="SEQ_CLS"))
    groups = layer_groups(model)
    assert [group.name for group in groups] == ["embeddings", "layer 0", "layer 1", "head"]
    assert_partition(model, groups)
    layer_one = groups[2].parameter_names
    assert "base_model.model.bert.encoder.layer.1.attention.self.query.lora_A.default.weight" in layer_one
    assert "base_model.model.bert.encoder.layer.1.attention.self.query.base_layer.weight" in layer_one
    # The classifier copy PEFT trains (modules_to_save) is in the head.
    assert "base_model.model.classifier.modules_to_save.default.weight" in groups[-1].parameter_names
    # Only the trainable (LoRA and head) parameters reach the optimizer, each in its layer's group.
    param_groups = discriminative_param_groups(model, lr=1e-3)
    trainable = {p for p in model.parameters() if p.requires_grad}
    in_optimizer = [p for group in param_groups for p in group["params"]]
    assert len(in_optimizer) == len(trainable) and set(in_optimizer) == trainable


class RegisteredOutOfOrder(nn.Module):
    """Not a transformers model, and its modules are registered in an order unrelated to the data flow."""

    def __init__(self):
        super().__init__()
        self.out = nn.Linear(4, 2)
        self.blocks = nn.ModuleList([nn.Linear(4, 4) for _ in range(3)])
        self.embed = nn.Embedding(10, 4)

    def forward(self, input_ids):
        hidden = self.embed(input_ids)
        for block in self.blocks:
            hidden = block(hidden).relu()
        return self.out(hidden)


def test_example_inputs_give_data_flow_order_to_any_module():
    model = RegisteredOutOfOrder()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # placed by data flow: nothing is guessed
        groups = layer_groups(model, example_inputs={"input_ids": torch.tensor([[1, 2, 3]])})
    assert [group.name for group in groups] == ["embeddings", "layer 0", "layer 1", "layer 2", "head"]
    assert groups[0].parameter_names == ("embed.weight",)
    assert groups[-1].parameter_names == ("out.weight", "out.bias")


def test_a_model_without_inputs_gets_a_warning_naming_every_guess():
    # No dummy inputs and no example_inputs: the blocks are still found; the rest is placed by registration order
    # (wrongly here: the output layer lands in "embeddings") and the warning names every such guess.
    model = RegisteredOutOfOrder()
    with pytest.warns(UserWarning, match=r"could not place 3 parameter.*out\.weight -> embeddings.*embed\.weight -> "):
        groups = layer_groups(model)
    assert [group.name for group in groups][1:4] == ["layer 0", "layer 1", "layer 2"]
    assert_partition(model, groups)


def test_a_model_without_blocks_asks_for_explicit_groups():
    with pytest.raises(ValueError, match="pass the layer groups"):
        layer_groups(nn.Sequential(nn.Linear(2, 2)))


def test_custom_groups_by_prefix_and_regex():
    model = tiny_bert()
    groups = layer_groups(
        model,
        [
            ["bert.embeddings", r"bert\.encoder\.layer\.0\..*"],  # a prefix and a regex in one group
            "bert.encoder.layer.1",
            ["bert.pooler", "classifier"],
        ],
    )
    assert [group.name for group in groups] == ["group 0", "group 1", "group 2"]
    assert_partition(model, groups)
    assert "bert.encoder.layer.0.output.dense.weight" in groups[0].parameter_names
    assert all(n.startswith("bert.encoder.layer.1.") for n in groups[1].parameter_names)


def test_prefixes_respect_module_boundaries():
    model = tiny_bert(layers=11)
    groups = layer_groups(
        model, ["bert.embeddings", "bert.encoder.layer.1", r"(?!bert\.embeddings|bert\.encoder\.layer\.1\.).*"]
    )
    assert not any(".layer.10." in n for n in groups[1].parameter_names)


@pytest.mark.parametrize(
    "groups, message",
    [
        (["bert.embeddings", "bert.encoder"], "match no group"),  # pooler and classifier left out
        (["bert", "bert.encoder", "classifier"], "match several groups"),
        (["bert", "classifier", "nothing.here"], "match no parameter"),
    ],
)
def test_bad_custom_groups_say_what_is_wrong(groups, message):
    with pytest.raises(ValueError, match=message):
        layer_groups(tiny_bert(), groups)


def test_summary_table_shows_counts_rates_and_frozen_groups():
    model = tiny_awd_lstm_classifier()
    optimizer = torch.optim.AdamW(discriminative_param_groups(model, lr=0.01, decay=2.0))
    table = layer_group_summary(model, optimizer=optimizer, num_trainable_groups=2)
    lines = table.splitlines()
    assert lines[0].split() == ["#", "group", "parameters", "lr", "status"]
    embeddings = lines[2].split()
    assert embeddings[1] == "embeddings"
    assert embeddings[2] == f"{64 * 16:,}"
    assert embeddings[3] == f"{0.01 / 2.0**4:.3g}" and embeddings[4] == "frozen"
    head = lines[6].split()
    assert head[1] == "head" and head[3] == "0.01" and head[4] == "trainable"
    assert lines[5].split()[-1] == "trainable" and lines[4].split()[-1] == "frozen"
    total = sum(p.numel() for p in model.parameters())
    assert lines[-1].split() == ["total", f"{total:,}"]


# ---- data-flow order for families whose registration order misleads --------------------------------------------------

SEQ2SEQ = dict(
    vocab_size=99, d_model=16, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
    decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=64,
)  # fmt: skip


def family(name):
    import transformers as hf

    if name == "bart_classifier":
        return hf.BartForSequenceClassification(hf.BartConfig(**SEQ2SEQ))
    if name == "t5_lm":  # 2 layers: each block holds a 2- or 3-long list of sub-layers, longer than the stack
        return hf.T5ForConditionalGeneration(hf.T5Config(vocab_size=99, d_model=16, d_kv=8, d_ff=32, num_layers=2))
    if name == "opt_lm":
        config = hf.OPTConfig(
            vocab_size=99, hidden_size=16, num_hidden_layers=2, ffn_dim=32, num_attention_heads=2,
            word_embed_proj_dim=8, max_position_embeddings=32,
        )  # fmt: skip
        return hf.OPTForCausalLM(config)
    if name == "deberta_v2":
        config = hf.DebertaV2Config(
            vocab_size=99, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
            relative_attention=True, position_buckets=8, max_relative_positions=16, pos_att_type=["p2c", "c2p"],
        )  # fmt: skip
        return hf.DebertaV2ForSequenceClassification(config)
    if name == "mobilebert":  # 2 layers, each with a list of 4 bottleneck FFNs
        config = hf.MobileBertConfig(
            vocab_size=99, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
            embedding_size=8, intra_bottleneck_size=8, num_feedforward_networks=4,
        )  # fmt: skip
        return hf.MobileBertForSequenceClassification(config)
    if name == "mixtral":  # 2 layers of 4 experts
        config = hf.MixtralConfig(
            vocab_size=99, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
            intermediate_size=32, num_local_experts=4, num_experts_per_tok=2, tie_word_embeddings=False,
        )  # fmt: skip
        return hf.MixtralForCausalLM(config)
    if name == "xlm":  # parallel lists attentions[i], layer_norm1[i], ffns[i], layer_norm2[i]
        return hf.XLMForSequenceClassification(hf.XLMConfig(vocab_size=99, emb_dim=16, n_layers=2, n_heads=2))
    raise KeyError(name)


def test_encoder_decoder_groups_are_encoder_blocks_then_decoder_blocks():
    model = family("bart_classifier")
    groups = {group.name: group.parameter_names for group in layer_groups(model)}
    names = ["embeddings", "encoder layer 0", "encoder layer 1", "decoder layer 0", "decoder layer 1", "head"]
    assert list(groups) == names
    assert set(groups["embeddings"]) >= {"model.shared.weight", "model.encoder.embed_positions.weight"}
    # The decoder's position embeddings feed the first decoder block: they go with it, not with the head.
    assert "model.decoder.embed_positions.weight" in groups["decoder layer 0"]
    assert all(name.startswith("classification_head.") for name in groups["head"])

    t5 = {group.name: group.parameter_names for group in layer_groups(family("t5_lm"))}
    assert list(t5) == names[1:]  # T5's shared embedding is tied to the LM head: it trains with the head
    assert set(t5["head"]) == {"shared.weight", "decoder.final_layer_norm.weight"}
    # The encoder's final norm finishes the encoder: with its last block.
    assert "encoder.final_layer_norm.weight" in t5["encoder layer 1"]
    assert all(name.startswith("decoder.block.0.") for name in t5["decoder layer 0"])


def test_modules_registered_before_the_layers_but_used_after_them_go_to_the_head():
    groups = layer_groups(family("opt_lm"))
    assert [group.name for group in groups] == ["embeddings", "layer 0", "layer 1", "head"]
    assert set(groups[0].parameter_names) == {
        "model.decoder.embed_positions.weight",
        "model.decoder.project_in.weight",
    }
    assert {"model.decoder.final_layer_norm.weight", "model.decoder.project_out.weight"} <= set(
        groups[-1].parameter_names
    )


def test_deberta_relative_embeddings_are_not_in_the_head():
    groups = {group.name: group.parameter_names for group in layer_groups(family("deberta_v2"))}
    # Read first inside layer 0's attention (and by every layer after it): with layer 0.
    assert "deberta.encoder.rel_embeddings.weight" in groups["layer 0"]
    assert set(groups["head"]) == {"pooler.dense.weight", "pooler.dense.bias", "classifier.weight", "classifier.bias"}


@pytest.mark.parametrize("name, inner", [("mobilebert", ".ffn."), ("mixtral", ".experts."), ("xlm", ".ffns.")])
def test_stacks_are_the_layers_not_the_lists_inside_them(name, inner):
    groups = layer_groups(family(name))
    assert [group.name for group in groups] == ["embeddings", "layer 0", "layer 1", "head"]
    assert any(inner in parameter for parameter in groups[1].parameter_names)
    if name == "xlm":  # the four parallel lists are zipped into one block per index
        assert {p.split(".")[1] for p in groups[2].parameter_names} == {
            "attentions",
            "layer_norm1",
            "ffns",
            "layer_norm2",
        }
        assert all(".1." in p for p in groups[2].parameter_names)


# ---- every architecture of the text Auto mappings ---------------------------------------------------------------------


@pytest.mark.slow
def test_every_auto_architecture_is_grouped_by_data_flow():
    from auto_tiny_models import (
        Unbuildable,
        build_tiny_model,
        data_flow_violations,
        one_class_per_model_type,
        runnable_inputs,
    )

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is many times faster than two fighting over a busy machine
    placed, guessed, unbuildable, problems = [], [], [], []
    try:
        for mapping, model_type, class_name in one_class_per_model_type():
            try:
                model = build_tiny_model(model_type, class_name)
            except Unbuildable as reason:
                unbuildable.append(f"{class_name}: {reason}")
                continue
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                groups = layer_groups(model)
            assert_partition(model, groups)
            ours = [w for w in caught if "layer_groups could not place" in str(w.message)]
            if ours:
                # A forward pass that fails on the tiny inputs (or leaves parameters unread): named, not silent.
                guessed.append(class_name)
                continue
            placed.append(class_name)
            violations = data_flow_violations(model, groups, runnable_inputs(model))
            if violations:
                problems.append(f"{mapping} {class_name}: {violations[:3]}")
    finally:
        torch.set_num_threads(threads)
    print(f"\n{len(placed)} architectures placed by data flow, {len(guessed)} with a warning naming the guesses "
          f"({', '.join(guessed)}), {len(unbuildable)} not buildable here with a tiny generic config")  # fmt: skip
    assert not problems, "\n".join(problems)
    assert len(placed) >= 165 and len(guessed) <= 25  # 171 and 20 (of 242) with transformers 5.25


# ---- AWD-LSTM: fastai's splits ---------------------------------------------------------------------------------------

FASTAI_SPLITS = """
import sys, torch
from fastai.text.all import AWD_LSTM, awd_lstm_clas_config, awd_lstm_clas_split, awd_lstm_lm_config, awd_lstm_lm_split
from fastai.text.all import get_language_model, get_text_classifier
out = sys.argv[1]
sizes = dict(emb_sz=8, n_hid=12, n_layers=3)
lm = get_language_model(AWD_LSTM, 32, config={**awd_lstm_lm_config, **sizes})
clas = get_text_classifier(AWD_LSTM, 32, 3, seq_len=8, max_len=40, config={**awd_lstm_clas_config, **sizes}, lin_ftrs=[6])
# Every parameter of fastai's group g holds the value g + 1: the weights, converted, say which group each came from.
with torch.no_grad():
    for name, model, split in (("lm", lm, awd_lstm_lm_split), ("clas", clas, awd_lstm_clas_split)):
        for index, group in enumerate(split(model)):
            for parameter in group:
                parameter.fill_(index + 1)
        torch.save(model.state_dict(), f"{out}/{name}.pth")
"""


@pytest.fixture(scope="module")
def fastai_split_weights(tmp_path_factory):
    import subprocess

    from test_convert_fastai import NO_FASTAI, fastai_python

    python = fastai_python()
    if python is None:
        pytest.skip(NO_FASTAI)
    out = tmp_path_factory.mktemp("fastai_splits")
    result = subprocess.run([python, "-c", FASTAI_SPLITS, str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.mark.parametrize("kind", ["lm", "clas"])
def test_awd_lstm_groups_are_fastais_splits(fastai_split_weights, kind):
    from tl_nlp import AWDLSTMConfig, AWDLSTMForCausalLM, AWDLSTMForSequenceClassification
    from tl_nlp.convert_fastai import fastai_to_awd_lstm_state_dict

    weights = torch.load(fastai_split_weights / f"{kind}.pth", weights_only=True)
    _, _, converted = fastai_to_awd_lstm_state_dict(weights)
    config = AWDLSTMConfig(vocab_size=32, embedding_size=8, hidden_size=12, num_hidden_layers=3, num_labels=3)
    if kind == "lm":
        model = AWDLSTMForCausalLM(config)
    else:
        model = AWDLSTMForSequenceClassification(
            config.__class__(**{**config.to_dict(), "classifier_hidden_sizes": [6]})
        )
    fastai_group = {}
    for name, _ in model.named_parameters():
        values = converted[name].unique()
        if values.tolist() == [0.0]:
            continue  # no fastai counterpart: a bias that fastai's Linear after BatchNorm does not have
        assert len(values) == 1, name
        fastai_group[name] = int(values.item()) - 1
    groups = layer_groups(model)
    ours = {name: index for index, group in enumerate(groups) for name in group.parameter_names}
    assert {name: ours[name] for name in fastai_group} == fastai_group
    assert len(groups) == max(fastai_group.values()) + 1
    if kind == "lm":  # fastai: [rnn 0], [rnn 1], [rnn 2], [encoder, decoder]: the tied matrix on top
        assert [group.name for group in groups] == ["layer 0", "layer 1", "layer 2", "head"]
        assert set(groups[-1].parameter_names) == {"awd_lstm.embeddings.weight", "decoder.bias"}
