"""The chunk search of the paper's intra-engine rule: the largest token count of the request that overflows
a forward batch whose predicted attention stays within the 300 ms quota (the paper: "binary search on
its token count"). `secant_fit` is what `DualPathPolicy.form_batch` runs; `largest_fit` is the plain
bracketed binary search it is tested against (both answer the same question exactly).
"""

from __future__ import annotations

__all__ = ["largest_fit", "secant_fit"]


def secant_fit(cost, budget: float, high: int, cost_high: float) -> int:
    """Largest n in [0, high) with cost(n) <= budget (0 when none), for a nondecreasing cost with
    cost(high) = cost_high > budget: the unique answer `largest_fit` gives, in fewer probes (each is a
    cost-model evaluation). Each probe narrows a bracket [lo, hi) at the budget's crossing of the curve
    n (a + b n) through the bracket's ends (attention is n tokens at a mean context growing with n/2:
    close to that curve, so two or three probes find the answer and its successor); after a few probes
    the search bisects, so it always ends."""
    lo, cost_lo, hi = 0, 0.0, high
    guided = 6
    while hi - lo > 1:
        probe = (lo + hi) // 2
        if guided:
            guided -= 1
            slope_hi = cost_high / hi
            if lo:  # a + b n through both ends; solved for the budget without cancellation
                b = (slope_hi - cost_lo / lo) / (hi - lo)
                a = slope_hi - b * hi
                root = a * a + 4.0 * b * budget
                estimate = 2.0 * budget / (a + root ** 0.5) if root >= 0.0 and a + root ** 0.5 > 0.0 else -1.0
            else:  # one end: the line through the origin
                estimate = budget / slope_hi if slope_hi > 0.0 else -1.0
            if estimate >= 0.0:
                guess = int(estimate) if estimate < hi else hi
                probe = lo + 1 if guess <= lo else (hi - 1 if guess >= hi else guess)
        at = cost(probe)
        if at <= budget:
            lo, cost_lo = probe, at
        else:
            hi, cost_high = probe, at
    return lo


def largest_fit(cost, budget: float, high: int, guess: int) -> int:
    """Largest n in [0, high] with cost(n) <= budget for a nondecreasing cost(0) = 0: a binary search
    whose bracket starts around `guess` (cost is nearly linear in n, so the bracket is small)."""
    low = 0
    step = 2
    probe = min(max(guess, 0), high)
    if cost(probe) <= budget:
        low = probe
        while low < high:
            probe = min(high, low + step)
            if cost(probe) > budget:
                high = probe - 1
                break
            low, step = probe, step * 2
    else:
        high = probe - 1
        while high > 0:
            probe = max(0, high - step)
            if cost(probe) <= budget:
                low = probe
                break
            high, step = probe - 1, step * 2
    while low < high:
        mid = (low + high + 1) // 2
        if cost(mid) <= budget:
            low = mid
        else:
            high = mid - 1
    return low
