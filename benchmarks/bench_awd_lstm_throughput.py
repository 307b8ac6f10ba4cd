"""Training throughput of AWDLSTMForCausalLM against a plain nn.LSTM stack and fastai's AWD_LSTM, side by side.

Each measurement runs in its own subprocess (so peak memory is per implementation) and the three implementations
are interleaved round by round, so that load from anything else on the machine hits them alike. A step is
forward + backward + Adam step on a batch of `batch_size` x `bptt` tokens, with the recurrent state carried
(detached) from one batch to the next, as language-model training does.

    make bench                      # builds .fastai-venv first if needed
    .venv/bin/python benchmarks/bench_awd_lstm_throughput.py --fastai_python .fastai-venv/bin/python
    .venv/bin/python benchmarks/bench_awd_lstm_throughput.py --device cuda --dtype bfloat16   # on a GPU machine

The worker half of this file imports neither tl_nlp nor fastai at the top, so that the fastai venv can run it.
"""

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
from torch import nn

SIZES = dict(vocab_size=10_000, embedding_size=400, hidden_size=1152, num_layers=3)
# --tiny: sizes for checking the script itself (tests/test_gpu_awd_lstm.py), not for timing.
TINY_SIZES = dict(vocab_size=200, embedding_size=16, hidden_size=24, num_layers=3)


class PlainLSTMLanguageModel(nn.Module):
    """The same sizes with no regularisation: embedding, three nn.LSTM layers, a tied decoder."""

    def __init__(self, vocab_size: int, embedding_size: int, hidden_size: int, num_layers: int):
        super().__init__()
        self.embeddings = nn.Embedding(vocab_size, embedding_size)
        sizes = [embedding_size] + [hidden_size] * (num_layers - 1) + [embedding_size]
        self.layers = nn.ModuleList(
            nn.LSTM(a, b, batch_first=True) for a, b in zip(sizes[:-1], sizes[1:], strict=True)
        )
        self.decoder = nn.Linear(embedding_size, vocab_size)
        self.decoder.weight = self.embeddings.weight

    def forward(self, input_ids, state=None):
        hidden, new_state = self.embeddings(input_ids), []
        for index, layer in enumerate(self.layers):
            hidden, layer_state = layer(hidden, None if state is None else state[index])
            new_state.append(layer_state)
        return self.decoder(hidden), tuple(new_state)


def build_step(impl: str, device: str):
    """Returns (model, step) where step(x, y) runs one training step and returns the loss."""
    if impl in ("tl_nlp", "tl_nlp_no_dropout"):
        from tl_nlp import AWDLSTMConfig, AWDLSTMForCausalLM

        config = AWDLSTMConfig(
            vocab_size=SIZES["vocab_size"],
            embedding_size=SIZES["embedding_size"],
            hidden_size=SIZES["hidden_size"],
            num_hidden_layers=SIZES["num_layers"],
            # The second variant switches every dropout off: what the model costs beyond a plain stack without them.
            dropout_multiplier=0.0 if impl == "tl_nlp_no_dropout" else 1.0,
        )
        model = AWDLSTMForCausalLM(config)
        carried = {"state": None}

        def forward(x, y):
            out = model(input_ids=x, shift_labels=y, state=carried["state"])
            carried["state"] = tuple((h.detach(), c.detach()) for h, c in out.state)
            return out.loss

    elif impl == "plain":
        model = PlainLSTMLanguageModel(**SIZES)
        carried = {"state": None}

        def forward(x, y):
            logits, state = model(x, carried["state"])
            carried["state"] = tuple((h.detach(), c.detach()) for h, c in state)
            return nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))

    elif impl == "fastai":
        from fastai.text.all import AWD_LSTM, awd_lstm_lm_config, get_language_model

        config = dict(awd_lstm_lm_config, emb_sz=SIZES["embedding_size"], n_hid=SIZES["hidden_size"])
        config["n_layers"] = SIZES["num_layers"]
        model = get_language_model(AWD_LSTM, SIZES["vocab_size"], config=config)
        model.reset()

        def forward(x, y):
            logits = model(x)[0]  # fastai keeps the (detached) state on the module
            return nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))

    else:
        raise ValueError(f"unknown implementation {impl!r}")
    return model, forward


def worker(args) -> None:
    if args.tiny:
        SIZES.update(TINY_SIZES)
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    model, forward = build_step(args.worker, args.device)
    model.to(args.device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    stream = torch.randint(4, SIZES["vocab_size"], (args.batch_size, (args.warmup + args.steps) * args.bptt + 1))
    stream = stream.to(args.device)
    autocast = torch.autocast(args.device, dtype=getattr(torch, args.dtype), enabled=args.dtype != "float32")
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def step(index: int) -> None:
        x = stream[:, index * args.bptt : (index + 1) * args.bptt]
        y = stream[:, index * args.bptt + 1 : (index + 1) * args.bptt + 1]
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = forward(x, y)
        loss.backward()
        optimizer.step()

    for index in range(args.warmup):
        step(index)
    if args.device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for index in range(args.warmup, args.warmup + args.steps):
        step(index)
    if args.device == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    result = {
        "impl": args.worker,
        "tokens_per_s": args.steps * args.batch_size * args.bptt / elapsed,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if args.device == "cuda":
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
        result["cudnn"] = torch.backends.cudnn.enabled and torch.backends.cudnn.is_available()
    print(json.dumps(result))


def driver(args) -> None:
    pythons = {"tl_nlp": sys.executable, "tl_nlp_no_dropout": sys.executable, "plain": sys.executable}
    if args.fastai_python:
        pythons["fastai"] = args.fastai_python
    passthrough = [
        f"--{name}={getattr(args, name)}"
        for name in ("batch_size", "bptt", "steps", "warmup", "threads", "device", "dtype")
    ] + (["--tiny"] if args.tiny else [])
    results = {impl: [] for impl in pythons}
    for round_index in range(args.rounds):
        for impl, python in pythons.items():
            completed = subprocess.run(
                [python, __file__, "--worker", impl, *passthrough], capture_output=True, text=True, check=False
            )
            if completed.returncode != 0:
                raise SystemExit(f"{impl} worker failed:\n{completed.stderr[-3000:]}")
            result = json.loads(completed.stdout.strip().splitlines()[-1])
            results[impl].append(result)
            print(f"round {round_index + 1} {impl:17s} {result['tokens_per_s']:9.0f} tokens/s", flush=True)

    ours = statistics.median(r["tokens_per_s"] for r in results["tl_nlp"])
    print(
        f"\n{args.device} {args.dtype}: batch {args.batch_size} x bptt {args.bptt}, vocab 10k, emb 400, "
        f"hidden 1152, 3 layers, {args.steps} timed steps, median of {args.rounds} interleaved rounds"
    )
    print(
        "| implementation | tokens/s (median) | tl_nlp / this | peak RSS MB |"
        + (" peak GPU MB |" if args.device == "cuda" else "")
    )
    print("|---|---|---|---|" + ("---|" if args.device == "cuda" else ""))
    for impl, runs in results.items():
        speed = statistics.median(r["tokens_per_s"] for r in runs)
        row = f"| {impl} | {speed:.0f} | {ours / speed:.2f}x | {max(r['peak_rss_mb'] for r in runs):.0f} |"
        if args.device == "cuda":
            row += f" {max(r['peak_gpu_mb'] for r in runs):.0f} |"
        print(row)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--worker", choices=["tl_nlp", "tl_nlp_no_dropout", "plain", "fastai"], help="internal: run one measurement"
    )
    parser.add_argument("--fastai_python", default=None, help="python of a venv with fastai (omit to skip fastai)")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--bptt", type=int, default=70)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--tiny", action="store_true", help="tiny sizes, to check the script (not for timing)")
    args = parser.parse_args()
    worker(args) if args.worker else driver(args)


if __name__ == "__main__":
    main()
