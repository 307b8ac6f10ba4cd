"""LoRA with the ULMFiT techniques: per-layer rates and unfreezing of adapters, save / load / merge / push."""

import json

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForSequenceClassification, GPT2Config, GPT2ForSequenceClassification
from ulmfit_tiny_models import VOCAB, classification_dataset, snapshot, tiny_awd_lstm_classifier, tiny_bert

from tl_nlp import (
    ULMFiTLoraArguments,
    ULMFiTStage,
    ULMFiTTrainer,
    ULMFiTTrainingArguments,
    ULMFiTTrainingRecord,
    layer_groups,
    prepare_adapter_folder,
    push_adapter_to_hub,
    ulmfit_lora_config,
    ulmfit_lora_model,
)


def tiny_gpt2_classifier() -> GPT2ForSequenceClassification:
    config = GPT2Config(vocab_size=VOCAB, n_embd=16, n_layer=2, n_head=2, n_positions=32, pad_token_id=0)
    return GPT2ForSequenceClassification(config)


def training_args(tmp_path, **kwargs) -> ULMFiTTrainingArguments:
    values = dict(
        output_dir=str(tmp_path), per_device_train_batch_size=4, learning_rate=1e-2, report_to=[],
        save_strategy="no", use_cpu=True, disable_tqdm=True,
    )  # fmt: skip
    return ULMFiTTrainingArguments(**{**values, **kwargs})


def randomize_adapters(model: torch.nn.Module) -> None:
    """LoRA starts as a no-op (B = 0); give every adapter matrix values so that it changes the outputs."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)


def test_awd_lstm_lora_adapts_the_lstm_matrices_through_peft_parametrization():
    torch.manual_seed(0)
    model = tiny_awd_lstm_classifier().eval()
    input_ids = torch.randint(4, VOCAB, (3, 20))
    before = model(input_ids).logits
    peft_model = ulmfit_lora_model(model, ULMFiTLoraArguments(r=2))
    trainable = {name for name, p in peft_model.named_parameters() if p.requires_grad}
    # weight_ih and weight_hh of each of the 3 layers get an A and a B, the embedding matrix too, the head trains.
    assert sum("layers." in name and "lora_" in name for name in trainable) == 3 * 2 * 2
    assert sum("lora_embedding" in name for name in trainable) == 2
    assert all("lora_" in name or "modules_to_save" in name for name in trainable)
    assert torch.equal(peft_model(input_ids).logits, before)  # B = 0: LoRA starts as a no-op
    randomize_adapters(peft_model)
    assert not torch.allclose(peft_model(input_ids).logits, before, atol=1e-3)

    # Gradients reach the adapters of every layer (weight dropout works on the parametrized matrix).
    peft_model.train()
    peft_model(input_ids, labels=torch.tensor([0, 1, 1])).loss.backward()
    for name, parameter in peft_model.named_parameters():
        if "layers." in name and "lora_" in name:
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize("factory", [tiny_awd_lstm_classifier, tiny_bert, tiny_gpt2_classifier])
def test_adapters_of_layer_k_get_layer_ks_discriminative_rate(tmp_path, factory):
    torch.manual_seed(0)
    model = ulmfit_lora_model(factory())
    trainer = ULMFiTTrainer(
        model=model, args=training_args(tmp_path, discriminative_lr_decay=2.0), train_dataset=classification_dataset()
    )
    optimizer = trainer.create_optimizer()
    rate_of = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    groups = layer_groups(model)
    parameters = dict(model.named_parameters())
    for index, group in enumerate(groups):
        expected = 1e-2 / 2.0 ** (len(groups) - 1 - index)
        for name in group.parameter_names:
            if parameters[name].requires_grad:
                assert rate_of[id(parameters[name])] == pytest.approx(expected), name
            else:
                assert id(parameters[name]) not in rate_of, name  # frozen base weights stay out of the optimizer
        if group.name.startswith("layer "):
            assert any("lora_" in name and parameters[name].requires_grad for name in group.parameter_names)
    assert all("lora_" in name or "modules_to_save" in name for name, p in parameters.items() if id(p) in rate_of)


def test_gradual_unfreezing_keeps_frozen_groups_adapters_still(tmp_path):
    torch.manual_seed(0)
    model = ulmfit_lora_model(tiny_awd_lstm_classifier())
    randomize_adapters(model)  # so that both A and B get gradients once their layer trains
    initial = snapshot(model)
    # steps 0-1: head; step 2: + layer 2 (the lower groups stay frozen on purpose)
    args = training_args(tmp_path, max_steps=3, unfreeze_every_n_steps=2, unfreezing_schedule="partial")
    ULMFiTTrainer(model=model, args=args, train_dataset=classification_dataset()).train()
    after = snapshot(model)
    changed = {name for name in after if not torch.equal(after[name], initial[name])}
    lora_of_layer = {k: {n for n in after if f"layers.{k}." in n and "lora_" in n} for k in range(3)}
    assert lora_of_layer[2] and lora_of_layer[2] <= changed  # unfrozen at step 2
    assert not (lora_of_layer[0] | lora_of_layer[1]) & changed  # still frozen: not a bit moved
    assert not {n for n in after if "lora_embedding" in n} & changed
    assert any("modules_to_save" in name for name in changed)
    assert all("lora_" in name or "modules_to_save" in name for name in changed)  # base weights never move


@pytest.mark.parametrize("factory", [tiny_awd_lstm_classifier, tiny_bert, tiny_gpt2_classifier])
def test_adapters_save_load_and_merge_to_the_same_logits(tmp_path, factory):
    torch.manual_seed(0)
    base = factory().eval()
    base.save_pretrained(tmp_path / "base")
    peft_model = ulmfit_lora_model(base).eval()
    randomize_adapters(peft_model)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "modules_to_save" in name:
                parameter.add_(0.1)  # the trained head travels with the adapter
    input_ids = torch.randint(4, VOCAB, (3, 12))
    expected = peft_model(input_ids).logits
    peft_model.save_pretrained(tmp_path / "adapter")
    files = sorted(path.name for path in (tmp_path / "adapter").iterdir())
    assert files == ["README.md", "adapter_config.json", "adapter_model.safetensors"]  # safetensors, no pickle

    reloaded = PeftModel.from_pretrained(
        AutoModelForSequenceClassification.from_pretrained(tmp_path / "base"), tmp_path / "adapter"
    ).eval()
    torch.testing.assert_close(reloaded(input_ids).logits, expected, atol=1e-6, rtol=0)
    merged = reloaded.merge_and_unload()
    assert type(merged) is type(base)
    assert not any("lora_" in name for name, _ in merged.named_parameters())
    torch.testing.assert_close(merged(input_ids).logits, expected, atol=1e-5, rtol=0)


class RecordingHubApi:
    """Stands in for `huggingface_hub.HfApi`: records what would be uploaded."""

    def __init__(self):
        self.calls = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id))

    def upload_folder(self, repo_id, folder_path, **kwargs):
        from pathlib import Path

        folder = Path(folder_path)
        self.uploaded = {path.name: path.read_bytes() for path in folder.iterdir()}
        self.calls.append(("upload_folder", repo_id))
        return "commit"


def test_adapter_pushes_with_a_card_like_a_full_model(tmp_path):
    torch.manual_seed(0)
    peft_model = ulmfit_lora_model(tiny_awd_lstm_classifier(), ULMFiTLoraArguments(r=4, lora_alpha=8))
    record = ULMFiTTrainingRecord(
        stages=[
            ULMFiTStage(name="LoRA fine-tuning", objective="classification", dataset="stanfordnlp/imdb",
                        num_train_epochs=2, learning_rate=1e-3, discriminative_lr_decay=2.6, use_stlr=True,
                        gradual_unfreezing=True, metrics={"accuracy": 0.81})
        ],
        base_model="me/imdb-lm",
    )  # fmt: skip
    api = RecordingHubApi()
    assert push_adapter_to_hub(peft_model, None, "me/imdb-lora", record, api=api) == "commit"
    assert api.calls == [("create_repo", "me/imdb-lora"), ("upload_folder", "me/imdb-lora")]
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= set(api.uploaded)
    card = api.uploaded["README.md"].decode()
    trainable, total = peft_model.get_nb_trainable_parameters()
    assert "library_name: peft" in card and "base_model: me/imdb-lm" in card
    assert f"{trainable:,} trainable parameters" in card and "rank 4" in card
    assert "`weight_hh`" in card and "`weight_ih`" in card
    assert "2.6 times more slowly" in card and "accuracy 0.81" in card  # the stage sentences of tl_nlp.hub
    assert 'PeftModel.from_pretrained(base, "me/imdb-lora")' in card
    assert json.loads(api.uploaded["adapter_config.json"])["r"] == 4

    files = prepare_adapter_folder(peft_model, None, tmp_path / "folder", record, "me/imdb-lora")
    assert "ulmfit_training_record.json" in files


def test_lora_arguments_and_config_errors_name_the_field():
    with pytest.raises(ValueError, match="r must be >= 1"):
        ULMFiTLoraArguments(r=0)
    with pytest.raises(ValueError, match="lora_dropout must be in"):
        ULMFiTLoraArguments(lora_dropout=1.0)
    with pytest.raises(ValueError, match="target_modules"):
        ulmfit_lora_config(torch.nn.Linear(2, 2))
    with pytest.raises(
        ValueError, match=r"target_modules \['c_atn'\] name no module of GPT2ForSequenceClassification"
    ):
        ulmfit_lora_config(tiny_gpt2_classifier(), ULMFiTLoraArguments(target_modules=["c_attn", "c_atn"]))
    config = ulmfit_lora_config(tiny_gpt2_classifier())
    assert config.fan_in_fan_out and set(config.target_modules) == {"c_attn", "c_proj", "c_fc"}
    assert config.modules_to_save == ["score"]
    no_embeddings = ulmfit_lora_config(tiny_awd_lstm_classifier(), ULMFiTLoraArguments(adapt_embeddings=False))
    assert not no_embeddings.target_modules and set(no_embeddings.target_parameters) == {"weight_ih", "weight_hh"}


# ---- every sequence-classification architecture of transformers ------------------------------------------------------


def adapted_modules(peft_model) -> set[str]:
    """The names (in the base model) of the modules peft put adapters on."""
    return {
        name.removeprefix("base_model.model.")
        for name, module in peft_model.named_modules()
        if hasattr(module, "lora_A") and len(module.lora_A)
    }


def adapted_linear_layers(peft_model) -> set[str]:
    """Those of `adapted_modules` that are plain linear layers (not a mixture-of-experts router, not the fused expert
    weights peft adapts as parameters)."""
    from transformers.pytorch_utils import Conv1D

    layers = {
        name: peft_model.get_submodule(f"base_model.model.{name}").get_base_layer()
        for name in adapted_modules(peft_model)
    }
    return {
        name
        for name, layer in layers.items()
        if isinstance(layer, (torch.nn.Linear, Conv1D)) and "router" not in type(layer).__name__.lower()
    }


@pytest.mark.slow
def test_lora_on_every_sequence_classification_architecture():
    """`ulmfit_lora_model` on a tiny model of every architecture in transformers' sequence-classification mapping:
    only adapters and the head train, the head is every child beside the backbone (T5's `classification_head`,
    DistilBERT's `pre_classifier`...), every trainable parameter has a layer group (the head the top one), a loss
    flows back to the head, and for the architectures without targets of
    our own the adapted layers are peft's `target_modules="all-linear"` less the head (and routers). An architecture
    with no plain linear layer is refused in one line naming `target_modules`."""
    from auto_tiny_models import build_tiny_model, runnable_tiny_models
    from peft import LoraConfig, get_peft_model

    from tl_nlp.training.lora import LORA_TARGET_MODULES_BY_MODEL_TYPE, head_modules

    checked, refused, problems = [], [], []
    for model_type, class_name, model, inputs in runnable_tiny_models("sequence_classification"):
        heads = head_modules(model)
        backbone = model.base_model_prefix
        outside = {name.split(".")[0] for name, _ in model.named_parameters() if name.split(".")[0] != backbone}
        try:
            peft_model = ulmfit_lora_model(model)
        except ValueError as error:
            assert "target_modules" in str(error) and "\n" not in str(error), error
            refused.append(class_name)
            continue
        trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
        if any("lora_" not in n and "modules_to_save" not in n for n in trainable):
            problems.append(f"{class_name}: base weights train")
        for head in outside:  # every module beside the backbone is new: it trains in full
            if not any(f".{head}.modules_to_save." in f".{n}" for n in trainable):
                problems.append(f"{class_name}: head {head} does not train")
        if model_type not in LORA_TARGET_MODULES_BY_MODEL_TYPE:
            reference = get_peft_model(
                build_tiny_model(model_type, class_name), LoraConfig(target_modules="all-linear")
            )
            expected = {
                name
                for name in adapted_linear_layers(reference)
                if name.split(".")[0] not in heads and ".pooler." not in f".{name}."
            }
            if adapted_linear_layers(peft_model) != expected:
                difference = sorted(adapted_linear_layers(peft_model) ^ expected)
                problems.append(f"{class_name}: adapted {difference[:4]}")
        # The discriminative rates and unfreezing reach every adapter and the head: each trainable parameter is
        # in a layer group, the head's in the top one (Canine's pooler reads its deep encoder before the final
        # character encoder runs, so data flow puts it one group lower).
        groups = layer_groups(peft_model)
        placed = {name for group in groups for name in group.parameter_names}
        if not set(trainable) <= placed:
            problems.append(f"{class_name}: not in a layer group {sorted(set(trainable) - placed)[:2]}")
        saved = {name for name in trainable if "modules_to_save" in name}
        if not saved <= set(groups[-1].parameter_names) and class_name != "CanineForSequenceClassification":
            problems.append(f"{class_name}: head below the top group")
        logits = peft_model(**inputs).logits
        logits.float().pow(2).mean().backward()
        head_grads = [p.grad for n, p in peft_model.named_parameters() if "modules_to_save" in n and p.requires_grad]
        if heads and not any(g is not None and g.abs().sum() > 0 for g in head_grads):
            problems.append(f"{class_name}: no gradient reaches the head")
        checked.append(class_name)
    print(f"\nLoRA on {len(checked)} sequence-classification architectures; refused in one line: {refused}")
    assert not problems, "\n".join(problems)
    assert len(checked) >= 95 and len(refused) <= 5  # 102 and 2 (I-BERT, SqueezeBERT) with transformers 5.25
