"""A stand-in for the Hugging Face Hub, built from a folder of reference data (`tl_nlp.reference_data`: ../shared/data
here, or what `make data` fetched from the Hub into .cache/data on a fresh clone): one folder per Hub dataset
repository (`Salesforce/wikitext`, `stanfordnlp/imdb`, `nyu-mll/glue`, `aps/super_glue`, `SetFit/sst5`,
`google-research-datasets/go_emotions`) with the repository's layout (a README whose `configs` name each
configuration's parquet files). `datasets.load_dataset("stanfordnlp/imdb", split=...)` run in the folder above them
reads these instead of the Hub: the same call, and the same code path after it, as online.

Each repository serves the splits that `make data` fetches. The test splits of RTE, STS-B and COPA, whose labels the
Hub does not publish (-1), are left out: nothing fetches them."""

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tl_nlp.reference_data import HUB_DATASETS, find_reference_data

# The folder the mirror is built from; None when there is none (the tests that need it skip).
MIRROR_SOURCE = find_reference_data()
# The top-level folders of the repositories, to copy next to a working directory.
HUB_NAMESPACES = sorted({repo_id.split("/")[0] for repo_id, _, _ in HUB_DATASETS.values()})


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


def build_hub_mirror(root: Path, source: Path | None = MIRROR_SOURCE) -> Path:
    """Writes the dataset repositories under `root` from the reference data in `source` and returns `root` (run
    `load_dataset` from there)."""
    if source is None:
        raise FileNotFoundError("no reference data to build the stand-in Hub from (tl_nlp.reference_data)")
    configs: dict[str, dict[str, dict[str, str]]] = {}  # Hub id -> configuration -> split -> files
    for name, (repo_id, config, splits) in HUB_DATASETS.items():
        config = config or ("plain_text" if name == "imdb" else "default")
        folder = root / repo_id / config
        folder.mkdir(parents=True, exist_ok=True)
        for stem, split in splits.items():
            target = folder / f"{split}-00000-of-00001.parquet"
            if name == "wikitext-2":
                # The Hub's rows keep each line's newline; the local copy is one row per line.
                lines = (source / name / f"{stem}.txt").read_text(encoding="utf-8").split("\n")[:-1]
                pq.write_table(pa.table({"text": [line + "\n" for line in lines]}), target)
            elif name == "sst2":
                rows = [line.rsplit("\t", 1) for line in (source / name / f"{stem}.tsv").read_text().splitlines()[1:]]
                pq.write_table(
                    pa.table({"sentence": [r[0] for r in rows], "label": [int(r[1]) for r in rows]}), target
                )
            else:  # parquet files written with the Hub's Features: served as they are
                target.symlink_to((source / name / f"{stem}.parquet").resolve())
        configs.setdefault(repo_id, {})[config] = {split: f"{config}/{split}-*" for split in splits.values()}
    for repo_id, repo_configs in configs.items():
        default = next((config for config in repo_configs if config in ("plain_text", "default")), None)
        (root / repo_id / "README.md").write_text(_readme(repo_configs, default))
    return root
