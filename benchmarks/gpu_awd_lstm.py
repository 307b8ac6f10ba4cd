"""AWD-LSTM on one GPU in one call of at most 8 minutes (an H100 or H200, no network), every figure in one JSON file.

1. Language-model training throughput at the paper's sizes (vocab 10k, embedding 400, hidden 1152, 3 layers,
   batch 64 x bptt 70): tl_nlp's `AWDLSTMForCausalLM` (weight-dropped matrices handed to `torch.lstm`, so cuDNN's
   fused kernel runs), a plain `nn.LSTM` stack without regularisation, and fastai's `AWD_LSTM` when fastai can be
   imported (by this python or `--fastai_python`; skipped and said so otherwise), each in fp32 and under bf16
   autocast, interleaved rounds (`benchmarks/bench_awd_lstm_throughput.py`'s workers).
2. ULMFiT's sample-efficiency protocol (`benchmarks/bench_sample_efficiency.py`, preset `gpu_short` by default:
   stage 1 on WikiText-2, stage 2 on the protocol's 8,000 unlabelled reviews, ULMFiT against from scratch at 100,
   1,000 and 10,000 labels, accuracy on test_5k) with whatever time the budget leaves; the benchmark rewrites its
   results after every classifier, so a run stopped by the budget still reports what it finished.

    python benchmarks/gpu_awd_lstm.py --data_dir ../shared/data --output benchmarks/results/gpu_awd_lstm.json
    python benchmarks/gpu_awd_lstm.py --device cpu --tiny --output /tmp/gpu_awd_lstm.json   # checks the script
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
THROUGHPUT = HERE / "bench_awd_lstm_throughput.py"
SAMPLE_EFFICIENCY = HERE / "bench_sample_efficiency.py"


def fastai_python(requested: str | None) -> str | None:
    """The python that runs the fastai workers: `requested`, else this one when it can import fastai, else none."""
    if requested:
        return requested
    found = subprocess.run([sys.executable, "-c", "import fastai.text.all"], capture_output=True).returncode == 0
    return sys.executable if found else None


def throughput(args, fastai: str | None) -> dict:
    """tokens/s per implementation and dtype: medians of interleaved rounds, with the ratios that matter."""
    pythons = {"tl_nlp": sys.executable, "plain": sys.executable}
    if fastai:
        pythons["fastai"] = fastai
    sizes = ["--tiny"] if args.tiny else []
    runs: dict[str, list[dict]] = {}
    for round_index in range(args.rounds):
        for dtype in ("float32", "bfloat16"):
            for impl, python in pythons.items():
                command = [python, str(THROUGHPUT), "--worker", impl, f"--device={args.device}", f"--dtype={dtype}",
                           f"--batch_size={args.batch_size}", f"--steps={args.steps}", f"--warmup={args.warmup}",
                           *sizes]  # fmt: skip
                done = subprocess.run(command, capture_output=True, text=True)
                key = f"{impl}/{dtype}"
                if done.returncode != 0:
                    runs.setdefault(key, []).append({"error": done.stderr.strip().splitlines()[-1:]})
                    continue
                result = json.loads(done.stdout.strip().splitlines()[-1])
                runs.setdefault(key, []).append(result)
                print(f"round {round_index + 1} {key:18s} {result['tokens_per_s']:10.0f} tokens/s", flush=True)
    medians = {
        key: statistics.median(r["tokens_per_s"] for r in results if "tokens_per_s" in r)
        for key, results in runs.items()
        if any("tokens_per_s" in r for r in results)
    }
    ratios = {}
    for dtype in ("float32", "bfloat16"):
        for other in ("plain", "fastai"):
            if f"tl_nlp/{dtype}" in medians and f"{other}/{dtype}" in medians:
                ratios[f"tl_nlp/{other} {dtype}"] = medians[f"tl_nlp/{dtype}"] / medians[f"{other}/{dtype}"]
    for impl in pythons:
        if f"{impl}/bfloat16" in medians and f"{impl}/float32" in medians:
            ratios[f"{impl} bf16/fp32"] = medians[f"{impl}/bfloat16"] / medians[f"{impl}/float32"]
    return {"tokens_per_s_median": medians, "ratios": ratios, "runs": runs, "fastai": fastai or "not importable"}


def sample_efficiency(args, seconds_left: float) -> dict:
    """Runs the protocol as a subprocess stopped at `seconds_left`, and returns its results file as it stands."""
    output_dir = Path(args.runs_dir) / args.preset
    command = [sys.executable, str(SAMPLE_EFFICIENCY), "--preset", args.preset, "--data_dir", args.data_dir,
               "--output_dir", str(output_dir)]  # fmt: skip
    if args.tiny:  # one classifier of each kind, no rate x dropout grid
        command += ["--grid_labels", "100", "--ulmfit_learning_rates", "1e-2", "--ulmfit_dropout_multipliers", "1",
                    "--scratch_learning_rates", "1e-2", "--scratch_dropout_multipliers", "1"]  # fmt: skip
    start = time.perf_counter()
    try:
        completed = subprocess.run(command, timeout=max(seconds_left, 1), capture_output=True, text=True)
        status = "finished" if completed.returncode == 0 else f"failed: {completed.stderr.strip()[-2000:]}"
    except subprocess.TimeoutExpired:
        status = f"stopped by the time budget after {seconds_left:.0f} s (results so far)"
    results_file = output_dir / "results.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    return {"status": status, "seconds": time.perf_counter() - start, "command": command, "results": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--data_dir", default="../shared/data")
    parser.add_argument("--output", default="benchmarks/results/gpu_awd_lstm.json", help="the JSON file written")
    parser.add_argument("--runs_dir", default="runs/gpu_awd_lstm", help="where the sample-efficiency run saves")
    parser.add_argument("--budget_s", type=float, default=450.0, help="seconds for the whole call (parts 1 and 2)")
    parser.add_argument("--fastai_python", default=None, help="python with fastai (default: this one if it has it)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--preset", default="gpu_short", help="bench_sample_efficiency.py preset for part 2")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (the `smoke` preset): checks the script")
    args = parser.parse_args()
    if args.tiny:
        args.preset = "smoke" if args.preset == "gpu_short" else args.preset
    start = time.perf_counter()
    report: dict = {"arguments": vars(args)}
    try:
        import torch

        report["device"] = torch.cuda.get_device_name() if args.device == "cuda" else args.device
        report["torch"] = torch.__version__
        report["cudnn"] = torch.backends.cudnn.version() if args.device == "cuda" else None
    except Exception as error:  # a broken CUDA setup is a figure too: say so in the JSON
        report["device_error"] = str(error)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)

    print("== 1. language-model training throughput", flush=True)
    report["throughput"] = throughput(args, fastai_python(args.fastai_python))
    output.write_text(json.dumps(report, indent=2))
    print(json.dumps(report["throughput"]["ratios"], indent=2), flush=True)

    seconds_left = args.budget_s - (time.perf_counter() - start)
    print(f"== 2. sample efficiency, preset {args.preset}, {seconds_left:.0f} s left", flush=True)
    report["sample_efficiency"] = sample_efficiency(args, seconds_left)
    report["seconds"] = time.perf_counter() - start
    output.write_text(json.dumps(report, indent=2))
    print(f"== {report['sample_efficiency']['status']}; everything in {output}", flush=True)


if __name__ == "__main__":
    main()
