#!/usr/bin/env bash
# Builds the fastai reference environment that parity tests and benchmarks compare tl_nlp against (they find it as
# .fastai-venv/bin/python, or through TL_NLP_FASTAI_PYTHON). `make test` runs this once; run it by hand with
#     bash scripts/build_fastai_env.sh [DIR]          (DIR defaults to .fastai-venv, which git ignores)
# It needs a Python >= 3.10 and the package index. torch is the CPU build pinned in constraints-cpu.txt (the
# reference runs on CPU only); fastai.text needs no torchvision, so fastai's vision dependency is left out.
set -euo pipefail

FASTAI_VERSION=2.8.12
repository=$(cd "$(dirname "$0")/.." && pwd)
target=${1:-.fastai-venv}
python=${PYTHON:-python3}

"$python" -m venv "$target"
pip=("$target/bin/python" -m pip install --quiet --disable-pip-version-check)
"${pip[@]}" -c "$repository/constraints-cpu.txt" torch
# fastai without its dependencies first, then every dependency it declares except torch and torchvision, resolved
# with torch held at the pinned build (pip then notes that torchvision is missing: expected, fastai.text does not
# import it).
"${pip[@]}" --no-deps "fastai==$FASTAI_VERSION"
mapfile -t requirements < <("$target/bin/python" - <<'PY'
import re
from importlib.metadata import requires

for line in requires("fastai") or []:
    name = re.split(r"[<>=!~;\[ ]", line, maxsplit=1)[0].lower()
    if ";" not in line and name not in ("torch", "torchvision"):  # no extras, no torch
        print(line)
PY
)
# pyarrow: the benchmarks' fastai scripts read the same parquet files as tl_nlp.
"${pip[@]}" -c "$repository/constraints-cpu.txt" "${requirements[@]}" pyarrow
MPLCONFIGDIR=${MPLCONFIGDIR:-$target/.mpl} "$target/bin/python" -c \
    "from fastai.text.all import AWD_LSTM, TextLearner; print('fastai reference environment ready:', '$target')"
