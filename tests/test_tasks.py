"""Tasks beyond one text and one label: inference from the data (real files), one-line errors for bad rows, the
encoding of each model family (BERT's own pair encoding, GPT's start/delimiter/extract input, AWD-LSTM's
xxbos/xxfld), the multi-sequence heads (both orders summed, softmax over choices) against the classifier they wrap,
reloads, layer groups, and the ULMFiT techniques and the auxiliary LM loss training every task."""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from pathlib import Path

import datasets
import pytest
import torch
from tokenizers import processors
from transformers import AutoConfig, AutoTokenizer, BertForMultipleChoice, PreTrainedTokenizerFast

from tl_nlp import AWDLSTMConfig, AWDLSTMForCausalLM
from tl_nlp.data import TextDataError, train_ulmfit_tokenizer
from tl_nlp.data.task_encoding import (
    TaskDataCollator,
    add_task_tokens,
    encode_task_dataset,
    label_names_of,
    task_family,
)
from tl_nlp.models.task_models import (
    MultiSequenceClassifier,
    load_task_model,
    start_head_at_training_labels,
    task_model_from_pretrained,
)
from tl_nlp.reference_data import NO_REFERENCE_DATA, find_reference_data
from tl_nlp.tasks import TaskSpec, check_task_rows, infer_task
from tl_nlp.training import ClassificationTrainer, ULMFiTTrainingArguments, layer_groups
from tl_nlp.training.auxiliary_lm import ClassifierWithAuxiliaryLM

sys.path.insert(0, str(Path(__file__).parent))
from recipe_fixtures import _word_tokenizer, save_tiny_bert, save_tiny_gpt2  # noqa: E402

# RTE, STS-B, COPA, SST-5 and GoEmotions in their Hub schemas (../shared/data, or what `make data` fetched).
TASK_DATASETS = ("glue_rte", "glue_stsb", "super_glue_copa", "sst5", "go_emotions")
DATA = find_reference_data(TASK_DATASETS)
WORDS = "a man sleeps rests the cat sat on mat it rained so grass was wet because dog barks runs ran".split()
TEXTS = [" ".join(WORDS[i : i + 4]) for i in range(0, len(WORDS) - 3)]

PAIRS = datasets.Dataset.from_dict(
    {
        "sentence1": ["a man sleeps", "the cat sat", "it rained", "the dog barks"],
        "sentence2": ["a man rests", "the dog ran", "grass was wet", "a dog runs"],
        "label": [4.5, 0.5, 2.0, 3.0],
    }
)
# The same pairs as entailment-style classes.
PAIR_CLASSES = PAIRS.remove_columns("label").add_column("label", [1, 0, 0, 1])
CHOICES = datasets.Dataset.from_dict(
    {
        "premise": ["it rained", "the cat sat", "the dog barks", "a man sleeps"],
        "choice1": ["grass was wet", "on the mat", "a man runs", "the cat rests"],
        "choice2": ["the dog ran", "it rained so", "it rained", "a man rests"],
        "label": [0, 0, 1, 1],
    }
)


def real_split(folder: str, split: str, rows: int = 64) -> datasets.Dataset:
    if DATA is None:
        pytest.skip(NO_REFERENCE_DATA)
    path = DATA / folder / f"{split}.parquet"
    return datasets.load_dataset("parquet", data_files=str(path), split="train").select(range(rows))


@pytest.mark.parametrize(
    "folder, task, columns",
    [
        ("glue_rte", "text_pair", ("sentence1", "sentence2", "label")),
        ("glue_stsb", "regression", ("sentence1", "sentence2", "label")),
        ("super_glue_copa", "multiple_choice", ("premise", None, "label")),
        ("sst5", "single_text", ("text", None, "label")),
        ("go_emotions", "multi_label", ("text", None, "labels")),
    ],
)
def test_task_is_inferred_from_the_real_datasets_and_said(folder, task, columns):
    spec, reason = infer_task(real_split(folder, "train"))
    assert (spec.task, spec.text_column, spec.text_pair_column, spec.label_column) == (task, *columns)
    assert reason.startswith("inferred from the data: ") and task in reason
    if task == "multiple_choice":
        assert spec.choice_columns == ["choice1", "choice2"]
    # Similarity (a regression on pairs) is read in both orders; entailment is not symmetric.
    assert spec.symmetric_pair == (task == "regression")


def test_explicit_task_wins_and_go_emotions_label_names_come_from_the_file():
    spec, _ = infer_task(real_split("sst5", "train"), task="regression")
    assert spec.task == "regression" and spec.text_pair_column is None and not spec.symmetric_pair
    names = label_names_of(real_split("go_emotions", "train"), "labels")
    assert len(names) == 28 and names[0] == "admiration" and names[-1] == "neutral"
    with pytest.raises(ValueError, match="task must be one of"):
        infer_task(PAIRS, task="pairs")


@pytest.mark.parametrize(
    "rows, spec, message",
    [
        (
            PAIRS.remove_columns("sentence2"),
            TaskSpec("text_pair", "sentence1", "sentence2"),
            r"train.csv: task 'text_pair' needs the second text column 'sentence2', which is not there",
        ),
        (
            CHOICES.map(lambda row, i: {"choice2": None if i == 2 else row["choice2"]}, with_indices=True),
            TaskSpec("multiple_choice", "premise", choice_columns=["choice1", "choice2"]),
            r"train.csv: row 2, column 'choice2' is missing \(None\)",
        ),
        (
            datasets.Dataset.from_dict({"text": ["a", "b"], "labels": [["joy"], ["joy", "glee"]]}),
            TaskSpec("multi_label", label_column="labels"),
            r"train.csv: row 1, column 'labels': label 'glee' is not one of the known labels \['joy', 'anger'\]",
        ),
        (
            datasets.Dataset.from_dict({"text": ["a", "b"], "labels": ["joy", "joy,anger"]}),  # a CSV's strings
            TaskSpec("multi_label", label_column="labels"),
            r"row 0, column 'labels': 'joy' is not a list of labels",
        ),
        (
            datasets.Dataset.from_dict({"text": ["a", "b", "c"], "label": ["1.5", "2", "high"]}),
            TaskSpec("regression"),
            r"train.csv: row 0, column 'label': '1.5' is not a number",
        ),
        (
            CHOICES.map(lambda row, i: {"label": 2 if i == 3 else row["label"]}, with_indices=True),
            TaskSpec("multiple_choice", "premise", choice_columns=["choice1", "choice2"]),
            r"row 3, column 'label': 2 is not a choice index 0..1",
        ),
    ],
)
def test_bad_rows_get_one_line_naming_file_row_and_column(rows, spec, message):
    with pytest.raises(TextDataError, match=message) as error:
        check_task_rows(rows, spec, source="train.csv", label_names=["joy", "anger"])
    assert "\n" not in str(error.value)


def test_task_spec_refuses_contradictions():
    with pytest.raises(ValueError, match="needs text_pair_column"):
        TaskSpec("text_pair")
    with pytest.raises(ValueError, match="2 or more choice_columns"):
        TaskSpec("multiple_choice", choice_columns=["choice1"])
    with pytest.raises(ValueError, match="threshold must be in"):
        TaskSpec("multi_label", threshold=1.5)


# ---- model families ------------------------------------------------------------------------------------------------


def save_tiny_pair_bert(folder: Path) -> Path:
    """The recipe's tiny BERT with BERT's pair template ([CLS] a [SEP] b [SEP], token types 0 then 1)."""
    save_tiny_bert(folder, TEXTS)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tokenizer.save_pretrained(folder)
    # Token types, as BertTokenizer returns them.
    config_file = folder / "tokenizer_config.json"
    values = json.loads(config_file.read_text())
    values["model_input_names"] = ["input_ids", "token_type_ids", "attention_mask"]
    config_file.write_text(json.dumps(values))
    return folder


def save_tiny_awd_lstm(folder: Path) -> Path:
    tokenizer = train_ulmfit_tokenizer(TEXTS * 3, min_frequency=1)
    torch.manual_seed(0)
    config = AWDLSTMConfig(vocab_size=len(tokenizer), embedding_size=8, hidden_size=12, num_hidden_layers=2)
    config.pad_token_id = tokenizer.pad_token_id
    AWDLSTMForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("task_models")
    return {
        "encoder": save_tiny_pair_bert(root / "bert"),
        "decoder": save_tiny_gpt2(root / "gpt2", TEXTS),
        "awd_lstm": save_tiny_awd_lstm(root / "awd_lstm"),
    }


def task_setup(folder: Path, spec: TaskSpec, rows: datasets.Dataset, label_names=None):
    """Tokenizer (GPT's tokens added for a decoder), encoded rows, collated batch and a new task model."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    family = task_family(AutoConfig.from_pretrained(folder))
    if family == "decoder":
        add_task_tokens(tokenizer)
    encoded, id2label, _ = encode_task_dataset(rows, spec, tokenizer, family, label_names, max_length=32)
    batch = TaskDataCollator(tokenizer)([encoded[index] for index in range(len(encoded))])
    torch.manual_seed(0)
    model = task_model_from_pretrained(
        str(folder), spec, family, id2label, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id
    )
    return tokenizer, family, encoded, batch, model


def test_bert_pairs_use_bert_own_pair_encoding(folders):
    spec = TaskSpec("text_pair", "sentence1", "sentence2")
    rows = PAIR_CLASSES
    tokenizer, family, encoded, batch, model = task_setup(folders["encoder"], spec, rows)
    expected = tokenizer(list(rows["sentence1"]), list(rows["sentence2"]))
    assert family == "encoder" and encoded["input_ids"] == expected["input_ids"]
    assert encoded["token_type_ids"] == expected["token_type_ids"] and 1 in encoded["token_type_ids"][0]
    assert type(model).__name__ == "BertForSequenceClassification" and batch["labels"].dtype == torch.long


def test_bert_multiple_choice_is_transformers_own_class(folders):
    spec = TaskSpec("multiple_choice", "premise", choice_columns=["choice1", "choice2"])
    tokenizer, _, encoded, batch, model = task_setup(folders["encoder"], spec, CHOICES)
    assert isinstance(model, BertForMultipleChoice)
    assert encoded["input_ids"][1][1] == tokenizer("the cat sat", "it rained so")["input_ids"]
    assert batch["input_ids"].shape[:2] == (4, 2)
    out = model.eval()(**batch)
    assert out.logits.shape == (4, 2)
    assert torch.isclose(out.loss, torch.nn.functional.cross_entropy(out.logits, batch["labels"]))


def test_gpt_input_transformation_survives_a_reload(folders, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(folders["decoder"])
    size = len(tokenizer)
    tokens = add_task_tokens(tokenizer)
    assert add_task_tokens(tokenizer) == tokens and len(tokenizer) == size + 3  # start, delimiter, extract; once
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    for current in (tokenizer, reloaded):
        ids = current("a man", "the cat")["input_ids"]
        assert current.convert_ids_to_tokens(ids) == [
            "<|start|>", "a", "man", "<|delimiter|>", "the", "cat", "<|extract|>"
        ]  # fmt: skip
        assert current.convert_ids_to_tokens(current("it rained")["input_ids"])[-1] == "<|extract|>"


def test_awd_lstm_pairs_use_xxbos_and_the_field_separator(folders):
    tokenizer = AutoTokenizer.from_pretrained(folders["awd_lstm"])
    tokens = tokenizer.convert_ids_to_tokens(tokenizer("a man", "the cat")["input_ids"])
    assert tokens == ["xxbos", "a", "man", "xxfld", "the", "cat"]


@pytest.mark.parametrize("family", ["decoder", "awd_lstm"])
def test_similarity_sums_both_orders_and_ignores_the_order_of_the_pair(folders, family):
    spec, _ = infer_task(PAIRS)
    tokenizer, _, encoded, batch, model = task_setup(folders[family], spec, PAIRS)
    assert isinstance(model, MultiSequenceClassifier) and model.mode == "sum"
    model.eval()
    # GPT: h(a, b) + h(b, a) through the linear head; computed here from the classifier's own parts.
    features = [model.features(batch["input_ids"][:, order], batch["attention_mask"][:, order])[0] for order in (0, 1)]
    expected = model.head(features[0] + features[1])
    out = model(**batch)
    torch.testing.assert_close(out.logits, expected)
    assert torch.isclose(out.loss, torch.nn.functional.mse_loss(out.logits.squeeze(-1), batch["labels"]))
    swapped = PAIRS.rename_columns({"sentence1": "sentence2", "sentence2": "sentence1"})
    _, _, _, swapped_batch, _ = task_setup(folders[family], spec, swapped)
    torch.testing.assert_close(model(**swapped_batch).logits, out.logits)


@pytest.mark.parametrize("family", ["decoder", "awd_lstm"])
def test_multiple_choice_scores_each_choice_with_the_classifier_and_softmaxes_over_them(folders, family):
    spec, _ = infer_task(CHOICES)
    tokenizer, _, encoded, batch, model = task_setup(folders[family], spec, CHOICES)
    assert isinstance(model, MultiSequenceClassifier) and model.mode == "choices"
    model.eval()
    out = model(**batch)
    for choice in range(2):
        # Each choice alone, unpadded, through the wrapped one-output classifier: the same score.
        for row in range(4):
            ids = torch.tensor([encoded[row]["input_ids"][choice]])
            score = model.classifier(ids, attention_mask=torch.ones_like(ids)).logits[0, 0]
            torch.testing.assert_close(out.logits[row, choice], score, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(out.logits, batch["labels"]))
    if family == "decoder":
        assert tokenizer.convert_ids_to_tokens(encoded[0]["input_ids"][0])[-1] == "<|extract|>"


@pytest.mark.parametrize("family", ["encoder", "decoder", "awd_lstm"])
@pytest.mark.parametrize("task", ["similarity", "multiple_choice", "multi_label"])
def test_reloaded_task_model_gives_the_same_outputs_and_its_head_is_the_top_layer_group(
    folders, tmp_path, family, task
):
    if task == "multi_label":
        rows = datasets.Dataset.from_dict({"text": TEXTS[:4], "labels": [["x"], ["x", "y"], [], ["z"]]})
        spec, names = TaskSpec("multi_label", label_column="labels"), ["x", "y", "z"]
    else:
        rows, names = (PAIRS, None) if task == "similarity" else (CHOICES, None)
        spec, _ = infer_task(rows)
    tokenizer, _, _, batch, model = task_setup(folders[family], spec, rows, names)
    if task == "multi_label":
        assert batch["labels"].tolist()[1] == [1.0, 1.0, 0.0] and model.config.problem_type.startswith("multi")
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    reloaded, reloaded_spec = load_task_model(str(tmp_path))
    assert reloaded_spec == spec and type(reloaded) is type(model)
    torch.testing.assert_close(reloaded.eval()(**batch).logits, model.eval()(**batch).logits)
    groups = layer_groups(model)
    # The new head: BERT's `classifier`, GPT's `score`, AWD-LSTM's `classifier.layers` (BatchNorm, Linear).
    head = {
        name
        for name, _ in model.named_parameters()
        if name.split(".")[-2] in ("score", "classifier") or re.search(r"(^|\.)classifier\.layers\.", name)
    }
    assert head and head <= set(groups[-1].parameter_names), groups[-1]
    assert groups[0].name == "embeddings" and len(groups) == 4  # embeddings, 2 blocks, head


@pytest.mark.parametrize("family", ["encoder", "decoder", "awd_lstm"])
def test_multi_label_head_starts_at_the_label_rates_of_the_training_rows(folders, family):
    # Real GoEmotions comments: 28 labels, most on in a few percent of rows, some in none of these 64.
    rows = real_split("go_emotions", "train")
    spec = TaskSpec("multi_label", label_column="labels")
    names = label_names_of(rows, "labels")
    _, _, encoded, batch, model = task_setup(folders[family], spec, rows, names)
    rates = torch.tensor(encoded["labels"]).mean(0)
    assert rates.max() > 0.2 and (rates == 0).any()

    def probabilities():
        with torch.no_grad():
            return torch.sigmoid(model.eval()(**{k: v for k, v in batch.items() if k != "labels"}).logits)

    before = probabilities()
    assert (before.mean(0) - 0.5).abs().max() < 0.1  # transformers' zero bias: every label starts near 0.5
    changed = start_head_at_training_labels(model, spec, encoded["labels"])
    if family == "decoder":
        # GPT-2's `score` layer has no bias: nothing to set, nothing changed.
        assert changed is False and torch.equal(probabilities(), before)
        return
    assert changed is True
    # The outputs start at the training rates (a label absent from them at half a row's rate, not at -inf).
    floor = torch.full_like(rates, 0.5 / len(rows))
    torch.testing.assert_close(probabilities().mean(0), torch.maximum(rates, floor), atol=0.05, rtol=0)
    # The bias set is the output layer's (BERT's `classifier`, the last Linear of AWD-LSTM's head): the log-odds.
    output = model.classifier if family == "encoder" else model.classifier.layers[-1]
    torch.testing.assert_close(torch.sigmoid(output.bias), torch.maximum(rates, floor))
    # The other tasks keep transformers' zero bias.
    assert start_head_at_training_labels(model, TaskSpec("single_text"), encoded["labels"]) is False


def test_head_start_sets_the_output_layer_of_every_sequence_classification_architecture():
    """On a tiny model of every architecture in transformers' sequence-classification mapping, either the bias set is
    the one added to the logits (every logit moves by exactly its change), or nothing is set and nothing moves (the
    decoders' bias-less `score`, Perceiver's head inside its backbone): never another layer of the head."""
    from auto_tiny_models import runnable_tiny_models

    from tl_nlp.models.task_models import _head_output_layer

    started, left, problems = [], [], []
    for _, class_name, model, inputs in runnable_tiny_models("sequence_classification"):
        model.eval()
        with torch.no_grad():
            before = model(**inputs).logits.clone()
        layer = _head_output_layer(model, model.config.num_labels)
        initial = None if layer is None or layer.bias is None else layer.bias.detach().clone()
        labels = torch.rand(40, model.config.num_labels, generator=torch.Generator().manual_seed(0)) < 0.2
        changed = start_head_at_training_labels(model, TaskSpec("multi_label"), labels.float().tolist())
        with torch.no_grad():
            after = model(**inputs).logits
        if changed:
            shift = (layer.bias.detach() - initial).expand_as(before)
            started.append(class_name)
            if not torch.allclose(after - before, shift, atol=1e-4):
                problems.append(f"{class_name}: the bias set is not the logits'")
        else:
            left.append(class_name)
            if not torch.equal(after, before):
                problems.append(f"{class_name}: nothing set, yet the logits moved")
    assert not problems, problems
    assert {"BertForSequenceClassification", "RobertaForSequenceClassification"} <= set(started), started
    assert {"DistilBertForSequenceClassification", "BartForSequenceClassification"} <= set(started), started
    assert "LlamaForSequenceClassification" in left and len(started) > 40, (started, left)


@pytest.mark.parametrize("family", ["encoder", "decoder", "awd_lstm"])
def test_similarity_regression_head_starts_at_the_mean_score_of_the_training_rows(folders, family):
    # Real STS-B pairs, scores 0 to 5: an encoder reads a pair once, the others both orders summed (GPT).
    rows = real_split("glue_stsb", "train")
    spec, _ = infer_task(rows)
    if family == "encoder":
        spec = dataclasses.replace(spec, symmetric_pair=False)
    _, _, encoded, batch, model = task_setup(folders[family], spec, rows)
    mean = sum(rows["label"]) / len(rows)
    assert spec.task == "regression" and mean > 2

    def scores():
        with torch.no_grad():
            return model.eval()(**{k: v for k, v in batch.items() if k != "labels"}).logits.reshape(-1)

    before = scores()
    assert before.abs().mean() < 1  # a new head: every score starts near 0
    # The output layer: BERT's `classifier`; the last Linear of AWD-LSTM's head, inside the similarity wrapper.
    output = None if family == "decoder" else model.classifier
    output = output.classifier.layers[-1] if family == "awd_lstm" else output
    initial = 0.0 if output is None else output.bias.item()
    changed = start_head_at_training_labels(model, spec, encoded["labels"])
    if family == "decoder":  # GPT-2's `score` layer has no bias
        assert changed is False and torch.equal(scores(), before)
        return
    assert changed is True and output.bias.item() == pytest.approx(mean)
    # One head reads the summed pair (AWD-LSTM's similarity wrapper): the scores move by the bias's change, once.
    torch.testing.assert_close(scores() - before, torch.full_like(before, mean - initial), atol=1e-4, rtol=0)


@pytest.mark.parametrize("family", ["encoder", "decoder", "awd_lstm"])
@pytest.mark.parametrize("task", ["text_pair", "similarity", "multiple_choice", "regression"])
def test_ulmfit_techniques_train_every_task(folders, tmp_path, family, task):
    rows = {"multiple_choice": CHOICES, "similarity": PAIRS}.get(task)
    if task == "text_pair":
        rows = PAIR_CLASSES
    if task == "regression":
        rows = datasets.Dataset.from_dict({"text": TEXTS[:8], "label": [float(i % 5) for i in range(8)]})
    rows = datasets.concatenate_datasets([rows] * 4)
    spec, _ = infer_task(rows, task=None if task != "text_pair" else "text_pair")
    tokenizer, _, encoded, _, model = task_setup(folders[family], spec, rows)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    args = ULMFiTTrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        num_train_epochs=1,
        learning_rate=1e-2,
        unfreeze_at_fractions=[0.5],  # the head for steps 1-2, then one more group
        unfreezing_schedule="partial",  # the embeddings stay frozen on purpose: the check below needs a frozen group
        discriminative_lr_decay=2.6,  # named: transformer families default to a gentler decay
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    trainer = ClassificationTrainer(
        model=model, args=args, train_dataset=encoded, data_collator=TaskDataCollator(tokenizer)
    )
    trainer.train()
    groups = trainer.get_layer_groups()
    rates = {
        group["layer_group"]: group["initial_lr"] for group in trainer.optimizer.param_groups if "initial_lr" in group
    }
    top = len(groups) - 1
    assert rates[top] == pytest.approx(1e-2) and rates[top - 1] == pytest.approx(1e-2 / 2.6)
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert set(groups[-1].parameter_names) & changed
    # The bottom group (embeddings) never unfroze: bit-identical.
    assert not set(groups[0].parameter_names) & changed


@pytest.mark.parametrize("family", ["decoder", "awd_lstm"])
def test_auxiliary_lm_loss_reads_every_sequence_of_a_multiple_choice_row(folders, family):
    spec, _ = infer_task(CHOICES)
    tokenizer, _, _, batch, model = task_setup(folders[family], spec, CHOICES)
    wrapped = ClassifierWithAuxiliaryLM(model, auxiliary_lm_weight=0.5).eval()
    out = wrapped(**batch)
    assert torch.isclose(out.loss, out.classification_loss + 0.5 * out.lm_loss)
    assert torch.isclose(out.classification_loss, model.eval()(**batch).loss)
    groups = layer_groups(wrapped)
    assert groups[-1].name == "head" and len(groups) == 4


def test_collator_keeps_float_targets_float():
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=_word_tokenizer(TEXTS, ["[UNK]", "[PAD]"]), pad_token="[PAD]")
    features = [{"input_ids": [2, 3], "labels": 1.5}, {"input_ids": [4], "labels": 2.0}]
    batch = TaskDataCollator(tokenizer)(features)
    assert batch["labels"].dtype == torch.float32 and batch["input_ids"].tolist() == [[2, 3], [4, 1]]


@pytest.mark.parametrize("family", ["encoder", "decoder", "awd_lstm"])
@pytest.mark.parametrize("task", ["text_pair", "similarity", "multiple_choice"])
def test_lora_trains_every_task_and_merges_into_the_same_task_model(folders, tmp_path, family, task):
    from tl_nlp.recipe.methods import model_to_save, wrap_classifier
    from tl_nlp.training.lora import ULMFiTLoraArguments

    rows = {"text_pair": PAIR_CLASSES, "similarity": PAIRS, "multiple_choice": CHOICES}[task]
    spec, _ = infer_task(rows, task="text_pair" if task == "text_pair" else None)
    rows = datasets.concatenate_datasets([rows] * 4)
    tokenizer, _, encoded, batch, model = task_setup(folders[family], spec, rows)
    added = list(range(len(AutoTokenizer.from_pretrained(folders[family])), len(tokenizer)))
    assert (len(added) == 3) == (family == "decoder")  # GPT's start, delimiter and extract tokens
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    model = wrap_classifier(model, "lora", 0.0, ULMFiTLoraArguments(r=2), trained_tokens=added)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    # Adapters, the head in full and (decoders) the new tokens' embedding rows: nothing else trains.
    assert trainable and all(re.search(r"lora_|modules_to_save|trainable_tokens", name) for name in trainable)
    assert any("trainable_tokens" in name for name in trainable) == (family == "decoder")
    groups = layer_groups(model)
    grouped = {name for group in groups for name in group.parameter_names}
    assert trainable <= grouped and groups[-1].name == "head"
    # Every block has its adapters, in its own group: the discriminative rates and the unfreezing reach them.
    assert all(any("lora_B" in name for name in group.parameter_names) for group in groups if "layer" in group.name)
    head = {name for name in trainable if re.search(r"(classifier|score)\.modules_to_save", name)}
    assert head and head <= set(groups[-1].parameter_names)
    args = ULMFiTTrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=4, num_train_epochs=1, learning_rate=1e-2,
        unfreeze_at_fractions=[0.2, 0.4, 0.6], report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True,
        seed=0,
    )  # fmt: skip
    trainer = ClassificationTrainer(
        model=model, args=args, train_dataset=encoded, data_collator=TaskDataCollator(tokenizer)
    )
    trainer.train()
    # Every group unfroze by the end: every adapter's B, which starts at zero, has moved.
    assert all(p.detach().abs().sum() > 0 for name, p in model.named_parameters() if "lora_B" in name)
    model.eval()
    expected = model(**batch).logits
    merged = model_to_save(model, tmp_path, False, True)
    # The saved model is the plain task model (no peft inside), with the adapters merged: the same outputs.
    assert type(merged) is type(task_setup(folders[family], spec, rows)[-1])
    assert not any("lora_" in name or "modules_to_save" in name for name, _ in merged.named_parameters())
    torch.testing.assert_close(merged.eval()(**batch).logits, expected, rtol=1e-4, atol=1e-5)
    weights = dict(merged.named_parameters())
    if family == "decoder":  # the new tokens' embeddings trained, the pretrained ones did not
        embeddings_name = next(name for name in before if name.endswith("wte.weight"))
        old, new = before[embeddings_name], weights[embeddings_name]
        assert not torch.equal(old[added], new[added]) and torch.equal(old[: added[0]], new[: added[0]])
    merged.save_pretrained(tmp_path / "folder")
    reloaded, reloaded_spec = load_task_model(str(tmp_path / "folder"))
    assert reloaded_spec == spec
    torch.testing.assert_close(reloaded.eval()(**batch).logits, expected, rtol=1e-4, atol=1e-5)
