"""The data that the demo, notebook, examples and tests read, fetched from the Hub where ../shared/data is absent.

The Hub is stood in for by local dataset repositories built from the reference data found here (../shared/data, or
the .cache/data that `make data` fetched; tests/hub_mirror.py): the fetch runs the same
`datasets.load_dataset("stanfordnlp/imdb", ...)` calls as online, offline, and must give back exactly the copies it
was built from. The fresh-clone test runs `make data` and `make demo-awd-lstm` (and `make -n demo`) in a clone with
no ../shared beside it."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import datasets
import pandas as pd
import pytest
from hub_mirror import HUB_NAMESPACES, MIRROR_SOURCE, build_hub_mirror

from tl_nlp.reference_data import HUB_DATASETS, NO_REFERENCE_DATA, find_reference_data, small_protocol

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(
    MIRROR_SOURCE is None,
    reason=f"the stand-in for the Hub is built from the real data, which is missing: {NO_REFERENCE_DATA}",
)
# The datasets written as parquet files with the Hub's Features (the others are text and tab-separated files).
PARQUET_DATASETS = [name for name in HUB_DATASETS if name not in ("wikitext-2", "imdb", "sst2")]


def offline_environment(tmp_path: Path) -> dict[str, str]:
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    environment.pop("TL_NLP_DATA_DIR", None)
    return {**environment, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def hub(tmp_path_factory) -> Path:
    return build_hub_mirror(tmp_path_factory.mktemp("hub"))


@pytest.fixture(scope="module")
def fetched(hub, tmp_path_factory) -> Path:
    """`python -m tl_nlp.reference_data DIR` run against the stand-in Hub."""
    target = tmp_path_factory.mktemp("fetched") / "data"
    completed = subprocess.run(
        [sys.executable, "-m", "tl_nlp.reference_data", str(target)],
        cwd=hub, env=offline_environment(hub), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "stanfordnlp/imdb (default), unsupervised" in completed.stdout
    return target


def test_fetched_data_equals_the_offline_copies(fetched):
    for stem in ("train", "valid", "test"):
        assert (fetched / "wikitext-2" / f"{stem}.txt").read_bytes() == (
            MIRROR_SOURCE / "wikitext-2" / f"{stem}.txt"
        ).read_bytes()
    for stem in ("train", "test", "unsup"):
        ours, reference = (pd.read_parquet(folder / "imdb" / f"{stem}.parquet") for folder in (fetched, MIRROR_SOURCE))
        pd.testing.assert_frame_equal(ours[["text", "label"]], reference[["text", "label"]])
    for stem in ("train", "dev"):
        ours = pd.read_csv(fetched / "sst2" / f"{stem}.tsv", sep="\t", quoting=3, keep_default_na=False)
        reference = pd.read_csv(MIRROR_SOURCE / "sst2" / f"{stem}.tsv", sep="\t", quoting=3, keep_default_na=False)
        pd.testing.assert_frame_equal(ours, reference)
    for name in PARQUET_DATASETS:
        # The splits with published labels, rows and Features (ClassLabel names included) as on the Hub.
        assert sorted(path.name for path in (fetched / name).iterdir()) == sorted(
            f"{stem}.parquet" for stem in HUB_DATASETS[name][2]
        )
        for stem in HUB_DATASETS[name][2]:
            ours, reference = (
                datasets.load_dataset("parquet", data_files=str(folder / name / f"{stem}.parquet"), split="train")
                for folder in (fetched, MIRROR_SOURCE)
            )
            assert ours.features == reference.features, (name, stem)
            pd.testing.assert_frame_equal(ours.to_pandas(), reference.to_pandas())
    # A folder of fetched data is found like ../shared/data is.
    os.environ["TL_NLP_DATA_DIR"] = str(fetched)
    try:
        assert find_reference_data() == fetched
    finally:
        del os.environ["TL_NLP_DATA_DIR"]


def test_the_protocol_has_the_documented_rows(fetched):
    protocol = json.loads((fetched / "imdb" / "small_protocol.json").read_text())
    labels = {stem: pd.read_parquet(fetched / "imdb" / f"{stem}.parquet")["label"].tolist() for stem in ("train", "test", "unsup")}  # fmt: skip
    sizes = {key: len(protocol[key]["rows"]) for key in protocol if key != "description"}
    assert sizes == {"lm_train": 8000, "lm_valid": 500, "train_1k": 1000, "train_10k": 10000, "clas_valid": 500,
                     "test_5k": 5000}  # fmt: skip
    rows = {key: protocol[key]["rows"] for key in sizes}
    for key, split in (("train_1k", "train"), ("train_10k", "train"), ("test_5k", "test")):
        assert sum(labels[split][index] for index in rows[key]) == sizes[key] // 2, key  # balanced
    assert set(rows["train_1k"]) <= set(rows["train_10k"])
    assert not set(rows["clas_valid"]) & set(rows["train_10k"]) and not set(rows["lm_train"]) & set(rows["lm_valid"])
    assert all(len(set(indices)) == len(indices) for indices in rows.values())
    assert {protocol[key]["file"] for key in ("lm_train", "lm_valid")} == {"unsup.parquet"}
    assert small_protocol(labels) == protocol  # a fixed seed: the same rows every time


@pytest.mark.slow
def test_a_fresh_clone_without_shared_runs_make_data_and_the_demos(hub, tmp_path):
    """`git clone` of the committed tree into a folder with no ../shared beside it, the Hub stood in for by the
    mirror, this checkout's environments reused (`make -o` keeps make from reinstalling them)."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True, timeout=120)
    assert not (clone.parent / "shared").exists()
    (clone / ".venv").symlink_to((ROOT / ".venv").resolve())
    for namespace in HUB_NAMESPACES:  # where load_dataset looks first: the working folder
        shutil.copytree(hub / namespace, clone / namespace, symlinks=True)
    environment = offline_environment(tmp_path)
    tiny = (
        "--vocab_size 600 --embedding_size 16 --hidden_size 24 --num_hidden_layers 2 --bptt 20 --lm_batch_size 8 "
        "--pretrain_epochs 0.02 --finetune_reviews 40 --train_reviews 16 --eval_reviews 8 --classifier_epochs 1"
    )
    completed = subprocess.run(
        ["make", "-o", ".venv/.installed", "demo-awd-lstm", f"DEMO_ARGS={tiny}"],
        cwd=clone, env=environment, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-4000:]
    assert "tl_nlp.reference_data" in output and ".cache/data" in output  # fetched, not read from ../shared
    assert "accuracy on 8 held-out IMDb test reviews" in output
    assert (clone / ".cache" / "data" / "imdb" / "small_protocol.json").is_file()
    # `make demo` (all-MiniLM-L6-v2: the Hub, else its PyPI copy) reads the same fetched data.
    demo_dry_run = subprocess.run(["make", "-n", "-o", ".venv/.installed", "-o", "data", "demo"], cwd=clone,
                                  env=environment, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert "examples/transfer_demo.py" in demo_dry_run.stdout and ".cache/data" in demo_dry_run.stdout
    # make test's recipe no longer needs ../shared: its fastai step is the repository's own script.
    dry_run = subprocess.run(["make", "-n", "-o", ".venv/.installed", "test"], cwd=clone, env=environment,
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert "scripts/build_fastai_env.sh" in dry_run.stdout and "shared" not in dry_run.stdout
