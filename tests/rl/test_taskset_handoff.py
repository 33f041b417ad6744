"""Task sets on disk are the only hand-off: train and eval refuse (or adopt) what the manifest says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import make_tasks, tiny_config, write_taskset

from memtrain.agent.loop import AgentConfig
from memtrain.cli import main
from memtrain.config import from_dict
from memtrain.errors import MemtrainError
from memtrain.recipes.train import train
from memtrain.rl.config import TrainConfig
from memtrain.tasks.taskset import agent_for, open_taskset


def four_chunk_set(folder: Path) -> Path:
    tasks = make_tasks(6)
    for t in tasks:
        t.chunks.append("A fourth chunk: the pivot could sit here.")
        t.imr.append([])
    return write_taskset(folder, tasks, chunk_tokens=64, max_chunks=4)


def test_fewer_chunks_than_the_task_set_is_an_error_naming_both(tmp_path):
    ts = open_taskset(four_chunk_set(tmp_path / "t4"))
    with pytest.raises(MemtrainError, match=r"agent\.max_chunks=3 .* up to 4 chunks .*max_chunks=4"):
        agent_for(AgentConfig(max_chunks=3), ts, "TrainConfig")
    over = {"data.tasks_dir": str(ts.path), "agent.max_chunks": 3}
    cfg = from_dict(TrainConfig, tiny_config(tmp_path, **over))
    with pytest.raises(MemtrainError, match="chunks would be dropped"):
        train(cfg)


def test_unset_budgets_are_adopted_and_a_different_chunk_size_refused(tmp_path):
    ts = open_taskset(four_chunk_set(tmp_path / "t4"))
    adopted = agent_for(AgentConfig(), ts, "EvalConfig")
    assert (adopted.chunk_tokens, adopted.max_chunks) == (64, None)  # None: every chunk is read
    assert agent_for(AgentConfig(max_chunks=4, chunk_tokens=64), ts, "x").max_chunks == 4
    with pytest.raises(MemtrainError, match=r"EvalConfig\.agent\.chunk_tokens=512 .*chunk_tokens=64"):
        agent_for(AgentConfig(chunk_tokens=512), ts, "EvalConfig")


def test_written_run_config_holds_the_adopted_budgets(tmp_path, parity_reward):
    cfg = from_dict(TrainConfig, tiny_config(tmp_path, steps=1, eval_docs=1))
    train(cfg)
    saved = json.loads((Path(cfg.out_dir) / "config.json").read_text())
    assert saved["agent"]["chunk_tokens"] == 64 and saved["data"]["tasks_dir"] == cfg.data.tasks_dir


def word_tokenizer(folder: Path) -> Path:
    """A real tokenizer of another vocabulary (word level), saved like a model's tokenizer.json."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate("the of and in a to is was".split())}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    folder.mkdir(parents=True)
    tok.save(str(folder / "tokenizer.json"))
    return folder


def test_task_set_of_another_tokenizer_is_refused_by_train_and_eval(tmp_path, capsys):
    tok = word_tokenizer(tmp_path / "wordtok")
    out = tmp_path / "e2e_word"
    assert main(["data", "build", "cpu", f"out={out}", f"tokenizer={tok}", "limit_pages=12", "num_tasks=4",
                 "e2e.min_mentions=1", "e2e.min_chunks=1", "progress=false"]) == 0
    capsys.readouterr()
    rc = main(["train", "cpu_memtrain", "model.name=tiny", f"data.tasks_dir={out}", "data.eval_size=1",
               f"out_dir={tmp_path / 'run'}", "log.progress=false"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert "model 'tiny' has tokenizer" in err and str(tok) in err  # names both tokenizers
    rc = main(["eval", "model=tiny", f"tasks_dir={out}", f"out={tmp_path / 'ev'}", "progress=false"])
    assert rc == 2 and "was chunked with tokenizer" in capsys.readouterr().err
    assert not (tmp_path / "run" / "checkpoint-1").exists()


def test_folder_without_manifest_or_unfinished_is_refused(tmp_path):
    from memtrain.tasks.taskset import read_manifest, write_manifest, write_tasks

    write_tasks(tmp_path / "loose", make_tasks(2))
    with pytest.raises(MemtrainError, match="no manifest.json"):
        open_taskset(tmp_path / "loose")
    folder = write_taskset(tmp_path / "half", make_tasks(2))
    m = read_manifest(folder)
    m.complete = False
    write_manifest(folder, m)
    with pytest.raises(MemtrainError, match="did not finish"):
        open_taskset(folder)
