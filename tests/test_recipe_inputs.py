"""What a notebook user hands the recipe: a pathlib.Path, a pandas DataFrame, a datasets.Dataset or DatasetDict, all
read as the file they came from; anything else is refused with one line that lists what is accepted."""

from pathlib import Path

import datasets
import pandas as pd
import pytest
from recipe_fixtures import save_tiny_bert, write_corpora

from tl_nlp import TextData, evaluate_classifier, train_classifier
from tl_nlp.recipe import RecipeError
from tl_nlp.recipe.data import as_dataset, data_description, source_name


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> dict[str, Path]:
    return write_corpora(tmp_path_factory.mktemp("inputs"))


def test_every_form_of_the_same_data_reads_as_the_file(corpora):
    from_file = as_dataset(str(corpora["train"]))
    frame = pd.read_csv(corpora["train"])
    forms = {
        "path": corpora["train"],
        "TextData(path)": TextData(corpora["train"]),
        "DataFrame": frame,
        "Dataset": datasets.Dataset.from_pandas(frame),
        "DatasetDict": datasets.DatasetDict({"train": datasets.Dataset.from_pandas(frame)}),
    }
    for name, data in forms.items():
        dataset = as_dataset(data)
        assert dataset["text"] == from_file["text"] and dataset["label"] == from_file["label"], name
        assert "__index_level_0__" not in dataset.column_names, name
    # A path is named as the file it is, in errors and in the training record.
    assert source_name(corpora["train"]) == str(corpora["train"])
    assert data_description(corpora["train"]) == data_description(str(corpora["train"]))


def test_unreadable_forms_are_refused_in_one_line(corpora):
    frame = pd.read_csv(corpora["train"])
    two_splits = datasets.DatasetDict({"train": datasets.Dataset.from_pandas(frame), "test": as_dataset(str(corpora["test"]))})  # fmt: skip
    with pytest.raises(RecipeError, match=r"DatasetDict with the splits \['test', 'train'\]: pass one of them"):
        as_dataset(two_splits)
    with pytest.raises(RecipeError, match="cannot read texts from a list: pass a TextData, a file path"):
        as_dataset(["a text"])


def test_train_and_evaluate_a_classifier_from_paths_and_dataframes(corpora, tmp_path):
    """A BERT-style folder given as a Path, training texts as a DataFrame, evaluation texts as a Path."""
    train = pd.read_csv(corpora["train"])
    bert = save_tiny_bert(tmp_path / "bert", train["text"].tolist())
    result = train_classifier(
        bert, train, tmp_path / "classifier", eval_data=corpora["test"], label_names=["neg", "pos"],
        training_args={"num_train_epochs": 1, "per_device_train_batch_size": 16, "report_to": []},
    )  # fmt: skip
    metrics = evaluate_classifier(result.output_dir, corpora["test"])
    assert metrics["eval_samples"] == 20
    assert metrics["eval_accuracy"] == pytest.approx(result.metrics["eval_accuracy"])
