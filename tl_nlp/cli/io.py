"""What every `tl-nlp` command shares: options parsed from dataclasses (flags and `--config FILE`), texts read from
a file or standard input, output written to a file or standard output, and the one-line error a user can fix."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ..config_files import read_mapping_file
from .help import HelpFormatter, describe, print_help


class UsageError(Exception):
    """A problem with what the user asked for, reported as one line."""


def parse_dataclass(arguments_class: type, argv: Sequence[str], prog: str):
    """Parses `argv` into `arguments_class`, with `--config FILE` (YAML or JSON) supplying defaults."""
    (arguments,) = parse_dataclasses((arguments_class,), argv, prog)
    return arguments


def parse_dataclasses(
    arguments_classes: Sequence[type], argv: Sequence[str], prog: str, defaults: dict | None = None
) -> tuple:
    """Parses `argv` into one instance of each class (field names are unique across them). Values come from, in
    increasing priority: the fields' defaults, `defaults` (the command's own), `--config FILE` (YAML or JSON), flags."""
    from transformers import HfArgumentParser  # here, so that `tl-nlp --help` does not import transformers

    argv = list(argv)
    config_values = {}
    config_path = None
    if "--config" in argv:
        position = argv.index("--config")
        if position + 1 >= len(argv):
            raise UsageError("--config needs a file name")
        config_path = Path(argv[position + 1])
        del argv[position : position + 2]
        config_values = read_config_file(config_path)
    parser = HfArgumentParser(
        list(arguments_classes),
        prog=prog,
        description=describe(prog) or arguments_classes[0].__doc__,
        formatter_class=HelpFormatter,
        # argparse would take a misspelt prefix (`--learning_rat`) for the option it starts; a typo must be an error.
        allow_abbrev=False,
    )
    add_switches_for_unset_flags(parser)
    known = {action.dest for action in parser._actions}
    unknown = sorted(set(config_values) - known)
    if unknown:
        raise UsageError(f"{config_path}: unknown option(s) {', '.join(unknown)} for {prog}")
    actions: dict[str, argparse.Action] = {}
    for action in parser._actions:  # an option's own action, not the `--no_name` switch that shares its dest
        actions.setdefault(action.dest, action)
    for dest, value in config_values.items():
        problem = config_value_problem(actions[dest], value)
        if problem:
            raise UsageError(f"{config_path}: {dest}: {problem}")
    config_values = {**(defaults or {}), **config_values}
    # File values become the parser's defaults (so required fields can come from the file); flags override them.
    parser.set_defaults(**{dest: value for dest, value in config_values.items() if dest in known})
    for action in parser._actions:
        if action.dest in config_values:
            action.required = False
    if {"-h", "--help", "--help-all"} & set(argv):  # the defaults shown are the command's and the file's
        print_help(parser, full="--help-all" in argv)
        raise SystemExit(0)
    try:
        return tuple(parser.parse_args_into_dataclasses(args=argv))
    except ValueError as error:  # raised by the dataclass' validation
        raise UsageError(str(error).splitlines()[0] if str(error) else type(error).__name__) from error


def config_value_problem(action: argparse.Action, value) -> str | None:
    """Why a config file's value does not fit its option, or None. A string goes through the option's own conversion
    like a flag's value (argparse checks it), but YAML and JSON also give booleans, numbers and lists, which argparse
    passes on unconverted: `gradual_unfreezing: 3` would be taken as on, `seed: true` as 1, `learning_rate: [1]` would
    fail deep in the optimizer. Options that take text (`str`) accept any value (e.g. a mapping for
    `lr_scheduler_kwargs`)."""
    if value is None or isinstance(value, str):
        return None
    if action.nargs in ("+", "*"):
        if not isinstance(value, list):
            return f"expected a list, got {value!r}"
        problems = [_scalar_problem(action.type, item) for item in value]
        return next((f"item {index}: {problem}" for index, problem in enumerate(problems) if problem), None)
    return _scalar_problem(action.type, value)


def _scalar_problem(kind, value) -> str | None:
    from transformers.hf_argparser import string_to_bool

    if value is None or isinstance(value, str):
        return None
    if kind is string_to_bool:
        fits, wanted = isinstance(value, bool), "true or false"
    elif kind is int:
        fits, wanted = isinstance(value, int) and not isinstance(value, bool), "a whole number"
    elif kind is float:
        fits, wanted = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    else:
        return None
    return None if fits else f"expected {wanted}, got {value!r}"


def add_switches_for_unset_flags(parser) -> None:
    """`--name` (on) and `--no_name` (off) for each yes/no option whose default is unset (`bool | None` = None: the
    model family decides, as for `gradual_unfreezing`). `HfArgumentParser` gives such options neither: it wants a
    value (`--name true`) and adds `--no_name` only to options that default to True. `--name false` still works."""
    from transformers.hf_argparser import string_to_bool

    for group in parser._action_groups:
        for action in list(group._group_actions):
            if action.type is string_to_bool and action.default is None and action.nargs is None:
                action.nargs, action.const = "?", True
                group.add_argument(
                    f"--no_{action.dest}",
                    action="store_false",
                    dest=action.dest,
                    default=argparse.SUPPRESS,  # the option's own default (None) stands; --help shows it there
                    help=f"Turn {action.dest} off.",
                )


def read_config_file(path: Path) -> dict:
    try:
        return read_mapping_file(path, "config file")
    except ValueError as error:
        raise UsageError(str(error)) from error


def read_texts(input_file: str | None) -> list[str]:
    """The non-blank lines of `input_file` (standard input when None), with errors that name the file and line."""
    if input_file is None:
        lines = sys.stdin.read().splitlines()
        source = "standard input"
    else:
        path = Path(input_file)
        if not path.is_file():
            raise UsageError(f"input file {path} does not exist")
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as error:
            line = path.read_bytes()[: error.start].count(b"\n") + 1
            raise UsageError(f"{path}, line {line}: not valid UTF-8 ({error.reason})") from error
        source = str(path)
    texts = [line for line in lines if line.strip()]
    if not texts:
        raise UsageError(f"no text to process in {source} (one text per line, blank lines are skipped)")
    return texts


def write_output(text: str, output_file: str | None) -> None:
    """Writes `text` to `output_file` (its folder created), or to standard output when None."""
    if output_file is None:
        sys.stdout.write(text)
    else:
        Path(output_file).parent.mkdir(parents=True, exist_ok=True)
        Path(output_file).write_text(text, encoding="utf-8")
