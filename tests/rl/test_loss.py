import math

import torch

from memtrain.rl.loss import aggregate, clipped_surrogate, kl_k3, policy_loss


def test_clipped_surrogate_against_direct_formula():
    # token-by-token: ratio r = exp(logp - old); loss = -min(r A, clip(r, 0.8, 1.28) A)
    old = torch.zeros(1, 4)
    ratios = [0.5, 1.0, 1.5, 1.1]
    logp = torch.log(torch.tensor([ratios]))
    for adv in (1.0, -2.0):
        loss, clipped = clipped_surrogate(logp, old, torch.tensor([adv]), 0.2, 0.28)
        expect, expect_clip = [], []
        for r in ratios:
            a, b = r * adv, min(max(r, 0.8), 1.28) * adv
            expect.append(-min(a, b))
            expect_clip.append(float(b < a))
        assert torch.allclose(loss, torch.tensor([expect]), atol=1e-6)
        assert clipped.tolist() == [expect_clip]
    # A>0: only r=1.5 is clipped (upper, 1.28); A<0: only r=0.5 is clipped (lower, 0.8)
    _, c_pos = clipped_surrogate(logp, old, torch.tensor([1.0]))
    _, c_neg = clipped_surrogate(logp, old, torch.tensor([-1.0]))
    assert c_pos.tolist() == [[0, 0, 1, 0]] and c_neg.tolist() == [[1, 0, 0, 0]]


def test_kl_k3_direct_formula():
    logp = torch.tensor([-1.0, -2.0, -0.5])
    ref = torch.tensor([-1.5, -1.0, -0.5])
    expect = [math.exp(r - lp) - (r - lp) - 1 for lp, r in zip(logp.tolist(), ref.tolist(), strict=True)]
    assert torch.allclose(kl_k3(logp, ref), torch.tensor(expect), atol=1e-6)
    assert kl_k3(logp, ref)[2] == 0 and (kl_k3(logp, ref) >= 0).all()


def test_aggregation_per_conversation_vs_token_mean():
    v = torch.tensor([[1.0, 2.0, 3.0, 0.0], [10.0, 0.0, 0.0, 0.0]])
    m = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    # per conversation: (mean(1,2,3) + mean(10)) / 2 = (2 + 10) / 2 = 6
    assert aggregate(v, m, "seq-mean-token-mean").item() == 6.0
    # token mean: (1+2+3+10) / 4 = 4
    assert aggregate(v, m, "token-mean").item() == 4.0
    # normalising by a larger batch's counts (micro-batching)
    assert aggregate(v, m, "seq-mean-token-mean", n_norm=4).item() == 3.0
    assert aggregate(v, m, "token-mean", n_norm=8).item() == 2.0


def test_policy_loss_combines_surrogate_and_kl():
    logp = torch.tensor([[-1.0, -2.0], [-0.5, 0.0]])
    old = torch.tensor([[-1.1, -2.0], [-0.4, 0.0]])
    ref = torch.tensor([[-1.2, -1.5], [-0.5, 0.0]])
    adv = torch.tensor([1.0, -1.0])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    out = policy_loss(logp, old, adv, mask, ref, 0.2, 0.28, kl_coef=0.1)
    # direct: per-token terms, then mean per conversation, then mean over conversations
    tok = []
    for i in range(2):
        row = []
        for j in range(2):
            r = math.exp(logp[i, j] - old[i, j])
            a = adv[i].item()
            pg = -min(r * a, min(max(r, 0.8), 1.28) * a)
            d = (ref[i, j] - logp[i, j]).item()
            row.append(pg + 0.1 * (math.exp(d) - d - 1))
        tok.append(row)
    expect = ((tok[0][0] + tok[0][1]) / 2 + tok[1][0]) / 2
    assert abs(out.loss.item() - expect) < 1e-6
    # kl_coef = 0 ignores the reference entirely
    no_kl = policy_loss(logp, old, adv, mask, ref, kl_coef=0.0)
    assert no_kl.kl.item() == 0.0 and abs(no_kl.loss.item() - no_kl.pg_loss.item()) < 1e-7
    assert out.clip_frac.item() == 0.0  # every ratio here lies inside [0.8, 1.28]
    # ratio e ≈ 2.72: the positive-advantage row is clipped (2 tokens), the negative one is not (min picks
    # the unclipped, more pessimistic term): 2 of the 3 unmasked tokens
    far = policy_loss(logp, logp - 1.0, adv, mask, None, 0.2, 0.28, kl_coef=0.0)
    assert abs(far.clip_frac.item() - 2 / 3) < 1e-6


def test_on_policy_gradient_is_advantage_weighted_logprob_gradient():
    # with old = logp.detach() the ratio is 1 and d loss / d logp = -A / n_tokens(conv) / n_conv
    logp = torch.tensor([[-1.0, -2.0, -3.0]], requires_grad=True)
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    out = policy_loss(logp, logp.detach(), torch.tensor([2.0]), mask, kl_coef=0.0)
    out.loss.backward()
    assert torch.allclose(logp.grad, torch.tensor([[-1.0, -1.0, 0.0]]))
