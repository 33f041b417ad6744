import random

import pytest
import torch

from memtrain.records import Completion, ImrCandidate, ImrProbe, MemTask, Rollouts, Trajectory, Turn
from memtrain.rl.advantages import broadcast, group_advantages, informative_groups
from memtrain.rl.rows import build_rows


def test_dr_grpo_advantage_is_reward_minus_group_mean():
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.25, 0.5, 0.0, 0.25]])
    a = group_advantages(r)
    assert torch.allclose(a, torch.tensor([[0.5, -0.5, -0.5, 0.5], [0.75, 0.0, -0.5, -0.25]]))
    s = group_advantages(r, scale="std")
    assert torch.allclose(s[0], torch.tensor([1.0, -1.0, -1.0, 1.0]), atol=1e-5)  # std of {0,1,0,1} = 0.5


def test_dapo_filter_drops_all_equal_groups():
    r = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 0.0], [1.125, 1.125, 1.0]])
    assert informative_groups(r).tolist() == [False, False, True, True]


def test_broadcast_repeats_trajectory_advantage():
    assert broadcast([0.5, -0.25], [3, 2]) == [0.5, 0.5, 0.5, -0.25, -0.25]


def _comp(n: int, tag: int) -> Completion:
    return Completion(text=str(tag), prompt_ids=[tag, tag], completion_ids=[tag] * n, finish_reason="stop")


def _traj(n_chunks: int, tag: int) -> Trajectory:
    turns = [Turn("update", t, [], _comp(2, tag), 0.0) for t in range(n_chunks)]
    turns.append(Turn("final", n_chunks, [], _comp(1, tag), 0.0))
    return Trajectory("d", "p", turns, ["m"] * (n_chunks + 1), "r", None)


def test_build_rows_broadcast_and_imr_groups_hand_computed():
    task = MemTask("d", "e2e", "p", ["a", "b", "c"], ["y"], [[ImrCandidate("x", ["x"])], [], []])
    flat = MemTask("e", "e2e", "p", ["a", "b", "c"], ["y"], [[], [], []])
    # document 0: G1 = 2 trajectories with coupled rewards 1.25 and 0.25 -> advantages +0.5 / -0.5
    # document 1: both rewards 0 -> dropped by DAPO
    trajs = [_traj(3, 1), _traj(3, 2), _traj(3, 3), _traj(3, 4)]
    q0 = ImrProbe(3, 1, ImrCandidate("x", ["x"]), [], [_comp(1, 5), _comp(1, 6)], [1.0, 0.0])
    q1 = ImrProbe(2, 1, ImrCandidate("x", ["x"]), [], [_comp(1, 7), _comp(1, 8)], [1.0, 1.0])
    r = Rollouts(tasks=[task, flat], g1=2, trajectories=trajs, doc_of=[0, 0, 1, 1],
                 answer_rewards=[1.0, 0.0, 0.0, 0.0], imr=[q0, q1, None, None],
                 rewards=[1.25, 0.25, 0.0, 0.0],
                 metrics={})
    rows, stats = build_rows(r)
    by_tag = {}
    for row in rows:
        by_tag.setdefault(row.prompt_ids[0], []).append(row)
    # every one of the 4 conversations (3 updates + final) of trajectory 1 carries +0.5, of trajectory 2 -0.5
    assert [x.advantage for x in by_tag[1]] == [0.5] * 4
    assert [x.advantage for x in by_tag[2]] == [-0.5] * 4
    assert 3 not in by_tag and 4 not in by_tag  # flat E2E group dropped
    # IMR group q0 (rewards 1, 0) -> +0.5/-0.5; q1 (1, 1) dropped
    assert by_tag[5][0].advantage == 0.5 and by_tag[6][0].advantage == -0.5
    assert 7 not in by_tag and 8 not in by_tag
    assert stats["groups/e2e_dropped"] == 1 and stats["groups/imr_dropped"] == 1
    assert stats["rows/total"] == 10 and stats["rows/imr"] == 2
    # without the filter every conversation is a row (flat groups have advantage 0)
    rows_all, stats_all = build_rows(r, dapo_filter=False)
    assert len(rows_all) == 4 * 4 + 4 and stats_all["groups/e2e_dropped"] == 0


def test_build_rows_mask_truncated():
    task = MemTask("d", "e2e", "p", ["a"], ["y"], [[]])
    t1, t2 = _traj(1, 1), _traj(1, 2)
    t1.turns[0].completion.finish_reason = "length"
    r = Rollouts([task], 2, [t1, t2], [0, 0], [1.0, 0.0], [None, None], [1.0, 0.0], {})
    kept, s = build_rows(r)
    assert len(kept) == 4 and s["rows/truncated"] == 1
    masked, _ = build_rows(r, mask_truncated=True)
    assert len(masked) == 3 and not any(x.truncated for x in masked)


def test_group_advantages_rejects_bad_shape():
    from memtrain.errors import MemtrainError

    with pytest.raises(MemtrainError):
        group_advantages(torch.zeros(3))
    random.seed(0)
