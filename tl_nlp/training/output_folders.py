"""Output folders that lose nothing: one writer at a time, no silent reuse, and saves that land whole or not at all.

- [`OutputFolderLock`] lets one process write into a folder; a second one is refused with a line naming the first
  (pid, host, command). The lock is an `flock` on `<folder>/.tl_nlp.lock`, so the kernel drops it when its holder
  dies, even by SIGKILL: a dead run never leaves a folder locked.
- [`prepare_output_folder`] refuses a folder that already holds results, unless the run resumes from one of its
  checkpoints or `overwrite=True` (then it is emptied first, so no old `all_results.json` or checkpoint survives
  into the new run). transformers' `Trainer` writes into any folder it is given; the CLI of its examples refused a
  used folder without `--overwrite_output_dir`, which is the behaviour kept here.
- [`save_atomically`] writes a model (weights, config, tokenizer, results) into a hidden staging folder and moves it
  into place. A folder that did not exist appears by one `rename`. Into a folder that also holds checkpoints, the
  files move one by one with `config.json` removed first and moved in last: a folder without `config.json` holds no
  model ([`check_model_folder`](tl_nlp.model_folders) says so), so a kill mid-save leaves a complete model or none,
  never new weights beside an old tokenizer.
- [`resolve_checkpoint`] turns `--resume_from_checkpoint` (`last`, or a path) into a complete checkpoint folder (one
  whose `trainer_state.json`, written last by Trainer, exists), skipping checkpoints a kill cut short.

Every refusal is an [`OutputFolderError`] (a `ValueError`) whose message is one line.

[`output_folder`] does the first two for a stage: lock, check, and hand back the checkpoint to resume from.

Example:

```python
>>> with output_folder("runs/clas", overwrite=False, resume_from_checkpoint="last") as checkpoint:  # doctest: +SKIP
...     trainer.train(resume_from_checkpoint=checkpoint)
...     save_atomically("runs/clas", lambda folder: trainer.save_model(folder))
```
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

LOCK_FILE = ".tl_nlp.lock"
STAGING_PREFIX = ".tl_nlp-saving-"
# Written by us and ignored when deciding whether a folder is used.
OWN_ENTRIES = (LOCK_FILE,)
CHECKPOINT_PATTERN = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
# The file that makes a folder a model for `from_pretrained`: removed first and written last by `save_atomically`.
COMMIT_FILE = "config.json"


class OutputFolderError(ValueError):
    """An output folder cannot be used as asked; the message (one line) says why and what to do."""


def _is_main_process() -> bool:
    # Under `accelerate launch` / torchrun every process of one run writes the same folder: only rank 0 locks it.
    return int(os.environ.get("RANK", "0")) == 0


class OutputFolderLock:
    """An exclusive lock on an output folder for the life of a run (a context manager).

    Args:
        folder: the output folder (created if missing).
        enabled: `False` makes the lock a no-op (other processes of the same distributed run); by default only the
            process of rank 0 (environment `RANK`) takes it.

    Raises:
        OutputFolderError: another live process holds the lock; the message names its pid, host and command.
    """

    def __init__(self, folder: str | os.PathLike, enabled: bool | None = None):
        self.folder = Path(folder)
        self.enabled = _is_main_process() if enabled is None else enabled
        self.handle = None

    def acquire(self) -> OutputFolderLock:
        if not self.enabled or self.handle is not None:
            return self
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OutputFolderError(f"output_dir {self.folder}: cannot create it ({error.strerror}).") from None
        if not self.folder.is_dir():
            raise OutputFolderError(f"output_dir {self.folder} is a file, not a folder; name a folder.")
        path = self.folder / LOCK_FILE
        while True:
            try:
                handle = open(path, "a+")
            except OSError as error:
                raise OutputFolderError(f"output_dir {self.folder}: cannot write in it ({error.strerror}).") from None
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                if error.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                handle.seek(0)
                holder = handle.read().strip()
                handle.close()
                raise OutputFolderError(
                    f"output_dir {self.folder} is in use by another run ({describe_holder(holder)}); wait for it to "
                    "finish, stop it, or choose another --output_dir."
                ) from None
            # The holder before us may have removed the file after we opened it: lock the file that is there now.
            try:
                same_file = os.fstat(handle.fileno()).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same_file = False
            if same_file:
                break
            handle.close()
        handle.seek(0)
        handle.truncate()
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": " ".join(sys.argv),
            "since": time.time(),
        }
        handle.write(json.dumps(holder))
        handle.flush()
        self.handle = handle
        return self

    def release(self) -> None:
        if self.handle is None:
            return
        # Removed while still locked, so that no one locks the old file after us (see `acquire`).
        try:
            os.unlink(self.folder / LOCK_FILE)
        except FileNotFoundError:
            pass
        self.handle.close()
        self.handle = None

    def __enter__(self) -> OutputFolderLock:
        return self.acquire()

    def __exit__(self, *exc_info) -> None:
        self.release()


def describe_holder(text: str) -> str:
    """`pid 123 on host-a, command 'tl-nlp train ...'` from the lock file's JSON (or what could be read of it)."""
    try:
        holder = json.loads(text)
        return f"pid {holder['pid']} on {holder['host']}, command {holder['command']!r}"
    except (ValueError, KeyError, TypeError):
        return "a process that has not yet written its name"


def checkpoint_folders(folder: str | os.PathLike) -> list[Path]:
    """The `checkpoint-N` folders in `folder`, by increasing step."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [
        (int(match.group(1)), entry) for entry in folder.iterdir() if (match := CHECKPOINT_PATTERN.match(entry.name))
    ]
    return [entry for _, entry in sorted(found) if entry.is_dir()]


def is_complete_checkpoint(folder: str | os.PathLike) -> bool:
    """Whether Trainer finished writing this checkpoint: `trainer_state.json` is the last file it writes."""
    return (Path(folder) / "trainer_state.json").is_file()


def last_complete_checkpoint(folder: str | os.PathLike) -> Path | None:
    """The checkpoint of the highest step in `folder` that a kill did not cut short, or None."""
    for checkpoint in reversed(checkpoint_folders(folder)):
        if is_complete_checkpoint(checkpoint):
            return checkpoint
    return None


def resolve_checkpoint(output_dir: str | os.PathLike, resume_from_checkpoint: str | bool | None) -> str | None:
    """The checkpoint folder to resume from, as `Trainer.train(resume_from_checkpoint=...)` takes it.

    Args:
        output_dir: the run's output folder, where `last` looks.
        resume_from_checkpoint: None/False/"" (start afresh), True or `"last"` (the last complete checkpoint in
            `output_dir`), or a checkpoint folder.

    Raises:
        OutputFolderError: `last` with no complete checkpoint, or a path that is not a complete checkpoint.
    """
    if resume_from_checkpoint in (None, False, ""):
        return None
    if resume_from_checkpoint is True or resume_from_checkpoint == "last":
        checkpoint = last_complete_checkpoint(output_dir)
        if checkpoint is None:
            found = [entry.name for entry in checkpoint_folders(output_dir)]
            detail = f"only incomplete ones ({', '.join(found)})" if found else f"no {PREFIX_CHECKPOINT_DIR}-* folder"
            raise OutputFolderError(
                f"--resume_from_checkpoint last: {output_dir} holds {detail}; start without it (with "
                "--overwrite_output_dir if the folder is used) or name a checkpoint folder."
            )
        return str(checkpoint)
    path = Path(resume_from_checkpoint)
    if not path.is_dir():
        raise OutputFolderError(f"--resume_from_checkpoint {path}: no such folder.")
    if not is_complete_checkpoint(path):
        last = last_complete_checkpoint(path)
        hint = f" (did you mean {last}?)" if last is not None else ""
        raise OutputFolderError(
            f"--resume_from_checkpoint {path}: not a complete Trainer checkpoint (no trainer_state.json){hint}."
        )
    return str(path)


def used_entries(folder: str | os.PathLike) -> list[str]:
    """What in `folder` belongs to an earlier run (everything but our lock, staging folders and empty folders, such
    as the checkpoint folder a Trainer creates before it saves anything), sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(
        entry.name
        for entry in folder.iterdir()
        if entry.name not in OWN_ENTRIES
        and not entry.name.startswith(STAGING_PREFIX)
        and not (entry.is_dir() and not entry.is_symlink() and not any(entry.iterdir()))
    )


def _check_can_clear(folder: Path) -> None:
    resolved = folder.resolve()
    protected = {Path.home().resolve(), Path("/").resolve()}
    if resolved in protected or resolved == Path.cwd().resolve() or resolved in Path.cwd().resolve().parents:
        raise OutputFolderError(
            f"--overwrite_output_dir would delete everything in {folder} (the current folder, one above it or the "
            "home folder); name a folder of its own."
        )
    if (folder / ".git").exists():
        raise OutputFolderError(f"--overwrite_output_dir would delete the git repository in {folder}; name another.")


def prepare_output_folder(
    output_dir: str | os.PathLike,
    overwrite: bool = False,
    resume_from_checkpoint: str | bool | None = None,
    checkpoints_dir: str | os.PathLike | None = None,
) -> str | None:
    """Checks (and with `overwrite` empties) an output folder before a run, and resolves the checkpoint to resume.

    A folder that is missing or empty is used as is. A used folder is refused unless the run resumes from a
    checkpoint (`"last"`, or a path inside it or elsewhere) or `overwrite=True`, which deletes its contents first
    (refused for the current folder, its parents, the home folder and git repositories). Resuming and overwriting
    the folder that holds the checkpoint contradict each other and are refused.

    Args:
        output_dir: the run's output folder.
        overwrite: empty a used folder (`--overwrite_output_dir`).
        resume_from_checkpoint: as for [`resolve_checkpoint`].
        checkpoints_dir: where the run's `checkpoint-N` folders are, if not in `output_dir` itself (a folder in it).

    Returns:
        the checkpoint folder to pass to `Trainer.train(resume_from_checkpoint=...)`, or None.
    """
    folder = Path(output_dir)
    if folder.exists() and not folder.is_dir():
        raise OutputFolderError(f"output_dir {folder} is a file, not a folder; name a folder.")
    checkpoint = resolve_checkpoint(checkpoints_dir or folder, resume_from_checkpoint)
    if checkpoint is not None:
        inside = folder.resolve() in Path(checkpoint).resolve().parents
        if overwrite and inside:
            raise OutputFolderError(
                f"--overwrite_output_dir would delete {checkpoint}, the checkpoint --resume_from_checkpoint names; "
                "drop one of the two."
            )
        return checkpoint
    used = used_entries(folder)
    if not used:
        return None
    if not overwrite:
        shown = ", ".join(used[:5]) + (f" and {len(used) - 5} more" if len(used) > 5 else "")
        raise OutputFolderError(
            f"output_dir {folder} already holds an earlier run ({shown}); pass --overwrite_output_dir to replace it, "
            "--resume_from_checkpoint last to continue it, or choose another folder."
        )
    _check_can_clear(folder)
    for name in sorted(entry.name for entry in folder.iterdir() if entry.name not in OWN_ENTRIES):
        path = folder / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    return None


def remove_stale_staging(folder: str | os.PathLike) -> None:
    """Deletes staging folders that a killed save left in (or beside) `folder`."""
    folder = Path(folder)
    for parent, prefix in ((folder, STAGING_PREFIX), (folder.parent, f"{STAGING_PREFIX}{folder.name}-")):
        if parent.is_dir():
            for entry in parent.iterdir():
                if entry.name.startswith(prefix) and entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)


def _fsync_tree(folder: Path) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())


def save_atomically(folder: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Runs `write(staging_folder)` and moves what it wrote into `folder`, so that `folder` holds the whole save or
    (killed midway) no model at all.

    - `folder` missing: the staging folder sits beside it and is renamed to it in one step.
    - `folder` present (e.g. an output folder with checkpoints): the staging folder sits inside it; `config.json`
      is removed first, every other new file replaces its old version, then `config.json` moves in last. Entries
      of `folder` that the save does not write (checkpoints, logs) are kept.

    Args:
        folder: where the model goes.
        write: writes the model into the folder it is given (`trainer.save_model`, `tokenizer.save_pretrained`,
            results files...).

    Returns:
        `folder` as a `Path`.
    """
    folder = Path(folder)
    remove_stale_staging(folder)
    if not folder.exists():
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = folder.parent / f"{STAGING_PREFIX}{folder.name}-{os.getpid()}"
        staging.mkdir()
        write(staging)
        _fsync_tree(staging)
        os.rename(staging, folder)
        return folder
    staging = folder / f"{STAGING_PREFIX}{os.getpid()}"
    staging.mkdir()
    write(staging)
    _fsync_tree(staging)
    names = sorted(entry.name for entry in staging.iterdir())
    if COMMIT_FILE in names:
        (folder / COMMIT_FILE).unlink(missing_ok=True)
    for name in [name for name in names if name != COMMIT_FILE] + ([COMMIT_FILE] if COMMIT_FILE in names else []):
        target = folder / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(staging / name, target)
    staging.rmdir()
    return folder


def prepare_on_main_process(
    output_dir: str | os.PathLike,
    overwrite: bool = False,
    resume_from_checkpoint: str | bool | None = None,
    checkpoints_dir: str | os.PathLike | None = None,
) -> str | None:
    """[`prepare_output_folder`] on the main process (rank 0 of a distributed launch checks and clears the folder),
    its answer (the checkpoint, or the refusal) sent to every other process, so that all of them resume from the same
    checkpoint or all stop with the same line (one process training alone would wait forever for the others)."""
    import torch.distributed as distributed

    if not (distributed.is_available() and distributed.is_initialized() and distributed.get_world_size() > 1):
        return prepare_output_folder(output_dir, overwrite, resume_from_checkpoint, checkpoints_dir)
    answer: list = [None]
    if distributed.get_rank() == 0:
        try:
            answer = [
                ("checkpoint", prepare_output_folder(output_dir, overwrite, resume_from_checkpoint, checkpoints_dir))
            ]
        except OutputFolderError as error:
            answer = [("error", str(error))]
    distributed.broadcast_object_list(answer, src=0)
    kind, value = answer[0]
    if kind == "error":
        raise OutputFolderError(value)
    return value


@contextmanager
def output_folder(
    output_dir: str | os.PathLike,
    overwrite: bool = False,
    resume_from_checkpoint: str | bool | None = None,
    checkpoints_dir: str | os.PathLike | None = None,
) -> Iterator[str | None]:
    """Locks `output_dir` for the block and checks it ([`prepare_output_folder`]); yields the checkpoint to resume
    from (or None). Under a distributed launch only rank 0 locks and clears; every rank resolves the checkpoint."""
    with OutputFolderLock(output_dir):
        yield prepare_on_main_process(output_dir, overwrite, resume_from_checkpoint, checkpoints_dir)
