"""A stand-in for the Hugging Face Hub, built from the offline copies in ../shared/data: one folder per Hub dataset
repository (`Salesforce/wikitext`, `stanfordnlp/imdb`, `nyu-mll/glue`) with the repository's layout (a README whose
`configs` name each configuration's parquet files). `datasets.load_dataset("stanfordnlp/imdb", split=...)` run in the
folder above them reads these instead of the Hub: the same call, and the same code path after it, as online."""

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _readme(configs: dict[str, dict[str, str]], default: str | None) -> str:
    lines = ["---", "configs:"]
    for config, splits in configs.items():
        lines.append(f"- config_name: {config}")
        lines.append("  data_files:")
        for split, path in splits.items():
            lines += [f"  - split: {split}", f"    path: {path}"]
        if config == default:
            lines.append("  default: true")
    return "\n".join([*lines, "---", ""])


def build_hub_mirror(root: Path, shared_data: Path = SHARED_DATA) -> Path:
    """Writes the three dataset repositories under `root` and returns `root` (run `load_dataset` from there)."""
    wikitext = root / "Salesforce" / "wikitext" / "wikitext-2-v1"
    wikitext.mkdir(parents=True)
    for split, stem in (("train", "train"), ("validation", "valid"), ("test", "test")):
        # The Hub's rows keep each line's newline; the local copy is one row per line.
        lines = (shared_data / "wikitext-2" / f"{stem}.txt").read_text(encoding="utf-8").split("\n")[:-1]
        pq.write_table(
            pa.table({"text": [line + "\n" for line in lines]}), wikitext / f"{split}-00000-of-00001.parquet"
        )
    splits = {split: f"wikitext-2-v1/{split}-*" for split in ("train", "validation", "test")}
    (wikitext.parent / "README.md").write_text(_readme({"wikitext-2-v1": splits}, None))

    imdb = root / "stanfordnlp" / "imdb" / "plain_text"
    imdb.mkdir(parents=True)
    for split, stem in (("train", "train"), ("test", "test"), ("unsupervised", "unsup")):
        (imdb / f"{split}-00000-of-00001.parquet").symlink_to(shared_data / "imdb" / f"{stem}.parquet")
    splits = {split: f"plain_text/{split}-*" for split in ("train", "test", "unsupervised")}
    (imdb.parent / "README.md").write_text(_readme({"plain_text": splits}, "plain_text"))

    glue = root / "nyu-mll" / "glue" / "sst2"
    glue.mkdir(parents=True)
    for split, stem in (("train", "train"), ("validation", "dev")):
        rows = [line.rsplit("\t", 1) for line in (shared_data / "sst2" / f"{stem}.tsv").read_text().splitlines()[1:]]
        table = pa.table({"sentence": [r[0] for r in rows], "label": [int(r[1]) for r in rows]})
        pq.write_table(table, glue / f"{split}-00000-of-00001.parquet")
    splits = {split: f"sst2/{split}-*" for split in ("train", "validation")}
    (glue.parent / "README.md").write_text(_readme({"sst2": splits}, None))
    return root
