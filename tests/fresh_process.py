"""Running code in a new Python process where tl_nlp cannot be imported, as a user of a Hub folder would."""

import json
import os
import sys
from pathlib import Path

from process_groups import run_in_process_group

# Any `import tl_nlp` in the script fails: only the code saved in the folders may run.
PRELUDE = 'import sys\nsys.modules["tl_nlp"] = None\n'


def run_without_tl_nlp(script: str, args: list[str], workdir: Path, timeout: int = 300):
    """Runs `script` with `args` in `workdir` (offline, its own Hugging Face cache, no PYTHONPATH) and returns the
    JSON value printed on its last line of output."""
    env = {**os.environ, "HF_HOME": str(workdir / "hf_home"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    result = run_in_process_group([sys.executable, "-c", PRELUDE + script, *args], timeout, cwd=workdir, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])
