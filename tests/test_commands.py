"""The one CLI: every verb's ``--help`` is generated from its config dataclass; one override syntax."""

from __future__ import annotations

import pytest
import yaml

from memtrain.cli import VERBS, _load, main
from memtrain.config import describe, load_config, preset_names


@pytest.mark.parametrize("verb", list(VERBS))
def test_help_of_every_verb_shows_the_dataclass_defaults(verb, capsys):
    assert main([*verb.split(), "--help"]) == 0
    out = capsys.readouterr().out
    shown = {}
    for line in out.splitlines():
        if line.startswith("  ") and "=" in line and "  [" in line:
            key, _, rest = line.strip().partition("=")
            shown[key] = yaml.safe_load(rest.split("  [")[0])
    fields = describe(_load(VERBS[verb].config))
    assert fields and set(shown) == {name for name, *_ in fields}
    for name, _, default, _ in fields:
        assert shown[name] == default, name


def test_help_with_a_preset_shows_the_presets_values(capsys):
    assert main(["train", "cpu_memtrain", "--help"]) == 0
    out = capsys.readouterr().out
    assert "  steps=40  [int] (preset)" in out  # the preset's 40, not the dataclass's 300
    assert "  micro_batch_size=8  [int] (preset)" in out and "  ppo_epochs=1  [int] (preset)" in out
    assert "  optim.betas=[0.9, 0.999]  [list[float]]  " in out  # unset by the preset: the default
    assert main(["train", "no_such_preset", "--help"]) == 2


def test_help_describes_the_verb_asked_for_and_unknown_verbs_are_named(capsys):
    assert main(["model", "fetch", "--help"]) == 0
    out = capsys.readouterr().out
    assert "prepare the model cache" in out and "read one document with the memory agent" not in out
    assert main(["report", "--help"]) == 0
    assert "one table and one plot" in capsys.readouterr().out
    assert main(["bogus"]) == 2
    assert "unknown verb 'bogus'" in capsys.readouterr().err
    assert main(["trian", "cpu_memtrain"]) == 2
    assert "did you mean `memtrain train`?" in capsys.readouterr().err


def test_overrides_reach_nested_fields_and_bad_ones_are_named(capsys):
    from memtrain.rl.config import TrainConfig

    cfg = load_config(TrainConfig, "train", "cpu_memtrain", ["rollout.g1=3", "agent.max_chunks=2",
                                                            "optim.lr=2e-5"])
    assert (cfg.rollout.g1, cfg.agent.max_chunks, cfg.optim.lr) == (3, 2, 2e-5)
    assert cfg.rollout.g2 == 4  # untouched preset value
    assert main(["train", "cpu_memtrain", "rollout.temprature=1"]) == 2
    assert "unknown field 'temprature' (did you mean 'temperature'?)" in capsys.readouterr().err
    assert main(["train", "--steps", "2"]) == 2
    assert "key=value" in capsys.readouterr().err


def test_presets_inherit_with_base():
    from memtrain.recipes.build_tasks import BuildConfig

    train = load_config(BuildConfig, "data", "hotpotqa_cpu_train")
    held = load_config(BuildConfig, "data", "hotpotqa_cpu_eval")
    assert (held.longqa.split, held.longqa.n_docs) == ("eval", [5, 10, 20])
    assert held.out == "data/hotpotqa_cpu_eval"
    assert (held.longqa.split_seed, held.longqa.chunk_tokens) == (train.longqa.split_seed, 384)  # inherited


def test_a_missing_local_model_folder_is_named_not_looked_up_on_the_hub(tmp_path, monkeypatch):
    from memtrain.errors import MemtrainError
    from memtrain.models import load_tokenizer

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "cpu_memtrain").mkdir(parents=True)
    with pytest.raises(MemtrainError, match=r"'runs/nope': no such folder \(runs holds: cpu_memtrain\)"):
        load_tokenizer("runs/nope")
    with pytest.raises(MemtrainError, match="no such folder"):
        load_tokenizer("./checkpoints/final")


def test_every_task_folder_a_preset_reads_is_built_by_a_data_preset():
    from memtrain.recipes.build_tasks import BuildConfig
    from memtrain.recipes.evaluate import EvalConfig
    from memtrain.rl.config import TrainConfig

    built = {load_config(BuildConfig, "data", name).out for name in preset_names("data")}
    read = {(f"eval/{n}", load_config(EvalConfig, "eval", n).tasks_dir) for n in preset_names("eval")}
    for name in preset_names("train"):
        data = load_config(TrainConfig, "train", name).data
        read |= {(f"train/{name}", d) for d in (data.tasks_dir, data.eval_tasks_dir) if d}
    assert {(who, d) for who, d in read if d not in built} == set()
    # the micro evaluation reads with the budgets and prompts the micro task RL trains with
    ev, task = load_config(EvalConfig, "eval", "micro"), load_config(TrainConfig, "train", "micro_task_squad")
    assert ev.agent == task.agent
