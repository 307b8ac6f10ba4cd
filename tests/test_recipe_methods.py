"""The classifier stage's transfer methods through one option (`method=`, `auxiliary_lm_weight=`): full fine-tuning,
LoRA (merged folder, optional adapter) and feature extraction (a plain AWD-LSTM classifier folder), with the
auxiliary LM loss, through the API and the CLI; trainable-parameter counts, identical logits after reload, and
one-line errors for combinations that cannot work."""

import json

import numpy as np
import pytest
import torch
from peft import PeftModel
from recipe_fixtures import save_tiny_bert, save_tiny_gpt2, write_corpora
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

from tl_nlp.cli import main
from tl_nlp.data import train_ulmfit_tokenizer
from tl_nlp.feature_extraction import FeatureExtractionClassifier, FeatureHeadArguments
from tl_nlp.models.awd_lstm import AWDLSTMConfig, AWDLSTMForCausalLM
from tl_nlp.recipe import ClassifierMethodArguments, RecipeError, TextData, evaluate_classifier, train_classifier
from tl_nlp.recipe.classifier import prepare_classifier
from tl_nlp.recipe.data import as_dataset
from tl_nlp.recipe.methods import load_feature_head_into_awd_lstm
from tl_nlp.training import ULMFiTLoraArguments

CLASSIFIER_ARGS = {"num_train_epochs": 2, "per_device_train_batch_size": 8, "learning_rate": 3e-2}
LABELS = ["neg", "pos"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("methods")
    data = write_corpora(root / "data")
    texts = data["general"].read_text().splitlines() + [
        row["text"] for row in as_dataset(TextData(str(data["train"])))
    ]
    tokenizer = train_ulmfit_tokenizer(texts, vocab_size=200, min_frequency=1)
    torch.manual_seed(0)
    config = AWDLSTMConfig(
        vocab_size=len(tokenizer),
        embedding_size=8,
        hidden_size=12,
        num_hidden_layers=2,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    with torch.no_grad():
        lm = AWDLSTMForCausalLM(config)
        lm.decoder.bias.uniform_(-1, 1)  # a bias the auxiliary LM head must start from
    lm.save_pretrained(root / "lm")
    tokenizer.save_pretrained(root / "lm")
    return root, data


def _train(setup, name, **options):
    root, data = setup
    return train_classifier(
        str(root / "lm"),
        TextData(str(data["train"])),
        root / name,
        eval_data=TextData(str(data["test"])),
        label_names=LABELS,
        # Feature extraction trains only the head, with its own settings: it refuses the Trainer's.
        **({} if options.get("method") == "feature_extraction" else {"training_args": CLASSIFIER_ARGS}),
        **options,
    )


def _logits(folder, texts):
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    with torch.no_grad():
        return torch.cat([model(**tokenizer([text], return_tensors="pt")).logits for text in texts])


def _total(folder):
    return sum(p.numel() for p in AutoModelForSequenceClassification.from_pretrained(folder).parameters())


def test_full_lora_and_feature_extraction_train_their_share_of_the_parameters(setup):
    full = _train(setup, "full")
    lora = _train(setup, "lora", method="lora", lora=ULMFiTLoraArguments(r=2), save_adapter=True)
    features = _train(setup, "features", method="feature_extraction", feature_head=FeatureHeadArguments(num_epochs=30))
    root, _ = setup
    total = _total(root / "full")
    assert full["trainable_parameters"] == full["total_parameters"] == total
    # LoRA: rank-2 adapters on both LSTM layers' matrices and the embedding lookup, plus the head in full.
    config = AWDLSTMConfig.from_pretrained(root / "full")
    sizes = [(8, 12), (12, 8)]  # (input, hidden) per layer
    lstm = sum(2 * (4 * h + i) + 2 * (4 * h + h) for i, h in sizes)
    embedding = 2 * (config.vocab_size + 8)
    head = sum(
        p.numel()
        for n, p in AutoModelForSequenceClassification.from_pretrained(root / "full").named_parameters()
        if n.startswith("classifier.")
    )
    assert lora["trainable_parameters"] == lstm + embedding + head
    # Feature extraction: one linear layer on the 3 * 8 concat-pooled features, nothing else.
    assert features["trainable_parameters"] == 3 * 8 * 2 + 2
    for result in (full, lora, features):
        assert 0 <= result["eval_accuracy"] <= 1
        saved = json.loads((result.output_dir / "all_results.json").read_text())
        assert saved["eval_accuracy"] == pytest.approx(result["eval_accuracy"])
        assert saved["trainable_parameters"] == result["trainable_parameters"]
        assert (result.output_dir / "model.safetensors").is_file()
    # LoRA saves the merged model: the full classifier's parameters, no adapter weights. Feature extraction's
    # classifier has the logistic-regression head: BatchNorm (2 * 24) and the linear layer in place of ULMFiT's.
    assert _total(root / "lora") == total
    assert _total(root / "features") == total - head + 2 * 24 + 3 * 8 * 2 + 2


def test_lora_folder_is_the_merged_model_and_the_adapter_reloads_to_the_same_logits(setup):
    root, data = setup
    texts = [row["text"] for row in as_dataset(TextData(str(data["test"])))][:4]
    merged = _logits(root / "lora", texts)
    assert sorted(p.name for p in (root / "lora" / "adapter").iterdir()) == [
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    base = AutoModelForSequenceClassification.from_pretrained(root / "lm", num_labels=2, pad_token_id=1)
    adapted = PeftModel.from_pretrained(base, root / "lora" / "adapter").eval()
    tokenizer = AutoTokenizer.from_pretrained(root / "lora")
    with torch.no_grad():
        from_adapter = torch.cat([adapted(**tokenizer([text], return_tensors="pt")).logits for text in texts])
    torch.testing.assert_close(from_adapter, merged, atol=1e-5, rtol=0)
    # evaluate_classifier reads the merged folder and agrees with the stage's own evaluation.
    metrics = evaluate_classifier(str(root / "lora"), TextData(str(data["test"])))
    stage = json.loads((root / "lora" / "eval_results.json").read_text())
    assert metrics["eval_accuracy"] == pytest.approx(stage["eval_accuracy"])


def test_feature_extraction_folder_gives_the_feature_heads_probabilities(setup):
    root, data = setup
    train = as_dataset(TextData(str(data["train"])))
    texts = [row["text"] for row in as_dataset(TextData(str(data["test"])))][:6]
    # The same head trained directly on the same cached features.
    backbone = AutoModelForSequenceClassification.from_pretrained(root / "lm", num_labels=2).eval()
    tokenizer = AutoTokenizer.from_pretrained(root / "lm")
    reference = FeatureExtractionClassifier(
        backbone, tokenizer, LABELS, head_arguments=FeatureHeadArguments(num_epochs=30), batch_size=64
    )
    reference.fit(train["text"], [LABELS.index(label) for label in train["label"]])
    expected = reference.predict_features(reference.features(texts))
    reloaded = _logits(root / "features", texts).softmax(-1)
    # Not bit-identical: 30 epochs of AdamW amplify float rounding of the feature matrix products.
    torch.testing.assert_close(reloaded, expected, atol=1e-3, rtol=0)
    classify = pipeline("text-classification", model=str(root / "features"))
    assert [row["label"] for row in classify(texts)] == [LABELS[i] for i in expected.argmax(-1).tolist()]
    # The backbone is the language model's encoder, untouched.
    lm = AWDLSTMForCausalLM.from_pretrained(root / "lm").state_dict()
    saved = AutoModelForSequenceClassification.from_pretrained(root / "features").state_dict()
    assert all(torch.equal(saved[name], lm[name]) for name in lm if name.startswith("awd_lstm."))


def test_auxiliary_lm_loss_is_logged_and_the_folder_is_a_plain_classifier(setup):
    root, data = setup
    prepared = prepare_classifier(
        str(root / "lm"), TextData(str(data["train"])), root / "unused", label_names=LABELS, auxiliary_lm_weight=0.5
    )
    lm = AWDLSTMForCausalLM.from_pretrained(root / "lm")
    # The auxiliary head starts from the language model's decoder bias.
    torch.testing.assert_close(prepared.trainer.model.lm_head.bias.detach(), lm.decoder.bias.detach())
    result = _train(setup, "aux", auxiliary_lm_weight=0.5)
    vocab_size = lm.config.vocab_size
    assert result["trainable_parameters"] == result["total_parameters"] == _total(root / "full") + vocab_size
    # Both parts of the loss are reported next to the classifier's metrics.
    assert result["eval_lm_loss"] > 0 and result["eval_classification_loss"] > 0
    # ClassificationTrainer's eval_loss is the classifier's cross-entropy (one batch of 20: the same mean).
    assert result["eval_loss"] == pytest.approx(result["eval_classification_loss"], rel=1e-4)
    assert result["eval_lm_loss"] < 2 * np.log(vocab_size)  # a next-token loss, near chance for this tiny LM
    assert _total(root / "aux") == _total(root / "full")  # saved without the LM head


def test_cli_train_classifier_with_method_lora_and_auxiliary_lm(setup, tmp_path, capsys):
    root, data = setup
    output = tmp_path / "cli"
    status = main(
        [
            "train-classifier",
            "--model_name_or_path", str(root / "lm"),
            "--train_file", str(data["train"]),
            "--validation_file", str(data["test"]),
            "--class_names", "neg", "pos",
            "--output_dir", str(output),
            "--method", "lora",
            "--lora_r", "2",
            "--auxiliary_lm_weight", "0.5",
            "--num_train_epochs", "1",
            "--per_device_train_batch_size", "8",
            "--disable_tqdm", "true",
        ]
    )  # fmt: skip
    assert status == 0
    results = json.loads((output / "all_results.json").read_text())
    assert results["trainable_parameters"] < results["total_parameters"] / 2
    assert not (output / "adapter").exists()
    predicted = evaluate_classifier(str(output), TextData(str(data["test"])))
    assert predicted["eval_accuracy"] == pytest.approx(results["eval_accuracy"])


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--method", "prompting"], "method must be one of 'full', 'lora', 'feature_extraction'"),
        (["--auxiliary_lm_weight", "-1"], "auxiliary_lm_weight must be >= 0"),
        (["--method", "feature_extraction", "--auxiliary_lm_weight", "0.5"], "feature_extraction keeps it frozen"),
        (["--method", "lora", "--lora_r", "0"], "lora_r must be >= 1"),
        (["--feature_head_epochs", "0"], "feature_head_epochs must be >= 1"),
        (["--feature_pooling", "sum"], "feature_pooling must be one of auto, concat, mean, cls, last"),
    ],
)
def test_cli_bad_method_options_are_one_line_errors(setup, tmp_path, capsys, flags, message):
    root, data = setup
    argv = ["train-classifier", "--model_name_or_path", str(root / "lm"), "--train_file", str(data["train"])]
    status = main(argv + ["--output_dir", str(tmp_path / "x"), *flags])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and message in err, err


def test_models_that_cannot_use_a_method_get_one_line_errors(setup, tmp_path):
    root, data = setup
    texts = data["general"].read_text().splitlines()
    bert = save_tiny_bert(tmp_path / "bert", texts)
    gpt2 = save_tiny_gpt2(tmp_path / "gpt2", texts)
    train = TextData(str(data["train"]))
    with pytest.raises(RecipeError, match=r"needs a next-token language model .* 'bert' masked-LM model") as error:
        train_classifier(str(bert), train, tmp_path / "out", label_names=LABELS, auxiliary_lm_weight=0.5)
    assert "\n" not in str(error.value)
    with pytest.raises(RecipeError, match="'gpt2' model: use tl_nlp.FeatureExtractionClassifier directly"):
        train_classifier(str(gpt2), train, tmp_path / "out", label_names=LABELS, method="feature_extraction")
    with pytest.raises(ValueError, match="lora settings were given but method is 'full'"):
        train_classifier(str(root / "lm"), train, tmp_path / "out", lora=ULMFiTLoraArguments())
    with pytest.raises(ValueError, match="feature_head settings were given but method is 'lora'"):
        train_classifier(str(root / "lm"), train, tmp_path / "out", method="lora", feature_head=FeatureHeadArguments())
    with pytest.raises(ValueError, match="save_adapter saves a LoRA adapter, but method is 'full'"):
        train_classifier(str(root / "lm"), train, tmp_path / "out", save_adapter=True)
    assert ClassifierMethodArguments(method="lora", lora_r=4).lora_arguments().r == 4


@pytest.mark.parametrize("hidden_size", [0, 5])
def test_a_feature_head_written_into_the_awd_lstm_head_gives_the_same_outputs(hidden_size):
    torch.manual_seed(0)
    head_arguments = FeatureHeadArguments(hidden_size=hidden_size, num_epochs=3)
    hidden = [hidden_size] if hidden_size else []
    config = AWDLSTMConfig(
        vocab_size=50, embedding_size=4, hidden_size=6, num_labels=3,
        classifier_hidden_sizes=hidden, classifier_dropouts=[0.0] * (len(hidden) + 1),
    )  # fmt: skip
    classifier = AutoModelForSequenceClassification.from_config(config).eval()
    features = torch.randn(40, 12) * torch.logspace(-3, 2, 12)  # pooled features differ in scale
    extractor = FeatureExtractionClassifier(classifier, tokenizer=None, label_names=["a", "b", "c"],
                                            head_arguments=head_arguments)  # fmt: skip
    extractor.fit_features(features, torch.arange(40) % 3)
    load_feature_head_into_awd_lstm(classifier, extractor.head)
    with torch.no_grad():
        torch.testing.assert_close(classifier.classifier(features), extractor.head(features), atol=1e-5, rtol=1e-5)


def test_cli_ulmfit_takes_the_method_for_its_classifier_stage(setup, tmp_path, capsys):
    root, data = setup
    argv = [
        "ulmfit",
        "--model_name_or_path", str(root / "lm"),
        "--train_file", str(data["train"]),
        "--validation_file", str(data["test"]),
        "--class_names", "neg", "pos",
        "--output_dir", str(tmp_path / "run"),
        "--method", "feature_extraction",
        "--feature_head_epochs", "30",
    ]  # fmt: skip
    assert main(argv) == 0
    summary = json.loads((tmp_path / "run" / "recipe_results.json").read_text())
    assert summary["classifier"]["trainable_parameters"] == 3 * 8 * 2 + 2
    assert json.loads((tmp_path / "run" / "classifier" / "feature_extraction.json").read_text())["num_epochs"] == 30


def test_gpt2_lora_with_the_auxiliary_lm_loss_saves_a_merged_gpt2_classifier(setup, tmp_path):
    _, data = setup
    gpt2 = save_tiny_gpt2(tmp_path / "gpt2", data["general"].read_text().splitlines())
    result = train_classifier(
        str(gpt2),
        TextData(str(data["train"])),
        tmp_path / "clas",
        eval_data=TextData(str(data["test"])),
        label_names=LABELS,
        training_args={**CLASSIFIER_ARGS, "learning_rate": 1e-2},
        method="lora",
        lora=ULMFiTLoraArguments(r=2),
        auxiliary_lm_weight=0.5,
    )
    assert result["trainable_parameters"] < result["total_parameters"] / 2 and result["eval_lm_loss"] > 0
    saved = AutoModelForSequenceClassification.from_pretrained(tmp_path / "clas")
    assert type(saved).__name__ == "GPT2ForSequenceClassification"
    assert not any("lora_" in name for name, _ in saved.named_parameters())
    reloaded = evaluate_classifier(str(tmp_path / "clas"), TextData(str(data["test"])))
    assert reloaded["eval_accuracy"] == pytest.approx(result["eval_accuracy"])
