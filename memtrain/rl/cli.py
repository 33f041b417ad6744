"""``memtrain train CONFIG`` — run or resume GRPO training from a YAML config or a packaged preset.

CONFIG is a path to a YAML file or the name of a preset in ``memtrain/configs`` (``cpu_memtrain``,
``cpu_task_hotpotqa``, ``paper_memtrain_qwen3_4b``, ...). ``--set key.sub=value`` overrides any field
(value parsed as YAML), ``--steps``/``--out`` are shortcuts. Re-running the same command resumes from the
latest complete checkpoint in ``out_dir``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

PRESETS = Path(__file__).resolve().parents[1] / "configs"


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("train", help="GRPO training with the MemTrain objective (resumes on re-run)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="YAML config path or preset name (see memtrain/configs)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set rollout.g1=4 (repeatable)")
    p.add_argument("--steps", type=int, default=None, help="override steps")
    p.add_argument("--out", default=None, help="override out_dir")
    p.set_defaults(func=run_train)


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS.glob("*.yaml"))


def resolve_config(name: str) -> Path:
    from memtrain.errors import MemtrainError

    p = Path(name)
    if p.is_file():
        return p
    preset = PRESETS / f"{name.removesuffix('.yaml')}.yaml"
    if preset.is_file():
        return preset
    names = ", ".join(preset_names())
    raise MemtrainError(f"config {name!r} is neither a file nor a preset; presets: {names}")


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``a.b=value`` -> ``data["a"]["b"] = yaml(value)``."""
    import yaml

    from memtrain.errors import MemtrainError

    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise MemtrainError(f"--set {item!r}: expected KEY=VALUE, e.g. --set rollout.g1=4")
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise MemtrainError(f"--set {item!r}: {part!r} is not a section")
        node[parts[-1]] = _scalar(yaml.safe_load(raw))
    return data


def _scalar(value: Any) -> Any:
    """YAML 1.1 reads ``1e-05`` as a string; accept it as the float a user means."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def load_train_config(name: str, overrides: list[str] = (), steps: int | None = None,  # type: ignore[assignment]
                      out: str | None = None):
    from memtrain.config import from_dict, load_yaml
    from memtrain.rl.config import TrainConfig

    data = apply_overrides(load_yaml(resolve_config(name)), list(overrides))
    if steps is not None:
        data["steps"] = steps
    if out is not None:
        data["out_dir"] = out
    return from_dict(TrainConfig, data)


def run_train(args: argparse.Namespace) -> int:
    from memtrain.rl.trainer import train

    cfg = load_train_config(args.config, args.overrides, args.steps, args.out)
    final = train(cfg)
    print(f"memtrain train: done; final model in {final}")
    return 0
