"""The helpers of benchmarks/bench_sample_efficiency.py: which IMDb rows each run uses, how its arguments and
copied language models are checked."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from tl_nlp import AWDLSTMConfig, load_text_dataset
from tl_nlp.reference_data import NO_REFERENCE_DATA, find_reference_data

DATA = find_reference_data(("imdb",))
SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_sample_efficiency.py"


def load_benchmark():
    spec = importlib.util.spec_from_file_location("bench_sample_efficiency", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(DATA is None, reason=NO_REFERENCE_DATA)
def test_protocol_rows_are_fixed_balanced_and_nested():
    bench = load_benchmark()
    rows = bench.protocol_rows(DATA)
    labels = load_text_dataset(str(DATA / "imdb" / "train.parquet"))["label"]
    # train_100: the first 50 reviews of each class of train_1k, in protocol order.
    train_1k = rows["train_1k"]
    expected = [r for r in train_1k if labels[r] == 0][:50] + [r for r in train_1k if labels[r] == 1][:50]
    assert rows["train_100"] == expected
    assert set(rows["train_100"]) <= set(train_1k) <= set(rows["train_10k"])
    for key, size in (("train_100", 100), ("train_1k", 1_000), ("train_10k", 10_000)):
        assert len(rows[key]) == size
        assert sum(labels[r] for r in rows[key]) == size // 2
    assert not set(rows["clas_valid"]) & set(rows["train_10k"])
    assert len(rows["test_5k"]) == 5_000
    assert [bench.labelled_subset(n) for n in (100, 1_000, 10_000)] == ["train_100", "train_1k", "train_10k"]


def test_arguments_name_the_bad_field():
    bench = load_benchmark()
    with pytest.raises(ValueError, match="--preset must be one of"):
        bench.SampleEfficiencyArguments(preset="huge")
    with pytest.raises(ValueError, match="--implementations"):
        bench.SampleEfficiencyArguments(implementations=["bert"])
    args = bench.SampleEfficiencyArguments(preset="tiny")
    assert args.output_dir == "runs/sample_efficiency/tiny"
    for preset in bench.PRESETS.values():
        assert len(preset["label_counts"]) == len(preset["classifier_epochs"])


def test_grids_and_fastai_like_arguments_are_checked():
    bench = load_benchmark()
    args = bench.SampleEfficiencyArguments()
    # fastai's fit_one_cycle does not clip gradients and restarts its schedule at each unfreezing stage.
    assert args.max_grad_norm == 0.0 and args.stlr_per_stage
    assert args.grid_labels in args.sizes["label_counts"]
    # Both classifiers get a rate x dropout grid; one value of each is no grid.
    assert args.grid("ulmfit") == [(1e-2, 1.0), (3e-3, 1.0), (1e-2, 0.5), (3e-3, 0.5)]
    single = bench.SampleEfficiencyArguments(scratch_learning_rates=[3e-3], scratch_dropout_multipliers=[0.2])
    assert single.grid("scratch") == [(3e-3, 0.2)]
    for kind in ("ulmfit", "scratch"):
        with pytest.raises(ValueError, match=f"--{kind}_learning_rates"):
            bench.SampleEfficiencyArguments(**{f"{kind}_learning_rates": [1e-2, 0.0]})
        with pytest.raises(ValueError, match=f"--{kind}_dropout_multipliers"):
            bench.SampleEfficiencyArguments(**{f"{kind}_dropout_multipliers": [2.5]})
    with pytest.raises(ValueError, match="--grid_labels"):
        bench.SampleEfficiencyArguments(grid_labels=500)
    # A fastai-only process runs no grid, so it must be told the setting rather than silently take the first.
    with pytest.raises(ValueError, match="runs no grid: give one --ulmfit_learning_rates"):
        bench.SampleEfficiencyArguments(tl_nlp_classifiers=False, implementations=["ulmfit"])
    fastai_only = bench.SampleEfficiencyArguments(
        tl_nlp_classifiers=False,
        implementations=["ulmfit"],
        ulmfit_learning_rates=[1e-2],
        ulmfit_dropout_multipliers=[0.5],
    )
    assert fastai_only.grid("ulmfit") == [(1e-2, 0.5)]
    with pytest.raises(ValueError, match="--max_grad_norm"):
        bench.SampleEfficiencyArguments(max_grad_norm=-1.0)
    with pytest.raises(ValueError, match="--language_models_from"):
        bench.SampleEfficiencyArguments(language_models_from="no/such/folder")


def test_language_model_stage_options_are_checked(tmp_path):
    bench = load_benchmark()
    with pytest.raises(ValueError, match="--finetune_reviews"):
        bench.SampleEfficiencyArguments(finetune_reviews=-1)
    with pytest.raises(ValueError, match="--stage1_from"):
        bench.SampleEfficiencyArguments(stage1_from=str(tmp_path))
    (tmp_path / "model.safetensors").write_bytes(b"")
    for name in ("lm_wikitext2", "lm_imdb"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.safetensors").write_bytes(b"")
    assert bench.SampleEfficiencyArguments(stage1_from=str(tmp_path)).stage1_from == str(tmp_path)
    with pytest.raises(ValueError, match="not both"):
        bench.SampleEfficiencyArguments(stage1_from=str(tmp_path), language_models_from=str(tmp_path))
    # Stage-2 options would be silently ignored for copied stages: refused, each named.
    with pytest.raises(ValueError, match="--finetune_reviews, --finetune_learning_rate set how .* not both"):
        bench.SampleEfficiencyArguments(
            finetune_reviews=6000, finetune_learning_rate=5e-3, language_models_from=str(tmp_path)
        )
    with pytest.raises(ValueError, match="--finetune_learning_rate > 0, got 0 and 0.0"):
        bench.SampleEfficiencyArguments(finetune_learning_rate=0.0)
    # What is recorded with the stages (and must match when they are reused): only the options given.
    assert bench.SampleEfficiencyArguments().stage_two_options == {}
    given = bench.SampleEfficiencyArguments(stage1_from=str(tmp_path), finetune_reviews=6000)
    assert given.stage_two_options == {"stage1_from": str(tmp_path), "finetune_reviews": 6000}
    with pytest.raises(ValueError, match="--ulmfit_without takes gradual_unfreezing and/or discriminative_lr"):
        bench.SampleEfficiencyArguments(ulmfit_without=["stlr"])
    # The ablations are ours only: fastai would train a whole ULMFiT classifier next to them.
    python = tmp_path / "python"
    python.write_text("")
    with pytest.raises(ValueError, match="no fastai counterpart"):
        bench.SampleEfficiencyArguments(ulmfit_without=["gradual_unfreezing"], fastai_python=str(python))


def test_copied_language_models_are_never_rewritten(tmp_path):
    """Two processes on one --output_dir: the second must not rewrite weights the first has memory-mapped."""
    bench = load_benchmark()
    source, other = tmp_path / "source", tmp_path / "other"
    for folder, weights in ((source, b"weights"), (other, b"other weights")):
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(weights)
        (folder / "config.json").write_text("{}")
    destination = tmp_path / "out" / "lm_imdb"
    destination.parent.mkdir()
    bench.copy_folder_once(source, destination)
    assert (destination / "model.safetensors").read_bytes() == b"weights"
    inode = (destination / "model.safetensors").stat().st_ino
    bench.copy_folder_once(source, destination)
    assert (destination / "model.safetensors").stat().st_ino == inode
    assert [path.name for path in destination.parent.iterdir()] == ["lm_imdb"]  # no staging folder left behind
    with pytest.raises(SystemExit, match="lm_imdb exists and its model.safetensors is not"):
        bench.copy_folder_once(other, destination)


def test_copied_language_models_must_have_the_preset_sizes(tmp_path):
    bench = load_benchmark()
    args = bench.SampleEfficiencyArguments(preset="tiny")
    sizes = {key: args.sizes[key] for key in ("vocab_size", "embedding_size", "hidden_size", "num_hidden_layers")}
    AWDLSTMConfig(**sizes).save_pretrained(tmp_path / "good")
    bench.check_preset_sizes(tmp_path / "good", args, "--stage1_from")
    AWDLSTMConfig(**{**sizes, "hidden_size": sizes["hidden_size"] + 1}).save_pretrained(tmp_path / "bad")
    with pytest.raises(
        SystemExit, match=r"bad/config.json: hidden_size is \d+, the preset 'tiny' has .*--stage1_from"
    ):
        bench.check_preset_sizes(tmp_path / "bad", args, "--stage1_from")


def test_classifiers_are_the_recipes_with_the_protocols_techniques(tmp_path):
    bench = load_benchmark()
    """The protocol trains the recipe's classifier stage: `ClassifierTrainingArguments` (its defaults: decay 2.6,
    weight decay 0.01, the learning rate given), with the techniques each classifier of the protocol takes."""
    from tl_nlp.recipe import ClassifierTrainingArguments
    from tl_nlp.training.arguments import MODEL_FAMILY_DEFAULTS

    args = bench.SampleEfficiencyArguments(preset="tiny", output_dir=str(tmp_path))
    kind, ulmfit = bench.classifier_arguments(args, "ulmfit", "100", 4, 1e-2)
    assert kind == "ulmfit" and isinstance(ulmfit, ClassifierTrainingArguments)
    assert ulmfit.gradual_unfreezing and ulmfit.unfreeze_at_fractions == [0.1, 0.2, 0.3, 0.4] and ulmfit.stlr_per_stage
    # Decay and weight decay are left to the family defaults, which are fastai's for AWD-LSTM: 2.6 and 0.01.
    assert ulmfit.discriminative_lr_decay is None and ulmfit.weight_decay is None and ulmfit.learning_rate == 1e-2
    assert MODEL_FAMILY_DEFAULTS["awd_lstm"]["discriminative_lr_decay"] == 2.6
    assert MODEL_FAMILY_DEFAULTS["awd_lstm"]["weight_decay"] == 0.01
    assert ulmfit.max_grad_norm == 0.0 and ulmfit.per_device_train_batch_size == bench.PRESETS["tiny"]["batch_size"]
    kind, scratch = bench.classifier_arguments(args, "scratch", "100", 4, 3e-3)
    assert kind == "scratch" and not scratch.gradual_unfreezing and scratch.discriminative_lr_decay == 1.0
    ablated = bench.SampleEfficiencyArguments(preset="tiny", ulmfit_without=["discriminative_lr"])
    kind, without = bench.classifier_arguments(ablated, "ulmfit", "100", 4, 1e-2)
    assert kind == "ulmfit_without_discriminative_lr" and without.gradual_unfreezing
    assert without.discriminative_lr_decay == 1.0
    both = bench.SampleEfficiencyArguments(preset="tiny", ulmfit_without=list(bench.ABLATIONS))
    assert bench.classifier_arguments(both, "ulmfit", "100", 4, 1e-2)[0] == "lm_init"


def test_the_scratch_classifier_starts_from_a_random_model_of_stage_twos_sizes(tmp_path):
    bench = load_benchmark()
    from tl_nlp import AWDLSTMForCausalLM, train_ulmfit_tokenizer

    tokenizer = train_ulmfit_tokenizer(["a tiny corpus of words", "and more words"], min_frequency=1)
    stage2 = tmp_path / "lm_imdb"
    config = AWDLSTMConfig(vocab_size=len(tokenizer), embedding_size=8, hidden_size=12, num_hidden_layers=2)
    trained = AWDLSTMForCausalLM(config)
    trained.save_pretrained(stage2)
    tokenizer.save_pretrained(stage2)
    folder = bench.save_random_language_model(stage2, tmp_path / "random_init", seed=0)
    random_model = AWDLSTMForCausalLM.from_pretrained(folder)
    assert random_model.config.hidden_size == 12 and (folder / "tokenizer.json").is_file()
    assert not torch.equal(random_model.get_input_embeddings().weight, trained.get_input_embeddings().weight)
