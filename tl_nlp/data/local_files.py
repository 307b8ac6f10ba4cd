"""Reading a local data file with 🤗 datasets, with one line naming the file, line and problem when it cannot be read.

`datasets.load_dataset("csv" | "json" | "text", data_files=...)` reports a bad file as `DatasetGenerationError: An
error occurred while generating the dataset`, with the cause two exceptions down, and reads some bad files without
complaint: a tab-separated file named `.csv` becomes one column called `"text\\tlabel"`, and a CSV row with more
fields than the header shifts every column of the file by one. [`load_local_file`] checks for these and turns every
failure into a [`TextDataError`](tl_nlp.data.classification_data.TextDataError)-style `ValueError` with the line.
"""

from __future__ import annotations

import csv
import json
import os

import datasets
from datasets.exceptions import DatasetGenerationError


def _first_line(error: BaseException | None) -> str:
    text = str(error).strip() if error is not None else ""
    return text.splitlines()[0] if text else type(error).__name__


def _is_blank(path: str) -> bool:
    with open(path, "rb") as handle:
        return not handle.read(1 << 16).strip() and os.path.getsize(path) <= 1 << 16


def first_bad_json_line(path: str) -> tuple[int, str] | None:
    """`(line number, parser message)` of the first line of a JSON-lines file that is not one JSON object."""
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as error:
                return number, f"{error.msg} at column {error.colno}"
            if not isinstance(value, dict):
                return number, f"a JSON {type(value).__name__}, not an object with the columns as keys"
    return None


def first_bad_csv_row(path: str, delimiter: str) -> str | None:
    """Where and why the CSV first goes wrong: a row whose field count differs from the header's, or a quote never
    closed; None when every row has the header's fields."""
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter=delimiter, strict=True)
        try:
            header = next(reader, None)
            for row in reader:
                if row and len(row) != len(header):
                    return (
                        f"line {reader.line_num} has {len(row)} fields, the header {len(header)}; quote fields that "
                        "contain the separator."
                    )
        except csv.Error as error:
            return f"line {reader.line_num}: {error} (a quote that is never closed?)."
    return None


def load_local_file(path: str, builder: str, builder_kwargs: dict, error_class: type[ValueError], **kwargs):
    """`datasets.load_dataset(builder, data_files=path, split="train")` with every failure one `error_class` line.

    Args:
        path: the local file.
        builder: `"csv"`, `"json"`, `"text"` or `"parquet"`.
        builder_kwargs: the builder's options (`delimiter` for `.tsv`).
        error_class: the exception to raise (`TextDataError`).
        kwargs: further `load_dataset` arguments.
    """
    if _is_blank(path):
        needs = "a header line and at least one row" if builder == "csv" else "at least one row"
        raise error_class(f"{path}: the file is empty; it needs {needs} of data.")
    try:
        dataset = datasets.load_dataset(builder, data_files=path, split="train", **builder_kwargs, **kwargs)
    except (DatasetGenerationError, ValueError, StopIteration, OSError) as error:
        cause = error.__cause__ or error.__context__ or error
        if builder == "json":
            bad = first_bad_json_line(path)
            if bad is not None:
                raise error_class(
                    f"{path}: line {bad[0]} is not valid JSON ({bad[1]}); each line must be one JSON object such as "
                    '{"text": "...", "label": 1}.'
                ) from None
        if builder == "csv":
            problem = first_bad_csv_row(path, builder_kwargs.get("delimiter", ","))
            if problem is not None:
                raise error_class(f"{path}: {problem}") from None
        if isinstance(error, ValueError) and "corresponds to no data" in str(error):
            raise error_class(f"{path}: the file has a header but no rows of data.") from None
        raise error_class(f"{path}: cannot be read as {builder.upper()} ({_first_line(cause)}).") from None
    if builder == "csv":
        delimiter = builder_kwargs.get("delimiter", ",")
        columns = dataset.column_names
        other = "\t" if delimiter == "," else ","
        if len(columns) == 1 and other in columns[0]:
            kind = "tab" if other == "\t" else "comma"
            rename = ".tsv" if other == "\t" else ".csv"
            raise error_class(
                f"{path}: the header {columns[0]!r} is one column holding {kind}s: the file looks {kind}-separated; "
                f"name it {rename} (or convert it)."
            )
        if any(column.startswith(("__index_level_", "Unnamed: ")) for column in columns):
            raise error_class(
                f"{path}: {first_bad_csv_row(path, delimiter) or 'a row has more fields than the header'}"
            )
    return dataset
