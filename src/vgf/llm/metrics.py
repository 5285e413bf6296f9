"""Win rates judged by a gold reward, and three estimates of KL from the base model.

* `monte_carlo_kl`: E_{y~pi}[log pi(y|x) - log mu(y|x)] for a policy that has token probabilities.
* `best_of_n_kl`: the analytic value log N - (N - 1)/N for Best-of-N (an upper bound on the true KL).
* `donsker_varadhan_kl`: for any sampler, including decoding procedures that have no likelihood (VGF
  decoding): the Donsker-Varadhan lower bound with rewards as the witness function. The benchmark shows
  it next to the two exact values wherever those exist.
"""

from __future__ import annotations

import math

import torch

from vgf.llm.sampler import TokenBatch, response_token_log_probs


def win_rate(scores: list[float] | torch.Tensor, against: list[float] | torch.Tensor) -> float:
    """Fraction of rows where `scores` beats `against`, ties counting one half."""
    scores, against = torch.as_tensor(scores, dtype=torch.float64), torch.as_tensor(against, dtype=torch.float64)
    if scores.shape != against.shape:
        raise ValueError(f"win_rate needs paired scores, got shapes {tuple(scores.shape)} and {tuple(against.shape)}")
    return ((scores > against).double() + 0.5 * (scores == against).double()).mean().item()


@torch.no_grad()
def monte_carlo_kl(policy, base, prompts: TokenBatch, responses: TokenBatch, batch_size: int = 128) -> float:
    """Mean sequence log-ratio log pi(y|x) - log mu(y|x) over responses sampled from `policy`."""
    ratios = []
    for start in range(0, prompts.ids.shape[0], batch_size):
        rows = slice(start, start + batch_size)
        p, r = TokenBatch(prompts.ids[rows], prompts.mask[rows]), TokenBatch(responses.ids[rows], responses.mask[rows])
        ratios.append(response_token_log_probs(policy, p, r).sum(1) - response_token_log_probs(base, p, r).sum(1))
    return torch.cat(ratios).mean().item()


def best_of_n_kl(n: int) -> float:
    return math.log(n) - (n - 1) / n


def donsker_varadhan_kl(method_witness: torch.Tensor, base_witness: torch.Tensor, seed: int = 0) -> float:
    """Lower-bound estimate of KL(pi || mu) from witness functions, for any sampler.

    KL >= E_pi[f] - log E_mu[exp f] for every f (Donsker-Varadhan), here over prompts and responses jointly,
    which bounds the prompt-averaged KL. f = lambda . (w(x, y) - mean of w over x's base samples) for witness
    scores w (rewards): centring per prompt removes what only depends on the prompt. `method_witness` is
    [R, F] for one output per row, `base_witness` [R, M, F] for M base samples of the same row's prompt.
    lambda is fitted on half of the rows and the bound evaluated on the other half (and vice versa), so a
    witness that happens to separate the samples cannot inflate it. Rewards make the bound tight for
    methods that tilt mu towards them (Best-of-N, KL-regularised RL) and loose for others.
    """
    if method_witness.ndim != 2 or base_witness.ndim != 3 or base_witness.shape[::2] != method_witness.shape:
        raise ValueError(f"expected method_witness [R, F] and base_witness [R, M, F], got {tuple(method_witness.shape)} and {tuple(base_witness.shape)}")
    centre = base_witness.double().mean(1)
    method, base = method_witness.double() - centre, base_witness.double() - centre[:, None]
    folds = torch.randperm(method.shape[0], generator=torch.Generator().manual_seed(seed)) % 2

    def bound(weights: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        pooled = (base[rows] @ weights).reshape(-1)
        return (method[rows] @ weights).mean() - (torch.logsumexp(pooled, 0) - math.log(pooled.numel()))

    values = []
    for fold in (0, 1):
        weights = torch.zeros(method.shape[1], dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.LBFGS([weights], max_iter=200, line_search_fn="strong_wolfe")

        def negative_bound():
            optimizer.zero_grad()
            loss = -bound(weights, folds != fold)
            loss.backward()
            return loss

        optimizer.step(negative_bound)
        with torch.no_grad():
            values.append(bound(weights, folds == fold).item())
    return max(sum(values) / 2, 0.0)  # lambda = 0 always gives 0
