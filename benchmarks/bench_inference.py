"""Inference throughput (IMDb test reviews per second) of an AWD-LSTM classifier: tl_nlp against fastai, side by side.

Both sides run the same model: fastai's `text_classifier_learner(dls, AWD_LSTM, pretrained=False)` (embeddings 400,
3 LSTM layers of 1152/1152/400, head 1200-50-2) with a vocabulary learnt from 10,000 IMDb training reviews; its
weights are saved and converted with `tl_nlp.convert_fastai_checkpoint`, so tl_nlp runs the very same weights.
Each measurement runs in its own subprocess, after a warm-up batch, the sides interleaved round by round so that
load from anything else on the machine hits them alike; the median over rounds is reported, as wall-clock
throughput (reviews/s) and as work (reviews per CPU-second, this process and its finished children, e.g. fastai's
DataLoader workers), which neighbours on a shared machine disturb much less:

- end to end, raw text in, class probabilities out: fastai `learn.get_preds(dl=learn.dls.test_dl(texts))` (spaCy
  tokenization, fastai's default DataLoader workers) against tl_nlp `pipeline("text-classification", ...)` on the
  reviews in their order (`end_to_end`: tl_nlp's AWD-LSTM pipeline, which batches by length like fastai's SortedDL
  and answers in input order), and against transformers' stock `TextClassificationPipeline` on the same folder
  (`end_to_end_stock`: batches in input order, what `pipeline()` did before tl_nlp registered its own class);
- model only, token ids in: fastai `get_preds` on a `test_dl` of the already numericalized reviews (its
  length-sorted, pad-first batches) against tl_nlp's classifier on length-sorted batches of the same ids.

The model-only logits of the two sides are compared: fastai pads a batch in whole chunks before the text (which its
encoder skips) and the rest after it (which its pooling masks), tl_nlp skips padding wherever it is, so the two
must agree to float precision on every review. With random weights the predicted classes mean nothing, so no
accuracy is reported.

    .venv/bin/python benchmarks/bench_inference.py --fastai_python .fastai-venv/bin/python
    .venv/bin/python benchmarks/bench_inference.py --fastai_python .fastai-venv/bin/python --num_reviews 200 --rounds 1
    .venv/bin/python benchmarks/bench_inference.py --num_reviews 150 --rounds 3 --skip_model_only

The data is read from ../shared/data/imdb (rows from small_protocol.json: `train_10k` for the vocabulary, the first
`--num_reviews` of `test_5k` for the measurement). The worker half imports neither tl_nlp nor fastai at the top, so
that the fastai venv can run this file.
"""

import argparse
import json
import os
import pickle
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = REPO_ROOT / ".." / "shared" / "data" / "imdb"
# end_to_end_stock is transformers' own TextClassificationPipeline class on the same folder (batches in input order).
MODES = ("end_to_end", "end_to_end_stock", "model_only")
END_TO_END_RUNS = (("fastai", "end_to_end"), ("tl_nlp", "end_to_end"), ("tl_nlp", "end_to_end_stock"))
MODEL_ONLY_RUNS = (("fastai", "model_only"), ("tl_nlp", "model_only"))


def read_protocol_texts(split: str, limit: int | None = None) -> list[str]:
    import pandas as pd

    protocol = json.loads((DATA_DIR / "small_protocol.json").read_text())[split]
    rows = protocol["rows"][:limit] if limit else protocol["rows"]
    frame = pd.read_parquet(DATA_DIR / protocol["file"]).iloc[rows]
    return frame["text"].tolist()


# --- workers (run in their own interpreter) ------------------------------------------------------------------------


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and of its children that have exited, such as fastai's DataLoader
    workers: on a shared machine it measures the work done, where wall-clock time also measures the neighbours."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(function):
    """Runs `function()`; returns its result, the wall-clock seconds and the CPU seconds it took."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    result = function()
    return result, time.perf_counter() - wall, cpu_seconds() - cpu


def fastai_worker(args) -> dict:
    import pandas as pd
    from fastai.text.all import AWD_LSTM, TensorText, TextDataLoaders, text_classifier_learner

    torch.set_num_threads(args.threads)
    work = Path(args.workdir)
    vocab = pickle.loads((work / "vocab.pkl").read_bytes())
    texts = json.loads((work / "texts.json").read_text())
    ids = json.loads((work / "ids.json").read_text())
    # A few labelled reviews only give the DataLoaders their transforms; the vocabulary is fixed.
    few = texts[:64]
    small = pd.DataFrame({"text": few, "label": [i % 2 for i in range(len(few))]})
    dls = TextDataLoaders.from_df(
        small, text_col="text", label_col="label", text_vocab=vocab, valid_pct=0.5, bs=args.batch_size, seed=0
    )
    torch.manual_seed(0)
    learn = text_classifier_learner(dls, AWD_LSTM, pretrained=False, drop_mult=0.5)
    if not (work / "fastai_classifier.pth").exists():
        torch.save(learn.model.state_dict(), work / "fastai_classifier.pth")
    learn.model.load_state_dict(torch.load(work / "fastai_classifier.pth", weights_only=True))
    with learn.no_bar(), learn.no_logging():
        learn.get_preds(dl=learn.dls.test_dl(texts[:16]))  # warm-up
        if args.mode == "end_to_end":
            probabilities, seconds, cpu = timed(
                lambda: learn.get_preds(dl=learn.dls.test_dl(texts, bs=args.batch_size))[0]
            )
        else:
            # rm_type_tfms=3 skips ColReader, Tokenizer and Numericalize: the items are ids already.
            dl = learn.dls.test_dl([TensorText(row) for row in ids], rm_type_tfms=3, bs=args.batch_size)
            probabilities, seconds, cpu = timed(lambda: learn.get_preds(dl=dl)[0])
            # get_preds returns the rows in the original order; the model's raw logits are wanted for comparison.
            learn.model.eval()
            with torch.no_grad():
                logits = torch.cat([learn.model(batch[0])[0] for batch in dl]).as_subclass(torch.Tensor)
            order = dl.get_idxs()
            unsorted = torch.empty(logits.shape)
            unsorted[torch.tensor(order)] = logits
            torch.save(unsorted, work / "fastai_logits.pt")
    return {"seconds": seconds, "cpu_seconds": cpu, "probabilities": probabilities.tolist()}


def tl_nlp_worker(args) -> dict:
    from transformers import TextClassificationPipeline, pipeline

    import tl_nlp  # noqa: F401  (registers the AWD-LSTM Auto classes, tokenizer and text-classification pipeline)

    torch.set_num_threads(args.threads)
    work = Path(args.workdir)
    texts = json.loads((work / "texts.json").read_text())
    # end_to_end_stock: transformers' own class, as `pipeline()` built it before tl_nlp registered its own.
    pipeline_class = TextClassificationPipeline if args.mode == "end_to_end_stock" else None
    classify = pipeline(
        "text-classification", model=str(work / "tl_nlp_classifier"), device=-1, pipeline_class=pipeline_class
    )
    model = classify.model
    classify(texts[:16], batch_size=args.batch_size)  # warm-up
    if args.mode in ("end_to_end", "end_to_end_stock"):
        # The reviews in their order; the answers come back in that order.
        predictions, seconds, cpu = timed(lambda: classify(texts, batch_size=args.batch_size, top_k=None))
        label_ids = model.config.label2id
        probabilities = [[0.0] * model.config.num_labels for _ in predictions]
        for row, prediction in zip(probabilities, predictions, strict=True):
            for entry in prediction:
                row[label_ids[entry["label"]]] = entry["score"]
        return {"seconds": seconds, "cpu_seconds": cpu, "probabilities": probabilities}
    ids = json.loads((work / "ids.json").read_text())
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]), reverse=True)
    logits = torch.empty(len(ids), model.config.num_labels)

    def classify_ids():
        with torch.inference_mode():
            for first in range(0, len(order), args.batch_size):
                rows = order[first : first + args.batch_size]
                width = len(ids[rows[0]])
                input_ids = torch.full((len(rows), width), model.config.pad_token_id)
                mask = torch.zeros(len(rows), width, dtype=torch.long)
                for index, row in enumerate(rows):
                    input_ids[index, : len(ids[row])] = torch.tensor(ids[row])
                    mask[index, : len(ids[row])] = 1
                logits[rows] = model(input_ids=input_ids, attention_mask=mask).logits

    _, seconds, cpu = timed(classify_ids)
    torch.save(logits, work / "tl_nlp_logits.pt")
    return {"seconds": seconds, "cpu_seconds": cpu, "probabilities": logits.softmax(-1).tolist()}


# --- driver --------------------------------------------------------------------------------------------------------


def prepare(args, work: Path) -> dict:
    """Vocabulary, texts and ids in `work`; returns facts about the data for the report."""
    from tl_nlp.data import train_ulmfit_tokenizer

    train_texts = read_protocol_texts("train_10k")
    texts = read_protocol_texts("test_5k", args.num_reviews)
    tokenizer = train_ulmfit_tokenizer(train_texts, vocab_size=args.vocab_size, min_frequency=3)
    vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    ids = tokenizer(texts)["input_ids"]
    (work / "vocab.pkl").write_bytes(pickle.dumps(vocab))
    (work / "texts.json").write_text(json.dumps(texts))
    (work / "ids.json").write_text(json.dumps(ids))
    lengths = sorted(len(row) for row in ids)
    return {
        "num_reviews": len(texts),
        "vocab_size": len(vocab),
        "tokens": sum(lengths),
        "median_tokens": lengths[len(lengths) // 2],
        "max_tokens": lengths[-1],
    }


def run_worker(python: str, impl: str, mode: str, args, work: Path) -> dict:
    command = [python, __file__, "--worker", impl, "--mode", mode, "--workdir", str(work)]
    command += ["--threads", str(args.threads), "--batch_size", str(args.batch_size)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT)
    if result.returncode != 0:
        raise RuntimeError(f"{impl} {mode} worker failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def driver(args) -> None:
    from tl_nlp import convert_fastai_checkpoint

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_inference_"))
    work.mkdir(parents=True, exist_ok=True)
    facts = prepare(args, work)
    print(f"data: {json.dumps(facts)}", flush=True)
    # The first fastai run writes the weights; convert them so both sides hold the same model.
    outputs = {}
    runs = END_TO_END_RUNS if args.skip_model_only else END_TO_END_RUNS + MODEL_ONLY_RUNS
    timings = {run: [] for run in runs}
    cpu_timings = {run: [] for run in runs}
    for round_index in range(args.rounds):
        for impl, mode in runs:
            if impl == "tl_nlp" and not (work / "tl_nlp_classifier").exists():
                # The first fastai run wrote its weights: convert them so both sides hold the same model.
                convert_fastai_checkpoint(
                    work / "fastai_classifier.pth",
                    work / "vocab.pkl",
                    work / "tl_nlp_classifier",
                    labels=["neg", "pos"],
                )
            python = args.fastai_python if impl == "fastai" else sys.executable
            result = run_worker(python, impl, mode, args, work)
            timings[(impl, mode)].append(result["seconds"])
            cpu_timings[(impl, mode)].append(result["cpu_seconds"])
            outputs[(impl, mode)] = torch.tensor(result["probabilities"])
            print(
                f"round {round_index + 1} {impl:7s} {mode:17s} {result['seconds']:8.2f} s "
                f"{facts['num_reviews'] / result['seconds']:7.2f} reviews/s   CPU {result['cpu_seconds']:8.2f} s "
                f"{facts['num_reviews'] / result['cpu_seconds']:7.2f} reviews/CPU-s   load average {os.getloadavg()[0]:.1f}",
                flush=True,
            )

    report = {"command": " ".join(sys.argv), "threads": args.threads, "batch_size": args.batch_size, **facts}
    report["load_average"] = os.getloadavg()
    comparisons = [("end_to_end", "end_to_end"), ("end_to_end_stock", "end_to_end")]
    if not args.skip_model_only:
        comparisons.append(("model_only", "model_only"))
    for ours_mode, fastai_mode in comparisons:
        fastai_s = statistics.median(timings[("fastai", fastai_mode)])
        ours_s = statistics.median(timings[("tl_nlp", ours_mode)])
        fastai_cpu = statistics.median(cpu_timings[("fastai", fastai_mode)])
        ours_cpu = statistics.median(cpu_timings[("tl_nlp", ours_mode)])
        ours_top = outputs[("tl_nlp", ours_mode)].argmax(-1)
        report[ours_mode] = {
            "fastai_reviews_per_s": facts["num_reviews"] / fastai_s,
            "tl_nlp_reviews_per_s": facts["num_reviews"] / ours_s,
            "speedup": fastai_s / ours_s,
            "fastai_reviews_per_cpu_s": facts["num_reviews"] / fastai_cpu,
            "tl_nlp_reviews_per_cpu_s": facts["num_reviews"] / ours_cpu,
            "cpu_speedup": fastai_cpu / ours_cpu,
            "fastai_seconds": timings[("fastai", fastai_mode)],
            "tl_nlp_seconds": timings[("tl_nlp", ours_mode)],
            "fastai_cpu_seconds": cpu_timings[("fastai", fastai_mode)],
            "tl_nlp_cpu_seconds": cpu_timings[("tl_nlp", ours_mode)],
            "prediction_agreement": float((outputs[("fastai", fastai_mode)].argmax(-1) == ours_top).float().mean()),
        }
    report["end_to_end_same_as_stock"] = float(
        (outputs[("tl_nlp", "end_to_end")] - outputs[("tl_nlp", "end_to_end_stock")]).abs().max()
    )
    if not args.skip_model_only:
        fastai_logits = torch.load(work / "fastai_logits.pt")
        ours_logits = torch.load(work / "tl_nlp_logits.pt")
        report["model_only"]["max_abs_logit_difference"] = float((fastai_logits - ours_logits).abs().max())
    print(json.dumps(report, indent=2))
    if args.output_json:
        Path(args.output_json).write_text(json.dumps(report, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", choices=["fastai", "tl_nlp"], help="internal: run one measurement")
    parser.add_argument("--mode", choices=MODES, default="end_to_end", help="internal")
    parser.add_argument("--workdir", default=None, help="folder for the vocabulary, weights and outputs")
    parser.add_argument("--fastai_python", default=str(REPO_ROOT / ".fastai-venv" / "bin" / "python"))
    parser.add_argument("--num_reviews", type=int, default=1000, help="first N rows of the test_5k protocol")
    parser.add_argument("--vocab_size", type=int, default=60000, help="at most (words seen 3+ times in train_10k)")
    parser.add_argument("--batch_size", type=int, default=64, help="fastai's default for test_dl")
    # One thread by default: on a shared machine, CPU time then counts work rather than threads waiting for each other.
    parser.add_argument("--threads", type=int, default=1, help="torch threads on both sides")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the median is reported")
    parser.add_argument("--skip_model_only", action="store_true", help="measure end to end only")
    parser.add_argument("--output_json", default=None)
    args = parser.parse_args()
    if args.worker == "fastai":
        print(json.dumps(fastai_worker(args)))
    elif args.worker == "tl_nlp":
        print(json.dumps(tl_nlp_worker(args)))
    else:
        driver(args)


if __name__ == "__main__":
    main()
