"""The `tl-nlp` command line.

Every subcommand's options are fields of a dataclass (with help text and validation), parsed by transformers'
`HfArgumentParser`. A YAML or JSON file given with `--config FILE` sets any of them; flags on the command line win
over the file:

    tl-nlp predict --model_name_or_path runs/demo/classifier --input_file reviews.txt
    tl-nlp generate --config generate.yaml --max_new_tokens 40
    echo "A wonderful film." | tl-nlp predict --model_name_or_path runs/demo/classifier
    tl-nlp convert-fastai lm.pth vocab.pkl converted/
    tl-nlp push --model_dir runs/demo/classifier --repo_id me/imdb-ulmfit   # the record ULMFiTTrainer saved there
    tl-nlp zero-shot --model_name_or_path runs/demo/lm_imdb --labels negative positive --label_words bad good
    tl-nlp ulmfit --config examples/configs/ulmfit_awd_lstm_tiny.yaml
    tl-nlp lr-find --model_name_or_path runs/lm_imdb --train_file reviews.csv --class_names negative positive

It works the same under `accelerate launch -m tl_nlp.cli ...`. Errors a user can fix (a wrong path, an unknown
model, bad input) are one line on stderr and exit status 2, not a traceback.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from transformers import HfArgumentParser

from . import __version__
from .config_files import read_mapping_file


class UsageError(Exception):
    """A problem with what the user asked for, reported as one line."""


@dataclass
class PredictArguments:
    """Classify texts with a saved classifier (any `AutoModelForSequenceClassification` folder or Hub id)."""

    model_name_or_path: str = field(metadata={"help": "Folder (or Hub id) of a text classifier with its tokenizer."})
    input_file: str | None = field(
        default=None, metadata={"help": "Text file with one text per line; standard input when not given."}
    )
    output_file: str | None = field(
        default=None, metadata={"help": "Where to write the JSON lines; standard output when not given."}
    )
    batch_size: int = field(default=16, metadata={"help": "Texts per forward pass (>= 1)."})
    device: str | None = field(
        default=None, metadata={"help": "'cpu', 'cuda', 'cuda:1'...; the best available when not given."}
    )
    trust_remote_code: bool = field(
        default=True, metadata={"help": "Allow the model's own code (AWD-LSTM folders ship theirs)."}
    )

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


@dataclass
class GenerateArguments:
    """Continue a prompt with a saved language model (any `AutoModelForCausalLM` folder or Hub id)."""

    model_name_or_path: str = field(
        metadata={"help": "Folder (or Hub id) of a causal language model with its tokenizer."}
    )
    prompt: str = field(default="", metadata={"help": "Text to continue; standard input when empty."})
    max_new_tokens: int = field(default=50, metadata={"help": "How many tokens to generate (>= 1)."})
    do_sample: bool = field(default=True, metadata={"help": "Sample (True) or take the most likely token (False)."})
    temperature: float = field(default=0.8, metadata={"help": "Sampling temperature (> 0)."})
    top_k: int = field(default=40, metadata={"help": "Sample among the k most likely tokens (0: no limit)."})
    top_p: float = field(
        default=1.0, metadata={"help": "Nucleus sampling: smallest set with this probability (0, 1]."}
    )
    num_return_sequences: int = field(default=1, metadata={"help": "How many continuations (>= 1)."})
    seed: int | None = field(default=None, metadata={"help": "Random seed, for repeatable samples."})
    device: str | None = field(default=None, metadata={"help": "'cpu', 'cuda'...; the best available when not given."})
    trust_remote_code: bool = field(default=True, metadata={"help": "Allow the model's own code."})

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must lie in (0, 1], got {self.top_p}")
        if self.num_return_sequences < 1:
            raise ValueError(f"num_return_sequences must be >= 1, got {self.num_return_sequences}")


def parse_dataclass(arguments_class: type, argv: Sequence[str], prog: str):
    """Parses `argv` into `arguments_class`, with `--config FILE` (YAML or JSON) supplying defaults."""
    (arguments,) = parse_dataclasses((arguments_class,), argv, prog)
    return arguments


def parse_dataclasses(
    arguments_classes: Sequence[type], argv: Sequence[str], prog: str, defaults: dict | None = None
) -> tuple:
    """Parses `argv` into one instance of each class (field names are unique across them). Values come from, in
    increasing priority: the fields' defaults, `defaults` (the command's own), `--config FILE` (YAML or JSON), flags."""
    argv = list(argv)
    config_values = {}
    if "--config" in argv:
        position = argv.index("--config")
        if position + 1 >= len(argv):
            raise UsageError("--config needs a file name")
        config_path = Path(argv[position + 1])
        del argv[position : position + 2]
        config_values = read_config_file(config_path)
    parser = HfArgumentParser(list(arguments_classes), prog=prog, description=arguments_classes[0].__doc__)
    known = {action.dest for action in parser._actions}
    config_values = {**(defaults or {}), **config_values}
    unknown = sorted(set(config_values) - known)
    if unknown:
        raise UsageError(f"{config_path}: unknown option(s) {', '.join(unknown)} for {prog}")
    # File values become the parser's defaults (so required fields can come from the file); flags override them.
    for action in parser._actions:
        if action.dest in config_values:
            action.default = config_values[action.dest]
            action.required = False
    try:
        return tuple(parser.parse_args_into_dataclasses(args=argv))
    except ValueError as error:  # raised by the dataclass' validation
        raise UsageError(str(error).splitlines()[0] if str(error) else type(error).__name__) from error


def read_config_file(path: Path) -> dict:
    try:
        return read_mapping_file(path, "config file")
    except ValueError as error:
        raise UsageError(str(error)) from error


def read_texts(input_file: str | None) -> list[str]:
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


def load_pipeline(task: str, model_name_or_path: str, device: str | None, trust_remote_code: bool):
    from transformers import pipeline

    local = Path(model_name_or_path)
    if (local.exists() or model_name_or_path.startswith((".", "/"))) and not (local / "config.json").is_file():
        raise UsageError(f"{model_name_or_path} is not a saved model folder (no config.json in it)")
    try:
        return pipeline(task, model=model_name_or_path, device=device, trust_remote_code=trust_remote_code)
    except OSError as error:
        raise UsageError(f"cannot load {model_name_or_path!r}: {str(error).splitlines()[0]}") from error


def run_predict(arguments: PredictArguments) -> None:
    classifier = load_pipeline(
        "text-classification", arguments.model_name_or_path, arguments.device, arguments.trust_remote_code
    )
    texts = read_texts(arguments.input_file)
    # Batches of texts of similar length carry little padding (what fastai's get_preds does); the answers are put
    # back in input order. A classifier's answer for a text does not depend on its batch.
    order = sorted(range(len(texts)), key=lambda index: len(texts[index]), reverse=True)
    sorted_results = classifier([texts[index] for index in order], batch_size=arguments.batch_size, top_k=None)
    results = [None] * len(texts)
    for index, result in zip(order, sorted_results, strict=True):
        results[index] = result
    lines = []
    for text, scores in zip(texts, results, strict=True):
        best = max(scores, key=lambda item: item["score"])
        lines.append(
            json.dumps(
                {
                    "text": text,
                    "label": best["label"],
                    "score": best["score"],
                    "scores": {item["label"]: item["score"] for item in scores},
                },
                ensure_ascii=False,
            )
        )
    write_output("\n".join(lines) + "\n", arguments.output_file)


def run_generate(arguments: GenerateArguments) -> None:
    from transformers import set_seed

    generator = load_pipeline(
        "text-generation", arguments.model_name_or_path, arguments.device, arguments.trust_remote_code
    )
    prompt = arguments.prompt or sys.stdin.read().strip()
    if not prompt:
        raise UsageError("no prompt: pass --prompt or write it to standard input")
    if arguments.seed is not None:
        set_seed(arguments.seed)
    outputs = generator(
        prompt,
        max_new_tokens=arguments.max_new_tokens,
        do_sample=arguments.do_sample,
        temperature=arguments.temperature,
        top_k=arguments.top_k,
        top_p=arguments.top_p,
        num_return_sequences=arguments.num_return_sequences,
    )
    print("\n".join(json.dumps({"generated_text": out["generated_text"]}, ensure_ascii=False) for out in outputs))


def write_output(text: str, output_file: str | None) -> None:
    if output_file is None:
        sys.stdout.write(text)
    else:
        Path(output_file).parent.mkdir(parents=True, exist_ok=True)
        Path(output_file).write_text(text, encoding="utf-8")


def _dataclass_command(arguments_class: type, handler: Callable) -> Callable[[Sequence[str], str], int]:
    def command(argv: Sequence[str], prog: str) -> int:
        handler(parse_dataclass(arguments_class, argv, prog))
        return 0

    return command


def _push(argv: Sequence[str], prog: str) -> int:
    from .hub import PushArguments, run_push

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
    from .convert_fastai import convert_fastai_main

    return convert_fastai_main(argv)


def _zero_shot(argv: Sequence[str], prog: str) -> int:
    from .zero_shot import ZeroShotArguments, run_zero_shot

    run_zero_shot(parse_dataclass(ZeroShotArguments, argv, prog))
    return 0


def _recipe_command(name: str) -> Callable[[Sequence[str], str], int]:
    """A recipe subcommand (tl_nlp.recipe.commands): its dataclasses parsed together, user errors as one line."""

    def command(argv: Sequence[str], prog: str) -> int:
        from .data import TextDataError
        from .recipe import RecipeError
        from .recipe import commands as recipe
        from .training import ULMFiTTrainingArguments
        from .training.loss_guard import NonFiniteLossError
        from .training.lr_finder import LRFinderArguments

        classes, handler = {
            "pretrain-lm": ((recipe.DataArguments, recipe.ModelArguments), _stage_handler("pretrain")),
            "finetune-lm": ((recipe.DataArguments, recipe.ModelArguments), _stage_handler("finetune")),
            "train-classifier": (
                (recipe.DataArguments, recipe.ModelArguments, recipe.ClassifierMethodArguments),
                recipe.run_classifier_command,
            ),
            "ulmfit": (
                (
                    recipe.UlmfitArguments,
                    recipe.DataArguments,
                    recipe.ModelArguments,
                    recipe.ClassifierMethodArguments,
                ),
                recipe.run_ulmfit_command,
            ),
            "lr-find": (
                (recipe.LRFindTaskArguments, LRFinderArguments, recipe.DataArguments, recipe.ModelArguments),
                recipe.run_lr_find_command,
            ),
            "evaluate": ((recipe.EvaluateArguments,), recipe.run_evaluate_command),
        }[name]
        if name != "evaluate":
            classes = (*classes, ULMFiTTrainingArguments)
        arguments = parse_dataclasses(classes, argv, prog, defaults=recipe.COMMAND_DEFAULTS.get(name))
        try:
            handler(*arguments)
        except (RecipeError, TextDataError) as error:
            raise UsageError(str(error)) from error
        except NonFiniteLossError as error:
            sys.stderr.write(f"{prog}: stopped: {error}\n")
            return 1
        finally:
            _end_distributed()
        return 0

    return command


def _stage_handler(stage: str) -> Callable:
    from .recipe.commands import run_language_model_command

    return lambda data, model, training: run_language_model_command(stage, data, model, training)


def _end_distributed() -> None:
    # Under `accelerate launch`, gloo can abort at interpreter exit unless the process group is closed first.
    import torch.distributed

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


COMMANDS: dict[str, tuple[Callable[[Sequence[str], str], int], str]] = {
    "predict": (_dataclass_command(PredictArguments, run_predict), "classify texts (JSON lines out)"),
    "generate": (_dataclass_command(GenerateArguments, run_generate), "continue a prompt with a language model"),
    "convert-fastai": (_convert_fastai, "convert a fastai AWD-LSTM checkpoint into a tl_nlp folder"),
    "push": (_push, "upload a model with a model card written from its training record to the Hub"),
    "zero-shot": (_zero_shot, "classify texts with a language model and label words, no training (JSON lines out)"),
    "pretrain-lm": (_recipe_command("pretrain-lm"), "ULMFiT stage 1: train a general-domain language model"),
    "finetune-lm": (_recipe_command("finetune-lm"), "ULMFiT stage 2: fine-tune a language model on target text"),
    "train-classifier": (
        _recipe_command("train-classifier"),
        "ULMFiT stage 3: train a classifier from a language model",
    ),
    "ulmfit": (_recipe_command("ulmfit"), "the three ULMFiT stages in one command"),
    "evaluate": (
        _recipe_command("evaluate"),
        "accuracy and macro-F1 of a classifier (or an ensemble) on labelled texts",
    ),
    "lr-find": (_recipe_command("lr-find"), "learning-rate range test with suggested rates and a plot"),
}


def usage() -> str:
    width = max(len(name) for name in COMMANDS)
    rows = "\n".join(f"  {name.ljust(width)}  {summary}" for name, (_, summary) in COMMANDS.items())
    return f"usage: tl-nlp COMMAND [OPTIONS]   (tl-nlp COMMAND --help for its options)\n\ncommands:\n{rows}\n"


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


if __name__ == "__main__":
    sys.exit(main())
