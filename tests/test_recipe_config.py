"""One stage configuration from the CLI to the Trainer: the stage defaults (model-family aware, the same from the CLI
and from Python), a learning rate followed to the optimizer's param groups, `--push_to_hub` on a stage command,
the record's data names and settings, options that cannot apply refused, `evaluate`'s max length."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from recipe_fixtures import save_tiny_bert, save_tiny_gemma3, save_tiny_gpt2, write_corpora
from test_trainer_hub import RecordingHubApi
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

import tl_nlp.hub
from tl_nlp.cli import main
from tl_nlp.data import train_ulmfit_tokenizer
from tl_nlp.models.awd_lstm import AWDLSTMConfig, AWDLSTMForCausalLM
from tl_nlp.recipe import RecipeError, TextData, prepare_classifier, train_classifier
from tl_nlp.recipe.config import ClassifierTrainingArguments, HubArguments
from tl_nlp.recipe.evaluation import load_classifiers
from tl_nlp.training import ULMFiTTrainingArguments, layer_groups
from tl_nlp.training.model_card import stage_paragraph
from tl_nlp.training.training_record import ULMFiTTrainingRecord


def family_default_rates(family: str, top_rate: float, num_groups: int) -> list[float]:
    """The peak rates, top group first, that the family default of `discriminative_lr_decay` gives: 2.6 per group for
    AWD-LSTM (the paper); for Transformers the bottom group at the top rate / 1.25**7 at any depth (1.25 per group
    over a 6-layer model's 8 groups, ELECTRA's way of keeping the span as models deepen)."""
    decay = 2.6 if family == "awd_lstm" else (1.25**7) ** (1 / (num_groups - 1))
    return [top_rate / decay**index for index in range(num_groups)]


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    return write_corpora(tmp_path_factory.mktemp("data") / "data")


@pytest.fixture(scope="module")
def bert(corpora, tmp_path_factory):
    texts = TextData(str(corpora["train"])).load()["text"]
    return save_tiny_bert(tmp_path_factory.mktemp("bert"), texts)


@pytest.fixture(scope="module")
def awd_lstm(corpora, tmp_path_factory):
    folder = tmp_path_factory.mktemp("awd_lstm")
    tokenizer = train_ulmfit_tokenizer(TextData(str(corpora["train"])).load()["text"], min_frequency=1)
    config = AWDLSTMConfig(
        vocab_size=len(tokenizer),
        embedding_size=16,
        hidden_size=24,
        num_hidden_layers=2,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    AWDLSTMForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def train_classifier_command(model, corpora, output_dir, *flags):
    return main(
        [
            "train-classifier",
            "--model_name_or_path",
            str(model),
            "--train_file",
            str(corpora["train"]),
            "--class_names",
            "neg",
            "pos",
            "--output_dir",
            str(output_dir),
            "--max_steps",
            "1",
            "--disable_tqdm",
            "true",
            *flags,
        ]
    )


def peak_rates_in_checkpoint(output_dir: Path) -> list[float]:
    """The peak (`initial_lr`) of every param group of the optimizer the Trainer saved after step 1."""
    state = torch.load(output_dir / "checkpoint-1" / "optimizer.pt", weights_only=True)
    return [group["initial_lr"] for group in state["param_groups"]]


@pytest.mark.parametrize(("family", "top_rate"), [("bert", 2e-4), ("awd_lstm", 1e-2)])
def test_cli_learning_rate_reaches_the_optimizer_as_the_python_api_sets_it(
    family, top_rate, request, corpora, tmp_path
):
    """The walk of one setting: `tl-nlp train-classifier` without --learning_rate, to the optimizer's param groups
    (saved with the first checkpoint): the family's rate on the top group, divided by the family's decay per group
    below (2.6 for AWD-LSTM; for Transformers the bottom group at the top rate / 4.77); the
    Python API builds the same optimizer."""
    model = request.getfixturevalue(family)
    flags = ("--save_strategy", "steps", "--save_steps", "1")
    assert train_classifier_command(model, corpora, tmp_path / "cli", *flags) == 0
    rates = sorted(set(peak_rates_in_checkpoint(tmp_path / "cli")), reverse=True)
    assert len(rates) >= 3
    assert rates == pytest.approx(family_default_rates(family, top_rate, len(rates)))

    prepared = prepare_classifier(str(model), TextData(str(corpora["train"])), tmp_path / "api")
    optimizer = prepared.trainer.create_optimizer()
    assert sorted({group["lr"] for group in optimizer.param_groups}, reverse=True) == pytest.approx(rates)
    # The card says where the rate came from.
    record = json.loads((tmp_path / "cli" / "ulmfit_training_record.json").read_text())
    assert record["stages"][-1]["learning_rate"] == pytest.approx(top_rate)
    assert record["stages"][-1]["settings"]["learning_rate"] == "default"


@pytest.mark.parametrize(("family", "top_rate"), [("bert", 1e-3), ("awd_lstm", 1e-2)])
def test_cli_lora_trains_at_the_lora_rate_by_default(family, top_rate, request, corpora, tmp_path):
    """`--method lora` without --learning_rate: a Transformer's adapters and head peak at 1e-3 (LoRA's default, not
    the 2e-4 of full fine-tuning), an AWD-LSTM's at its family's 1e-2; each lower group's adapters get the rate above
    divided by the decay; the Python API's `method="lora"` builds the same optimizer; the record says "default"."""
    pytest.importorskip("peft")
    model = request.getfixturevalue(family)
    flags = ("--method", "lora", "--save_strategy", "steps", "--save_steps", "1")
    assert train_classifier_command(model, corpora, tmp_path / "cli", *flags) == 0
    rates = sorted(set(peak_rates_in_checkpoint(tmp_path / "cli")), reverse=True)
    assert rates[0] == pytest.approx(top_rate)
    num_groups = len(layer_groups(AutoModelForSequenceClassification.from_pretrained(model)))
    assert rates == pytest.approx(family_default_rates(family, top_rate, num_groups)[: len(rates)])
    assert len(rates) >= 3

    prepared = prepare_classifier(str(model), TextData(str(corpora["train"])), tmp_path / "api", method="lora")
    optimizer = prepared.trainer.create_optimizer()
    assert sorted({group["lr"] for group in optimizer.param_groups}, reverse=True) == pytest.approx(rates)
    stage = json.loads((tmp_path / "cli" / "ulmfit_training_record.json").read_text())["stages"][-1]
    assert stage["learning_rate"] == pytest.approx(top_rate) and stage["settings"]["learning_rate"] == "default"


def test_lr_find_sweeps_the_model_the_method_trains(bert, corpora, tmp_path, monkeypatch, capsys):
    """`tl-nlp lr-find --method lora` sweeps the LoRA-wrapped classifier that `train-classifier --method lora` trains
    (its adapters and head, at their own rates), not the full model; a method no Trainer trains, or one given to a
    language-model sweep, is one line with exit status 2."""
    pytest.importorskip("peft")
    import tl_nlp.cli.recipe as cli_recipe

    swept = []
    real = cli_recipe.find_learning_rate

    def recording(trainer, finder):
        model = trainer.model
        swept.append((type(model).__name__, sum(p.numel() for p in model.parameters() if p.requires_grad)))
        return real(trainer, finder)

    monkeypatch.setattr(cli_recipe, "find_learning_rate", recording)
    argv = ["lr-find", "--model_name_or_path", str(bert), "--train_file", str(corpora["train"])]
    argv += ["--class_names", "neg", "pos", "--num_steps", "8", "--per_device_train_batch_size", "4"]
    assert main([*argv, "--output_dir", str(tmp_path / "full")]) == 0
    assert main([*argv, "--output_dir", str(tmp_path / "lora"), "--method", "lora"]) == 0
    (full_name, full_trainable), (lora_name, lora_trainable) = swept
    assert lora_name == "PeftModel" and full_name == "BertForSequenceClassification"
    assert 0 < lora_trainable < full_trainable
    assert json.loads((tmp_path / "lora" / "lr_find.json").read_text())["losses"]
    capsys.readouterr()
    assert main([*argv, "--output_dir", str(tmp_path / "fe"), "--method", "feature_extraction"]) == 2
    assert "--method feature_extraction fits its head with its own settings" in capsys.readouterr().err
    lm = ["lr-find", "--task", "finetune", "--model_name_or_path", str(bert), "--train_file", str(corpora["train"])]
    assert main([*lm, "--output_dir", str(tmp_path / "lm"), "--method", "lora"]) == 2
    assert "--method lora is for lr-find --task classifier" in capsys.readouterr().err


def test_lora_on_an_architecture_without_targets_of_our_own(corpora, tmp_path, capsys):
    """Gemma-3 (the family of gemma-3-270m) has no LoRA targets in our table: `--method lora` adapts every linear
    layer outside the head, as peft's "all-linear" would, and trains the score head in full;
    `--lora_target_modules` narrows it to the modules named, as peft's `target_modules` does, and a name that matches
    nothing is refused in one line. The merged classifier serves through `pipeline()`."""
    pytest.importorskip("peft")
    gemma = save_tiny_gemma3(tmp_path / "gemma", TextData(str(corpora["train"])).load()["text"])
    lora = ("--method", "lora", "--lora_save_adapter")
    assert train_classifier_command(gemma, corpora, tmp_path / "all", *lora) == 0
    adapter = json.loads((tmp_path / "all" / "adapter" / "adapter_config.json").read_text())
    projections = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert set(adapter["target_modules"]) == projections and adapter["modules_to_save"] == ["score"]
    assert (
        train_classifier_command(gemma, corpora, tmp_path / "qv", *lora, "--lora_target_modules", "q_proj", "v_proj")
        == 0
    )
    adapter = json.loads((tmp_path / "qv" / "adapter" / "adapter_config.json").read_text())
    assert set(adapter["target_modules"]) == {"q_proj", "v_proj"}
    # A name that no module has: one line naming it and the layers there are, exit status 2 (not peft's traceback).
    capsys.readouterr()
    assert train_classifier_command(gemma, corpora, tmp_path / "bad", *lora, "--lora_target_modules", "qproj") == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "['qproj'] name no module" in err.strip().splitlines()[-1]
    assert "q_proj" in err.strip().splitlines()[-1]
    assert pipeline("text-classification", model=str(tmp_path / "qv"))("a good film")[0]["label"] in {"neg", "pos"}


@pytest.mark.parametrize(("family", "gradual"), [("bert", False), ("awd_lstm", True)])
def test_gradual_unfreezing_by_model_family_from_the_cli_and_python(family, gradual, request, corpora, tmp_path):
    """Left unset, the classifier stage unfreezes gradually for AWD-LSTM (ULMFiT) and trains every group of a
    Transformer from the first step, as transformers' `Trainer` does; the record and the card say which, and
    "default"; `--gradual_unfreezing` / `--no_gradual_unfreezing` turn it on or off ("set by you")."""
    model = request.getfixturevalue(family)
    assert train_classifier_command(model, corpora, tmp_path / "default") == 0
    record = ULMFiTTrainingRecord.from_dict(
        json.loads((tmp_path / "default" / "ulmfit_training_record.json").read_text())
    )
    stage = record.stages[-1]
    assert stage.gradual_unfreezing is gradual and stage.settings["gradual_unfreezing"] == "default"
    assert ("(no gradual unfreezing)" in stage_paragraph(stage)) is not gradual  # the model card's words

    flag = "--no_gradual_unfreezing" if gradual else "--gradual_unfreezing"
    assert train_classifier_command(model, corpora, tmp_path / "flag", flag) == 0
    stage = json.loads((tmp_path / "flag" / "ulmfit_training_record.json").read_text())["stages"][-1]
    assert stage["gradual_unfreezing"] is not gradual and stage["settings"]["gradual_unfreezing"] == "set by you"

    prepared = prepare_classifier(str(model), TextData(str(corpora["train"])), tmp_path / "api")
    assert prepared.trainer.args.gradual_unfreezing is gradual
    assert (prepared.trainer.unfreezing_callback is not None) is gradual


def test_an_unfreezing_schedule_turns_gradual_unfreezing_on_where_it_was_left_to_the_family(bert, corpora, tmp_path):
    for schedule in ({"unfreeze_at_fractions": [0.2, 0.4]}, {"unfreeze_every_n_steps": 5}, {"stlr_per_stage": True}):
        assert ClassifierTrainingArguments(output_dir=str(tmp_path), **schedule).gradual_unfreezing is True
    # An explicit off stays off: a setting that needs gradual unfreezing is refused then, as it was before.
    with pytest.raises(ValueError, match="stlr_per_stage=True needs"):
        ClassifierTrainingArguments(output_dir=str(tmp_path), gradual_unfreezing=False, stlr_per_stage=True)
    # A plain ULMFiTTrainingArguments keeps ULMFiT's gradual unfreezing on, whatever the model.
    assert ULMFiTTrainingArguments(output_dir=str(tmp_path)).gradual_unfreezing is True
    prepared = prepare_classifier(
        str(bert),
        TextData(str(corpora["train"])),
        tmp_path / "api",
        training_args=ClassifierTrainingArguments(output_dir=str(tmp_path), unfreeze_at_fractions=[0.2, 0.4]),
    )
    assert prepared.trainer.args.gradual_unfreezing is True and prepared.trainer.unfreezing_callback is not None


def test_a_rate_you_give_is_recorded_as_set_by_you_and_reaches_the_top_group(bert, corpora, tmp_path):
    flags = ("--learning_rate", "3e-4", "--save_strategy", "steps", "--save_steps", "1")
    assert train_classifier_command(bert, corpora, tmp_path, *flags) == 0
    assert max(peak_rates_in_checkpoint(tmp_path)) == pytest.approx(3e-4)
    stage = json.loads((tmp_path / "ulmfit_training_record.json").read_text())["stages"][-1]
    assert stage["settings"]["learning_rate"] == "set by you" and stage["settings"]["num_train_epochs"] == "default"


def test_push_to_hub_on_a_stage_command_uploads_the_folder_with_its_card(bert, corpora, tmp_path, monkeypatch):
    uploaded = tmp_path / "uploaded"
    api = RecordingHubApi(uploaded)
    monkeypatch.setattr(tl_nlp.hub, "HfApi", lambda token=None: api)
    flags = ("--push_to_hub", "--hub_model_id", "me/tiny-classifier", "--max_length", "6", "--truncation_side", "left")
    assert train_classifier_command(bert, corpora, tmp_path / "out", *flags) == 0
    assert api.calls == [("create_repo", "me/tiny-classifier"), ("upload_folder", "me/tiny-classifier")]
    files = {p.name for p in uploaded.iterdir()}
    assert {"README.md", "config.json", "model.safetensors", "tokenizer.json", "ulmfit_training_record.json"} <= files
    card = (uploaded / "README.md").read_text()
    assert "me/tiny-classifier" in card and "text-classification" in card
    assert "peak learning rate was 0.0002" in card and "`learning_rate` default" in card
    assert "local file data/train.csv" in card  # the real data, not "local csv files"
    assert "with `truncation=True`, cuts a longer text to 6 tokens and keeps its end" in card


def test_push_to_hub_on_a_language_model_stage(awd_lstm, corpora, tmp_path, monkeypatch):
    uploaded = tmp_path / "uploaded"
    api = RecordingHubApi(uploaded)
    monkeypatch.setattr(tl_nlp.hub, "HfApi", lambda token=None: api)
    argv = ["finetune-lm", "--model_name_or_path", str(awd_lstm), "--train_file", str(corpora["general"])]
    argv += ["--output_dir", str(tmp_path / "lm"), "--max_steps", "1", "--per_device_train_batch_size", "4"]
    assert (
        main([*argv, "--bptt", "10", "--push_to_hub", "--hub_model_id", "me/tiny-lm", "--disable_tqdm", "true"]) == 0
    )
    assert api.calls == [("create_repo", "me/tiny-lm"), ("upload_folder", "me/tiny-lm")]
    card = (uploaded / "README.md").read_text()
    assert "AWD-LSTM language model" in card and "local file data/general.txt" in card
    assert {"model.safetensors", "modeling_awd_lstm.py", "ulmfit_training_record.json"} <= {
        p.name for p in uploaded.iterdir()
    }


def test_hub_arguments_stay_out_of_the_trainer(bert, corpora, tmp_path):
    """The stage uploads its folder itself: the Trainer never creates a repository named after its checkpoints."""
    prepared = prepare_classifier(str(bert), TextData(str(corpora["train"])), tmp_path)
    assert prepared.trainer.args.push_to_hub is False
    with pytest.raises(TypeError):
        ClassifierTrainingArguments(output_dir=str(tmp_path), push_to_hub=True)
    assert HubArguments(hub_model_id=None).repo_id(tmp_path / "clf") == "clf"
    data = TextData(str(corpora["train"]))
    for training_args in ({"push_to_hub": True}, ULMFiTTrainingArguments(output_dir=str(tmp_path), push_to_hub=True)):
        with pytest.raises(ValueError, match="pass hub=HubArguments"):
            prepare_classifier(str(bert), data, tmp_path, training_args=training_args)


def test_a_schedule_option_that_cannot_apply_is_an_error(bert, corpora, tmp_path, capsys):
    with pytest.raises(ValueError, match="lr_scheduler_type='cosine'.*use_stlr"):
        ULMFiTTrainingArguments(output_dir=str(tmp_path), lr_scheduler_type="cosine")
    ULMFiTTrainingArguments(output_dir=str(tmp_path), lr_scheduler_type="cosine", use_stlr=False)
    assert train_classifier_command(bert, corpora, tmp_path, "--lr_scheduler_type", "cosine") == 2
    assert "cannot apply while use_stlr=True" in capsys.readouterr().err


def test_evaluate_reads_the_length_the_classifier_was_trained_with(bert, corpora, tmp_path, capsys):
    assert train_classifier_command(bert, corpora, tmp_path / "clf", "--max_length", "8") == 0
    [(_, encode)] = load_classifiers(str(tmp_path / "clf"))
    assert encode.keywords["max_length"] == 8
    [(_, encode)] = load_classifiers(str(tmp_path / "clf"), max_length=6)
    assert encode.keywords["max_length"] == 6
    capsys.readouterr()
    argv = ["evaluate", "--model_name_or_path", str(tmp_path / "clf"), "--test_file", str(corpora["test"])]
    assert main([*argv, "--max_length", "6"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["eval_samples"] == 20


def test_truncation_side_left_keeps_the_end_of_a_text_in_training_evaluate_and_pipeline(bert, corpora, tmp_path):
    """The reference is transformers' own left truncation (`truncation_side="left"` on the checkpoint's tokenizer)."""
    flags = ["--max_length", "6", "--truncation_side", "left"]
    assert train_classifier_command(bert, corpora, tmp_path / "clf", *flags) == 0
    text = TextData(str(corpora["train"])).load()["text"][0]
    left = AutoTokenizer.from_pretrained(str(bert), truncation_side="left")
    reference = left(text, truncation=True, max_length=6)
    beginning = AutoTokenizer.from_pretrained(str(bert))(text, truncation=True, max_length=6)
    assert reference["input_ids"] != beginning["input_ids"]  # the text is longer than 6 tokens
    saved = AutoTokenizer.from_pretrained(str(tmp_path / "clf"))
    assert (saved.truncation_side, saved.model_max_length) == ("left", 6)
    [(_, encode)] = load_classifiers(str(tmp_path / "clf"))
    assert encode(text)["input_ids"] == reference["input_ids"]
    classify = pipeline("text-classification", model=str(tmp_path / "clf"), device="cpu")
    assert classify.tokenizer(text, truncation=True)["input_ids"] == reference["input_ids"]
    prepared = prepare_classifier(str(bert), TextData(str(corpora["train"])), tmp_path / "api", max_length=6,
                                  truncation_side="left")  # fmt: skip
    assert prepared.trainer.train_dataset["input_ids"][0] == reference["input_ids"]


def test_inference_max_length_trains_on_short_inputs_and_saves_the_longer_reading(bert, corpora, tmp_path):
    flags = ["--max_length", "6", "--inference_max_length", "9", "--validation_file", str(corpora["test"])]
    assert train_classifier_command(bert, corpora, tmp_path / "clf", *flags) == 0
    text = TextData(str(corpora["train"])).load()["text"][0]
    checkpoint = AutoTokenizer.from_pretrained(str(bert))
    assert AutoTokenizer.from_pretrained(str(tmp_path / "clf")).model_max_length == 9
    [(_, encode)] = load_classifiers(str(tmp_path / "clf"))
    assert encode(text)["input_ids"] == checkpoint(text, truncation=True, max_length=9)["input_ids"]
    data = TextData(str(corpora["train"]))
    prepared = prepare_classifier(str(bert), data, tmp_path / "api", eval_data=TextData(str(corpora["test"])),
                                  max_length=6, inference_max_length=9)  # fmt: skip
    assert (
        prepared.trainer.train_dataset["input_ids"][0] == checkpoint(text, truncation=True, max_length=6)["input_ids"]
    )
    assert max(prepared.eval_dataset["length"]) > 6  # held-out texts are read as the saved classifier reads them
    assert prepared.tokenize(data)["input_ids"][0] == encode(text)["input_ids"]
    # Never past the context (the tiny BERT's 64 positions), as for max_length.
    longest = prepare_classifier(str(bert), data, tmp_path / "long", max_length=6, inference_max_length=1000)
    assert longest.tokenizer.model_max_length == 64


def test_a_gpt2_classifier_reads_from_the_left_and_its_card_names_its_context(corpora, tmp_path, monkeypatch):
    """A decoder with no pad token (GPT-2) through the CLI and the API; the reference is transformers' own left
    truncation on the checkpoint's tokenizer, and the card names the context (`n_positions` in GPT-2's config)."""
    texts = TextData(str(corpora["train"])).load()["text"]
    gpt2 = save_tiny_gpt2(tmp_path / "gpt2", list(texts))
    monkeypatch.setattr(tl_nlp.hub, "HfApi", lambda token=None: RecordingHubApi(tmp_path / "uploaded"))
    flags = ["--max_length", "6", "--truncation_side", "left", "--inference_max_length", "9"]
    flags += ["--push_to_hub", "--hub_model_id", "me/tiny-gpt2-classifier"]
    assert train_classifier_command(gpt2, corpora, tmp_path / "clf", *flags) == 0
    card = (tmp_path / "uploaded" / "README.md").read_text()
    assert "It reads at most 64 tokens at a time" in card
    assert "with `truncation=True`, cuts a longer text to 9 tokens and keeps its end" in card
    left = AutoTokenizer.from_pretrained(str(gpt2), truncation_side="left")
    [(_, encode)] = load_classifiers(str(tmp_path / "clf"))
    assert encode(texts[0])["input_ids"] == left(texts[0], truncation=True, max_length=9)["input_ids"]
    prepared = prepare_classifier(str(gpt2), TextData(str(corpora["train"])), tmp_path / "api", max_length=6,
                                  truncation_side="left")  # fmt: skip
    assert prepared.trainer.train_dataset["input_ids"][0] == left(texts[0], truncation=True, max_length=6)["input_ids"]


def test_truncation_side_is_refused_where_nothing_is_cut_and_checked_on_the_command_line(
    bert, awd_lstm, corpora, tmp_path, capsys
):
    data = TextData(str(corpora["train"]))
    for option in ({"truncation_side": "left"}, {"inference_max_length": 9}):
        with pytest.raises(RecipeError, match="reads whole documents"):
            prepare_classifier(str(awd_lstm), data, tmp_path / "whole", **option)
    cut = prepare_classifier(str(awd_lstm), data, tmp_path / "cut", max_length=5, truncation_side="left")
    reference = AutoTokenizer.from_pretrained(str(awd_lstm), truncation_side="left")
    assert cut.trainer.train_dataset["input_ids"][0] == reference(data.load()["text"][0], truncation=True,
                                                                  max_length=5)["input_ids"]  # fmt: skip
    assert train_classifier_command(bert, corpora, tmp_path / "clf", "--truncation_side", "middle") == 2
    assert "truncation_side must be 'right' (keep a text's beginning) or 'left'" in capsys.readouterr().err


def test_ulmfit_command_gives_its_reading_options_to_its_classifier_stage(bert, corpora, tmp_path):
    argv = [
        "ulmfit",
        "--model_name_or_path", str(bert),
        "--train_file", str(corpora["train"]),
        "--class_names", "neg", "pos",
        "--output_dir", str(tmp_path / "run"),
        "--max_steps", "1",
        "--max_length", "7",
        "--truncation_side", "left",
    ]  # fmt: skip
    assert main(argv) == 0
    saved = AutoTokenizer.from_pretrained(str(tmp_path / "run" / "classifier"))
    assert (saved.model_max_length, saved.truncation_side) == (7, "left")
    assert main([*argv, "--output_dir", str(tmp_path / "longer"), "--inference_max_length", "11"]) == 0
    assert AutoTokenizer.from_pretrained(str(tmp_path / "longer" / "classifier")).model_max_length == 11


def test_feature_extraction_refuses_options_it_cannot_use(awd_lstm, corpora, tmp_path):
    data = TextData(str(corpora["train"]))
    for options in (
        {"max_length": 8},
        {"training_args": {"learning_rate": 1e-3}},
        {"save_adapter": True},
        {"truncation_side": "left"},
        {"inference_max_length": 9},
    ):
        with pytest.raises((RecipeError, ValueError), match="cannot use|save_adapter"):
            train_classifier(str(awd_lstm), data, tmp_path, method="feature_extraction", **options)


def test_awd_lstm_classifier_reads_the_first_max_length_tokens_and_evaluation_too(awd_lstm, corpora, tmp_path):
    data = TextData(str(corpora["train"]))
    whole = prepare_classifier(str(awd_lstm), data, tmp_path / "whole").trainer.train_dataset
    cut = prepare_classifier(str(awd_lstm), data, tmp_path / "cut", max_length=5)
    assert max(whole["length"]) > 5 and max(cut.trainer.train_dataset["length"]) == 5
    assert cut.trainer.train_dataset["input_ids"][0] == whole["input_ids"][0][:5]
    assert cut.tokenizer.model_max_length == 5  # saved with the classifier: evaluate reads 5 tokens too


def test_the_classifier_stage_can_train_at_the_lr_finders_suggestion(bert, corpora, tmp_path, capsys):
    from tl_nlp.training.lr_finder import take_lr_finder_suggestion

    # The range test runs on the model as training starts: every group of a Transformer by default, the head alone
    # with gradual unfreezing.
    for gradual, swept in ((None, "every layer group"), (True, "head")):
        training = ClassifierTrainingArguments(
            output_dir=str(tmp_path), learning_rate_from_lr_find=True, max_steps=1, gradual_unfreezing=gradual
        )
        prepared = prepare_classifier(str(bert), TextData(str(corpora["train"])), tmp_path, training_args=training)
        rate = take_lr_finder_suggestion(prepared.trainer)
        assert prepared.trainer.args.learning_rate == rate != 2e-4
        assert f"LR finder on {swept}: valley" in capsys.readouterr().out
    assert all(p.requires_grad for p in prepared.trainer.model.parameters())


def test_a_yes_no_option_left_to_the_model_family_takes_a_flag_a_value_or_a_config_file(tmp_path):
    from tl_nlp.cli.io import parse_dataclasses

    def parsed(*argv: str) -> bool | None:
        (args,) = parse_dataclasses(
            (ClassifierTrainingArguments,), ["--output_dir", str(tmp_path), *argv], "tl-nlp train-classifier"
        )
        return args.gradual_unfreezing

    config = tmp_path / "run.yaml"
    config.write_text("gradual_unfreezing: false\n", encoding="utf-8")
    assert parsed() is None  # the model family decides
    assert parsed("--gradual_unfreezing") is True and parsed("--gradual_unfreezing", "true") is True
    assert parsed("--no_gradual_unfreezing") is False and parsed("--gradual_unfreezing", "false") is False
    assert parsed("--config", str(config)) is False and parsed("--config", str(config), "--gradual_unfreezing") is True


def test_unfreezing_stages_without_gradual_unfreezing_are_refused_not_ignored(awd_lstm, corpora, tmp_path, capsys):
    for stages in (
        {"unfreeze_at_fractions": [0.2]},
        {"unfreeze_every_n_steps": 3},
        {"unfreezing_schedule": "partial"},
    ):
        with pytest.raises(ValueError, match="places gradual-unfreezing stages, but gradual_unfreezing=False"):
            ClassifierTrainingArguments(output_dir=str(tmp_path), gradual_unfreezing=False, **stages)
    flags = ("--no_gradual_unfreezing", "--unfreeze_at_fractions", "0.2", "0.4")
    assert train_classifier_command(awd_lstm, corpora, tmp_path / "refused", *flags) == 2
    assert "unfreeze_at_fractions=[0.2, 0.4] places gradual-unfreezing stages" in capsys.readouterr().err
    # The language-model stages of the whole recipe never take the classifier's schedule (they train every layer).
    from tl_nlp.recipe.config import FinetuneTrainingArguments

    classifier = ClassifierTrainingArguments(output_dir=str(tmp_path), unfreeze_at_fractions=[0.2, 0.4], seed=7)
    finetune = FinetuneTrainingArguments.from_shared(classifier, output_dir=str(tmp_path / "lm"))
    assert finetune.unfreeze_at_fractions is None and finetune.gradual_unfreezing is False and finetune.seed == 7


def test_a_transformer_classifier_at_its_defaults_moves_what_trainer_moves(bert, corpora, tmp_path):
    """The reference for the Transformer default is transformers' `Trainer` at its defaults: after one optimizer step
    the same pretrained tensors have moved (all of them), where ULMFiT's first stage (the head alone) moves none."""
    from safetensors.torch import load_file
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    pretrained = load_file(Path(bert) / "model.safetensors")

    def moved(folder: Path) -> set[str]:
        trained = load_file(folder / "model.safetensors")
        return {
            name for name, value in pretrained.items() if name in trained and not torch.equal(trained[name], value)
        }

    tokenizer = AutoTokenizer.from_pretrained(bert)
    rows = TextData(str(corpora["train"])).load()
    encoded = rows.map(lambda row: {**tokenizer(row["text"]), "labels": int(row["label"] == "pos")})
    encoded = encoded.remove_columns(["text", "label"])
    model = AutoModelForSequenceClassification.from_pretrained(bert, num_labels=2)
    arguments = TrainingArguments(str(tmp_path / "stock"), max_steps=1, report_to=[], use_cpu=True, save_strategy="no")
    trainer = Trainer(
        model=model, args=arguments, train_dataset=encoded, data_collator=DataCollatorWithPadding(tokenizer)
    )
    trainer.train()
    trainer.save_model(str(tmp_path / "stock"))
    reference = moved(tmp_path / "stock")
    assert reference and {name.split(".")[0] for name in reference} == {"bert"}

    # The first step of an 8-step run (its checkpoint), where gradual unfreezing's first stage trains the head alone.
    first_step = ("--max_steps", "8", "--save_strategy", "steps", "--save_steps", "1")
    assert train_classifier_command(bert, corpora, tmp_path / "default", *first_step) == 0
    assert moved(tmp_path / "default" / "checkpoint-1") == reference
    assert train_classifier_command(bert, corpora, tmp_path / "gradual", "--gradual_unfreezing", *first_step) == 0
    assert moved(tmp_path / "gradual" / "checkpoint-1") == set()
