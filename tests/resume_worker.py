"""A tiny training run for the fault tests: `python resume_worker.py OUT KIND [--kill_at STEP --signal NAME]`.

KIND is `lm` (AWD-LSTM language model on streams with variable BPTT, the state carried between windows) or
`classifier` (AWD-LSTM classifier with sortish batches, dropout and gradual unfreezing). The run checkpoints every
2 steps into OUT/run. With `--kill_at`, the process sends itself the signal when step STEP begins (mid-epoch, after
the checkpoint of an earlier step). Without it, the run resumes from OUT/run's last complete checkpoint (if any),
trains to the end, then trains the same run uninterrupted in OUT/reference, and writes the largest weight
difference between the two to OUT/result.json.
"""

import argparse
import json
import os
import signal
import sys

import torch
from transformers import DataCollatorWithPadding, PreTrainedTokenizerFast, TrainerCallback

sys.path.insert(0, os.path.dirname(__file__))
from ulmfit_tiny_models import language_model_dataset, snapshot, tiny_awd_lstm_classifier, tiny_awd_lstm_lm  # noqa: E402

from tl_nlp import ULMFiTTrainingArguments  # noqa: E402
from tl_nlp.data.lm_data import LanguageModelStreams  # noqa: E402
from tl_nlp.training.classification_trainer import ClassificationTrainer  # noqa: E402
from tl_nlp.training.lm_trainer import LanguageModelTrainer  # noqa: E402
from tl_nlp.training.output_folders import OutputFolderLock, prepare_output_folder  # noqa: E402


class KillAtStep(TrainerCallback):
    def __init__(self, step: int, signal_number: int):
        self.step, self.signal_number = step, signal_number

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step + 1 == self.step:
            os.kill(os.getpid(), self.signal_number)


def classification_data():
    from datasets import Dataset
    from tokenizers import Tokenizer, models

    generator = torch.Generator().manual_seed(0)
    rows = [
        torch.randint(2, 64, (int(torch.randint(3, 15, (1,), generator=generator)),), generator=generator).tolist()
        for _ in range(40)
    ]
    dataset = Dataset.from_dict(
        {"input_ids": rows, "attention_mask": [[1] * len(r) for r in rows], "length": [len(r) for r in rows],
         "labels": [int(5 in r) for r in rows]}
    )  # fmt: skip
    backend = Tokenizer(models.WordLevel({"[UNK]": 0, "[PAD]": 1}, unk_token="[UNK]"))
    return dataset, DataCollatorWithPadding(PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]"))


def trainer(kind: str, output_dir: str, callbacks: list):
    torch.manual_seed(0)
    common = dict(output_dir=output_dir, num_train_epochs=3, learning_rate=1e-2, save_strategy="steps", save_steps=2,
                  report_to=[], disable_tqdm=True, dataset_name="tiny")  # fmt: skip
    if kind == "lm":
        streams = LanguageModelStreams.from_dataset(language_model_dataset(16, 12), batch_size=2, bptt=5,
                                                    variable_bptt=True)  # fmt: skip
        args = ULMFiTTrainingArguments(**common, gradual_unfreezing=False)
        return LanguageModelTrainer(model=tiny_awd_lstm_lm(), args=args, train_dataset=streams, callbacks=callbacks)
    dataset, collator = classification_data()
    args = ULMFiTTrainingArguments(**common, per_device_train_batch_size=4, unfreeze_every_n_steps=7)
    return ClassificationTrainer(
        model=tiny_awd_lstm_classifier(), args=args, train_dataset=dataset, data_collator=collator, callbacks=callbacks
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("kind", choices=["lm", "classifier"])
    parser.add_argument("--kill_at", type=int)
    parser.add_argument("--signal", default="SIGKILL")
    options = parser.parse_args()
    torch.set_num_threads(1)
    run_dir = os.path.join(options.out, "run")
    if options.kill_at is not None:
        with OutputFolderLock(run_dir):
            prepare_output_folder(run_dir)
            kill = KillAtStep(options.kill_at, getattr(signal, options.signal))
            trainer(options.kind, run_dir, [kill]).train()
        return
    with OutputFolderLock(run_dir):
        checkpoint = prepare_output_folder(run_dir, resume_from_checkpoint="last")
        resumed = trainer(options.kind, run_dir, [])
        resumed.train(resume_from_checkpoint=checkpoint)
    reference = trainer(options.kind, os.path.join(options.out, "reference"), [])
    reference.train()
    got, expected = snapshot(resumed.model), snapshot(reference.model)
    difference = max((got[name] - expected[name]).abs().max().item() for name in expected)
    result = {"checkpoint": checkpoint, "max_difference": difference, "steps": resumed.state.global_step,
              "reference_steps": reference.state.global_step}  # fmt: skip
    with open(os.path.join(options.out, "result.json"), "w") as handle:
        json.dump(result, handle)


if __name__ == "__main__":
    main()
