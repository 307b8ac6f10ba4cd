"""Training throughput with 1 and 2 processes (DDP through `accelerate launch`), and fp32 against bf16 on a GPU.

Two workloads, both through our trainers on real data from ../shared/data:
- `lm`: AWD-LSTM language-model training with carried state (`LanguageModelTrainer` on WikiText-2 streams);
  throughput in target tokens per second, all processes together.
- `classifier`: a BERT-style classifier (4 layers, 256 wide, built from a config) with discriminative LRs, STLR
  and gradual unfreezing (`ClassificationTrainer`, sortish batches) on IMDb reviews (`train_1k` of
  small_protocol.json) cut to 256 tokens; throughput in examples per second, all processes together.

The per-device batch stays fixed, so 2 processes train a global batch twice as large (weak scaling). Each
measurement is one `accelerate launch` of this file in `--worker` mode; the runner interleaves the settings round
by round and reports the median of the rounds, the load average of the machine before and after, and the ratio
of each setting to the first one. Timing starts after `--warmup_steps` optimizer steps.

    # CPU: 1 against 2 processes (gloo), what BENCHMARKS.md records
    .venv/bin/python benchmarks/bench_ddp_scaling.py --processes 1 2 --rounds 3
    # one GPU: fp32 against bf16 autocast
    .venv/bin/python benchmarks/bench_ddp_scaling.py --device cuda --processes 1 --bf16
    # one worker by hand, e.g. 2 CPU processes on the LM workload
    ACCELERATE_USE_CPU=1 accelerate launch --config_file accelerate_configs/cpu_2proc.yaml \\
        benchmarks/bench_ddp_scaling.py --worker --task lm
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


# ---- worker: one training run under `accelerate launch` ------------------------------------------------------------


def build_lm_trainer(args, training_args):
    from tl_nlp import AWDLSTMConfig, AWDLSTMForCausalLM, train_ulmfit_tokenizer
    from tl_nlp.data import LanguageModelStreams, load_text_dataset, tokenize_for_language_model
    from tl_nlp.training.lm_trainer import LanguageModelTrainer

    texts = load_text_dataset(str(args.data_dir / "wikitext-2" / "train.txt")).select(range(6000))
    tokenizer = train_ulmfit_tokenizer(texts["text"], vocab_size=10_000)
    tokenized = tokenize_for_language_model(texts, tokenizer, skip_empty=True)
    streams = LanguageModelStreams.from_dataset(
        tokenized, batch_size=args.batch_size, bptt=70, pad_token_id=tokenizer.pad_token_id
    )
    config = AWDLSTMConfig(vocab_size=len(tokenizer), embedding_size=200, hidden_size=400, num_hidden_layers=3)
    model = AWDLSTMForCausalLM(config)
    return LanguageModelTrainer(model=model, args=training_args, train_dataset=streams), args.batch_size * 70


def build_classifier_trainer(args, training_args):
    from transformers import BertConfig, BertForSequenceClassification, DataCollatorWithPadding

    from tl_nlp import train_ulmfit_tokenizer
    from tl_nlp.data import load_text_dataset, tokenize_dataset
    from tl_nlp.training.classification_trainer import ClassificationTrainer

    protocol = json.loads((args.data_dir / "imdb" / "small_protocol.json").read_text())["train_1k"]
    reviews = load_text_dataset(str(args.data_dir / "imdb" / protocol["file"])).select(protocol["rows"])
    tokenizer = train_ulmfit_tokenizer(reviews["text"], vocab_size=10_000)
    dataset, id2label, label2id = tokenize_dataset(reviews, tokenizer)
    dataset = dataset.map(
        lambda row: {
            "input_ids": row["input_ids"][:256],
            "attention_mask": row["attention_mask"][:256],
            "length": min(row["length"], 256),
        }
    )
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=1024,
        max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id,
        num_labels=2,
        id2label=id2label,
        label2id=label2id,
    )
    trainer = ClassificationTrainer(
        model=BertForSequenceClassification(config),
        args=training_args,
        train_dataset=dataset,
        data_collator=DataCollatorWithPadding(tokenizer),
    )
    return trainer, args.batch_size


def run_worker(args) -> None:
    import torch
    from transformers import TrainerCallback

    from tl_nlp import ULMFiTTrainingArguments

    class StepClock(TrainerCallback):
        """Wall time of every optimizer step end (DDP steps are synchronous: rank 0's clock is everyone's)."""

        def __init__(self):
            self.times: list[float] = []

        def on_step_end(self, training_args, state, control, **kwargs):
            if torch.cuda.is_available() and args.device == "cuda":
                torch.cuda.synchronize()
            self.times.append(time.perf_counter())

    training_args = ULMFiTTrainingArguments(
        output_dir=str(args.output_dir),
        max_steps=args.warmup_steps + args.steps,
        per_device_train_batch_size=args.batch_size,
        learning_rate=1e-3,
        unfreeze_every_n_steps=max(1, (args.warmup_steps + args.steps) // 4),
        bf16=args.bf16,
        use_cpu=args.device == "cpu",
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        dataloader_pin_memory=args.device == "cuda",
        seed=0,
    )
    torch.manual_seed(0)
    builder = build_lm_trainer if args.task == "lm" else build_classifier_trainer
    trainer, units_per_device_step = builder(args, training_args)
    clock = StepClock()
    trainer.add_callback(clock)
    trainer.train()
    seconds = clock.times[-1] - clock.times[args.warmup_steps - 1]
    processes = trainer.args.world_size
    if trainer.is_world_process_zero():
        result = {
            "task": args.task,
            "processes": processes,
            "precision": "bf16" if args.bf16 else "fp32",
            "device": args.device,
            "units_per_second": units_per_device_step * processes * args.steps / seconds,
            "seconds_per_step": seconds / args.steps,
        }
        print("RESULT " + json.dumps(result), flush=True)
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


# ---- runner: interleaved rounds of worker launches -----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(args, task: str, processes: int, precision: str) -> dict:
    accelerate = str(Path(sys.executable).parent / "accelerate")
    command = [accelerate, "launch", "--num_processes", str(processes), "--num_machines", "1"]
    command += ["--mixed_precision", "bf16" if precision == "bf16" else "no", "--dynamo_backend", "no"]
    if processes > 1:
        command += ["--multi_gpu", "--main_process_port", str(free_port())]
    command += [__file__, "--worker", "--task", task, "--device", args.device, "--data_dir", str(args.data_dir)]
    command += ["--steps", str(args.steps), "--warmup_steps", str(args.warmup_steps)]
    command += ["--batch_size", str(args.lm_batch_size if task == "lm" else args.classifier_batch_size)]
    command += ["--output_dir", str(args.output_dir / f"{task}_{processes}_{precision}")]
    if precision == "bf16":
        command.append("--bf16")
    environment = {**os.environ, "OMP_NUM_THREADS": str(args.threads_per_process), "TOKENIZERS_PARALLELISM": "false"}
    if args.device == "cpu":
        environment["ACCELERATE_USE_CPU"] = "1"
    completed = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=args.timeout)
    lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
    if completed.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(command)} failed:\n{completed.stdout[-2000:]}\n{completed.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def run_benchmark(args) -> None:
    settings = [(t, p, q) for t in args.tasks for p in args.processes for q in args.precisions]
    measured: dict[tuple, list[float]] = {setting: [] for setting in settings}
    load_before = os.getloadavg()
    for round_index in range(args.rounds):
        for setting in settings:
            result = launch(args, *setting)
            measured[setting].append(result["units_per_second"])
            print(f"round {round_index + 1}: {setting} {result['units_per_second']:.1f}/s", flush=True)
    load_after = os.getloadavg()
    print(f"load average (1, 5, 15 min) before: {load_before}, after: {load_after}; cores: {os.cpu_count()}")
    print("| workload | processes | precision | median throughput | rounds | vs first row |")
    print("|---|---|---|---|---|---|")
    for task in args.tasks:
        unit = "tokens/s" if task == "lm" else "examples/s"
        rows = [setting for setting in settings if setting[0] == task]
        base = statistics.median(measured[rows[0]])
        for setting in rows:
            median = statistics.median(measured[setting])
            values = ", ".join(f"{value:.0f}" for value in measured[setting])
            print(f"| {task} | {setting[1]} | {setting[2]} | {median:.0f} {unit} | {values} | {median / base:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", action="store_true", help="Run one training (under accelerate launch).")
    parser.add_argument("--task", choices=["lm", "classifier"], default="lm", help="Worker: the workload.")
    parser.add_argument(
        "--bf16", action="store_true", help="Worker: bf16 autocast. Runner: compare fp32 with bf16 (--precisions)."
    )
    parser.add_argument("--batch_size", type=int, default=16, help="Worker: per-device batch (LM: streams).")
    parser.add_argument("--tasks", nargs="+", default=["lm", "classifier"], choices=["lm", "classifier"])
    parser.add_argument("--processes", nargs="+", type=int, default=[1, 2], help="Process counts to compare.")
    parser.add_argument("--precisions", nargs="+", default=["fp32"], choices=["fp32", "bf16"])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--rounds", type=int, default=3, help="Interleaved rounds; the median is reported.")
    parser.add_argument("--steps", type=int, default=12, help="Timed optimizer steps.")
    parser.add_argument("--warmup_steps", type=int, default=3, help="Untimed steps first.")
    parser.add_argument("--lm_batch_size", type=int, default=16, help="Streams per process (bptt 70).")
    parser.add_argument("--classifier_batch_size", type=int, default=8, help="Reviews per process.")
    parser.add_argument("--threads_per_process", type=int, default=1, help="OMP_NUM_THREADS of each process.")
    parser.add_argument("--timeout", type=int, default=900, help="Seconds before a launch counts as hung.")
    parser.add_argument("--data_dir", type=Path, default=DATA_DIR)
    parser.add_argument("--output_dir", type=Path, default=Path("runs/bench_ddp_scaling"))
    args = parser.parse_args()
    if args.warmup_steps < 1 or args.steps < 1:
        parser.error("--warmup_steps and --steps must be at least 1.")
    if args.worker:
        run_worker(args)
    else:
        if args.bf16:
            args.precisions = ["fp32", "bf16"]
        run_benchmark(args)


if __name__ == "__main__":
    main()
