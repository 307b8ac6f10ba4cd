"""The `tl-nlp` command line.

Every subcommand's options are fields of dataclasses (with help text and validation), parsed by transformers'
`HfArgumentParser`. A YAML or JSON file given with `--config FILE` sets any of them; flags on the command line win
over the file:

    tl-nlp predict --model_name_or_path runs/demo/classifier --input_file reviews.txt
    tl-nlp generate --config generate.yaml --max_new_tokens 40
    echo "A wonderful film." | tl-nlp predict --model_name_or_path runs/demo/classifier
    tl-nlp convert-fastai --weights lm.pth --vocab vocab.pkl --output_dir converted/
    tl-nlp push --model_dir runs/demo/classifier --repo_id me/imdb-ulmfit   # the record ULMFiTTrainer saved there
    tl-nlp zero-shot --model_name_or_path runs/demo_awd_lstm/lm_imdb --labels negative positive --label_words bad good
    tl-nlp ulmfit --config examples/configs/ulmfit_awd_lstm_tiny.yaml
    tl-nlp lr-find --model_name_or_path runs/lm_imdb --train_file reviews.csv --class_names negative positive

It works the same under `accelerate launch -m tl_nlp.cli ...`. Errors a user can fix (a wrong path, an unknown
model, bad input) are one line on stderr and exit status 2, not a traceback.

Modules, one role each: `io` (parsing, reading texts, writing output, `UsageError`), `predict` (predict, generate),
`recipe` (the recipe's stage commands), `push`, `zero_shot`, `convert` (convert-fastai). A command is imported
when it runs, so `tl-nlp --help` stays quick.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from .. import __version__
from .io import UsageError, parse_dataclass, parse_dataclasses, read_texts, write_output


def _predict(argv: Sequence[str], prog: str) -> int:
    from .predict import PredictArguments, run_predict

    run_predict(parse_dataclass(PredictArguments, argv, prog))
    return 0


def _generate(argv: Sequence[str], prog: str) -> int:
    from .predict import GenerateArguments, run_generate

    run_generate(parse_dataclass(GenerateArguments, argv, prog))
    return 0


def _push(argv: Sequence[str], prog: str) -> int:
    from .push import PushArguments, run_push

    arguments = parse_dataclass(PushArguments, argv, prog)
    try:
        result = run_push(arguments)
    except ValueError as error:  # a bad record file or model folder
        raise UsageError(str(error)) from error
    if arguments.dry_run_dir:
        print(f"wrote the folder that would be uploaded to {arguments.dry_run_dir}: {', '.join(map(str, result))}")
    else:
        print(f"uploaded {arguments.model_dir} to https://huggingface.co/{arguments.repo_id}")
    return 0


def _convert_fastai(argv: Sequence[str], prog: str) -> int:
    from .convert import ConvertFastaiArguments, run_convert_fastai

    arguments = parse_dataclass(ConvertFastaiArguments, argv, prog)
    try:
        run_convert_fastai(arguments)
    except ValueError as error:  # bad input files: one line for the user, not a traceback
        raise UsageError(str(error)) from error
    return 0


def _zero_shot(argv: Sequence[str], prog: str) -> int:
    from .zero_shot import ZeroShotArguments, run_zero_shot

    run_zero_shot(parse_dataclass(ZeroShotArguments, argv, prog))
    return 0


def _recipe(name: str) -> Callable[[Sequence[str], str], int]:
    def command(argv: Sequence[str], prog: str) -> int:
        from .recipe import recipe_command

        return recipe_command(name)(argv, prog)

    return command


COMMANDS: dict[str, tuple[Callable[[Sequence[str], str], int], str]] = {
    "predict": (_predict, "classify texts (JSON lines out)"),
    "generate": (_generate, "continue a prompt with a language model"),
    "convert-fastai": (_convert_fastai, "convert a fastai AWD-LSTM checkpoint into a tl_nlp folder"),
    "push": (_push, "upload a model with a model card written from its training record to the Hub"),
    "zero-shot": (_zero_shot, "classify texts with a language model and label words, no training (JSON lines out)"),
    "pretrain-lm": (_recipe("pretrain-lm"), "ULMFiT stage 1: train a general-domain language model"),
    "finetune-lm": (_recipe("finetune-lm"), "ULMFiT stage 2: fine-tune a language model on target text"),
    "train-classifier": (_recipe("train-classifier"), "ULMFiT stage 3: train a classifier from a language model"),
    "ulmfit": (_recipe("ulmfit"), "the three ULMFiT stages in one command"),
    "evaluate": (_recipe("evaluate"), "accuracy and macro-F1 of a classifier (or an ensemble) on labelled texts"),
    "lr-find": (_recipe("lr-find"), "learning-rate range test with suggested rates and a plot"),
}


def usage() -> str:
    width = max(len(name) for name in COMMANDS)
    rows = "\n".join(f"  {name.ljust(width)}  {summary}" for name, (_, summary) in COMMANDS.items())
    return (
        "usage: tl-nlp COMMAND [--config FILE] [OPTIONS]\n\n"
        "ULMFiT-style transfer learning on Hugging Face models: train, evaluate, predict, share.\n\n"
        f"commands:\n{rows}\n\n"
        "tl-nlp COMMAND --help: what COMMAND does, an example and its usual options (--help-all: every option).\n"
        "Every option can also come from a YAML or JSON file, --config FILE (flags given as well win), e.g.\n"
        "  tl-nlp ulmfit --config examples/configs/ulmfit_awd_lstm_tiny.yaml\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        sys.stdout.write(usage())
        return 0
    if argv[0] == "--version":
        print(f"tl-nlp {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        sys.stderr.write(f"tl-nlp: unknown command {name!r}\n{usage()}")
        return 2
    try:
        return COMMANDS[name][0](rest, f"tl-nlp {name}")
    except UsageError as error:
        sys.stderr.write(f"tl-nlp {name}: error: {error}\n")
        return 2


__all__ = ["COMMANDS", "UsageError", "main", "parse_dataclass", "parse_dataclasses", "read_texts", "write_output"]
