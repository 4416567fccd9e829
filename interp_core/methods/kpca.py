"""KPCA-CAM (Karmani et al. 2024): the first kernel principal component of the activations.

pytorch-grad-cam's ``KPCA_CAM`` centres each sample's activations per channel (positions are
the observations), fits scikit-learn's ``KernelPCA(n_components=1, kernel, gamma)`` and uses
the projection of each position on the first component as the map. This module computes the
same in NumPy (no scikit-learn): the kernel matrix of the positions, double-centred as
``KernelCenterer``, its leading eigenvector ``v`` and eigenvalue ``l``, projection
``v * sqrt(l)``. The sign is chosen so that the projection correlates positively with the
channel mean of the activations, as for :class:`~interp_core.EigenCAM` (scikit-learn makes the
largest-magnitude entry positive instead). Where the positions are all alike (activations
constant over space), the centred kernel is zero up to rounding; its eigenvector would be
noise, so the projection is zero instead (:data:`ZERO_TOL`), and so is the map.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from interp_core.methods.base import CAMMethod, LayerContext
from interp_core.methods.smoothing import orient

Kernel = Literal["sigmoid", "rbf", "poly", "linear", "cosine"]
KERNELS = ("sigmoid", "rbf", "poly", "linear", "cosine")
#: Above this many positions the leading eigenvector comes from subspace iteration, not eigh.
DENSE_LIMIT = 1024
#: A centred kernel whose entries are at most this times the kernel's largest magnitude, or
#: whose top eigenvalue is at most this times that magnitude times the number of positions
#: (the bound on the eigenvalues of such entries), is rounding noise (float64 rounding of the
#: centring is ~1e-16 of it): positions all alike, e.g. activations constant over space.
ZERO_TOL = 1e-12


def kernel_matrix(X: np.ndarray, kernel: Kernel, gamma: float | None, coef0: float,
                  degree: int) -> np.ndarray:
    """scikit-learn's pairwise kernels of each sample's rows: ``(N, P, C)`` -> ``(N, P, P)``.

    ``gamma=None`` means ``1 / C`` (scikit-learn's default).
    """
    g = 1.0 / X.shape[-1] if gamma is None else float(gamma)
    dots = X @ X.transpose(0, 2, 1)
    if kernel == "linear":
        return dots
    if kernel == "sigmoid":
        return np.tanh(g * dots + coef0)
    if kernel == "poly":
        return (g * dots + coef0) ** degree
    if kernel == "rbf":
        sq = np.einsum("npc,npc->np", X, X)
        return np.exp(-g * np.maximum(sq[:, :, None] + sq[:, None, :] - 2 * dots, 0.0))
    if kernel == "cosine":
        norms = np.sqrt(np.einsum("npc,npc->np", X, X))
        norms = np.where(norms == 0, 1.0, norms)
        return dots / (norms[:, :, None] * norms[:, None, :])
    raise ValueError(f"kernel={kernel!r} is not one of {KERNELS}")


def center_kernel(K: np.ndarray) -> np.ndarray:
    """``K - row means - column means + mean`` per sample (scikit-learn's ``KernelCenterer``)."""
    return (K - K.mean(axis=1, keepdims=True) - K.mean(axis=2, keepdims=True)
            + K.mean(axis=(1, 2), keepdims=True))


def leading_eigenpair(K: np.ndarray, iterations: int = 500, tol: float = 1e-7
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Largest eigenvalue ``(N,)`` and its unit eigenvector ``(N, P)`` of symmetric ``K``.

    Dense ``eigh`` up to :data:`DENSE_LIMIT` positions; above, subspace iteration on eight
    vectors with a Rayleigh-Ritz step each iteration, until the residual
    ``|K v - l v|`` is below ``tol * |l|`` for every sample (one ``P x P`` by ``P x 8`` product
    per iteration instead of a cubic decomposition).
    """
    n, p, _ = K.shape
    if p <= DENSE_LIMIT:
        values, vectors = np.linalg.eigh(K)
        return values[:, -1], vectors[:, :, -1]
    Q = np.linalg.qr(np.random.default_rng(0).standard_normal((n, p, 8)))[0]
    for _ in range(iterations):
        KQ = K @ Q
        values, vectors = np.linalg.eigh(Q.transpose(0, 2, 1) @ KQ)
        top, value = (Q @ vectors[:, :, -1:])[..., 0], values[:, -1]
        residual = np.linalg.norm((KQ @ vectors[:, :, -1:])[..., 0] - value[:, None] * top,
                                  axis=1)
        if (residual <= tol * np.maximum(np.abs(value), 1e-300)).all():
            break
        Q = np.linalg.qr(KQ)[0]
    return value, top


def kernel_first_component(X: np.ndarray, reference: np.ndarray, *, kernel: Kernel = "sigmoid",
                           gamma: float | None = None, coef0: float = 1.0,
                           degree: int = 3) -> np.ndarray:
    """Projection of each sample's positions on its first kernel principal component.

    Parameters
    ----------
    X : np.ndarray
        ``(N, *spatial, C)`` activations; centred per channel over the positions first.
    reference : np.ndarray
        ``(N, *spatial)``; each projection's sign makes it correlate positively with this.
    kernel, gamma, coef0, degree
        scikit-learn's kernel parameters (``gamma=None``: ``1 / C``).

    Returns
    -------
    np.ndarray
        ``(N, *spatial)`` float32.
    """
    n, spatial, c = X.shape[0], X.shape[1:-1], X.shape[-1]
    flat = np.nan_to_num(X.reshape(n, -1, c).astype(np.float64))
    constant = flat.max(axis=1, keepdims=True) == flat.min(axis=1, keepdims=True)
    # A channel constant over the positions centres to exactly 0 (its mean can be off by
    # an ulp, which a saturating kernel would magnify).
    flat = np.where(constant, 0.0, flat - flat.mean(axis=1, keepdims=True))
    K = kernel_matrix(flat, kernel, gamma, coef0, degree)
    scale = np.abs(K).max(axis=(1, 2))  # (N,)
    K = center_kernel(K)
    # All positions alike (e.g. every channel constant): the centred kernel is rounding
    # noise of size ~1e-16 * scale, whose eigenvector min-max would blow up into a map.
    negligible = np.abs(K).max(axis=(1, 2)) <= ZERO_TOL * scale
    K[negligible] = 0.0
    value, vector = leading_eigenpair(K)
    value = np.where(value <= ZERO_TOL * K.shape[1] * scale, 0.0, value)
    proj = vector * np.sqrt(value)[:, None]
    return orient(proj, reference).reshape((n, *spatial)).astype(np.float32)


class KPCACAM(CAMMethod):
    """KPCA-CAM: class-agnostic, the first kernel principal component of the activations.

    Parameters
    ----------
    kernel : {"sigmoid", "rbf", "poly", "linear", "cosine"}
        pytorch-grad-cam's default is ``"sigmoid"``.
    gamma : float, optional
        Kernel coefficient; None means ``1 / channels``.
    coef0, degree
        For the sigmoid and polynomial kernels (scikit-learn's defaults 1 and 3).
    """

    name = "kpcacam"
    requires = ()
    needs = "activations"
    target_free = True

    def __init__(self, model: Any, layer: Any = None, *, kernel: Kernel = "sigmoid",
                 gamma: float | None = None, coef0: float = 1.0, degree: int = 3,
                 **kwargs: Any) -> None:
        super().__init__(model, layer, **kwargs)
        if kernel not in KERNELS:
            raise ValueError(f"kernel={kernel!r} is not one of {KERNELS}")
        self.kernel: Kernel = kernel
        self.gamma, self.coef0, self.degree = gamma, float(coef0), int(degree)

    def layer_map(self, activations: np.ndarray, gradients: np.ndarray | None,
                  ctx: LayerContext) -> np.ndarray:
        return kernel_first_component(activations, activations.mean(axis=-1),
                                      kernel=self.kernel, gamma=self.gamma, coef0=self.coef0,
                                      degree=self.degree)
