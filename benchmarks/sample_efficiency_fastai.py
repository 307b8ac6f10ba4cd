"""fastai side of `bench_sample_efficiency.py`: one IMDb classifier with fastai 2.8's own ULMFiT API.

Run by the benchmark in the fastai venv, one subprocess per classifier, with a JSON job as its only argument; prints
one JSON line (accuracies, seconds, tokens/s). It reads the token ids, labels and (for `ulmfit`) the stage-2 encoder
weights that the benchmark wrote as plain `.npz` arrays (no pickles), so both implementations see the same
vocabulary, reviews and pretrained weights.

- `ulmfit`: `get_text_classifier(AWD_LSTM, ...)` (what `text_classifier_learner` builds), the encoder loaded from
  our stage-2 LM, `TextLearner` (AR/TAR, state reset), fastai's gradual unfreezing: `freeze_to(-1)`, `freeze_to(-2)`,
  ... `unfreeze()`, each stage one `fit_one_cycle` with discriminative rates `slice(lr / 2.6**4, lr)`, the stages
  splitting the run's examples at the same fractions as the tl_nlp classifier.
- `scratch`: the same model, random initialisation, `unfreeze()`, one `fit_one_cycle(epochs, lr)`.

It imports only fastai, torch and numpy: it runs without tl_nlp.
"""

import json
import sys
import time
from functools import partial

import numpy as np
import torch
from fastai.text.all import (
    AWD_LSTM,
    CrossEntropyLossFlat,
    DataLoaders,
    SortedDL,
    TextLearner,
    awd_lstm_clas_split,
    get_text_classifier,
    pad_input_chunk,
    set_seed,
)


def split_examples(arrays: dict, split: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    ids, offsets, labels = arrays[f"{split}_ids"], arrays[f"{split}_offsets"], arrays[f"{split}_labels"]
    return [
        (torch.from_numpy(ids[offsets[i] : offsets[i + 1]].copy()), torch.tensor(int(labels[i])))
        for i in range(len(labels))
    ]


DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def sorted_loader(examples, batch_size: int, shuffle: bool, config: dict) -> SortedDL:
    return SortedDL(
        examples,
        res=[len(x) for x, _ in examples],
        bs=batch_size,
        shuffle=shuffle,
        device=DEVICE,
        # BatchNorm in the head cannot train on a batch of one.
        drop_last=shuffle and len(examples) % batch_size == 1,
        before_batch=partial(
            pad_input_chunk, pad_idx=config["pad_token_id"], pad_first=True, seq_len=config["bptt_chunk_length"]
        ),
    )


def load_encoder(model, path: str) -> None:
    """Our encoder tensors (`awd_lstm.*`) into fastai's AWD_LSTM names (see tl_nlp.convert_fastai for the reverse)."""
    ours = np.load(path, allow_pickle=False)
    theirs = {}
    embeddings = torch.from_numpy(ours["awd_lstm.embeddings.weight"])
    theirs["encoder.weight"] = embeddings
    theirs["encoder_dp.emb.weight"] = embeddings
    index = 0
    while f"awd_lstm.layers.{index}.weight_ih" in ours:
        prefix = f"awd_lstm.layers.{index}."
        theirs[f"rnns.{index}.weight_hh_l0_raw"] = torch.from_numpy(ours[prefix + "weight_hh"])
        for name in ("weight_ih", "bias_ih", "bias_hh"):
            theirs[f"rnns.{index}.module.{name}_l0"] = torch.from_numpy(ours[prefix + name])
        index += 1
    encoder = model[0].module
    missing, unexpected = encoder.load_state_dict(theirs, strict=False)
    if missing or unexpected:
        raise ValueError(f"encoder weights do not fit fastai's AWD_LSTM: missing {missing}, unexpected {unexpected}")


def main() -> None:
    job = json.loads(sys.argv[1])
    torch.set_num_threads(job["threads"])
    set_seed(job["seed"])
    config = job["config"]
    arrays = dict(np.load(job["data"], allow_pickle=False))
    train, test, valid = (split_examples(arrays, split) for split in ("train", "test", "valid"))
    batch_size, lr, epochs = job["batch_size"], job["learning_rate"], job["epochs"]
    multiplier = config["dropout_multiplier"]
    encoder_config = dict(
        emb_sz=config["embedding_size"],
        n_hid=config["hidden_size"],
        n_layers=config["num_hidden_layers"],
        pad_token=config["pad_token_id"],
        input_p=config["input_dropout"],
        hidden_p=config["hidden_dropout"],
        embed_p=config["embedding_dropout"],
        weight_p=config["weight_dropout"],
        output_p=config["classifier_dropouts"][0],
    )
    model = get_text_classifier(
        AWD_LSTM,
        config["vocab_size"],
        2,
        seq_len=config["bptt_chunk_length"],
        config=encoder_config,
        drop_mult=multiplier,
        lin_ftrs=config["classifier_hidden_sizes"],
        ps=config["classifier_dropouts"][1:],
        pad_idx=config["pad_token_id"],
    )
    if job["classifier"] == "ulmfit":
        load_encoder(model, job["encoder"])
    model.to(DEVICE)
    test_loader = sorted_loader(test, 128, False, config)
    valid_loader = sorted_loader(valid, 128, False, config)
    learn = TextLearner(
        DataLoaders(sorted_loader(train, batch_size, True, config), valid_loader),
        model,
        loss_func=CrossEntropyLossFlat(),
        splitter=awd_lstm_clas_split,
        wd=0.01,
    )
    rng = np.random.default_rng(job["seed"])
    seen_tokens = 0
    start = time.perf_counter()
    with learn.no_bar(), learn.no_logging():
        if job["classifier"] == "ulmfit":
            # The run's examples, epoch after epoch, cut into stages at the tl_nlp classifier's unfreezing fractions.
            order = np.concatenate([rng.permutation(len(train)) for _ in range(epochs)])
            bounds = [round(f * len(order)) for f in [0.0, *job["unfreeze_at_fractions"], 1.0]]
            group_count = len(awd_lstm_clas_split(model))
            for stage, (begin, end) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
                examples = [train[i] for i in order[begin:end]]
                learn.dls = DataLoaders(sorted_loader(examples, batch_size, True, config), valid_loader)
                if stage + 1 < group_count:
                    learn.freeze_to(-(stage + 1))
                else:
                    learn.unfreeze()
                learn.fit_one_cycle(1, slice(lr / 2.6 ** (group_count - 1), lr))
                seen_tokens += sum(len(x) for x, _ in examples)
        else:
            learn.unfreeze()
            learn.fit_one_cycle(epochs, lr)
            seen_tokens = epochs * sum(len(x) for x, _ in train)
    train_seconds = time.perf_counter() - start

    def accuracy(loader) -> float:
        predictions, targets = learn.get_preds(dl=loader)
        return float((predictions.argmax(-1) == targets).float().mean())

    with learn.no_bar(), learn.no_logging():
        start = time.perf_counter()
        test_accuracy = accuracy(test_loader)
        test_seconds = time.perf_counter() - start
        valid_accuracy = accuracy(valid_loader)
    print(
        json.dumps(
            {
                "implementation": "fastai",
                "classifier": job["classifier"],
                "labels": job["labels"],
                "epochs": epochs,
                "test_accuracy": test_accuracy,
                "valid_accuracy": valid_accuracy,
                "train_seconds": train_seconds,
                "train_tokens_per_s": seen_tokens / train_seconds,
                "test_seconds": test_seconds,
                "test_tokens_per_s": sum(len(x) for x, _ in test) / test_seconds,
            }
        )
    )


if __name__ == "__main__":
    main()
