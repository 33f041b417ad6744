"""The headline experiment driver: resolved configs per arm, a tiny end-to-end run of arms A and C, report."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "experiments"))

import headline  # noqa: E402


@pytest.fixture(scope="module")
def exp():
    return headline.load_experiment("cpu")


def _stages(resolved):
    return {(s["kind"], s["owner"]): s for s in resolved["stages"]}


def test_dry_run_resolves_every_arm(exp, tmp_path, capsys):
    for arm in headline.ARMS:
        rc = headline.main(["run", "--arm", arm, "--seed", "3", "--dry-run", "--runs-dir", str(tmp_path)])
        assert rc == 0
        out = capsys.readouterr().out
        n_stages = len(headline.STAGES[arm])
        assert sum(ln.startswith("memtrain train ") for ln in out.splitlines()) == n_stages
        assert sum(ln.startswith("memtrain eval ") for ln in out.splitlines()) == 1
        assert sum(ln.startswith("memtrain data build ") for ln in out.splitlines()) == len(
            headline.needed_sets(exp, arm))
        assert "# eval:" in out
    assert not any(tmp_path.iterdir())  # a dry run writes nothing


def test_dry_run_commands_load_exactly_the_resolved_configs(exp, tmp_path):
    """Each printed ``memtrain <verb> [PRESET] key=value ...`` line gives back the config the driver runs."""
    import shlex

    from memtrain.config import load_config, to_dict
    from memtrain.recipes.build_tasks import BuildConfig
    from memtrain.recipes.evaluate import EvalConfig
    from memtrain.rl.config import TrainConfig

    r = headline.resolve(exp, "D", 3, tmp_path)
    items = [(d["command"], d["config"], BuildConfig, "data", 3) for d in r["data"].values()]
    items += [(st["command"], st["config"], TrainConfig, "train", 2) for st in r["stages"]]
    items += [(r["eval"]["longqa"]["command"], r["eval"]["longqa"]["config"], EvalConfig, "eval", 2)]
    assert len(items) == 3 + 2 + 1
    for line, config, cls, recipe, n_verb in items:
        words = shlex.split(line)[n_verb:]
        preset = words[0] if words and "=" not in words[0] else None
        overrides = words[1:] if preset else words
        assert preset is not None  # every section starts from a packaged preset
        assert json.loads(json.dumps(to_dict(load_config(cls, recipe, preset, overrides)))) == \
            json.loads(json.dumps(config)), line


def test_arm_configs_differ_only_in_the_stage_under_test(exp, tmp_path):
    r = {arm: headline.resolve(exp, arm, 3, tmp_path) for arm in headline.ARMS}
    assert r["A"]["stages"] == [] and r["A"]["eval"]["model"] == exp.model
    b = _stages(r["B"])[("memtrain", "B")]["config"]
    d = _stages(r["D"])
    # D reuses B's MemTrain stage (same config, same folder) and starts task RL from B's final model
    assert d[("memtrain", "B")]["config"] == b and d[("memtrain", "B")]["reused"]
    b_final = tmp_path / "cpu" / "B" / "seed3" / "memtrain" / "final"
    assert d[("task", "D")]["config"]["model"]["init_from"] == str(b_final)
    assert r["D"]["eval"]["model"] == str(tmp_path / "cpu" / "D" / "seed3" / "task" / "final")
    # E: MemTrain without IMR, everything else as B's stage
    e = _stages(r["E"])
    e_mem = e[("memtrain", "E")]["config"]
    assert e_mem["rollout"]["imr"] is False and b["rollout"]["imr"] is True
    strip = ("out_dir",)
    assert ({k: v for k, v in e_mem.items() if k not in strip} | {"rollout": None}
            == {k: v for k, v in b.items() if k not in strip} | {"rollout": None})
    assert e[("task", "E")]["config"]["model"]["init_from"].endswith("E/seed3/memtrain/final")
    # F: IMR still trained in its own groups, but λ = 0 keeps its reward out of the E2E reward
    f = _stages(r["F"])
    f_mem = f[("memtrain", "F")]["config"]
    assert f_mem["rollout"]["imr"] is True and f_mem["rollout"]["lambda_imr"] == 0.0
    assert b["rollout"]["lambda_imr"] > 0
    assert ({k: v for k, v in f_mem.items() if k not in strip} | {"rollout": None}
            == {k: v for k, v in b.items() if k not in strip} | {"rollout": None})
    assert f[("task", "F")]["config"]["model"]["init_from"].endswith("F/seed3/memtrain/final")
    # C and D: identical task RL (settings and budget) except the starting model and the run folder
    c_task = _stages(r["C"])[("task", "C")]["config"]
    d_task = d[("task", "D")]["config"]
    assert c_task["model"]["init_from"] is None

    def same(cfg):
        return {**cfg, "out_dir": None, "model": {**cfg["model"], "init_from": None}}

    assert (same(c_task) == same(d_task) == same(e[("task", "E")]["config"])
            == same(f[("task", "F")]["config"]))
    assert c_task["steps"] == exp.task.steps and c_task["batch_size"] == d_task["batch_size"]
    # the task set is the train side of the evaluation's split, whatever the training seed
    data = r["C"]["data"]
    assert c_task["data"]["tasks_dir"] == data["task_train"]["config"]["out"] and c_task["seed"] == 3
    assert c_task["data"]["eval_tasks_dir"] == data["task_eval"]["config"]["out"]
    train_lq, eval_lq = data["task_train"]["config"]["longqa"], data["task_eval"]["config"]["longqa"]
    assert (train_lq["split"], eval_lq["split"]) == ("train", "eval")
    assert all(train_lq[k] == eval_lq[k] for k in ("path", "eval_fraction", "split_seed"))
    assert r["C"]["data"] == r["D"]["data"] and "task_train" not in r["A"]["data"]
    # every arm is evaluated the same way, on the same task sets
    def evaluation(ev):
        cfg = {k: v for k, v in ev["longqa"]["config"].items() if k not in ("model", "out", "label")}
        proxy = {k: v for k, v in ev["proxy"].items() if k != "out"}
        return cfg, proxy

    evals = [evaluation(r[a]["eval"]) for a in headline.ARMS]
    assert all(ev == evals[0] for ev in evals)
    assert evals[0][0]["agent"]["chunk_tokens"] == c_task["agent"]["chunk_tokens"] == b["agent"][
        "chunk_tokens"]
    assert evals[0][0]["tasks_dir"] == data["task_eval"]["config"]["out"]
    assert evals[0][1]["tasks_dir"] == b["data"]["tasks_dir"] == r["A"]["data"]["e2e"]["config"]["out"]


def test_load_experiment_gives_typed_configs_that_read_the_driver_task_sets(exp, tmp_path):
    from memtrain.agent.loop import AgentConfig
    from memtrain.recipes.build_tasks import BuildConfig
    from memtrain.rl.config import TrainConfig

    assert isinstance(exp, headline.ExperimentConfig) and isinstance(exp.agent, AgentConfig)
    assert all(isinstance(c, BuildConfig) for c in (exp.e2e_data, exp.task_train_data, exp.task_eval_data))
    assert isinstance(exp.memtrain, TrainConfig) and isinstance(exp.task, TrainConfig)
    sets = headline.data_configs(exp, tmp_path)
    assert {n: c.out for n, c in sets.items()} == {n: str(tmp_path / "cpu" / "_data" / n)
                                                  for n in headline.TASK_SETS}
    assert all(c.tokenizer == exp.model for c in sets.values())  # chunked with the experiment model
    assert [c.kind for c in sets.values()] == ["e2e", "longqa", "longqa"]
    mem = headline.stage_config(exp, "memtrain", "B", 0, tmp_path)
    task = headline.stage_config(exp, "task", "C", 0, tmp_path)
    assert mem.data.tasks_dir == sets["e2e"].out and mem.data.eval_tasks_dir is None
    assert task.data.tasks_dir == sets["task_train"].out and task.data.eval_tasks_dir == sets["task_eval"].out
    assert headline.eval_config(exp, "A", 0, tmp_path).tasks_dir == sets["task_eval"].out
    # one chunk size: the shared agent's, in every task set and every stage
    assert (sets["e2e"].e2e.chunk_tokens == sets["task_train"].longqa.chunk_tokens
            == sets["task_eval"].longqa.chunk_tokens == mem.agent.chunk_tokens == task.agent.chunk_tokens
            == exp.agent.chunk_tokens)
    # the packaged presets come through where the experiment does not change them
    assert mem.rollout.reward == "sub_em" and mem.data.eval_size == 16 and sets["e2e"].num_tasks == 120
    # another model: its own tokenizer everywhere (tiny is built with SmolLM2's)
    qwen = headline.load_experiment("cpu", model="Qwen/Qwen2.5-7B-Instruct")
    assert {c.tokenizer for c in headline.data_configs(qwen, tmp_path).values()} == {
        "Qwen/Qwen2.5-7B-Instruct"}
    tiny = headline.load_experiment("cpu", model="tiny")
    assert {c.tokenizer for c in headline.data_configs(tiny, tmp_path).values()} == {"tiny"}


def test_paper_scales_point_at_the_paper_presets(tmp_path):
    for scale, model in (("paper", "Qwen/Qwen3-4B-Instruct-2507"),
                         ("paper_qwen25_7b", "Qwen/Qwen2.5-7B-Instruct")):
        exp = headline.load_experiment(scale)
        assert exp.model == model and exp.eval.engine.kind == "vllm" and exp.memtrain.engine.kind == "vllm"
        assert (exp.memtrain.steps, exp.task.steps, exp.memtrain.optim.lr, exp.memtrain.rollout.g1) == (
            300, 500, 1e-6, 8)
        assert exp.e2e_data.num_tasks == 30000 and exp.e2e_data.e2e.n_random == 120
        assert exp.task_eval_data.longqa.n_docs[-1] == 6400 and exp.task_train_data.longqa.n_docs == [200]
        r = headline.resolve(exp, "D", 0, tmp_path)
        assert {d["config"]["tokenizer"] for d in r["data"].values()} == {model}


def test_micro_scale_is_the_setting_where_the_embedded_model_earns_reward(tmp_path):
    exp = headline.load_experiment("micro")
    sets = headline.data_configs(exp, tmp_path)
    assert {sets["task_train"].longqa.unit, sets["task_eval"].longqa.unit} == {"sentence"}
    assert sets["task_eval"].longqa.n_docs == [4, 8, 16, 32]  # four lengths that double
    for arm in headline.ARMS:
        for st in headline.resolve(exp, arm, 0, tmp_path)["stages"]:
            agent = st["config"]["agent"]
            assert (agent["chunk_tokens"], agent["memory_tokens"], agent["prompt_version"]) == (
                24, 32, "micro")
    assert exp.threads == 1 and exp.eval.reward == "sub_em"


def test_a_split_mismatch_between_task_sets_is_refused():
    from memtrain.errors import MemtrainError

    with pytest.raises(MemtrainError, match="same question split"):
        headline.load_experiment("cpu", ["task_train_data.longqa.split_seed=1"])


def test_overrides_reach_the_stage_configs(tmp_path):
    exp = headline.load_experiment("cpu", ["task.rollout.g1=2", "task_eval_data.longqa.n_docs=[2,3]"],
                                   model="tiny", steps_memtrain=7, steps_task=5)
    r = headline.resolve(exp, "D", 0, tmp_path)
    st = _stages(r)
    assert st[("task", "D")]["config"]["rollout"]["g1"] == 2
    assert st[("task", "D")]["config"]["rollout"]["temperature"] > 0  # the rest of the section is kept
    assert st[("task", "D")]["config"]["steps"] == 5 and st[("memtrain", "B")]["config"]["steps"] == 7
    assert st[("memtrain", "B")]["config"]["model"]["name"] == "tiny"
    assert r["data"]["task_eval"]["config"]["longqa"]["n_docs"] == [2, 3]


def test_unknown_scale_is_a_clear_error(capsys):
    assert headline.main(["run", "--arm", "A", "--scale", "nope", "--dry-run"]) == 2
    assert "experiments/configs/nope.yaml" in capsys.readouterr().err


TINY = [
    "--model", "tiny", "--steps-task", "1", "--no-progress",
    "--set", "agent.chunk_tokens=128", "--set", "agent.memory_tokens=12", "--set", "agent.answer_tokens=6",
    "--set", "task_eval_data.longqa.num_questions=3", "--set", "eval.num_questions=2",
    "--set", "task_eval_data.longqa.n_docs=[2,3]", "--set", "proxy_tasks=2",
    "--set", "eval.batch_size=4", "--set", "e2e_data.num_tasks=6", "--set", "memtrain.data.eval_size=2",
    "--set", "task.batch_size=1", "--set", "task.rollout.g1=2", "--set", "task.loss.kl_coef=0",
    "--set", "task_train_data.longqa.num_questions=2", "--set", "task_train_data.longqa.n_docs=[2]",
    "--set", "task.eval_docs=1", "--set", "task.save_every=0",
    "--set", "task.eval_every=0", "--set", "task.log.tensorboard=false",
    "--set", "task.log.progress=false", "--set", "task.gradient_checkpointing=false",
]


def test_tiny_arms_a_and_c_end_to_end_then_report(shared_data, tmp_path, capsys):
    runs = tmp_path / "runs"
    for arm in ("A", "C"):
        assert headline.main(["run", "--arm", arm, "--seed", "0", "--runs-dir", str(runs), *TINY]) == 0
        d = runs / "cpu" / arm / "seed0"
        rows = [json.loads(x) for x in (d / "eval" / "longqa" / "results.jsonl").read_text().splitlines()]
        assert sorted(r["n_docs"] for r in rows) == [2, 2, 3, 3]  # 2 questions × 2 lengths, once each
        metrics = json.loads((d / "eval" / "longqa" / "metrics.json").read_text())
        assert set(metrics["by_length"]) == {"2", "3"}
        proxy = json.loads((d / "eval" / "proxy" / "metrics.json").read_text())
        assert proxy["n"] == 2
        config = json.loads((d / "config.json").read_text())
        assert config["arm"] == arm and config["experiment"]["model"] == "tiny"
        info = json.loads((d / "run_info.json").read_text())
        assert info["hardware"]["cpu_count"] >= 1 and "torch" in info["hardware"]
        assert "eval_longqa" in info["wall_s"]
    assert (runs / "cpu" / "C" / "seed0" / "task" / "final").is_dir()
    c_cfg = json.loads((runs / "cpu" / "C" / "seed0" / "config.json").read_text())
    assert c_cfg["eval"]["model"] == str(runs / "cpu" / "C" / "seed0" / "task" / "final")

    # a re-run resumes: the stage is done (not retrained) and every question is already scored
    before = (runs / "cpu" / "C" / "seed0" / "eval" / "longqa" / "results.jsonl").read_text()
    final_mtime = (runs / "cpu" / "C" / "seed0" / "task" / "final").stat().st_mtime_ns
    capsys.readouterr()
    assert headline.main(["run", "--arm", "C", "--seed", "0", "--runs-dir", str(runs), *TINY]) == 0
    assert "task stage of arm C seed 0 already done" in capsys.readouterr().out
    assert (runs / "cpu" / "C" / "seed0" / "task" / "final").stat().st_mtime_ns == final_mtime
    assert (runs / "cpu" / "C" / "seed0" / "eval" / "longqa" / "results.jsonl").read_text() == before

    # a stage folder written with other settings is never resumed with new ones
    assert headline.main(["run", "--arm", "C", "--seed", "0", "--runs-dir", str(runs), *TINY,
                          "--steps-task", "2"]) == 2
    assert "other settings (differs in: steps)" in capsys.readouterr().err

    md = tmp_path / "RESULTS.md"
    md.write_text("# Results\n\nintro kept\n\n<!-- headline:cpu:begin -->\nold\n"
                  "<!-- headline:cpu:end -->\ntail\n")
    png = tmp_path / "plot.png"
    assert headline.main(["report", "--scale", "cpu", "--runs-dir", str(runs), "--results-md", str(md),
                          "--png", str(png)]) == 0
    text = md.read_text()
    assert "intro kept" in text and text.rstrip().endswith("tail") and "old" not in text
    assert text.count("<!-- headline:cpu:begin -->") == 1
    table = [ln for ln in text.splitlines() if ln.startswith("| A base") or ln.startswith("| C task RL only")]
    assert len(table) == 2
    head = next(ln for ln in text.splitlines() if ln.startswith("| arm | seeds"))
    assert "2 docs" in head and "3 docs" in head
    assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG"
    # C's task stage (1 step) shows up in the training table; A trained nothing
    train_rows = [ln for ln in text.splitlines() if ln.startswith("| C | 0 | task | 1 |")]
    assert len(train_rows) == 1 and not any(ln.startswith("| A | 0 |") and "task" in ln
                                            for ln in text.splitlines())


def test_report_without_runs_is_a_clear_error(tmp_path, capsys):
    assert headline.main(["report", "--runs-dir", str(tmp_path), "--results-md", str(tmp_path / "R.md")]) == 2
    assert "no finished evaluation" in capsys.readouterr().err


def test_a_variant_config_inherits_everything_but_what_it_sets(exp):
    short = headline.load_experiment("cpu_short")
    assert short.scale == "cpu_short"
    assert short.memtrain.steps == short.task.steps == 8
    # nested sections merge: the task stage keeps the base's (and its preset's) settings beside the new ones
    assert short.task.rollout.reward == "f1"
    assert short.task.rollout.temperature == exp.task.rollout.temperature
    assert short.task.batch_size == 4 and short.task.optim == exp.task.optim
    assert short.agent == dataclasses.replace(exp.agent, memory_tokens=64)
    # the shared agent reaches every stage and the evaluation alike
    for a, b in ((short.memtrain.agent, exp.memtrain.agent), (short.task.agent, exp.task.agent),
                 (short.eval.agent, exp.eval.agent)):
        assert a == dataclasses.replace(b, memory_tokens=64)
    assert short.eval == dataclasses.replace(exp.eval, agent=short.eval.agent)
    for key in ("e2e_data", "task_train_data", "task_eval_data", "model", "proxy_tasks"):
        assert getattr(short, key) == getattr(exp, key)


def test_training_summary_counts_signal_and_skipped_updates():
    rows = [
        {"step": 0, "eval/coupled": 0.0},
        {"step": 1, "reward/coupled": 0.25, "groups/e2e": 2, "groups/e2e_dropped": 1, "groups/imr": 4,
         "groups/imr_dropped": 4, "update/skipped": 0.0, "loss/kl": 0.01, "time/step_s": 10.0},
        {"step": 2, "reward/coupled": 0.0, "groups/e2e": 2, "groups/e2e_dropped": 2, "groups/imr": 4,
         "groups/imr_dropped": 4, "update/skipped": 1.0, "loss/kl": 0.0, "time/step_s": 30.0},
        {"step": 2, "eval/coupled": 0.125},
    ]
    t = headline.training_summary(rows)
    assert t["steps"] == 2 and t["reward_first"] == 0.25 and t["reward_mean"] == 0.125
    assert t["groups_with_signal"] == "1/12" and t["updates"] == 1
    assert t["held_out"] == (0.0, 0.125) and t["step_s"] == 20.0


def test_rerun_of_an_arm_with_the_same_seed_gives_the_same_numbers(shared_data, tmp_path, monkeypatch):
    """The acceptance check of the headline: same arm, same seed, fresh folder -> same model, same scores."""
    from memtrain.rl import rewards

    # a reward the tiny model can earn, so the task stage really updates the weights
    monkeypatch.setattr(rewards, "answer_reward", lambda text, golds, *_: float(len(text) % 2 == 0))
    argv = ["run", "--arm", "C", "--seed", "1", *TINY, "--steps-task", "2"]
    for name in ("first", "second"):
        assert headline.main([*argv, "--runs-dir", str(tmp_path / name)]) == 0

    def scores(name):
        d = tmp_path / name / "cpu" / "C" / "seed1" / "eval"
        rows = [json.loads(x) for x in (d / "longqa" / "results.jsonl").read_text().splitlines()]
        def untimed(r):  # timings are the only thing allowed to differ
            return {k: v for k, v in r.items() if not any(t in k for t in ("second", "time", "wall"))}

        rows = sorted((untimed(r) for r in rows), key=lambda r: (r["id"], r["n_docs"]))
        by_length = json.loads((d / "longqa" / "metrics.json").read_text())["by_length"]
        return rows, {n: untimed(g) for n, g in by_length.items()}

    assert scores("first") == scores("second")
    from memtrain.models import load_model

    first, second = (load_model(str(tmp_path / n / "cpu" / "C" / "seed1" / "task" / "final"))[0].state_dict()
                     for n in ("first", "second"))
    base = load_model("tiny")[0].state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert any(not torch.equal(first[k], base[k]) for k in first)  # the stage did train


def test_comparisons_are_paired_by_seed_with_a_t_interval():
    def run(accs):  # one finished run: accuracy per length, averaged as metrics.json does
        by = {n: {"accuracy": a, "em": 0.0, "f1": a, "n": 32, "mean_tokens": 100 * int(n)}
              for n, a in zip(("4", "32"), accs, strict=True)}
        return {"longqa": {"by_length": by, "average_over_lengths": sum(accs) / 2}, "proxy": None}

    found = {"A": {0: run([0.2, 0.0])},
             "C": {0: run([0.3, 0.1]), 1: run([0.4, 0.0]), 2: run([0.2, 0.2])},
             "D": {0: run([0.5, 0.1]), 1: run([0.4, 0.2]), 2: run([0.3, 0.3]), 3: run([0.9, 0.9])}}
    s = headline.summary(found)
    dc = next(c for c in s["comparisons"] if (c["x"], c["y"], c["length"]) == ("D", "C", None))
    assert dc["seeds"] == [0, 1, 2]  # seed 3 has no C run to pair with
    assert dc["diffs"] == pytest.approx([0.1, 0.1, 0.1]) and dc["ci95"] == pytest.approx([0.1, 0.1])
    assert {c["x"] for c in s["comparisons"]} == {"D"}  # the documented comparisons only; no B run: no B − A
    d4 = next(c for c in s["comparisons"] if (c["x"], c["y"], c["length"]) == ("D", "C", "4"))
    assert d4["mean"] == pytest.approx(0.1) and d4["sd"] == pytest.approx(0.1)
    half = 4.303 * 0.1 / 3 ** 0.5  # t(0.975, 2 df) * sd / sqrt(n)
    assert d4["ci95"] == pytest.approx([0.1 - half, 0.1 + half])
    assert s["arms"]["D"]["drop_shortest_to_longest"]["per_seed"] == pytest.approx([0.4, 0.2, 0.0, 0.0])
    assert "D − C" in headline.comparison_lines(s)
