"""torch.clamp's gradient rule at its bounds, for code that applies clamp's backward by hand.

clamp(t, lo, hi) passes the gradient where t lies between the bounds and blocks it outside
and at NaN. At t == lo or t == hi the rule has changed between torch releases: older ones pass
the gradient there (lo <= t <= hi), the torch this project pins blocks it (lo < t < hi). A
hand-written backward that must equal autograd's therefore asks the installed torch, once, at
import: asking inside a forward would put a tensor with requires_grad and ``.item()`` into
every torch.compile'd region that holds a PU layer, and each is a graph break.
"""

from __future__ import annotations

import functools

import torch


def _probe_clamp_passes_gradient_at_bounds() -> bool:
    with torch.enable_grad():  # importing may happen where grad is off (inside no_grad, inference_mode)
        t = torch.tensor([1.0], requires_grad=True)
        (grad,) = torch.autograd.grad(t.clamp(-1.0, 1.0).sum(), t)
    return bool(grad.item() != 0)


# Whether the installed torch's clamp passes gradient where t == lo or t == hi. A module
# constant, so that torch.compile reads it as a Python bool (tests may monkeypatch it).
CLAMP_PASSES_GRADIENT_AT_BOUNDS: bool = _probe_clamp_passes_gradient_at_bounds()


@functools.lru_cache(maxsize=None)
def _passing_magnitude(bound: float, dtype: torch.dtype, passes_at_bounds: bool) -> float:
    as_dtype = torch.tensor(bound, dtype=dtype)  # clamp compares in t's dtype
    if passes_at_bounds:
        return as_dtype.item()
    return torch.nextafter(as_dtype, torch.zeros((), dtype=dtype)).item()


# torch.compile calls this at trace time and keeps the float (bound and dtype are constants
# there): its tensors and .item() stay out of the compiled graph
@torch.compiler.assume_constant_result
def _largest_passing_magnitude(bound: float, dtype: torch.dtype) -> float:
    """The largest |t| of ``dtype`` whose gradient clamp(t, -bound, bound) passes."""
    return _passing_magnitude(bound, dtype, CLAMP_PASSES_GRADIENT_AT_BOUNDS)


def clamp_blocked(t: torch.Tensor, bound: float) -> torch.Tensor:
    """Bool mask of the elements whose gradient clamp(t, -bound, bound) blocks (NaN included).

    Two elementwise passes: t differs from t clamped to the passing range exactly where clamp
    blocks, including at the bounds when the rule is strict, and at NaN (NaN != NaN).
    """
    inner = _largest_passing_magnitude(bound, t.dtype)
    return torch.ne(torch.clamp(t, -inner, inner), t)


def clamp_backward_(grad: torch.Tensor, t: torch.Tensor, bound: float) -> torch.Tensor:
    """clamp(t, -bound, bound)'s backward applied to ``grad`` in place."""
    if CLAMP_PASSES_GRADIENT_AT_BOUNDS:
        return grad.masked_fill_(clamp_blocked(t, bound), 0)
    # hardtanh_backward has the strict rule in one pass. It passes NaN t where clamp blocks it;
    # callers here only meet NaN t where the gradient goes on to be NaN anyway (see fused.py).
    return torch.ops.aten.hardtanh_backward.grad_input(grad, t, -bound, bound, grad_input=grad)
