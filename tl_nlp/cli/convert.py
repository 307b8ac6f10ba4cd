"""`tl-nlp convert-fastai`: a fastai AWD-LSTM checkpoint (weights `.pth` + vocabulary `.pkl`) as a folder that
transformers' Auto classes and `pipeline()` load (`tl_nlp.convert_fastai.convert_fastai_checkpoint`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..convert_fastai import FASTAI_BPTT, FASTAI_MAX_LEN, convert_fastai_checkpoint


@dataclass
class ConvertFastaiArguments:
    """Convert a fastai AWD-LSTM language model or classifier (weights .pth + vocabulary .pkl) into a folder that
    loads with transformers' Auto classes and pipeline()."""

    weights: str = field(metadata={"help": "The .pth from learn.save or torch.save(model.state_dict())."})
    vocab: str = field(metadata={"help": "The pickled vocabulary, a list of strings (read without running code)."})
    output_dir: str = field(metadata={"help": "Folder to write the converted model and tokenizer to."})
    labels: list[str] | None = field(
        default=None, metadata={"help": "Class names of a classifier, in fastai's order."}
    )
    backwards: bool = field(default=False, metadata={"help": "The model reads text backwards."})
    bptt: int = field(default=FASTAI_BPTT, metadata={"help": "fastai's seq_len for the classifier (>= 1)."})
    max_len: int = field(default=FASTAI_MAX_LEN, metadata={"help": "fastai's max_len for the classifier (>= 1)."})

    def __post_init__(self):
        for name in ("bptt", "max_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


def run_convert_fastai(arguments: ConvertFastaiArguments) -> None:
    """Converts the checkpoint; a bad input file raises `ValueError` naming it."""
    model = convert_fastai_checkpoint(
        arguments.weights,
        arguments.vocab,
        arguments.output_dir,
        labels=arguments.labels,
        backwards=arguments.backwards,
        bptt=arguments.bptt,
        max_len=arguments.max_len,
    )
    print(
        f"wrote {type(model).__name__} ({model.num_parameters():,} parameters) and its tokenizer to "
        f"{arguments.output_dir}"
    )
