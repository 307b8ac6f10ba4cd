"""Bad input gets a clear error naming the file, row and column (or a logged skip with a count), never a crash
deep inside the model and never a silent drop."""

import logging

import datasets
import numpy as np
import pytest

from tl_nlp.data import (
    LanguageModelStreams,
    SortishSampler,
    TextDataError,
    check_texts,
    encode_labels,
    load_text_dataset,
    tokenize_dataset,
    tokenize_for_language_model,
    train_ulmfit_tokenizer,
)
from tl_nlp.reference_data import NO_REFERENCE_DATA, find_reference_data

SST2 = find_reference_data(("sst2",))


@pytest.fixture(scope="module")
def tokenizer():
    return train_ulmfit_tokenizer(["a good film", "a bad film"], min_frequency=1)


@pytest.mark.parametrize(
    ("text", "problem"), [("", "is empty"), ("  \n\t", "is empty or whitespace only"), (None, r"is missing \(None\)")]
)
def test_bad_texts_name_row_and_column(tokenizer, text, problem):
    rows = ["fine"] * 1500 + [text]  # past the first map batch, so the row number must be the absolute one
    dataset = datasets.Dataset.from_dict({"review": rows, "label": [row % 2 for row in range(len(rows))]})
    with pytest.raises(TextDataError, match=rf"train: row 1500, column 'review' {problem}"):
        tokenize_dataset(dataset, tokenizer, text_column="review", source="train")
    with pytest.raises(TextDataError, match=rf"lm: row 1500, column 'review' {problem}"):
        tokenize_for_language_model(dataset.remove_columns("label"), tokenizer, text_column="review", source="lm")


def test_non_string_text_in_a_list():
    # (An Arrow column cannot mix ints and strings; plain lists can.)
    with pytest.raises(TextDataError, match="row 2, column 'text' is a int"):
        check_texts(["a", "b", 3])


def test_empty_texts_can_be_skipped_with_a_count(tokenizer, caplog):
    dataset = datasets.Dataset.from_dict({"text": ["a good film", "", "   ", "a bad film"]})
    with caplog.at_level(logging.WARNING, logger="tl_nlp.data.classification_data"):
        tokenized = tokenize_for_language_model(dataset, tokenizer, skip_empty=True, source="wiki")
    assert len(tokenized) == 2
    assert "wiki: skipped 2 empty or whitespace-only texts of 4" in caplog.text
    with pytest.raises(TextDataError, match=r"row 1, column 'text' is missing \(None\)"):
        tokenize_for_language_model(datasets.Dataset.from_dict({"text": ["ok", None]}), tokenizer, skip_empty=True)


def test_labels_outside_the_declared_set():
    strings = datasets.Dataset.from_dict({"text": ["a", "b", "c"], "label": ["pos", "neg", "neutral"]})
    with pytest.raises(
        TextDataError, match=r"imdb: row 2, column 'label': label 'neutral' is not one of \['neg', 'pos'\]"
    ):
        encode_labels(strings, label_names=["neg", "pos"], source="imdb")
    unlabeled = datasets.Dataset.from_dict({"text": ["a", "b"], "label": [1, -1]})
    with pytest.raises(TextDataError, match=r"row 1, column 'label': label -1 is outside \[0, 2\)"):
        encode_labels(unlabeled, label_names=["neg", "pos"])
    mixed = datasets.Dataset.from_list([{"label": 1}, {"label": None}])
    with pytest.raises(TextDataError, match="row 1, column 'label': label None is not an int or a str"):
        encode_labels(mixed)


def test_missing_columns_are_named(tokenizer):
    dataset = datasets.Dataset.from_dict({"sentence": ["a good film"], "label": [1]})
    with pytest.raises(TextDataError, match=r"no text column 'text'; the columns are \['sentence', 'label'\]"):
        tokenize_dataset(dataset, tokenizer)
    with pytest.raises(TextDataError, match="no label column 'sentiment'"):
        tokenize_dataset(dataset, tokenizer, text_column="sentence", label_column="sentiment")


def test_non_utf8_bytes_name_the_line(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_bytes("first line\nsecond line\ncaf\u00e9 ok\n".encode() + b"bad \xe9t\xe9 here\n")
    with pytest.raises(TextDataError, match=r"corpus.txt: line 4, byte column 5 .* not valid UTF-8"):
        load_text_dataset(str(path))
    good = tmp_path / "good.txt"
    good.write_text("caf\u00e9\nna\u00efve\n", encoding="utf-8")
    assert load_text_dataset(str(good))["text"] == ["caf\u00e9", "na\u00efve"]


@pytest.mark.skipif(SST2 is None, reason=NO_REFERENCE_DATA)
def test_a_real_tab_separated_file():
    sst2 = load_text_dataset(str(SST2 / "sst2" / "dev.tsv"))
    assert sst2.column_names == ["sentence", "label"] and len(sst2) == 872


def test_missing_paths_and_unsupported_types(tmp_path):
    with pytest.raises(TextDataError, match="no such file"):
        load_text_dataset(str(tmp_path / "sst2" / "nope.tsv"))
    readme = tmp_path / "README.md"
    readme.write_text("# notes\n")
    with pytest.raises(TextDataError, match="unsupported file type '.md'"):
        load_text_dataset(str(readme))


def test_dataset_smaller_than_one_batch():
    with pytest.raises(ValueError, match="11 tokens cannot fill 16 streams"):
        LanguageModelStreams([list(range(5)), list(range(6))], batch_size=8, num_processes=2, process_index=0)
    with pytest.raises(TextDataError, match="3 examples, fewer than one batch of 8"):
        SortishSampler(np.array([5, 6, 7]), batch_size=8)
    with pytest.raises(ValueError, match="document 1 has no tokens"):
        LanguageModelStreams([[2, 5, 6], []], batch_size=1)


BAD_FILES = {
    "empty.csv": ("", "the file is empty; it needs a header line"),
    "blank.jsonl": ("\n\n", "the file is empty"),
    "header_only.csv": ("text,label\n", "a header but no rows"),
    "tabs.csv": ("text\tlabel\ngood film\t1\nbad film\t0\n", "looks tab-separated; name it .tsv"),
    "commas.tsv": ("text,label\ngood film,1\nbad film,0\n", "looks comma-separated; name it .csv"),
    "ragged.csv": ("text,label\ngood,1\nbad, really,0\nok,1\n", "line 3 has 3 fields, the header 2"),
    "quote.csv": ('text,label\n"never closed,1\nfoo,0\n', "line 3: unexpected end of data"),
    "broken.jsonl": ('{"text": "a", "label": 1}\n{"text": "b", label: 0}\n', "line 2 is not valid JSON"),
    "list_row.jsonl": ('{"text": "a", "label": 1}\n[1, 2]\n', "line 2 is not valid JSON .*not an object"),
    "cut.json": ('{"text": "a", "label": 1}\n{"text": "b", "la', "line 2 is not valid JSON"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_unreadable_files_get_one_line_with_the_file_and_line(tmp_path, name):
    content, expected = BAD_FILES[name]
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(TextDataError, match=expected) as error:
        load_text_dataset(str(path))
    assert str(error.value).startswith(str(path)) and "\n" not in str(error.value)


def test_class_names_as_one_string_or_a_single_class_are_refused():
    dataset = datasets.Dataset.from_dict({"text": ["a", "b"], "label": ["negative", "negative"]})
    # list("negative") would be the eight classes n, e, g, a, t, i, v, e.
    with pytest.raises(TextDataError, match="single string 'negative'"):
        encode_labels(dataset, label_names="negative")
    # One class present and no class names: transformers would build a regression model (num_labels=1).
    with pytest.raises(TextDataError, match="holds a single class"):
        encode_labels(dataset)
    with pytest.raises(TextDataError, match="holds a single class"):
        encode_labels(datasets.Dataset.from_dict({"text": ["a"], "label": [0]}))
    with pytest.raises(TextDataError, match="repeat a name"):
        encode_labels(dataset, label_names=["negative", "negative"])
    # With both class names declared, one class present is fine (a small or skewed split).
    _, id2label, _ = encode_labels(dataset, label_names=["negative", "positive"])
    assert id2label == {0: "negative", 1: "positive"}
