"""Gradient aggregation: the (tasks, parameters) Jacobian of the task losses in, one update
direction out, as pure functions.

Every method follows TorchJD's conventions so its published values check ours: a method
computes a weight per task from the Gramian G = J Jᵀ and returns `weights @ J`; what each
method's weights are (sums, not means, where TorchJD sums) is stated in its docstring.
The weights of the iterative methods are solved in float64 whatever J's dtype, and on the
CPU whatever J's device: the Gramian is only (tasks, tasks), and the solvers branch on its
entries and call numpy.
"""

from __future__ import annotations

import inspect

import numpy as np
import torch

from mtl_deploy.errors import InputError
from mtl_deploy.mtl.solvers import box_qp, cagrad_simplex, nash_bargaining


def _trace_normalized(gramian: torch.Tensor, eps: float) -> torch.Tensor:
    """G / trace(G): the Gramian of J scaled to unit Frobenius norm (zero if J ~ 0)."""
    trace = gramian.diagonal().sum()
    return torch.zeros_like(gramian) if trace < eps else gramian / trace


def _preference(pref_vector, m: int) -> torch.Tensor:
    if pref_vector is None:
        return torch.full((m,), 1.0 / m, dtype=torch.float64)
    pref = torch.as_tensor(pref_vector, dtype=torch.float64)
    if pref.shape != (m,):
        raise InputError(f"pref_vector has shape {tuple(pref.shape)}; give one weight per task ({m})")
    return pref


def mean_weights(gramian: torch.Tensor) -> torch.Tensor:
    """1/m each: the average of the task gradients (TorchJD `Mean`)."""
    m = len(gramian)
    return torch.full((m,), 1.0 / m, dtype=gramian.dtype)


def pcgrad_weights(gramian: torch.Tensor) -> torch.Tensor:
    """PCGrad (Yu et al. 2020): each task gradient is projected off every other task's
    gradient it conflicts with (negative inner product), visiting the others in a random
    order from torch's global generator (`torch.randperm`, as TorchJD does: seed torch for
    reproducibility); the projected gradients are SUMMED, not averaged."""
    m = len(gramian)
    weights = torch.zeros(m, dtype=gramian.dtype)
    for i in range(m):
        current = torch.zeros(m, dtype=gramian.dtype)  # g_i^PC as a combination of the rows
        current[i] = 1.0
        for j in torch.randperm(m):
            if j == i:
                continue
            inner = gramian[j] @ current  # <g_j, g_i^PC>
            if inner < 0.0:
                current[j] -= inner / gramian[j, j]
        weights += current
    return weights


def mgda_weights(gramian: torch.Tensor, epsilon: float = 0.001, max_iters: int = 100) -> torch.Tensor:
    """MGDA (Désidéri 2012; Sener & Koltun 2018): the min-norm point of the convex hull
    of the task gradients, by the Frank-Wolfe solver of Sener & Koltun's Algorithm 2,
    stopping once the step size falls below `epsilon` (TorchJD `MGDA`). Weights sum to 1."""
    m = len(gramian)
    alpha = torch.full((m,), 1.0 / m, dtype=gramian.dtype)
    for _ in range(max_iters):
        corner = torch.zeros(m, dtype=gramian.dtype)
        corner[torch.argmin(gramian @ alpha)] = 1.0
        a, b, c = alpha @ gramian @ corner, alpha @ gramian @ alpha, corner @ gramian @ corner
        gamma = 1.0 if c <= a else 0.0 if b <= a else (b - a) / (b + c - 2 * a)
        alpha = (1 - gamma) * alpha + gamma * corner
        if gamma < epsilon:
            break
    return alpha


def cagrad_weights(gramian: torch.Tensor, c: float = 0.5, norm_eps: float = 0.0001) -> torch.Tensor:
    """CAGrad (Liu et al. 2021) with radius c·||g0||, g0 the mean gradient: weights
    1/m + (c ||g0|| / ||g_w||) w*, where w* minimises g_wᵀg0 + c ||g0|| ||g_w|| over the
    simplex, computed on J scaled to unit Frobenius norm; all zero when ||g_w|| < norm_eps
    (already Pareto-stationary), as in TorchJD `CAGrad`. No rescaling by 1/(1 + c²)."""
    if c < 0:
        raise InputError(f"cagrad needs c >= 0, got {c}")
    g = _trace_normalized(gramian, norm_eps).numpy()
    m = len(g)
    radius = c * float(np.sqrt(max(np.ones(m) @ g @ np.ones(m), 0.0))) / m  # c ||g0||
    w = cagrad_simplex(g, radius)
    g_w_norm = float(np.sqrt(max(w @ g @ w, 0.0)))
    if g_w_norm < norm_eps:
        return torch.zeros(m, dtype=gramian.dtype)
    return torch.from_numpy(np.full(m, 1.0 / m) + (radius / g_w_norm) * w).to(gramian.dtype)


def imtl_g_weights(gramian: torch.Tensor) -> torch.Tensor:
    """IMTL-G (Liu et al. 2021), generalised to linearly dependent rows as in TorchJD:
    v = pinv(G) · sqrt(diag G), weights v / sum(v) (zero when the sum vanishes), so the
    update has equal projections on every unit task gradient."""
    v = torch.linalg.pinv(gramian) @ gramian.diagonal().sqrt()
    total = v.sum()
    return torch.zeros_like(v) if total.abs() < 1e-12 else v / total


def aligned_mtl_weights(gramian: torch.Tensor, pref_vector=None, scale_mode: str = "min") -> torch.Tensor:
    """Aligned-MTL (Senushkin et al. 2023): the preference weights (1/m by default) mapped
    through the balance transform B = sqrt(λ_scale) V Σ^{-1/2} Vᵀ of G's non-null
    eigenpairs, λ_scale the smallest ("min", default), median or mean ("rmse") eigenvalue,
    as in TorchJD `AlignedMTL`."""
    if scale_mode not in ("min", "median", "rmse"):
        raise InputError(f"unknown scale_mode {scale_mode!r}; use 'min', 'median' or 'rmse'")
    m = len(gramian)
    pref = _preference(pref_vector, m).to(gramian.dtype)
    eigenvalues, vectors = torch.linalg.eigh(gramian, UPLO="U")
    tol = eigenvalues.max() * m * torch.finfo(gramian.dtype).eps
    rank = int((eigenvalues > tol).sum())
    if rank == 0:
        return pref
    order = torch.argsort(eigenvalues, descending=True)[:rank]
    eigenvalues, vectors = eigenvalues[order], vectors[:, order]  # (r,), (m, r) non-null spectrum
    scale = {"min": eigenvalues[-1], "median": torch.median(eigenvalues), "rmse": eigenvalues.mean()}[scale_mode]
    balance = scale.sqrt() * vectors @ torch.diag(1 / eigenvalues.sqrt()) @ vectors.T  # (m, m)
    return balance @ pref


def upgrad_weights(gramian: torch.Tensor, pref_vector=None, norm_eps: float = 0.0001,
                   reg_eps: float = 0.0001) -> torch.Tensor:
    """UPGrad (Quinton & Rey 2024): each row, scaled by its preference weight (1/m by
    default), is projected onto the dual cone of the rows and the projections are SUMMED.
    Solved as argmin_v vᵀGv s.t. v >= u per row, on G / trace(G) + reg_eps·I, as in TorchJD
    `UPGrad` with its quadprog projector."""
    m = len(gramian)
    pref = _preference(pref_vector, m).numpy()
    g = (_trace_normalized(gramian, norm_eps) + reg_eps * torch.eye(m, dtype=gramian.dtype)).numpy()
    projected = [box_qp(g, np.eye(m)[i] * pref[i]) for i in range(m)]
    return torch.from_numpy(np.sum(projected, axis=0)).to(gramian.dtype)


def nash_mtl_weights(gramian: torch.Tensor, max_norm: float = 1.0) -> torch.Tensor:
    """Nash-MTL (Navon et al. 2022): the α > 0 with α_i (G α)_i = 1 (the Nash bargaining
    solution, solved exactly here where TorchJD runs a few convex-concave iterations),
    then scaled down so that ||Jᵀα|| <= max_norm (0 disables the clip), as in TorchJD
    `NashMTL(max_norm=1.0)`. Stateless: weights are recomputed every call."""
    if max_norm < 0:
        raise InputError(f"nash_mtl needs max_norm >= 0, got {max_norm}")
    alpha = torch.from_numpy(nash_bargaining(gramian.numpy())).to(gramian.dtype)
    norm = (alpha @ gramian @ alpha).clamp_min(0).sqrt()  # ||Jᵀα||
    return alpha * (max_norm / norm) if max_norm > 0 and norm > max_norm else alpha


WEIGHTINGS_OF_GRAMIAN = {
    "mean": mean_weights, "pcgrad": pcgrad_weights, "mgda": mgda_weights, "cagrad": cagrad_weights,
    "imtl_g": imtl_g_weights, "aligned_mtl": aligned_mtl_weights, "upgrad": upgrad_weights,
    "nash_mtl": nash_mtl_weights,
}
METHODS = tuple(WEIGHTINGS_OF_GRAMIAN)


def aggregation_weights(jacobian: torch.Tensor, method: str, **options) -> torch.Tensor:
    """The (tasks,) weights `method` gives the rows of `jacobian` (tasks, parameters), on the CPU."""
    if method not in WEIGHTINGS_OF_GRAMIAN:
        raise InputError(f"unknown aggregation {method!r}; use one of {', '.join(METHODS)}")
    if jacobian.ndim != 2 or jacobian.shape[0] == 0:
        raise InputError(f"jacobian must be (tasks, parameters) with at least one task, got shape "
                         f"{tuple(jacobian.shape)}; flatten each task's gradient into one row")
    if not torch.isfinite(jacobian).all():
        raise InputError("jacobian contains NaN or inf; check the task losses for divergence")
    function = WEIGHTINGS_OF_GRAMIAN[method]
    allowed = list(inspect.signature(function).parameters)[1:]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise InputError(f"aggregation {method!r} takes no option(s) {unknown}; it takes {allowed or 'none'}")
    j = jacobian.detach().to(torch.float64)
    return function((j @ j.T).cpu(), **options)  # (T,) from the (T, T) Gramian


def aggregate(jacobian: torch.Tensor, method: str, **options) -> torch.Tensor:
    """One update direction (parameters,) from the per-task gradients `jacobian`
    (tasks, parameters), by `method` in METHODS with its `options` (see each
    `*_weights` function for its convention). Same dtype and device as `jacobian`."""
    weights = aggregation_weights(jacobian, method, **options)
    return weights.to(jacobian.dtype).to(jacobian.device) @ jacobian.detach()
