"""The Hub folder and model card: valid metadata, prose from the training record, complete files, an upload that
sends that folder, and a folder that loads without tl_nlp (Auto classes and both pipelines) with the same
predictions as in the training process."""

import json
import textwrap
from pathlib import Path

import pytest
import torch
from fresh_process import run_without_tl_nlp
from huggingface_hub import EvalResult, HfApi, ModelCard, metadata_load
from huggingface_hub.repocard_data import model_index_to_eval_results
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

from tl_nlp import AWDLSTMConfig, AWDLSTMForCausalLM, AWDLSTMForSequenceClassification
from tl_nlp.cli.push import PushArguments, run_push
from tl_nlp.data import train_ulmfit_tokenizer
from tl_nlp.hub import (
    ULMFiTStage,
    ULMFiTTrainingRecord,
    build_model_card,
    prepare_hub_folder,
    push_ulmfit_to_hub,
)
from tl_nlp.training import ULMFiTTrainingArguments

CORPUS = ["The movie was great and the plot was good.", "A bad film, it was really bad!", "I liked it a lot."] * 3
TEXTS = ["The movie was great!", "bad film " * 20, "I liked the plot."]
REPO_ID = "someone/awd-lstm-imdb-tiny"


def three_stage_record() -> ULMFiTTrainingRecord:
    return ULMFiTTrainingRecord(
        stages=[
            ULMFiTStage(
                name="general-domain language model pretraining",
                objective="language-modeling",
                dataset="Salesforce/wikitext",
                dataset_split="wikitext-103 train",
                num_tokens=103_227_021,
                num_train_epochs=15,
                learning_rate=5e-3,
                per_device_train_batch_size=64,
                bptt=70,
                metrics={"perplexity": 31.2},
            ),
            ULMFiTStage(
                name="target-task language model fine-tuning",
                objective="language-modeling",
                dataset="stanfordnlp/imdb",
                dataset_split="train+unsup",
                num_examples=75_000,
                num_train_epochs=10,
                learning_rate=4e-3,
                discriminative_lr_decay=2.6,
                use_stlr=True,
                stlr_cut_frac=0.1,
                stlr_ratio=32,
                dropout_multiplier=0.7,
                metrics={"perplexity": 22.9},
            ),
            ULMFiTStage(
                name="classifier fine-tuning",
                objective="classification",
                dataset="stanfordnlp/imdb",
                dataset_split="train",
                num_examples=25_000,
                num_train_epochs=4,
                learning_rate=1e-2,
                discriminative_lr_decay=2.6,
                use_stlr=True,
                gradual_unfreezing=True,
                unfreeze_at_fractions=[0.25, 0.5, 0.75],
                metrics={"accuracy": 0.947},
            ),
        ],
        language="en",
        license="apache-2.0",
        base_model="someone/awd-lstm-wt103",
        eval_results=[
            EvalResult(
                task_type="text-classification",
                dataset_type="stanfordnlp/imdb",
                dataset_name="IMDb",
                dataset_split="test",
                metric_type="accuracy",
                metric_value=0.947,
            )
        ],
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tokenizer = train_ulmfit_tokenizer(CORPUS, min_frequency=1)
    sizes = dict(vocab_size=len(tokenizer), embedding_size=8, hidden_size=12, num_hidden_layers=2)
    torch.manual_seed(0)
    labels = {0: "negative", 1: "positive"}
    classifier = AWDLSTMForSequenceClassification(
        AWDLSTMConfig(
            **sizes, bptt_chunk_length=5, max_len=10, id2label=labels, label2id={v: k for k, v in labels.items()}
        )
    ).eval()
    language_model = AWDLSTMForCausalLM(AWDLSTMConfig(**sizes)).eval()
    return classifier, language_model, tokenizer


def test_card_metadata_is_valid_and_carries_the_evaluation(trained, tmp_path):
    classifier, _, tokenizer = trained
    card = build_model_card(classifier, tokenizer, three_stage_record(), REPO_ID)
    card.save(tmp_path / "README.md")
    metadata = metadata_load(tmp_path / "README.md")  # the YAML header parses
    assert metadata["license"] == "apache-2.0" and metadata["language"] == "en"
    assert metadata["datasets"] == ["Salesforce/wikitext", "stanfordnlp/imdb"]
    assert metadata["pipeline_tag"] == "text-classification" and metadata["library_name"] == "transformers"
    assert {"ulmfit", "awd-lstm", "custom_code"} <= set(metadata["tags"])
    assert metadata["base_model"] == "someone/awd-lstm-wt103"
    # The model-index is what the Hub validates; read it back with huggingface_hub's own parser.
    name, results = model_index_to_eval_results(metadata["model-index"])
    assert name == "awd-lstm-imdb-tiny"
    assert [(r.task_type, r.dataset_type, r.dataset_split, r.metric_type, r.metric_value) for r in results] == [
        ("text-classification", "stanfordnlp/imdb", "test", "accuracy", 0.947)
    ]
    reloaded = ModelCard.load(tmp_path / "README.md")
    assert reloaded.data.eval_results[0].metric_value == 0.947


def test_card_prose_states_what_happened_in_training(trained):
    classifier, _, tokenizer = trained
    text = build_model_card(classifier, tokenizer, three_stage_record(), REPO_ID).text
    for fact in (
        f"{classifier.num_parameters():,} parameters",
        "`negative`, `positive` from [last, max, mean] pooled LSTM outputs through a head with a hidden layer of 50",
        "### Stage 1: general-domain language model pretraining",
        "103,227,021 tokens",
        "windows of 70 tokens",
        "shared by all layers",  # stage 1 had no discriminative rates
        "### Stage 2: target-task language model fine-tuning",
    ):
        assert fact in text, fact
    assert "2.6 times more slowly than the group above it" in text
    assert "first 10% of the steps, then a linear decay to 1/32 of the peak" in text
    assert "dropouts scaled by 0.7" in text and "perplexity 22.9" in text
    assert "one more group was unfrozen at 25%, 50%, 75% of the steps" in text
    assert "| accuracy | 0.947 | `stanfordnlp/imdb` | test |" in text
    assert f'pipeline("text-classification", model="{REPO_ID}", trust_remote_code=True)' in text
    assert "only the last 10 tokens" in text  # BPT3C limitation with this model's max_len
    assert "Howard, Jeremy and Ruder, Sebastian" in text and "Merity, Stephen and Keskar" in text
    assert "None" not in text and "{" not in text.split("## Citation")[0]  # no blank left unfilled


def test_card_follows_a_different_record(trained):
    _, language_model, tokenizer = trained
    record = ULMFiTTrainingRecord(
        stages=[ULMFiTStage(name="pretraining", objective="language-modeling", dataset="my own forum dump")],
        language=["de", "en"],
        license="mit",
    )
    card = build_model_card(language_model, tokenizer, record, "me/lm")
    assert card.data.pipeline_tag == "text-generation" and card.data.language == ["de", "en"]
    assert card.data.datasets is None  # a description with spaces is not a Hub dataset id
    assert "slanted" not in card.text and "unfrozen" not in card.text and "## Evaluation" not in card.text
    assert 'pipeline("text-generation", model="me/lm", trust_remote_code=True)' in card.text
    assert "in 1 stage." in card.text


def test_stage_from_training_arguments(trained, tmp_path):
    model, _, tokenizer = trained
    args = ULMFiTTrainingArguments(
        output_dir=str(tmp_path), learning_rate=1e-3, num_train_epochs=2, unfreeze_every_n_steps=50, report_to=[]
    )
    stage = ULMFiTStage.from_training_arguments(
        args, name="classifier", objective="classification", dataset="stanfordnlp/imdb", metrics={"f1": 0.9}
    )
    assert (stage.learning_rate, stage.num_train_epochs, stage.discriminative_lr_decay) == (1e-3, 2, 2.6)
    assert stage.use_stlr and stage.gradual_unfreezing and stage.unfreeze_every_n_steps == 50
    record = ULMFiTTrainingRecord(stages=[stage])
    assert "one more group was unfrozen every 50 steps" in build_model_card(model, tokenizer, record, "me/x").text


def test_bad_records_name_the_field():
    with pytest.raises(ValueError, match=r"ULMFiTStage.stlr_cut_frac must be in \(0, 1\)"):
        ULMFiTStage(name="s", objective="classification", dataset="d", stlr_cut_frac=1.5)
    with pytest.raises(ValueError, match="ULMFiTStage.objective must be one of"):
        ULMFiTStage(name="s", objective="translation", dataset="d")
    with pytest.raises(ValueError, match=r"stages\[1\]: ULMFiTStage.learning_rate must be > 0"):
        ULMFiTTrainingRecord.from_dict(
            {
                "stages": [
                    {"name": "a", "objective": "language-modeling", "dataset": "d"},
                    {"name": "b", "objective": "classification", "dataset": "d", "learning_rate": -1},
                ]
            }
        )
    with pytest.raises(ValueError, match=r"stages\[0\] has unknown key\(s\) \['lr'\]"):
        ULMFiTTrainingRecord.from_dict(
            {"stages": [{"name": "a", "objective": "classification", "dataset": "d", "lr": 1}]}
        )
    with pytest.raises(ValueError, match="must list at least one stage"):
        ULMFiTTrainingRecord(stages=[])
    record = three_stage_record()
    assert ULMFiTTrainingRecord.from_dict(json.loads(json.dumps(record.to_dict()))) == record


class RecordingHfApi(HfApi):
    """Stands in for the Hub: records what `upload_folder` was asked to send instead of sending it."""

    def __init__(self):
        super().__init__(token=False)
        self.uploads = []

    def upload_folder(self, *, repo_id, folder_path, repo_type=None, commit_message=None, **kwargs):
        files = {p.name: p.read_bytes() for p in Path(folder_path).iterdir()}
        self.uploads.append(dict(repo_id=repo_id, repo_type=repo_type, commit_message=commit_message, files=files))
        return "commit-info"


def test_push_uploads_the_prepared_folder(trained, tmp_path):
    classifier, _, tokenizer = trained
    expected_files = prepare_hub_folder(classifier, tokenizer, tmp_path / "folder", three_stage_record(), REPO_ID)
    assert expected_files == [
        "README.md",
        "config.json",
        "configuration_awd_lstm.py",
        "model.safetensors",
        "modeling_awd_lstm.py",
        "rules.py",
        "tokenization_ulmfit.py",
        "tokenizer.json",
        "tokenizer_config.json",
        "ulmfit_training_record.json",
    ]
    auto_map = json.loads((tmp_path / "folder" / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModelForSequenceClassification"] == "modeling_awd_lstm.AWDLSTMForSequenceClassification"
    api = RecordingHfApi()
    assert push_ulmfit_to_hub(classifier, tokenizer, REPO_ID, three_stage_record(), create_repo=False, api=api) == (
        "commit-info"
    )
    (upload,) = api.uploads
    assert upload["repo_id"] == REPO_ID and upload["repo_type"] == "model"
    assert sorted(upload["files"]) == expected_files
    for name in expected_files:  # byte for byte the folder prepare_hub_folder writes
        if name != "model.safetensors":  # safetensors metadata may order keys differently between saves
            assert upload["files"][name] == (tmp_path / "folder" / name).read_bytes(), name


def test_push_command_reads_the_saved_folder_and_the_record_file(trained, tmp_path):
    classifier, _, tokenizer = trained
    classifier.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    (tmp_path / "record.json").write_text(json.dumps(three_stage_record().to_dict()))
    arguments = PushArguments(
        model_dir=str(tmp_path / "model"), repo_id=REPO_ID, training_record=str(tmp_path / "record.json")
    )
    arguments.dry_run_dir = str(tmp_path / "dry_run")
    files = run_push(arguments)
    assert "README.md" in files and "modeling_awd_lstm.py" in files
    assert "2.6 times more slowly" in (tmp_path / "dry_run" / "README.md").read_text()
    arguments.dry_run_dir, arguments.create_repo = None, False
    api = RecordingHfApi()
    run_push(arguments, api=api)
    assert sorted(api.uploads[0]["files"]) == files
    (tmp_path / "bad.yaml").write_text("stages:\n  - name: a\n    objective: classification\n")
    arguments.training_record = str(tmp_path / "bad.yaml")
    with pytest.raises(ValueError, match=r"training record .*bad\.yaml: .*stages\[0\]"):
        run_push(arguments, api=api)
    with pytest.raises(ValueError, match="repo_id must look like user/name"):
        PushArguments(model_dir="m", repo_id="no-slash", training_record="r.json")


FRESH_PROCESS_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, pipeline
    clas_dir, lm_dir, texts = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    tokenizer = AutoTokenizer.from_pretrained(clas_dir, trust_remote_code=True)
    model = AutoModelForSequenceClassification.from_pretrained(clas_dir, trust_remote_code=True).eval()
    lm = AutoModelForCausalLM.from_pretrained(lm_dir, trust_remote_code=True).eval()
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
        lm_logits = lm(**tokenizer(texts[:1], return_tensors="pt")).logits
    print(json.dumps({
        "classes": [type(tokenizer).__module__, type(model).__module__],
        "input_ids": batch["input_ids"].tolist(),
        "logits": logits.tolist(),
        "lm_logits": lm_logits.tolist(),
        "pipeline": pipeline("text-classification", model=clas_dir, trust_remote_code=True)(texts, batch_size=2),
        "generated": pipeline("text-generation", model=lm_dir, trust_remote_code=True)(
            texts[:2], max_new_tokens=5, do_sample=False, batch_size=2
        ),
    }))
    """
)


def test_hub_folder_loads_without_tl_nlp_with_identical_predictions(trained, tmp_path):
    classifier, language_model, tokenizer = trained
    record = three_stage_record()
    prepare_hub_folder(classifier, tokenizer, tmp_path / "clas", record, REPO_ID)
    lm_record = ULMFiTTrainingRecord(stages=record.stages[:2], base_model=record.base_model)
    prepare_hub_folder(language_model, tokenizer, tmp_path / "lm", lm_record, "someone/lm")
    args = [str(tmp_path / "clas"), str(tmp_path / "lm"), json.dumps(TEXTS)]
    remote = run_without_tl_nlp(FRESH_PROCESS_SCRIPT, args, tmp_path)
    assert not any("tl_nlp" in module for module in remote["classes"])
    # In this (training) process: the same ids, logits and pipeline answers.
    local_tokenizer = AutoTokenizer.from_pretrained(tmp_path / "clas")
    batch = local_tokenizer(TEXTS, padding=True, return_tensors="pt")
    assert batch["input_ids"].tolist() == remote["input_ids"]
    with torch.no_grad():
        # The same weights and inputs in another process: the matrix products may pick other kernels there (on this
        # CPU the decoder's logits differed by 2 float32 ulps, 7.5e-9 on values of 0.05), so equal up to rounding.
        same = {"rtol": 1.3e-6, "atol": 1e-7}
        torch.testing.assert_close(torch.tensor(remote["logits"]), classifier(**batch).logits, **same)
        lm_logits = language_model(**local_tokenizer(TEXTS[:1], return_tensors="pt")).logits
        torch.testing.assert_close(torch.tensor(remote["lm_logits"]), lm_logits, **same)
    local_pipeline = pipeline("text-classification", model=tmp_path / "clas")(TEXTS, batch_size=2)
    assert remote["pipeline"] == local_pipeline
    local_generated = pipeline("text-generation", model=tmp_path / "lm")(
        TEXTS[:2], max_new_tokens=5, do_sample=False, batch_size=2
    )
    assert remote["generated"] == local_generated
    assert isinstance(AutoModelForSequenceClassification.from_pretrained(tmp_path / "clas"), type(classifier))
