"""IMR answers in their own GRPO groups on veRL's v1 trainer (DESIGN §3, §9).

Stock v1 (``AgentLoopWorkerTQ``) stores a session's outputs as rows ``{uid}_{session}_{i}``, copies the last
output's reward to all of them, and ``compute_advantage_for_multi_trajectories`` runs GRPO over the last
rows of the ``rollout.n`` sessions of a prompt (group = the ``uid`` field) and broadcasts the result. That
is right for a trajectory's memory updates and final answer (the E2E group), wrong for IMR answers: each
IMR prompt's G2 answers are a group of their own, judged by ``R^I``.

:func:`row_plan` fixes it with keys and group ids alone, so veRL's own GRPO does the rest:

- E2E rows (updates, final): key ``{uid}_{sid}_{i}``, group ``uid``, reward ``R^E`` (the final's);
- IMR answer k of IMR prompt j: key ``{uid}_{imr_session(sid, k)}_0`` — a one-row "session" numbered past
  any real session (``(sid + 1) * 1_000_000 + k``), so it is its own last row and keeps its own advantage —
  and group ``{uid}-s{sid}-imr{j}``, reward ``R^I``.

Keys keep veRL's ``{uid}_{int}_{int}`` shape: the replay buffer's bookkeeping (``key.split("_")[0]``), its
DAPO filter (one prompt), the advantage code and the rollout dumps (``key.rsplit("_", 2)`` with integer
fields) all parse them. In validation IMR rows are dropped (the held-out score is the E2E answer).

DAPO: v1's ``algorithm.filter_groups`` drops a whole prompt when its metric is equal on **all** its rows;
with ``metric=coupled_reward`` (every row carries its trajectory's R^E) that drops documents whose G1
trajectories all got the same R^E, together with their IMR groups. memtrain's trainer filters E2E and IMR
groups independently, so an IMR group can still teach recall on a flat document; on veRL it cannot.

``MEMTRAIN_VERL_ROWS=<folder>`` makes every worker append the rows it stores (key, group, token ids, mask,
reward, kind) to ``<folder>/rows-<pid>.jsonl``: what veRL trains on, exactly, to inspect or to replay through
``memtrain train``'s update (the parity test does).

Install with ``actor_rollout_ref.rollout.agent.agent_loop_manager_class=
memtrain.integrations.verl.worker.MemTrainAgentLoopManager`` (``memtrain verl-config`` writes it).
"""

from __future__ import annotations

import json
import os
from typing import Any

import ray
import torch
from verl.experimental.agent_loop.agent_loop import AgentLoopOutput
from verl.trainer.ppo.v1 import agent_loop_tq
from verl.utils.tensordict_utils import list_of_dict_to_tensordict

# The v1 worker is a Ray actor class; subclassing needs the class Ray wrapped. That class is not reachable
# under its own name (the module attribute is the actor wrapper), so cloudpickle would ship it to the worker
# *by value* inside our subclass, and its ``super().__init__`` then fails (``super(type, obj)``) in the
# Ray-created actor. Naming it where it can be imported makes it travel by reference, like any library class.
_WorkerTQ = agent_loop_tq.AgentLoopWorkerTQ.__ray_metadata__.modified_class.__ray_actor_class__
_WorkerTQ.__module__, _WorkerTQ.__qualname__ = __name__, "_WorkerTQ"


IMR_SESSION_STRIDE = 1_000_000


def imr_session(session_id: int | str, k: int) -> int:
    """The one-row session number of IMR answer ``k`` of session ``session_id`` (past every real session)."""
    return (int(session_id) + 1) * IMR_SESSION_STRIDE + k


def row_plan(outputs: list[AgentLoopOutput], uid: str, session_id: int | str, validate: bool
             ) -> list[tuple[str, str, AgentLoopOutput]]:
    """(TransferQueue key, GRPO group id, output) for every row of one session; sets each row's reward.

    The E2E rows' reward must already be on the last E2E output (the agent loop sets it).
    """
    if "_" in str(uid):
        raise ValueError(f"prompt uid {uid!r} contains '_': veRL's row keys could not be parsed back")
    e2e = [o for o in outputs if o.extra_fields.get("kind") != "imr"]
    imr = [] if validate else [o for o in outputs if o.extra_fields.get("kind") == "imr"]
    if not e2e:
        raise ValueError(f"session {uid}_{session_id} has no E2E output (its final answer is missing)")
    final = e2e[-1]
    for o in e2e[:-1]:
        o.reward_score = final.reward_score
    rows = [(f"{uid}_{session_id}_{i}", uid, o) for i, o in enumerate(e2e)]
    for k, o in enumerate(imr):
        o.reward_score = float(o.extra_fields["imr_reward"])
        rows.append((f"{uid}_{imr_session(session_id, k)}_0",
                     f"{uid}-s{session_id}-imr{o.extra_fields['imr_group']}", o))
    return rows


ROWS_ENV = "MEMTRAIN_VERL_ROWS"


def record_rows(folder: str, plan: list[tuple[str, str, AgentLoopOutput]], global_steps: int) -> None:
    """Append one session's stored rows to this worker's JSONL file (one line per row)."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"rows-{os.getpid()}.jsonl"), "a", encoding="utf-8") as f:
        for key, group, o in plan:
            f.write(json.dumps({"key": key, "group": group, "global_steps": int(global_steps),
                                "kind": o.extra_fields.get("kind"), "reward": float(o.reward_score),
                                "prompt_ids": list(o.prompt_ids), "response_ids": list(o.response_ids),
                                "response_mask": list(o.response_mask),
                                "response_logprobs": o.response_logprobs}) + "\n")


class MemTrainWorkerTQ(_WorkerTQ):
    """v1's TransferQueue worker with :func:`row_plan`'s keys, group ids and rewards."""

    async def _agent_loop_postprocess(self, output: Any, validate: bool, **kwargs: Any) -> None:
        outputs = output if isinstance(output, list) else [output]
        if not outputs:
            return
        e2e = [o for o in outputs if o.extra_fields.get("kind") != "imr"]
        await self._compute_score(e2e, kwargs=kwargs)  # a no-op when the loop set reward_score
        keys, fields, tags = [], [], []
        plan = row_plan(outputs, kwargs["uid"], kwargs["session_id"], validate)
        for key, group, o in plan:
            prompts = torch.tensor(o.prompt_ids, dtype=torch.int64)
            input_ids = torch.cat([prompts, torch.tensor(o.response_ids, dtype=torch.int64)])
            attention = torch.ones_like(input_ids)
            mm_inputs = self._compute_multi_modal_inputs(o, input_ids)
            field = o.as_dict()
            field.update(kwargs)
            field.pop("multi_modal_data", None)
            positions = self._compute_position_ids(input_ids[None], attention[None], mm_inputs)[0]
            field.update(uid=group, loss_mask=field["response_mask"], input_ids=input_ids,
                         multi_modal_inputs=mm_inputs, position_ids=positions)
            keys.append(key)
            fields.append(field)
            n_prompt, n_response = len(o.prompt_ids), len(o.response_ids)
            tags.append({"status": "success", "prompt_len": n_prompt, "response_len": n_response,
                         "seq_len": n_prompt + n_response, "global_steps": kwargs["global_steps"],
                         "min_global_steps": o.extra_fields.get("min_global_steps"),
                         "max_global_steps": o.extra_fields.get("max_global_steps")})
        if os.environ.get(ROWS_ENV) and not validate:
            record_rows(os.environ[ROWS_ENV], plan, kwargs["global_steps"])
        await agent_loop_tq.tq.async_kv_batch_put(keys=keys, fields=list_of_dict_to_tensordict(fields),
                                                  tags=tags, partition_id="val" if validate else "train")


class MemTrainAgentLoopManager(agent_loop_tq.AgentLoopManagerTQ):
    """v1's agent-loop manager, starting :class:`MemTrainWorkerTQ` workers."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.agent_loop_workers_class = ray.remote(MemTrainWorkerTQ)
