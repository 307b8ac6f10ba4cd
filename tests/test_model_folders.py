"""Model folders are checked before they load: incomplete, empty or truncated weights, pickles, the wrong kind of
model, code the user did not allow, and a tokenizer larger than the embeddings, each one line naming the folder."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
from ulmfit_tiny_models import tiny_awd_lstm_classifier, tiny_awd_lstm_lm

from tl_nlp.data import train_ulmfit_tokenizer
from tl_nlp.model_folders import ModelFolderError, check_model_folder, folder_kind

TEXTS = ["a good film", "a bad film", "the plot was great"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("folders")
    tokenizer = train_ulmfit_tokenizer(TEXTS, min_frequency=1)
    torch.manual_seed(0)
    saved = {}
    for name, model in [("classifier", tiny_awd_lstm_classifier()), ("lm", tiny_awd_lstm_lm())]:
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
        saved[name] = root / name
    return saved


def copy_folder(source, target):
    import shutil

    shutil.copytree(source, target)
    return target


def test_good_folders_pass_and_name_their_kind(folders):
    assert folder_kind(check_model_folder(folders["classifier"], "classifier")) == "classifier"
    assert folder_kind(check_model_folder(folders["lm"], "language model")) == "language model"
    check_model_folder(folders["lm"])  # either kind


def test_the_wrong_kind_of_folder_is_refused_by_name(folders):
    with pytest.raises(ModelFolderError, match=r"holds a language model \(AWDLSTMForCausalLM\), not a classifier"):
        check_model_folder(folders["lm"], "classifier")
    with pytest.raises(ModelFolderError, match=r"holds a classifier .*, not a language model"):
        check_model_folder(folders["classifier"], "language model")


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("empty", r"model.safetensors: unreadable weights \(0 bytes: .*header too small\)"),
        ("truncated", r"model.safetensors: unreadable weights .*cut short"),
        ("missing", "no model.safetensors"),
        ("pickle", "only pickled weights"),
        ("no_config", r"not a saved model folder \(no config.json"),
        ("bad_config", "config.json: not valid JSON"),
    ],
)
def test_damaged_folders_get_one_line(folders, tmp_path, damage, expected):
    folder = copy_folder(folders["classifier"], tmp_path / "model")
    weights = folder / "model.safetensors"
    if damage == "empty":
        weights.write_bytes(b"")
    elif damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:-64])
    elif damage == "missing":
        weights.unlink()
    elif damage == "pickle":
        weights.rename(folder / "pytorch_model.bin")
    elif damage == "no_config":
        (folder / "config.json").unlink()
    elif damage == "bad_config":
        (folder / "config.json").write_text("{not json")
    with pytest.raises(ModelFolderError, match=expected) as error:
        check_model_folder(folder, "classifier")
    assert "\n" not in str(error.value)
    if damage in ("empty", "truncated"):
        # What transformers does without the check: an error from deep inside the loader.
        with pytest.raises(Exception) as raw:  # noqa: B017
            AutoModelForSequenceClassification.from_pretrained(folder)
        assert not isinstance(raw.value, ModelFolderError)


def test_a_tokenizer_larger_than_the_embeddings_is_caught_at_load_time(folders, tmp_path):
    folder = copy_folder(folders["lm"], tmp_path / "lm")
    bigger = train_ulmfit_tokenizer(TEXTS * 3 + [" ".join(f"word{i}" for i in range(100))], min_frequency=1)
    bigger.save_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    vocab_size = json.loads((folder / "config.json").read_text())["vocab_size"]
    assert len(tokenizer) > vocab_size
    with pytest.raises(ModelFolderError, match=f"tokenizer has {len(tokenizer)} tokens but .* hold {vocab_size}"):
        check_model_folder(folder, "language model", tokenizer=tokenizer)


def test_awd_lstm_folders_load_without_remote_code_and_other_code_needs_opting_in(folders, tmp_path):
    # With tl_nlp installed the Auto classes and the tokenizer resolve to tl_nlp's own, with trust_remote_code off.
    model = AutoModelForCausalLM.from_pretrained(folders["lm"], trust_remote_code=False)
    tokenizer = AutoTokenizer.from_pretrained(folders["lm"], trust_remote_code=False)
    assert type(model).__module__.startswith("tl_nlp.") and type(tokenizer).__module__.startswith("tl_nlp.")
    # A folder whose model type only its own code knows.
    folder = copy_folder(folders["lm"], tmp_path / "custom")
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "my_custom_lstm"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFolderError, match="needs the code shipped in the folder.*pass --trust_remote_code"):
        check_model_folder(folder, "language model")
    check_model_folder(folder, "language model", trust_remote_code=True)
