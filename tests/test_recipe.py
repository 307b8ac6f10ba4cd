"""The recipe API end to end with tiny models: AWD-LSTM (forward, backward, ensemble), BERT-style (masked LM) and
GPT-style (causal LM) checkpoints, saved folders that the next stage and pipeline() load, and user errors."""

import json

import numpy as np
import pytest
import torch
from recipe_fixtures import save_tiny_bert, save_tiny_gpt2, write_corpora
from transformers import AutoModelForSequenceClassification, pipeline

from tl_nlp.data import TextDataError
from tl_nlp.recipe import (
    RecipeError,
    TextData,
    evaluate_classifier,
    finetune_language_model,
    predict,
    predict_probabilities,
    run_ulmfit,
    train_classifier,
)
from tl_nlp.recipe.classifier import prepare_classifier

LM_ARGS = {"max_steps": 8, "per_device_train_batch_size": 4, "logging_steps": 4}
CLASSIFIER_ARGS = {"num_train_epochs": 4, "per_device_train_batch_size": 8, "learning_rate": 3e-2}


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    return write_corpora(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def awd_lstm_run(corpora, tmp_path_factory):
    output = tmp_path_factory.mktemp("ulmfit")
    results = run_ulmfit(
        TextData(str(corpora["train"])),
        output,
        pretrain_data=str(corpora["general"]),
        pretrain_eval_data=str(corpora["general"]),
        finetune_data=TextData(str(corpora["train"])),
        finetune_eval_data=TextData(str(corpora["test"])),
        eval_data=TextData(str(corpora["test"])),
        label_names=["neg", "pos"],
        pretrain_args={**LM_ARGS, "learning_rate": 1e-2},
        finetune_args=LM_ARGS,
        classifier_args=CLASSIFIER_ARGS,
        model_config={"embedding_size": 16, "hidden_size": 24, "num_hidden_layers": 2},
        min_frequency=1,
        bptt=10,
        backwards=True,
    )
    return output, results


def test_each_stage_saves_a_hugging_face_folder_with_its_metrics(awd_lstm_run):
    output, results = awd_lstm_run
    for stage, folder in (("pretrain", "lm_pretrained"), ("finetune", "lm_finetuned"), ("classifier", "classifier")):
        path = output / folder
        assert results[stage].output_dir == path
        files = {p.name for p in path.iterdir()}
        assert {
            "config.json",
            "model.safetensors",
            "tokenizer.json",
            "training_args.json",
            "all_results.json",
        } <= files
        assert not any(name.endswith((".bin", ".pt", ".pkl")) for name in files)  # no pickles
        saved = json.loads((path / "all_results.json").read_text())
        assert saved == pytest.approx(results[stage].metrics)
    assert json.loads((output / "lm_finetuned" / "training_args.json").read_text())["learning_rate"] == 2e-3
    assert json.loads((output / "lm_pretrained" / "training_args.json").read_text())["discriminative_lr_decay"] == 1.0
    pretrain = results["pretrain"].metrics
    assert pretrain["eval_perplexity"] < pretrain["eval_perplexity_before"]  # 8 steps on the same lines
    assert results["finetune"]["eval_perplexity"] < results["finetune"]["eval_perplexity_before"]
    assert 0 <= results["classifier"]["eval_accuracy"] <= 1 and "eval_macro_f1" in results["classifier"].metrics


def test_classifier_metrics_agree_with_evaluate_predict_and_pipeline(awd_lstm_run, corpora):
    output, results = awd_lstm_run
    folder = str(output / "classifier")
    metrics = evaluate_classifier(folder, TextData(str(corpora["test"])))
    # Trainer's evaluation (padded batches) and evaluate_classifier (ensemble_predict) score the same predictions.
    assert metrics["eval_accuracy"] == pytest.approx(results["classifier"]["eval_accuracy"])
    assert metrics["eval_macro_f1"] == pytest.approx(results["classifier"]["eval_macro_f1"])
    assert metrics["eval_samples"] == 20
    texts = ["The film was great and moving , really superb .", "The film was dull and bad , really awful ."]
    answers = predict(folder, texts)
    classify = pipeline("text-classification", model=folder, device="cpu")
    for answer, from_pipeline in zip(answers, classify(texts, top_k=None), strict=True):
        assert set(answer["scores"]) == {"neg", "pos"}
        for item in from_pipeline:
            assert answer["scores"][item["label"]] == pytest.approx(item["score"], abs=1e-5)


def test_backward_models_read_reversed_text_and_the_ensemble_averages_them(awd_lstm_run, corpora):
    output, results = awd_lstm_run
    forward, backward = str(output / "classifier"), str(output / "backward" / "classifier")
    assert json.loads((output / "backward" / "classifier" / "tokenizer_config.json").read_text())["reverse"] is True
    texts = ["The film was great .", "The film was awful ."]
    single = [predict_probabilities(path, texts)[0] for path in (forward, backward)]
    both, _ = predict_probabilities([forward, backward], texts)
    assert np.allclose(both, (single[0] + single[1]) / 2)
    test = TextData(str(corpora["test"]))
    assert results["ensemble"] == evaluate_classifier([forward, backward], test)


def test_bert_style_checkpoint_is_fine_tuned_as_masked_lm_then_classified(corpora, tmp_path):
    texts = corpora["train"].read_text().splitlines() + corpora["general"].read_text().splitlines()
    checkpoint = save_tiny_bert(tmp_path / "bert", texts)
    lm = finetune_language_model(
        str(checkpoint),
        TextData(str(corpora["train"])),
        tmp_path / "lm",
        eval_data=str(corpora["general"]),
        training_args=LM_ARGS,
        block_size=16,
    )
    config = json.loads((tmp_path / "lm" / "config.json").read_text())
    assert config["architectures"] == ["BertForMaskedLM"]
    assert np.isfinite(lm["eval_perplexity"]) and lm["eval_perplexity"] > 1
    prepared = prepare_classifier(
        str(lm.output_dir), str(corpora["train"]), tmp_path / "clas", label_names=["neg", "pos"]
    )
    lm_model = AutoModelForSequenceClassification.from_pretrained(str(lm.output_dir), num_labels=2)
    # The classifier's encoder is the fine-tuned LM's (its embeddings carry over), only the head is new.
    assert torch.equal(
        prepared.trainer.model.bert.embeddings.word_embeddings.weight, lm_model.bert.embeddings.word_embeddings.weight
    )
    assert prepared.trainer.args.learning_rate == 2e-4  # transformer default, not AWD-LSTM's 1e-2


def test_gpt_style_checkpoint_is_fine_tuned_as_causal_lm_and_classifies_with_padding(corpora, tmp_path):
    texts = corpora["train"].read_text().splitlines() + corpora["general"].read_text().splitlines()
    checkpoint = save_tiny_gpt2(tmp_path / "gpt2", texts)
    lm = finetune_language_model(
        str(checkpoint),
        str(corpora["general"]),
        tmp_path / "lm",
        eval_data=str(corpora["general"]),
        training_args={**LM_ARGS, "learning_rate": 1e-2},
        block_size=32,
    )
    assert json.loads((tmp_path / "lm" / "config.json").read_text())["architectures"] == ["GPT2LMHeadModel"]
    assert lm["eval_perplexity"] < lm["eval_perplexity_before"]
    classifier = train_classifier(
        str(lm.output_dir),
        str(corpora["train"]),
        tmp_path / "clas",
        eval_data=str(corpora["test"]),
        label_names=["neg", "pos"],
        training_args={"max_steps": 4, "per_device_train_batch_size": 8},
    )
    config = json.loads((tmp_path / "clas" / "config.json").read_text())
    assert config["architectures"] == ["GPT2ForSequenceClassification"] and config["pad_token_id"] == 1
    # Padded batches (texts of different lengths) give each text the answer it gets alone.
    texts = ["The film was great .", "The film was dull and bad , really awful and boring ."]
    together, _ = predict_probabilities(str(classifier.output_dir), texts)
    alone = np.concatenate([predict_probabilities(str(classifier.output_dir), [text])[0] for text in texts])
    assert np.allclose(together, alone, atol=1e-5)


def test_user_errors_name_the_problem(corpora, awd_lstm_run, tmp_path):
    output, _ = awd_lstm_run
    lm = str(output / "lm_finetuned")
    with pytest.raises(RecipeError, match="no text column 'review'; the columns are"):
        train_classifier(lm, TextData(str(corpora["train"]), text_column="review"), tmp_path / "a")
    with pytest.raises(TextDataError, match="row 1, column 'label': label 'pos' is not one of"):
        train_classifier(lm, str(corpora["train"]), tmp_path / "b", label_names=["neg", "neutral"])
    with pytest.raises(RecipeError, match="does not exist"):
        train_classifier(str(tmp_path / "missing"), str(corpora["train"]), tmp_path / "c")
    with pytest.raises(RecipeError, match="not a saved model folder"):
        train_classifier(str(tmp_path), str(corpora["train"]), tmp_path / "d")
    with pytest.raises(RecipeError, match="rows file .* does not exist"):
        TextData(str(corpora["train"]), rows=str(tmp_path / "rows.json") + ":train").load()


def test_text_data_selects_fixed_rows_then_a_seeded_sample(corpora, tmp_path):
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps({"subset": {"rows": [5, 3, 1, 0, 2]}}))
    picked = TextData(str(corpora["train"]), rows=f"{rows}:subset").load()
    full = TextData(str(corpora["train"])).load()
    assert picked["text"] == [full["text"][i] for i in (5, 3, 1, 0, 2)]
    sample = TextData(str(corpora["train"]), max_examples=7, seed=1).load()
    assert (
        len(sample) == 7 and sample["text"] == TextData(str(corpora["train"]), max_examples=7, seed=1).load()["text"]
    )
    assert sample["label"] != full["label"][:7] or sample["text"] != full["text"][:7]  # a draw, not the first rows
    with pytest.raises(ValueError, match="max_examples must be >= 1"):
        TextData("x.csv", max_examples=0)


def test_language_model_perplexity_is_the_trainers_evaluation_which_counts_every_stream_token(corpora, tmp_path):
    # The recipe reads the perplexity from the trainer's evaluation, which sums the loss and the target tokens over
    # every process (pinned under DDP in test_distributed.py); on one process it is `stream_perplexity`.
    import math

    from tl_nlp.recipe.language_model import prepare_language_model
    from tl_nlp.training import stream_perplexity

    prepared = prepare_language_model(
        str(corpora["general"]),
        tmp_path / "lm",
        eval_data=str(corpora["test"]),
        training_args=LM_ARGS,
        stage="pretrain",
        model_config={"embedding_size": 16, "hidden_size": 24, "num_hidden_layers": 2},
        min_frequency=1,
        bptt=10,
    )
    assert prepared.objective == "stream"
    evaluated = math.exp(prepared.trainer.evaluate(prepared.eval_dataset)["eval_loss"])
    assert evaluated == pytest.approx(stream_perplexity(prepared.trainer.model, prepared.eval_dataset), rel=1e-6)
