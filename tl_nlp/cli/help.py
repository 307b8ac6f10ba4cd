"""What `tl-nlp COMMAND --help` prints: what the command does, one example, `--config`, and its options grouped by
concern (data, model, training, ...). The training group lists the options a ULMFiT run usually sets; the other
~110 of transformers' `TrainingArguments` (logging, saving, precision, ...) are listed by `--help-all`.

This module imports only the standard library: it is read before transformers is imported.
"""

from __future__ import annotations

import argparse
import textwrap

# What each command does and one example: the first lines of its --help.
DESCRIPTIONS = {
    "predict": (
        "Classify texts with a saved classifier folder (or a Hub id): one JSON line per text.",
        "tl-nlp predict --model_name_or_path runs/demo/classifier --input_file reviews.txt",
    ),
    "generate": (
        "Continue prompts with a saved language model.",
        'echo "The movie was" | tl-nlp generate --model_name_or_path runs/demo/lm_imdb --max_new_tokens 20',
    ),
    "convert-fastai": (
        "Convert a fastai AWD-LSTM checkpoint (weights .pth + vocabulary .pkl) into a tl_nlp model folder.",
        "tl-nlp convert-fastai --weights lm.pth --vocab vocab.pkl --output_dir converted/",
    ),
    "push": (
        "Upload a model folder to the Hub with a model card written from its training record.",
        "tl-nlp push --model_dir runs/demo/classifier --repo_id me/imdb-ulmfit",
    ),
    "zero-shot": (
        "Classify texts with a language model and one label word per class, without training.",
        "tl-nlp zero-shot --model_name_or_path runs/demo/lm_imdb --labels negative positive --label_words bad good",
    ),
    "pretrain-lm": (
        "ULMFiT stage 1: train a general-domain language model (a new AWD-LSTM, or any checkpoint) on plain text.",
        "tl-nlp pretrain-lm --train_file wiki.train.txt --validation_file wiki.valid.txt --output_dir runs/lm",
    ),
    "finetune-lm": (
        "ULMFiT stage 2: fine-tune a language model on text of the target domain (discriminative rates, STLR).",
        "tl-nlp finetune-lm --model_name_or_path runs/lm --train_file reviews.txt --output_dir runs/lm_imdb",
    ),
    "train-classifier": (
        "ULMFiT stage 3: train a classifier on top of a language model, with gradual unfreezing, discriminative "
        "learning rates and slanted triangular learning rates.",
        "tl-nlp train-classifier --model_name_or_path runs/lm_imdb --train_file train.csv --validation_file "
        "test.csv --class_names negative positive --output_dir runs/classifier",
    ),
    "ulmfit": (
        "The three ULMFiT stages in one command: pretrain (or start from --model_name_or_path), fine-tune the "
        "language model, train the classifier.",
        "tl-nlp ulmfit --config examples/configs/ulmfit_awd_lstm_tiny.yaml",
    ),
    "evaluate": (
        "Accuracy and macro-F1 of a classifier folder (or the ensemble of several) on labelled texts.",
        "tl-nlp evaluate --model_name_or_path runs/classifier --test_file test.csv",
    ),
    "lr-find": (
        "Learning-rate range test (fastai's lr_find): suggested rates, the curve as JSON and a plot.",
        "tl-nlp lr-find --model_name_or_path runs/lm_imdb --train_file train.csv --class_names negative positive",
    ),
}

# The training options that --help lists; --help-all lists all of them.
COMMON_TRAINING_OPTIONS = (
    "output_dir",
    "num_train_epochs",
    "learning_rate",
    "per_device_train_batch_size",
    "per_device_eval_batch_size",
    "gradient_accumulation_steps",
    "discriminative_lr_decay",
    "gradual_unfreezing",
    "use_stlr",
    "stlr_cut_frac",
    "weight_decay",
    "max_grad_norm",
    "bf16",
    "seed",
)
TRAINING_GROUP_PREFIX = "training"
CONFIG_HELP = "YAML or JSON file setting any of the options below by name; flags given as well win over the file."


def describe(prog: str) -> str:
    """The opening of `prog`'s help: what the command does, and an example."""
    summary, example = DESCRIPTIONS.get(prog.removeprefix("tl-nlp "), ("", ""))
    return f"{textwrap.fill(summary, 100)}\n\nexample:\n  {example}" if summary else ""


def print_help(parser: argparse.ArgumentParser, full: bool) -> None:
    """Prints `parser`'s help with `--config`; unless `full`, the training group only lists
    `COMMON_TRAINING_OPTIONS` and says how many more `--help-all` shows."""
    hidden = []
    for group in parser._action_groups:
        if not full and (group.title or "").startswith(TRAINING_GROUP_PREFIX):
            for action in group._group_actions:
                if action.dest not in COMMON_TRAINING_OPTIONS and action.help != argparse.SUPPRESS:
                    hidden.append((action, action.help))
                    action.help = argparse.SUPPRESS
    parser.add_argument("--config", metavar="FILE", help=CONFIG_HELP)
    parser.usage = f"{parser.prog} [--config FILE] [OPTIONS]"
    if hidden:
        parser.epilog = (
            f"{len(hidden)} more training options (transformers' TrainingArguments: logging, evaluation, saving, "
            f"precision, ...): {parser.prog} --help-all"
        )
    try:
        parser.print_help()
    finally:
        for action, text in hidden:
            action.help = text
        parser.epilog = None


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults after each option (as transformers' parser shows them) and the description's lines as written."""
