"""The GPU check of the trainer (issue 10): what CPU tests cannot show, in one script, offline.

    python scripts/gpu_check.py [--out DIR] [--arch qwen2.5-0.5b|smollm2-135m] [--device cuda]
    python scripts/gpu_check.py --device cpu --tiny        # a smoke run of the same checks (tests use it)

Needs only PyTorch and transformers: the model is built in process from an architecture config with random
weights (no pretrained files travel), prompts are random token ids (no tokenizer). Checks, each recorded in
``gpu_check.json`` with its numbers:

1. every parameter, optimizer state and batch tensor is on the device;
2. fp32 master weights with bf16 autocast compute (parameters stay fp32, logits come out bf16; on a CPU
   without native bf16 the trainer computes in fp32);
3. an AdamW update at lr 1e-6 changes the weights (in bf16 it would round away; memtrain refuses that);
4. the learnable reward of the tests rises under memtrain's own update (`memtrain.rl.trainer.update`): the
   first generated token's id parity, on a model whose output head is sharpened so a few tokens compete;
5. throughput at the paper's sizes: G = 8 rollouts of 1,024 new tokens after a 7,168-token prompt
   (instruction 1,024 + chunk 5,120 + memory 1,024), and one update over those 8 conversations with
   gradient checkpointing.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ARCHS = {
    "qwen2.5-0.5b": dict(kind="qwen2", hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, vocab_size=151936),
    "smollm2-135m": dict(kind="llama", hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, vocab_size=49152),
    "tiny": dict(kind="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, vocab_size=4096),
}


def build(arch: str, device: str) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    spec = dict(ARCHS[arch])
    kind = spec.pop("kind")
    qwen = kind == "qwen2"
    cfg_cls, model_cls = (Qwen2Config, Qwen2ForCausalLM) if qwen else (LlamaConfig, LlamaForCausalLM)
    cfg = cfg_cls(**spec, max_position_embeddings=32768, tie_word_embeddings=True, pad_token_id=0,
                  eos_token_id=1, bos_token_id=2)
    torch.manual_seed(0)
    return model_cls(cfg).to(device=device, dtype=torch.float32)


def train_config(bf16: bool, lr: float, tmp: str, **extra):  # noqa: ANN201
    from memtrain.config import from_dict
    from memtrain.rl.config import TrainConfig

    return from_dict(TrainConfig, {"data": {"tasks_dir": tmp}, "loss": {"kl_coef": 0.0}, "bf16": bf16,
                                   "optim": {"lr": lr, "grad_clip": 1.0}, "micro_batch_size": 8, **extra})


def check_devices_and_precision(model, device: str, tmp: str) -> dict:
    from memtrain.records import Row
    from memtrain.rl import trainer
    from memtrain.rl.rows import collate

    cfg = train_config(True, 1e-6, tmp)
    m = copy.deepcopy(model).train()
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    opt = torch.optim.AdamW(m.parameters(), lr=1e-6)
    g = torch.Generator().manual_seed(0)
    vocab = m.config.vocab_size
    def ids(n: int) -> list[int]:
        return torch.randint(3, vocab, (n,), generator=g).tolist()

    rows = [Row(ids(32), ids(8), 1.0 if i % 2 else -1.0, "final") for i in range(4)]
    out = trainer.update(m, None, rows, opt, cfg, step=1, pad_id=0)
    batch = collate(rows, 0, device)
    with trainer.autocast(cfg, m):
        logits = m(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    # bf16 compute on GPUs and native-bf16 CPUs; fp32 on other CPUs, where torch would emulate it
    compute = torch.bfloat16 if trainer.bf16_compute(cfg, m) else torch.float32
    on_device = all(p.device.type == device for p in m.parameters())
    state_on_device = all(t.device.type == device for s in opt.state.values() for t in s.values()
                          if torch.is_tensor(t) and t.dim() > 0)
    touched = sum(int((p.grad != 0).sum()) for p in m.parameters() if p.grad is not None)
    changed = sum(int((p.detach() != before[n]).sum()) for n, p in m.named_parameters())
    return {
        "params_on_device": on_device, "optimizer_state_on_device": state_on_device,
        "batch_on_device": batch.input_ids.device.type == device,
        "param_dtypes": sorted({str(p.dtype) for p in m.parameters()}),
        "autocast_logits_dtype": str(logits.dtype), "expected_compute_dtype": str(compute),
        "lr_1e-6_changed_fraction_of_touched": changed / max(1, touched), "update": out,
        "ok": on_device and state_on_device and changed >= 0.99 * touched > 0 and all(
            p.dtype == torch.float32 for p in m.parameters()) and logits.dtype == compute,
    }


def learnable_reward(model, device: str, tmp: str, steps: int, group: int = 8, prompts: int = 4) -> dict:
    """GRPO by hand on token ids: reward 1 when the first generated token id is even."""
    from memtrain.records import Row
    from memtrain.rl import trainer
    from memtrain.rl.advantages import group_advantages

    m = copy.deepcopy(model)
    with torch.no_grad():
        m.lm_head.weight.mul_(8.0)  # a sharp output distribution: a handful of first tokens compete
    cfg = train_config(device == "cuda", 5e-2 if device == "cpu" else 2e-2, tmp, batch_size=prompts)
    opt = torch.optim.AdamW(m.parameters(), lr=cfg.optim.lr)
    g = torch.Generator().manual_seed(1)
    vocab = m.config.vocab_size
    fixed = [torch.randint(3, vocab, (16,), generator=g).tolist() for _ in range(prompts)]
    curve = []
    for step in range(1, steps + 1):
        m.eval()
        ids = torch.tensor([p for p in fixed for _ in range(group)], device=device)
        with torch.no_grad(), trainer.autocast(cfg, m):
            out = m.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True,
                             temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=3, pad_token_id=0,
                             eos_token_id=None)
        new = out[:, ids.shape[1]:].tolist()
        rewards = torch.tensor([float(c[0] % 2 == 0) for c in new]).view(prompts, group)
        adv = group_advantages(rewards)
        rows = [Row(fixed[i // group], new[i], float(adv.view(-1)[i]), "final", doc=i // group)
                for i in range(len(new))]
        m.train()
        trainer.update(m, None, rows, opt, cfg, step, pad_id=0)
        curve.append(float(rewards.mean()))
    first, last = sum(curve[:3]) / 3, sum(curve[-3:]) / 3
    return {"reward_curve": curve, "first3": first, "last3": last, "ok": last > first + 0.2}


def throughput(model, device: str, tmp: str, prompt_tokens: int, new_tokens: int, group: int) -> dict:
    from memtrain.records import Row
    from memtrain.rl import trainer

    cfg = train_config(device == "cuda", 1e-6, tmp, micro_batch_size=1, batch_size=group,
                       gradient_checkpointing=True)
    m = copy.deepcopy(model)
    g = torch.Generator().manual_seed(2)
    vocab = m.config.vocab_size
    ids = torch.randint(3, vocab, (group, prompt_tokens), generator=g).to(device)
    m.eval()
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    with torch.no_grad(), trainer.autocast(cfg, m):
        out = m.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True, top_k=0,
                         max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=0,
                         eos_token_id=None)
    sync()
    gen_s = time.perf_counter() - t0
    rows = [Row(ids[i].tolist(), out[i, prompt_tokens:].tolist(), 1.0 if i % 2 else -1.0, "update", doc=i)
            for i in range(group)]
    from memtrain.models import enable_checkpointing

    enable_checkpointing(m)
    m.train()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-6)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    sync()
    t1 = time.perf_counter()
    upd = trainer.update(m, None, rows, opt, cfg, step=1, pad_id=0)
    sync()
    upd_s = time.perf_counter() - t1
    tokens = group * (prompt_tokens + new_tokens)
    return {"group": group, "prompt_tokens": prompt_tokens, "new_tokens": new_tokens,
            "rollout_s": round(gen_s, 2), "rollout_new_tokens_per_s": round(group * new_tokens / gen_s, 1),
            "update_s": round(upd_s, 2), "update_tokens_per_s": round(tokens / upd_s, 1),
            "peak_gpu_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device == "cuda" else None,
            "update": upd}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="qwen2.5-0.5b", choices=sorted(ARCHS))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="tiny model and sizes (a CPU smoke run)")
    ap.add_argument("--steps", type=int, default=10, help="steps of the learnable-reward check")
    ap.add_argument("--out", default=os.environ.get("OUT") or "experiments/results",
                    help="folder for gpu_check.json (default $OUT, else experiments/results)")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; run it on a GPU machine (or --device cpu --tiny)",
              file=sys.stderr)
        return 2
    arch = "tiny" if args.tiny else args.arch
    sizes = (64, 16, 4) if args.tiny else (7168, 1024, 8)
    model = build(arch, args.device)
    info = {"arch": arch, "device": args.device, "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name(0) if args.device == "cuda" else None,
            "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1)}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        info["precision"] = check_devices_and_precision(model, args.device, tmp)
        info["learnable"] = learnable_reward(model, args.device, tmp, args.steps)
        info["throughput"] = throughput(model, args.device, tmp, *sizes)
    info["wall_s"] = round(time.perf_counter() - t0, 1)
    info["ok"] = info["precision"]["ok"] and info["learnable"]["ok"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "gpu_check_smoke.json" if args.tiny else "gpu_check.json"
    (out / name).write_text(json.dumps(info, indent=2, default=str) + "\n")
    print(json.dumps({k: info[k] for k in ("arch", "device", "ok", "wall_s")}), f"-> {out / name}")
    return 0 if info["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
