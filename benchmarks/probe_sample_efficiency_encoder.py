"""Diagnostic for bench_sample_efficiency.py: how much sentiment the frozen encoders carry.

A logistic-regression probe on frozen, pooled (mean and max over the tokens) AWD-LSTM features: trained on `train_1k`,
scored on `clas_valid` (never on the test set), for the stage-1 LM (WikiText-2), the stage-2 LM (IMDb fine-tuned)
and the same architecture randomly initialised. If the pretrained encoders probe no better than the random one, the
language models are too weak for the classifiers to gain from them, whatever the fine-tuning recipe.

    .venv/bin/python benchmarks/probe_sample_efficiency_encoder.py --run_dir runs/sample_efficiency/cpu --max_tokens 80
"""

import argparse
import json
import sys
from pathlib import Path

import torch

from tl_nlp import AWDLSTMConfig, AWDLSTMModel, ULMFiTTokenizerFast, load_text_dataset

sys.path.insert(0, str(Path(__file__).parent))
from bench_sample_efficiency import protocol_rows  # noqa: E402  (the benchmark's fixed rows)


@torch.no_grad()
def features(model: AWDLSTMModel, tokenizer, texts: list[str], max_tokens: int) -> torch.Tensor:
    model.eval()
    pooled = []
    for start in range(0, len(texts), 64):
        batch = tokenizer(texts[start : start + 64], truncation=True, max_length=max_tokens, padding=True)
        ids, mask = torch.tensor(batch["input_ids"]), torch.tensor(batch["attention_mask"]).unsqueeze(-1).float()
        hidden = model(input_ids=ids).last_hidden_state
        mean = (hidden * mask).sum(1) / mask.sum(1)
        maximum = hidden.masked_fill(mask == 0, float("-inf")).max(1).values
        pooled.append(torch.cat([mean, maximum], dim=-1))
    return torch.cat(pooled)


def probe(train_x, train_y, valid_x, valid_y, l2: float = 1e-3) -> float:
    """Logistic regression (standardised features, LBFGS, small L2); returns the held-out accuracy."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    train_x, valid_x = (train_x - mean) / std, (valid_x - mean) / std
    linear = torch.nn.Linear(train_x.shape[1], 2)
    optimizer = torch.optim.LBFGS(linear.parameters(), max_iter=200)

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(linear(train_x), train_y) + l2 * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return float((linear(valid_x).argmax(-1) == valid_y).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run_dir", default="runs/sample_efficiency/cpu", help="A finished benchmark's output_dir.")
    parser.add_argument("--data_dir", default="../shared/data")
    parser.add_argument("--max_tokens", type=int, default=80, help="First tokens of each review (the preset's).")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    run, data = Path(args.run_dir), Path(args.data_dir)
    rows = protocol_rows(data)
    train = load_text_dataset(str(data / "imdb" / "train.parquet"))
    tokenizer = ULMFiTTokenizerFast.from_pretrained(run / "lm_imdb")
    sets = {key: train.select(rows[key]) for key in ("train_1k", "clas_valid")}
    labels = {key: torch.tensor(sets[key]["label"]) for key in sets}
    encoders = {
        "random init": AWDLSTMModel(AWDLSTMConfig.from_pretrained(run / "lm_imdb")),
        "stage 1 (WikiText-2)": AWDLSTMModel.from_pretrained(run / "lm_wikitext2"),
        "stage 2 (IMDb fine-tuned)": AWDLSTMModel.from_pretrained(run / "lm_imdb"),
    }
    results = {}
    for name, model in encoders.items():
        x = {key: features(model, tokenizer, sets[key]["text"], args.max_tokens) for key in sets}
        results[name] = probe(x["train_1k"], labels["train_1k"], x["clas_valid"], labels["clas_valid"])
        print(f"{name:28s} clas_valid accuracy of a linear probe trained on train_1k: {results[name]:.3f}", flush=True)
    (run / "probe.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
