"""Tokenizer speed and token agreement: tl_nlp's ULMFiT tokenizer against fastai's default tokenizer
(`SpacyTokenizer` on `spacy.blank("en")` + fastai's rules, through `tokenize_texts`), side by side on the IMDb
training reviews: a single batched `tokenizer(texts)` call against `tokenize_texts(texts, n_workers=...)`, in
interleaved rounds (medians reported); optionally also the work split over processes with
`datasets.map(num_proc=n_workers)`, as fastai splits it over `n_workers` processes. The machine may be shared: CPU seconds (all threads and worker processes) are reported next to
wall-clock seconds because they depend much less on what else runs.

    .venv/bin/python benchmarks/bench_tokenizer.py --data_dir ../shared/data --fastai_python .fastai-venv/bin/python --rounds 3

fastai runs in its own virtual environment, in a subprocess that reads the same reviews and times only its
tokenization; both sides use every core of the machine (fastai: `n_workers` processes; tl_nlp: the rules in one
Python thread, pipelined with the word splitting and id lookup on the Rust thread pool).
"""

import argparse
import difflib
import json
import os
import resource
import statistics
import subprocess
import tempfile
import time

import datasets
import pyarrow.parquet as pq

from tl_nlp.data import tokenize_for_language_model, train_ulmfit_tokenizer
from tl_nlp.data.rules import BOS_TOKEN, apply_rules

FASTAI_SCRIPT = r"""
import json, resource, sys, time
from fastai.text.all import tokenize_texts
def cpu_seconds():
    # This process plus its finished worker processes.
    return sum(resource.getrusage(who).ru_utime + resource.getrusage(who).ru_stime
               for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
texts_file, tokens_file, n_workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
texts = [json.loads(line) for line in open(texts_file, encoding="utf-8")]
start, start_cpu = time.perf_counter(), cpu_seconds()
tokens = tokenize_texts(texts, n_workers=n_workers)
seconds, cpu = time.perf_counter() - start, cpu_seconds() - start_cpu
with open(tokens_file, "w", encoding="utf-8") as handle:
    for row in tokens:
        handle.write(json.dumps(list(row)) + "\n")
print(json.dumps({"seconds": seconds, "cpu_seconds": cpu}))
"""


def _cpu_with_children() -> float:
    # This process's threads plus its finished child processes (datasets' worker pool).
    return sum(
        resource.getrusage(who).ru_utime + resource.getrusage(who).ru_stime
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )


def words_of(tokenizer, text: str) -> list[str]:
    """The tokens before the id lookup (so that out-of-vocabulary words can be compared with fastai's)."""
    pieces = tokenizer.backend_tokenizer.pre_tokenizer.pre_tokenize_str(apply_rules(text))
    return [BOS_TOKEN] + [piece for piece, _ in pieces]


def run_fastai(fastai_python: str, texts_file: str, tokens_file: str, n_workers: int) -> tuple[float, float]:
    """fastai's `tokenize_texts` in its own venv; returns (wall seconds, CPU seconds) timed inside the subprocess."""
    result = subprocess.run(
        [fastai_python, "-c", FASTAI_SCRIPT, texts_file, tokens_file, str(n_workers)],
        check=True,
        capture_output=True,
        text=True,
    )
    timing = json.loads(result.stdout.strip().splitlines()[-1])
    return timing["seconds"], timing["cpu_seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", default="../shared/data")
    parser.add_argument("--fastai_python", default=".fastai-venv/bin/python")
    parser.add_argument("--limit", type=int, default=None, help="first N reviews only (default: all 25,000)")
    parser.add_argument("--n_workers", type=int, default=os.cpu_count())
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (tl_nlp and fastai each once)")
    parser.add_argument(
        "--datasets_map", action="store_true", help="also time datasets.map(num_proc=n_workers) once (slower)"
    )
    parser.add_argument("--show_differences", type=int, default=0, help="print this many differing documents")
    args = parser.parse_args()

    texts = pq.read_table(os.path.join(args.data_dir, "imdb", "train.parquet"), columns=["text"])["text"].to_pylist()
    texts = texts[: args.limit] if args.limit else texts
    print(
        f"{len(texts)} IMDb training reviews, {sum(len(t) for t in texts) / 1e6:.1f}M characters, {os.cpu_count()} cores"
    )

    start = time.perf_counter()
    tokenizer = train_ulmfit_tokenizer(texts)
    print(f"tl_nlp: vocabulary of {len(tokenizer)} built in {time.perf_counter() - start:.1f}s")

    def run_ours() -> tuple[float, float]:
        start, start_cpu = time.perf_counter(), time.process_time()
        input_ids = tokenizer(texts)["input_ids"]
        # process_time counts every thread of this process (the Rust pool and the pipeline's worker included).
        seconds, cpu = time.perf_counter() - start, time.process_time() - start_cpu
        assert len(input_ids) == len(texts)
        return seconds, cpu

    with tempfile.TemporaryDirectory() as folder:
        texts_file, tokens_file = os.path.join(folder, "texts.jsonl"), os.path.join(folder, "tokens.jsonl")
        with open(texts_file, "w", encoding="utf-8") as handle:
            for text in texts:
                handle.write(json.dumps(text) + "\n")
        ours, theirs = [], []
        for round_index in range(args.rounds):
            # Alternate which side goes first, so that a change in the machine's load hits both sides alike.
            sides = [("tl_nlp", run_ours, ours), ("fastai", None, theirs)]
            for name, run, results in sides if round_index % 2 == 0 else sides[::-1]:
                load = os.getloadavg()[0]
                if run is None:
                    seconds, cpu = run_fastai(args.fastai_python, texts_file, tokens_file, args.n_workers)
                else:
                    seconds, cpu = run()
                results.append((seconds, cpu))
                print(
                    f"round {round_index + 1} {name}: {seconds:.1f}s wall, {cpu:.1f} CPU-s (load average {load:.1f})",
                    flush=True,
                )
        fastai_tokens = [json.loads(line) for line in open(tokens_file, encoding="utf-8")]

    ours_seconds, ours_cpu = (statistics.median(values) for values in zip(*ours, strict=True))
    fastai_seconds, fastai_cpu = (statistics.median(values) for values in zip(*theirs, strict=True))
    wall_ratios = [f"{their[0] / our[0]:.1f}x" for our, their in zip(ours, theirs, strict=True)]
    cpu_ratios = [f"{their[1] / our[1]:.1f}x" for our, their in zip(ours, theirs, strict=True)]
    print(
        f"tl_nlp median: {ours_seconds:.1f}s wall, {ours_cpu:.1f} CPU-s; fastai median: {fastai_seconds:.1f}s wall, "
        f"{fastai_cpu:.1f} CPU-s"
    )
    print(f"speed-up per round: wall {', '.join(wall_ratios)}; CPU {', '.join(cpu_ratios)}")
    print(
        f"speed-up of the medians: {fastai_seconds / ours_seconds:.1f}x wall clock, "
        f"{fastai_cpu / ours_cpu:.1f}x CPU time"
    )
    if args.datasets_map:
        # The same work split over processes the way a user tokenizes a corpus: datasets.map(num_proc=N).
        corpus = datasets.Dataset.from_dict({"text": texts})
        start, start_cpu = time.perf_counter(), _cpu_with_children()
        tokenize_for_language_model(corpus, tokenizer, num_proc=args.n_workers)
        mapped_seconds, mapped_cpu = time.perf_counter() - start, _cpu_with_children() - start_cpu
        print(
            f"tl_nlp: datasets.map(num_proc={args.n_workers}) -> ids in {mapped_seconds:.1f}s wall, "
            f"{mapped_cpu:.1f} CPU-s"
        )

    identical_documents = matched_tokens = fastai_total = 0
    shown = 0
    for text, theirs in zip(texts, fastai_tokens, strict=True):
        # fastai writes the space inside a whitespace token (`"\n\n "`) as `▁`: the same token, spelled otherwise.
        ours = [word.replace(" ", "▁") for word in words_of(tokenizer, text)]
        if ours == theirs:
            identical_documents += 1
            matched_tokens += len(theirs)
        else:
            matcher = difflib.SequenceMatcher(None, ours, theirs, autojunk=False)
            matched_tokens += sum(block.size for block in matcher.get_matching_blocks())
            if shown < args.show_differences:
                shown += 1
                for tag, i1, i2, j1, j2 in matcher.get_opcodes():
                    if tag != "equal":
                        print(f"  {tag}: ours {ours[i1:i2]!r} fastai {theirs[j1:j2]!r}")
        fastai_total += len(theirs)
    print(
        f"agreement: {identical_documents / len(texts):.1%} of documents tokenised identically, "
        f"{matched_tokens / fastai_total:.2%} of fastai's {fastai_total / 1e6:.2f}M tokens matched in order"
    )


if __name__ == "__main__":
    main()
