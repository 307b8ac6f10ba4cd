"""GGUF checkpoints: dequantised into plain models that equal transformers' own GGUF loading, train, save and reload
like any other, and a missing `gguf` package is one line naming the extra. The file is written here (no download)."""

import json
import sys

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from tl_nlp.gguf import MissingGGUFPackageError, convert_gguf, load_model, load_tokenizer

gguf = pytest.importorskip("gguf")
from gguf_fixtures import CORPUS, train_byte_level_bpe, write_tiny_llama_gguf  # noqa: E402

NAME = "tiny.gguf"


@pytest.fixture(scope="module")
def gguf_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gguf")
    write_tiny_llama_gguf(folder / NAME)
    return folder


def file_tensor(folder, name: str) -> torch.Tensor:
    """A tensor of the file as float, dequantised by the gguf package itself (the reference for the weights)."""
    tensor = next(t for t in gguf.GGUFReader(str(folder / NAME)).tensors if t.name == name)
    return torch.from_numpy(np.array(gguf.quants.dequantize(tensor.data, tensor.tensor_type)))


def logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(ids).logits


def test_gguf_model_is_a_plain_model_with_transformers_weights_that_saves_and_reloads(gguf_folder, tmp_path):
    model = load_model(AutoModelForCausalLM, str(gguf_folder), gguf_file=NAME)
    tokenizer = load_tokenizer(str(gguf_folder), gguf_file=NAME)
    # The tokenizer in the file encodes as the BPE tokenizer it was written from.
    assert tokenizer(CORPUS[0])["input_ids"] == train_byte_level_bpe().encode(CORPUS[0]).ids
    assert not hasattr(model.config, "quantization_config") and getattr(model, "hf_quantizer", None) is None
    # The weights are the file's blocks dequantised (gguf's own dequantisation), the logits transformers' own.
    torch.testing.assert_close(model.model.embed_tokens.weight.detach(), file_tensor(gguf_folder, "token_embd.weight"))
    torch.testing.assert_close(model.lm_head.weight.detach(), file_tensor(gguf_folder, "output.weight"))
    reference = AutoModelForCausalLM.from_pretrained(str(gguf_folder), gguf_file=NAME)
    ids = torch.tensor([tokenizer(text)["input_ids"] for text in CORPUS[:1]])
    torch.testing.assert_close(logits(model, ids), logits(reference, ids), rtol=0, atol=0)
    with pytest.raises(ValueError, match="not serializable"):
        reference.save_pretrained(tmp_path / "refused")  # what a user gets without tl_nlp

    model.save_pretrained(tmp_path / "saved")
    tokenizer.save_pretrained(tmp_path / "saved")
    assert "quantization_config" not in json.loads((tmp_path / "saved" / "config.json").read_text())
    assert (tmp_path / "saved" / "model.safetensors").is_file()
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "saved")
    torch.testing.assert_close(logits(reloaded, ids), logits(model, ids), rtol=0, atol=0)
    assert (
        AutoTokenizer.from_pretrained(tmp_path / "saved")(CORPUS[1])["input_ids"] == tokenizer(CORPUS[1])["input_ids"]
    )


def test_gguf_classifier_trains_and_reloads(gguf_folder, tmp_path):
    model = load_model(AutoModelForSequenceClassification, str(gguf_folder), gguf_file=NAME, num_labels=2)
    tokenizer = load_tokenizer(str(gguf_folder), gguf_file=NAME)
    assert model.config.num_labels == 2 and model.score.weight.shape == (2, 32)
    layer = model.model.layers[0].self_attn.q_proj.weight
    torch.testing.assert_close(
        layer.detach(), AutoModelForCausalLM.from_pretrained(str(gguf_folder), gguf_file=NAME).model.layers[0]
        .self_attn.q_proj.weight.detach(), rtol=0, atol=0,
    )  # fmt: skip
    before = layer.detach().clone()
    model.train()
    batch = tokenizer(CORPUS[:2], return_tensors="pt", padding=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model(**batch, labels=torch.tensor([1, 0])).loss.backward()
    optimizer.step()
    assert (layer.detach() - before).abs().max() > 0  # a GGUF-loaded transformers model is marked not trainable
    model.save_pretrained(tmp_path / "classifier")
    ids = torch.tensor([tokenizer(CORPUS[2])["input_ids"]])
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "classifier")
    torch.testing.assert_close(logits(reloaded, ids), logits(model, ids), rtol=0, atol=0)


def test_convert_gguf_writes_a_folder_any_loader_reads(gguf_folder, tmp_path):
    folder = convert_gguf(str(gguf_folder), NAME, tmp_path / "plain")
    model = AutoModelForCausalLM.from_pretrained(folder)
    ids = torch.tensor([AutoTokenizer.from_pretrained(folder)(CORPUS[0])["input_ids"]])
    reference = AutoModelForCausalLM.from_pretrained(str(gguf_folder), gguf_file=NAME)
    torch.testing.assert_close(logits(model, ids), logits(reference, ids), rtol=0, atol=0)


def test_missing_gguf_package_is_one_line_naming_the_extra(gguf_folder, monkeypatch):
    monkeypatch.setitem(sys.modules, "gguf", None)  # what `import gguf` sees where the package is not installed
    for load in (lambda: load_model(AutoModelForCausalLM, str(gguf_folder), gguf_file=NAME),
                 lambda: load_tokenizer(str(gguf_folder), gguf_file=NAME)):  # fmt: skip
        with pytest.raises(MissingGGUFPackageError) as error:
            load()
        message = str(error.value)
        assert "\n" not in message and "tl_nlp[gguf]" in message and NAME in message


def test_recipe_and_cli_train_a_classifier_from_a_gguf_file(gguf_folder, tmp_path):
    """`folder/file.gguf` in the recipe API and `--gguf_file` on a command: the stage trains and saves a plain folder
    that `pipeline()` serves with the logits the model gives."""
    from recipe_fixtures import write_corpora
    from transformers import pipeline

    from tl_nlp.cli import main
    from tl_nlp.recipe import TextData, train_classifier

    corpora = write_corpora(tmp_path / "data")
    options = dict(max_steps=2, per_device_train_batch_size=4, disable_tqdm=True)
    result = train_classifier(
        str(gguf_folder / NAME), TextData(str(corpora["train"])), tmp_path / "api", label_names=["neg", "pos"],
        training_args=options, max_length=32,
    )  # fmt: skip
    config = json.loads((result.output_dir / "config.json").read_text())
    assert "quantization_config" not in config and config["architectures"] == ["LlamaForSequenceClassification"]
    model = AutoModelForSequenceClassification.from_pretrained(result.output_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(result.output_dir)
    served = pipeline("text-classification", model=str(result.output_dir), device="cpu", top_k=None)([CORPUS[0]])[0]
    expected = logits(model, torch.tensor([tokenizer(CORPUS[0])["input_ids"]])).softmax(-1)[0]
    assert {s["label"]: s["score"] for s in served} == pytest.approx(
        {"neg": float(expected[0]), "pos": float(expected[1])}
    )

    argv = ["train-classifier", "--model_name_or_path", str(gguf_folder), "--gguf_file", NAME, "--train_file",
            str(corpora["train"]), "--class_names", "neg", "pos", "--output_dir", str(tmp_path / "cli"),
            "--max_steps", "1", "--max_length", "32", "--disable_tqdm", "true"]  # fmt: skip
    assert main(argv) == 0
    record = json.loads((tmp_path / "cli" / "ulmfit_training_record.json").read_text())
    assert [stage["name"] for stage in record["stages"]] == ["classifier fine-tuning"]
    assert AutoModelForSequenceClassification.from_pretrained(tmp_path / "cli").config.num_labels == 2


def test_missing_gguf_package_is_one_line_from_the_cli(gguf_folder, tmp_path, monkeypatch, capsys):
    from recipe_fixtures import write_corpora

    from tl_nlp.cli import main

    corpora = write_corpora(tmp_path / "data")
    capsys.readouterr()
    monkeypatch.setitem(sys.modules, "gguf", None)
    argv = ["train-classifier", "--model_name_or_path", str(gguf_folder / NAME), "--train_file",
            str(corpora["train"]), "--class_names", "neg", "pos", "--output_dir", str(tmp_path / "out")]  # fmt: skip
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert "Traceback" not in error and len([line for line in error.splitlines() if "tl_nlp[gguf]" in line]) == 1
    assert (
        main(["zero-shot", "--model_name_or_path", str(gguf_folder), "--gguf_file", NAME, "--labels", "a", "b"]) == 2
    )
    assert "tl_nlp[gguf]" in capsys.readouterr().err


def test_a_task_beyond_one_text_trains_from_a_gguf_file(gguf_folder, tmp_path, capsys):
    """Multiple choice from a GGUF file (`tl-nlp train-classifier --gguf_file ... --task multiple_choice`): GPT's
    delimiter tokens are added and the embeddings resized on the dequantised model, which saves as a plain folder
    that `predict` reads."""
    from tl_nlp.cli import main

    rows = [
        {"premise": text, "choice1": CORPUS[(i + 1) % len(CORPUS)], "choice2": CORPUS[(i + 2) % len(CORPUS)],
         "label": i % 2}
        for i, text in enumerate(CORPUS * 2)
    ]  # fmt: skip
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(row) + "\n" for row in rows))
    argv = ["train-classifier", "--model_name_or_path", str(gguf_folder), "--gguf_file", NAME, "--train_file",
            str(train), "--output_dir", str(tmp_path / "mc"), "--max_steps", "1", "--max_length", "32",
            "--per_device_train_batch_size", "4", "--disable_tqdm", "true"]  # fmt: skip
    assert main(argv) == 0
    assert "task: multiple_choice (premise + choice1 + choice2 -> label)" in capsys.readouterr().out
    config = json.loads((tmp_path / "mc" / "config.json").read_text())
    assert "quantization_config" not in config and config["architectures"] == ["LlamaForSequenceClassification"]
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "mc")
    assert config["vocab_size"] == len(tokenizer) > load_tokenizer(str(gguf_folder), gguf_file=NAME).vocab_size
    question = tmp_path / "question.jsonl"
    question.write_text(json.dumps({"text": CORPUS[0], "choices": [CORPUS[1], CORPUS[2]]}) + "\n")
    assert main(["predict", "--model_name_or_path", str(tmp_path / "mc"), "--input_file", str(question)]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["choice"] in (CORPUS[1], CORPUS[2])
