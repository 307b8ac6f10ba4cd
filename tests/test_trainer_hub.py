"""The Trainer path to the Hub: `save_model` writes the training record of what actually ran (chained from the
folder the model was loaded from), `Trainer.push_to_hub` uploads a folder whose card is written from it, and
`tl-nlp push` reads the saved record. Only the Hub API (`transformers.trainer.hf_api`) is replaced."""

import copy
import dataclasses
import json
import math
import shutil
import textwrap
from pathlib import Path

import pytest
import torch
import transformers.trainer
from datasets import Dataset
from fresh_process import run_without_tl_nlp
from huggingface_hub import HfApi, ModelCard, RepoUrl, metadata_load
from huggingface_hub.repocard_data import model_index_to_eval_results
from huggingface_hub.utils import filter_repo_objects
from transformers import DataCollatorWithPadding, GPT2Config, GPT2LMHeadModel
from ulmfit_tiny_models import classification_dataset, tiny_bert

from tl_nlp import AWDLSTMConfig, AWDLSTMForCausalLM, AWDLSTMForSequenceClassification
from tl_nlp.cli import main
from tl_nlp.data import LanguageModelStreams, tokenize_dataset, tokenize_for_language_model, train_ulmfit_tokenizer
from tl_nlp.hub import TRAINING_RECORD_FILE, ULMFiTStage, ULMFiTTrainingRecord, build_model_card
from tl_nlp.training import ClassificationTrainer, LanguageModelTrainer, ULMFiTTrainer, ULMFiTTrainingArguments
from tl_nlp.training.model_card import stage_paragraph, unfreezing_sentence
from tl_nlp.training.training_record import final_metrics

CORPUS = [
    "The movie was great and the plot was good.",
    "A bad film, it was really bad!",
    "I liked it a lot, the actors were great.",
    "The plot was thin and the film was long.",
]
REVIEWS = ["A great film!", "Bad, really bad.", "I liked the plot.", "The film was long and bad."] * 2
LABELS = [1, 0, 1, 0] * 2
REPO_ID = "someone/tiny-ulmfit-classifier"
COMMON = dict(report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True, logging_steps=1, seed=0)


def accuracy(prediction) -> dict[str, float]:
    logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
    return {"accuracy": float((logits.argmax(-1) == prediction.label_ids).mean())}


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """Stage 1: a tiny AWD-LSTM language model trained from scratch for 2 steps, saved. Stage 2: a classifier loaded
    from that folder, trained 2 epochs with gradual unfreezing, saved."""
    root = tmp_path_factory.mktemp("chain")
    tokenizer = train_ulmfit_tokenizer(CORPUS + REVIEWS, min_frequency=1)
    documents = tokenize_for_language_model(Dataset.from_dict({"text": CORPUS}), tokenizer)
    num_tokens = sum(len(ids) for ids in documents["input_ids"])
    # Two windows per epoch: one epoch is exactly 2 optimizer steps.
    bptt = math.ceil(math.ceil((num_tokens - 1) / 2) / 2)
    streams = LanguageModelStreams.from_dataset(
        documents, batch_size=2, bptt=bptt, pad_token_id=tokenizer.pad_token_id
    )
    valid = LanguageModelStreams.from_dataset(
        documents, batch_size=2, bptt=bptt, shuffle=False, pad_token_id=tokenizer.pad_token_id
    )
    torch.manual_seed(0)
    config = AWDLSTMConfig(vocab_size=len(tokenizer), embedding_size=8, hidden_size=12, num_hidden_layers=2)
    lm_args = ULMFiTTrainingArguments(
        output_dir=str(root / "lm_run"),
        learning_rate=1e-2,
        weight_decay=0.01,
        num_train_epochs=1,
        gradual_unfreezing=False,
        **COMMON,
    )
    lm_trainer = LanguageModelTrainer(
        model=AWDLSTMForCausalLM(config),
        args=lm_args,
        train_dataset=streams,
        eval_dataset=valid,
        processing_class=tokenizer,
    )
    lm_trainer.train()
    lm_eval = lm_trainer.evaluate()
    lm_trainer.save_model(str(root / "lm"))

    labels = {0: "negative", 1: "positive"}
    classifier = AWDLSTMForSequenceClassification.from_pretrained(
        root / "lm", id2label=labels, label2id={v: k for k, v in labels.items()}
    )
    reviews, _, _ = tokenize_dataset(Dataset.from_dict({"text": REVIEWS, "label": LABELS}), tokenizer)
    clas_args = ULMFiTTrainingArguments(
        output_dir=str(root / "clas_run"),
        learning_rate=5e-3,
        num_train_epochs=2,
        per_device_train_batch_size=4,
        unfreeze_every_n_steps=1,
        dataset_name="stanfordnlp/imdb",
        dataset_split="train",
        hub_model_id=REPO_ID,
        **COMMON,
    )
    clas_trainer = ClassificationTrainer(
        model=classifier,
        args=clas_args,
        train_dataset=reviews,
        eval_dataset=reviews,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=accuracy,
    )
    clas_trainer.train()
    clas_eval = clas_trainer.evaluate()
    clas_trainer.save_model(str(root / "clas"))
    return dict(
        root=root,
        streams=streams,
        lm_trainer=lm_trainer,
        lm_eval=lm_eval,
        clas_trainer=clas_trainer,
        clas_eval=clas_eval,
    )


def last_logged_loss(trainer) -> float:
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry][-1]


def test_saved_record_chains_both_stages_with_the_values_of_the_runs(chain):
    root, streams = chain["root"], chain["streams"]
    (lm_stage,) = json.loads((root / "lm" / TRAINING_RECORD_FILE).read_text())["stages"]
    saved = json.loads((root / "clas" / TRAINING_RECORD_FILE).read_text())
    record = ULMFiTTrainingRecord.from_dict(saved)  # a valid record
    assert saved["stages"][0] == lm_stage  # stage 1 is read back from the folder the classifier was loaded from
    first, second = record.stages

    assert (first.name, first.objective, first.dataset) == (
        "language model pretraining",
        "language-modeling",
        "unnamed data",
    )
    assert (first.num_examples, first.num_tokens, first.bptt) == (len(CORPUS), streams.num_tokens, streams.bptt)
    assert (first.per_device_train_batch_size, first.num_train_steps, first.num_train_epochs) == (2, 2, 1.0)
    assert (first.learning_rate, first.discriminative_lr_decay, first.weight_decay) == (1e-2, 2.6, 0.01)
    assert first.use_stlr and (first.stlr_cut_frac, first.stlr_ratio) == (0.1, 32.0)
    assert not first.gradual_unfreezing and first.unfreeze_every_n_steps is None
    lm_eval_loss = chain["lm_eval"]["eval_loss"]
    assert first.metrics == pytest.approx(
        {
            "train_loss": last_logged_loss(chain["lm_trainer"]),
            "eval_loss": lm_eval_loss,
            "perplexity": math.exp(lm_eval_loss),
        }
    )

    assert (second.name, second.objective) == ("classifier fine-tuning", "classification")
    assert (second.dataset, second.dataset_split, second.num_examples) == ("stanfordnlp/imdb", "train", len(REVIEWS))
    assert (second.num_train_epochs, second.num_train_steps, second.per_device_train_batch_size) == (2.0, 4, 4)
    assert (second.learning_rate, second.discriminative_lr_decay) == (5e-3, 2.6)
    assert second.use_stlr and second.gradual_unfreezing and second.unfreeze_every_n_steps == 1
    assert second.num_tokens is None and second.bptt is None
    clas_eval = chain["clas_eval"]
    assert second.metrics == pytest.approx(
        {
            "train_loss": last_logged_loss(chain["clas_trainer"]),
            "eval_loss": clas_eval["eval_loss"],
            "accuracy": clas_eval["eval_accuracy"],
        }
    )
    # The model-index holds this model's own evaluation only.
    assert [(r.metric_type, r.metric_value, r.dataset_type) for r in record.eval_results] == [
        ("loss", clas_eval["eval_loss"], "stanfordnlp/imdb"),
        ("accuracy", clas_eval["eval_accuracy"], "stanfordnlp/imdb"),
    ]
    assert record.language == "en" and record.base_model is None


class RecordingHubApi(HfApi):
    """Stands in for the Hub: `create_repo` answers with the repository's URL, `upload_folder` copies what it was
    asked to send (with its ignore patterns) into `uploaded` instead of sending it."""

    def __init__(self, uploaded: Path):
        super().__init__(token=False)
        self.uploaded = uploaded
        self.calls = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id))
        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def upload_folder(self, *, repo_id, folder_path, ignore_patterns=None, **kwargs):
        self.calls.append(("upload_folder", repo_id))
        folder = Path(folder_path)
        paths = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
        for path in filter_repo_objects(paths, ignore_patterns=ignore_patterns):
            (self.uploaded / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(folder / path, self.uploaded / path)
        return "commit-info"


def push_with_recorded_hub(trainer, uploaded: Path) -> RecordingHubApi:
    api = RecordingHubApi(uploaded)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(transformers.trainer, "hf_api", lambda: api)
        assert trainer.push_to_hub() == "commit-info"
    return api


FRESH_PROCESS_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    folder, texts = sys.argv[1], json.loads(sys.argv[2])
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True).eval()
    with torch.no_grad():
        logits = model(**tokenizer(texts, padding=True, return_tensors="pt")).logits
    print(json.dumps({"module": type(model).__module__, "logits": logits.tolist()}))
    """
)


def test_trainer_push_to_hub_uploads_a_loadable_folder_with_a_card_from_the_record(chain, tmp_path):
    trainer = chain["clas_trainer"]
    api = push_with_recorded_hub(trainer, tmp_path / "uploaded")
    assert api.calls == [("create_repo", REPO_ID), ("upload_folder", REPO_ID)]
    uploaded = tmp_path / "uploaded"
    files = {p.name for p in uploaded.iterdir()}
    assert {
        "README.md",
        "config.json",
        "model.safetensors",
        "configuration_awd_lstm.py",
        "modeling_awd_lstm.py",
        "tokenizer.json",
        "tokenizer_config.json",
        "tokenization_ulmfit.py",
        "rules.py",
        TRAINING_RECORD_FILE,
    } <= files
    assert json.loads((uploaded / "config.json").read_text())["auto_map"]["AutoModelForSequenceClassification"] == (
        "modeling_awd_lstm.AWDLSTMForSequenceClassification"
    )

    metadata = metadata_load(uploaded / "README.md")
    assert metadata["pipeline_tag"] == "text-classification" and metadata["datasets"] == ["stanfordnlp/imdb"]
    assert {"ulmfit", "awd-lstm", "custom_code"} <= set(metadata["tags"])
    name, results = model_index_to_eval_results(metadata["model-index"])
    assert name == "tiny-ulmfit-classifier"
    assert {r.metric_type: r.metric_value for r in results}["accuracy"] == chain["clas_eval"]["eval_accuracy"]
    text = ModelCard.load(uploaded / "README.md").text
    first, second = ULMFiTTrainingRecord.from_dict(json.loads((uploaded / TRAINING_RECORD_FILE).read_text())).stages
    for fact in (
        "in 2 stages",
        "### Stage 1: language model pretraining",
        f"Trained as a language model on `unnamed data` ({len(CORPUS)} documents, {first.num_tokens} tokens) for 1 "
        "epoch (2 optimizer steps), with batches of 2 per device and windows of",
        "### Stage 2: classifier fine-tuning",
        f"`stanfordnlp/imdb` (split `train`, {len(REVIEWS)} documents) for 2 epochs (4 optimizer steps)",
        "2.6 times more slowly than the group above it",
        "one more group was unfrozen at every step",
        f"perplexity {first.metrics['perplexity']:g}",
        f"accuracy {second.metrics['accuracy']:g}",
        f'pipeline("text-classification", model="{REPO_ID}", trust_remote_code=True)',
    ):
        assert fact in text, fact
    assert "None" not in text and "{" not in text.split("## Citation")[0]

    remote = run_without_tl_nlp(FRESH_PROCESS_SCRIPT, [str(uploaded), json.dumps(REVIEWS[:3])], tmp_path)
    assert "tl_nlp" not in remote["module"]
    model = trainer.model.eval()
    with torch.no_grad():
        local = model(**trainer.processing_class(REVIEWS[:3], padding=True, return_tensors="pt")).logits
    torch.testing.assert_close(torch.tensor(remote["logits"]), local, rtol=0, atol=1e-6)


def test_push_command_uses_the_record_saved_in_the_model_folder(chain, tmp_path, capsys):
    root = chain["root"]
    status = main(["push", "--model_dir", str(root / "clas"), "--repo_id", "me/clas", "--dry_run_dir", str(tmp_path)])
    assert status == 0, capsys.readouterr().err
    assert (tmp_path / TRAINING_RECORD_FILE).read_text() == (root / "clas" / TRAINING_RECORD_FILE).read_text()
    text = (tmp_path / "README.md").read_text()
    assert "### Stage 1: language model pretraining" in text and "### Stage 2: classifier fine-tuning" in text
    # A folder saved without tl_nlp's trainer has no record: the error says what to pass.
    bare = tmp_path / "bare"
    shutil.copytree(root / "clas", bare)
    (bare / TRAINING_RECORD_FILE).unlink()
    status = main(["push", "--model_dir", str(bare), "--repo_id", "me/clas", "--dry_run_dir", str(tmp_path / "d")])
    assert status == 2 and "has no ulmfit_training_record.json" in capsys.readouterr().err


def test_a_bert_classifier_trained_with_ulmfit_trainer_gets_its_own_card(tmp_path):
    torch.manual_seed(0)
    args = ULMFiTTrainingArguments(
        output_dir=str(tmp_path / "run"),
        learning_rate=1e-3,
        num_train_epochs=1,
        per_device_train_batch_size=4,
        unfreeze_at_fractions=[0.5],
        unfreezing_schedule="partial",
        ulmfit_stage_name="SST-2 fine-tuning",
        dataset_name="stanfordnlp/sst2",
        language="en",
        hub_model_id="someone/tiny-bert-ulmfit",
        **COMMON,
    )
    trainer = ULMFiTTrainer(model=tiny_bert(), args=args, train_dataset=classification_dataset(size=8))
    trainer.train()
    push_with_recorded_hub(trainer, tmp_path / "uploaded")
    (stage,) = json.loads((tmp_path / "uploaded" / TRAINING_RECORD_FILE).read_text())["stages"]
    assert (stage["name"], stage["num_examples"], stage["num_train_steps"]) == ("SST-2 fine-tuning", 8, 2)
    assert stage["unfreeze_at_fractions"] == [0.5] and stage["metrics"]["train_loss"] == last_logged_loss(trainer)
    card = ModelCard.load(tmp_path / "uploaded" / "README.md")
    assert card.data.pipeline_tag == "text-classification" and {"ulmfit", "bert"} <= set(card.data.tags)
    assert "custom_code" not in card.data.tags and card.data.eval_results is None  # it was not evaluated
    assert "(`BertForSequenceClassification`, architecture `bert`)" in card.text
    assert 'AutoModelForSequenceClassification.from_pretrained("someone/tiny-bert-ulmfit")' in card.text
    # transformers' pipeline and tokenizer do not cut a text unless asked: one past the context would fail.
    assert '(["First text to classify.", "Another one."], truncation=True)' in card.text
    assert 'tokenizer(["A text."], truncation=True, return_tensors="pt")' in card.text
    assert "trust_remote_code" not in card.text and "AWD-LSTM" not in card.text
    assert "at most 32 tokens at a time" in card.text and "No tokenizer was saved with it" in card.text
    assert (
        "Gradual unfreezing: the top group trained at first, then the top 2 groups from 50% of the steps. The lowest "
        "2 groups stayed frozen (a partial schedule)." in card.text
    )


def test_the_card_names_the_groups_of_each_stage_of_fastais_imdb_schedule(tmp_path):
    """fastai's tutorial trains the top 1, 2, 3 groups, then unfreeze() trains all: with 3 layers (5 groups) its last
    stage adds two groups at once, which "one more group per stage" would misreport."""
    args = ULMFiTTrainingArguments(
        output_dir=str(tmp_path / "run"), learning_rate=1e-3, num_train_epochs=5, per_device_train_batch_size=4,
        unfreezing_schedule="fastai_imdb", dataset_name="stanfordnlp/sst2", **COMMON,
    )  # fmt: skip
    trainer = ULMFiTTrainer(model=tiny_bert(layers=3), args=args, train_dataset=classification_dataset(size=8))
    trainer.train()
    (stage,) = trainer.training_record().stages
    assert (stage.trainable_groups, stage.num_layer_groups, stage.unfreeze_at_fractions) == (
        [1, 2, 3, 5],
        5,
        [0.2, 0.4, 0.6],
    )
    card = build_model_card(trainer.model, None, trainer.training_record(), "me/x").text
    assert (
        "Gradual unfreezing: the top group trained at first, then the top 2 groups from 20%, the top 3 groups from "
        "40%, all 5 groups from 60% of the steps." in card
    )


def test_cards_for_causal_language_models_use_their_auto_class():
    model = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=16, n_layer=2, n_head=2, n_positions=32))
    record = ULMFiTTrainingRecord(
        stages=[ULMFiTStage(name="LM fine-tuning", objective="language-modeling", dataset="my forum dump")],
        base_model="openai-community/gpt2",
    )
    card = build_model_card(model, None, record, "me/gpt2-forum")
    assert card.data.pipeline_tag == "text-generation" and card.data.base_model == "openai-community/gpt2"
    assert 'AutoModelForCausalLM.from_pretrained("me/gpt2-forum")' in card.text
    assert "Generated text imitates the training data" in card.text


@pytest.mark.parametrize(
    "field, value",
    [("language", "English"), ("dataset_name", " "), ("ulmfit_stage_name", ""), ("dataset_split", "")],
)
def test_bad_record_arguments_name_the_field(tmp_path, field, value):
    with pytest.raises(ValueError, match=field):
        ULMFiTTrainingArguments(output_dir=str(tmp_path), **{field: value})


def test_a_model_handed_on_in_memory_continues_the_record_named_in_the_arguments(chain, tmp_path):
    root, previous = chain["root"], chain["clas_trainer"]
    model = copy.deepcopy(previous.model)  # loaded from root/"lm", then trained as a classifier in memory

    def one_more_run(**fields):
        args = ULMFiTTrainingArguments(
            output_dir=str(tmp_path / "run"), max_steps=1, gradual_unfreezing=False, **fields, **COMMON
        )
        trainer = ClassificationTrainer(
            model=model,
            args=args,
            train_dataset=previous.train_dataset,
            data_collator=previous.data_collator,
            processing_class=previous.processing_class,
        )
        trainer.train()
        return [stage.name for stage in trainer.training_record().stages]

    # By default the record is the one where the model was loaded from: the classifier stage run in memory is missing.
    assert one_more_run() == ["language model pretraining", "classifier fine-tuning"]
    assert one_more_run(previous_training_record=str(root / "clas"), ulmfit_stage_name="more") == [
        "language model pretraining",
        "classifier fine-tuning",
        "more",
    ]
    with pytest.raises(ValueError, match="previous_training_record='nowhere'"):
        one_more_run(previous_training_record="nowhere")


def test_final_metrics_take_the_last_logged_values():
    history = [
        {"loss": 4.0, "step": 1},
        {"loss": 3.5, "step": 2},
        {"train_loss": 3.75, "train_runtime": 1.0, "step": 2},
        {"eval_loss": 3.0, "eval_runtime": 0.5, "eval_samples_per_second": 8.0, "step": 2},
    ]
    assert final_metrics(history, "language-modeling") == {
        "train_loss": 3.5,
        "eval_loss": 3.0,
        "perplexity": math.exp(3.0),
    }
    # A perplexity measured over whole streams and logged by the caller is kept; classifiers get none.
    logged = history + [{"eval_perplexity": 19.5, "step": 2}]
    assert final_metrics(logged, "language-modeling") == {"train_loss": 3.5, "eval_loss": 3.0, "perplexity": 19.5}
    assert final_metrics(history[2:], "classification") == {"train_loss": 3.75, "eval_loss": 3.0}


def test_the_card_of_a_run_too_short_to_unfreeze_says_only_the_top_group_trained(tmp_path):
    """One optimizer step leaves no room for a second unfreezing stage: the record keeps `trainable_groups=[1]` and
    the card must say that nothing more was unfrozen (not "one more group was unfrozen at each epoch")."""
    args = ULMFiTTrainingArguments(
        output_dir=str(tmp_path / "run"), learning_rate=1e-3, num_train_epochs=1, per_device_train_batch_size=8,
        unfreezing_schedule="partial", dataset_name="stanfordnlp/sst2", **COMMON,
    )  # fmt: skip
    trainer = ULMFiTTrainer(model=tiny_bert(), args=args, train_dataset=classification_dataset(size=8))
    trainer.train()
    (stage,) = trainer.training_record().stages
    assert (stage.num_train_steps, stage.trainable_groups, stage.unfreeze_at_fractions) == (1, [1], None)
    card = build_model_card(trainer.model, None, trainer.training_record(), "me/x").text
    assert (
        f"Gradual unfreezing: the run was too short for a second stage, so only the top 1 of {stage.num_layer_groups} "
        "layer group trained and nothing more was unfrozen." in card
    )
    assert "one more group was unfrozen" not in card
    # A model whose groups all train from the first step (a single stage covering every group) says so.
    everything = dataclasses.replace(stage, trainable_groups=[stage.num_layer_groups])
    assert unfreezing_sentence(everything, "at each epoch") == (
        f"Gradual unfreezing: all {stage.num_layer_groups} layer groups trained from the start."
    )


def test_the_card_gives_the_bottom_groups_share_of_the_top_rate():
    """The decay per group means little without the depth: the card also says where the bottom group ended up,
    the factor raised to the number of groups below the top (1.05168 over 32 groups: the top rate / 4.77, the
    Transformer default's span; 2.6 over an AWD-LSTM classifier's 5 groups: / 45.7). Without a group count, or
    without discriminative rates, it says no more than before."""
    base = ULMFiTStage(name="classifier", objective="classification", dataset="d", learning_rate=1e-3)
    deep = stage_paragraph(dataclasses.replace(base, discriminative_lr_decay=1.05168, num_layer_groups=32))
    assert (
        "1.05168 times more slowly than the group above it (discriminative fine-tuning: the bottom of the 32 " in deep
    )
    assert "groups at the top rate / 4.77)." in deep
    lstm = stage_paragraph(dataclasses.replace(base, discriminative_lr_decay=2.6, num_layer_groups=5))
    assert "the bottom of the 5 groups at the top rate / 45.7)." in lstm
    unknown = stage_paragraph(dataclasses.replace(base, discriminative_lr_decay=2.6))
    assert "2.6 times more slowly than the group above it (discriminative fine-tuning)." in unknown
    flat = stage_paragraph(dataclasses.replace(base, discriminative_lr_decay=1.0, num_layer_groups=8))
    assert "bottom" not in flat
