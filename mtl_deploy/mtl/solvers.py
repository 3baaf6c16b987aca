"""Small exact solvers behind the gradient-aggregation methods, on (tasks, tasks) Gramians.

The problems are tiny (one variable per task), so they are solved in float64 NumPy with
finite or quadratically converging methods instead of pulling a general QP/cone solver
into the runtime dependencies: an active-set method for the box-constrained QP of UPGrad,
active-set Newton for CAGrad's simplex problem, and Newton's method for the Nash
bargaining condition.
"""

from __future__ import annotations

import numpy as np


def box_qp(gramian: np.ndarray, lower: np.ndarray, tol: float = 1e-12) -> np.ndarray:
    """argmin_v vᵀ G v subject to v >= `lower`, for positive definite G (m, m).

    Substituting v = lower + z turns it into a non-negative QP in z, solved by the
    Lawson-Hanson active-set method: it terminates after finitely many exact solves, so
    the answer matches an interior-point or dual QP solver to machine precision.
    """
    m = len(lower)
    linear = gramian @ lower  # (m,) gradient of ½ zᵀGz + zᵀ(G lower) at z = 0
    z, free = np.zeros(m), np.zeros(m, dtype=bool)
    for _ in range(3 * m + 10):
        descent = -(gramian @ z + linear)  # (m,) minus the gradient
        candidates = ~free & (descent > tol)
        if not candidates.any():
            break
        free[np.argmax(np.where(candidates, descent, -np.inf))] = True
        while True:
            trial = np.zeros(m)
            trial[free] = np.linalg.solve(gramian[np.ix_(free, free)], -linear[free])
            if (trial[free] > 0).all():
                z = trial
                break
            # Step from z towards the trial point until the first free coordinate hits zero.
            blocking = free & (trial <= 0)
            step = np.min(z[blocking] / (z[blocking] - trial[blocking]))
            z = z + step * (trial - z)
            free &= z > tol
            z[~free] = 0.0
    return lower + z


def cagrad_simplex(gramian: np.ndarray, radius: float, max_iters: int = 200, tol: float = 1e-13) -> np.ndarray:
    """argmin over the simplex of  f(w) = wᵀ G 1/m + radius · sqrt(wᵀ G w)  (CAGrad's dual).

    Active-set Newton: Newton steps on the face of the current support (equality
    constrained to sum 1, where f is smooth and strictly convex for positive definite G),
    dropping a coordinate when a step reaches zero and adding the one that most violates
    the optimality conditions when the face is solved. Converges quadratically, ending at
    a KKT point to machine precision.
    """
    m = len(gramian)
    b = gramian @ np.full(m, 1.0 / m)  # (m,)
    g = gramian + 1e-12 * np.trace(gramian) * np.eye(m)  # ridge: Newton needs G positive definite

    def value(w: np.ndarray) -> float:
        return float(b @ w + radius * np.sqrt(max(w @ g @ w, 0.0)))

    w, support = np.full(m, 1.0 / m), np.ones(m, dtype=bool)
    for _ in range(max_iters):
        gw = g @ w
        q = np.sqrt(max(w @ gw, 1e-300))
        grad = b + radius * gw / q  # (m,)
        hess = radius * (g / q - np.outer(gw, gw) / q**3)  # (m, m) zero along w itself
        k = int(support.sum())
        kkt = np.zeros((k + 1, k + 1))
        kkt[:k, :k], kkt[:k, k], kkt[k, :k] = hess[np.ix_(support, support)], 1.0, 1.0
        step = np.zeros(m)
        step[support] = np.linalg.lstsq(kkt, np.append(-grad[support], 0.0), rcond=None)[0][:k]
        if np.abs(step).max() < tol:
            level = grad[support].mean()  # -λ: the common gradient value on the face
            outside = np.where(support, np.inf, grad - level)
            if outside.min() >= -tol:
                break
            support[np.argmin(outside)] = True  # entering it lowers f
            continue
        shrinking = support & (step < 0)
        t_max = min(1.0, np.min(-w[shrinking] / step[shrinking])) if shrinking.any() else 1.0
        t = t_max
        while value(w + t * step) > value(w) + 1e-4 * t * (grad @ step) and t > 1e-12:
            t *= 0.5
        w = np.maximum(w + t * step, 0.0)
        if t == t_max and t_max < 1.0:
            support &= w > 0  # the blocking coordinate leaves the face
            w[~support] = 0.0
        w /= w.sum()
    return w


def nash_bargaining(gramian: np.ndarray, max_iters: int = 100, tol: float = 1e-12) -> np.ndarray:
    """The α > 0 with α_i (G α)_i = 1 for every task (Nash-MTL's bargaining solution).

    It is the unique minimiser of the strictly convex ½ αᵀGα − Σ log α_i, found by damped
    Newton steps that keep α positive. G is scaled to unit norm for conditioning and the
    answer scaled back (α scales as 1/sqrt of G's scale).
    """
    m = len(gramian)
    scale = max(np.linalg.norm(gramian), 1e-30)
    g = gramian / scale + 1e-10 * np.eye(m)  # the ridge keeps a minimiser when tasks fully conflict

    def objective(a: np.ndarray) -> float:
        return 0.5 * a @ g @ a - np.log(a).sum()

    alpha = np.ones(m) / np.sqrt(max(np.ones(m) @ g @ np.ones(m) / m, 1e-30))
    for _ in range(max_iters):
        grad = g @ alpha - 1.0 / alpha
        newton = np.linalg.solve(g + np.diag(1.0 / alpha**2), -grad)
        if -(grad @ newton) < tol:
            break
        t = 1.0
        while (alpha + t * newton <= 0).any() or objective(alpha + t * newton) > objective(alpha) + 0.25 * t * (grad @ newton):
            t *= 0.5
        alpha = alpha + t * newton
    return alpha / np.sqrt(scale)
