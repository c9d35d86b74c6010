"""Feature- and relation-based distillation losses, each a forward/backward pair plus a thin Module.

- FitNets hint (Romero et al., 2015): a learned regressor r maps a student feature to the teacher's
  shape, L = mean((r(f_s) - f_t)^2).
- Attention transfer, AT (Zagoruyko & Komodakis, 2017): z(f) = normalize(sum_c |f_c|^p) per sample,
  L = mean((z(f_s) - z(f_t))^2).
- Relational KD, RKD (Park et al., 2019): distance term on pairwise distances normalised by their
  mean, angle term on the cosines of the angles each triplet of samples forms; smooth-L1 each.

Formulas and defaults follow HobbitLong/RepDistiller (``distiller_zoo/{FitNet,AT,RKD}.py``). Student and
teacher features of different widths, spatial sizes or kinds (maps, ViT tokens) are aligned by
``align.py``. Teacher features are constants: every backward returns d loss / d f_s only.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..nn.functional.losses import mse_loss_backward, mse_loss_forward
from ..nn.layers import Conv2d, Linear
from ..nn.module import Module
from .align import channels_last, common_maps, common_maps_backward

EPS = 1e-12   # F.normalize's and RepDistiller's pdist clamp


# ---------------------------------------------------------------------------- smooth L1
def smooth_l1_forward(x: np.ndarray, target: np.ndarray) -> tuple[float, tuple]:
    """mean over elements of l(d), d = x - target: l = d^2 / 2 if |d| < 1 else |d| - 1/2 (beta = 1)."""
    d = x - target
    small = np.abs(d) < 1.0
    loss = np.where(small, 0.5 * d * d, np.abs(d) - 0.5).mean()
    return float(loss), (d, small)


def smooth_l1_backward(dloss: float, cache: tuple) -> np.ndarray:
    """dl/dx = d if |d| < 1 else sign(d), divided by the element count."""
    d, small = cache
    return np.where(small, d, np.sign(d)) * d.dtype.type(dloss / d.size)


# ---------------------------------------------------------------------------- attention transfer
def attention_map_forward(f: np.ndarray, p: float = 2.0) -> tuple[np.ndarray, tuple]:
    """z = Q / max(||Q||_2, eps),  Q = sum_c |f_c|^p   per sample.    f: (N, C, H, W)  ->  z: (N, H*W).

    (RepDistiller and the authors' code take mean_c f^p: for p = 2, or f >= 0 after a ReLU, that is
    Q / C, and the normalisation cancels the 1 / C except inside the eps clamp.)
    """
    a = (np.abs(f) ** p).sum(axis=1).reshape(len(f), -1)              # (N, H*W)
    norm = np.sqrt((a * a).sum(axis=1, keepdims=True))                # (N, 1)
    denom = np.maximum(norm, EPS).astype(a.dtype)
    z = a / denom
    return z, (f, p, z, norm, denom)


def attention_map_backward(dz: np.ndarray, cache: tuple) -> np.ndarray:
    """dQ = (dz - z (z . dz)) / ||Q||  (or dz / eps when ||Q|| < eps);  df = dQ p |f|^(p-1) sign(f)."""
    f, p, z, norm, denom = cache
    projected = (dz - z * (z * dz).sum(axis=1, keepdims=True)) / denom
    da = np.where(norm >= EPS, projected, dz / denom)                  # (N, H*W)
    n, c, h, w = f.shape
    return da.reshape(n, 1, h, w) * (p * np.abs(f) ** (p - 1) * np.sign(f))


def at_loss_forward(f_s: np.ndarray, f_t: np.ndarray, p: float = 2.0,
                    class_token: bool = True) -> tuple[float, tuple]:
    """L = mean((z(f_s) - z(f_t))^2) over N * H * W    (Zagoruyko & Komodakis, 2017, eq. 2 squared).

    f_s: (N, C_s, H_s, W_s), f_t: (N, C_t, H_t, W_t): channel counts may differ (each map sums its own);
    a larger map is adaptive-average-pooled to the common (min H, min W) first, and tokens (N, S, D)
    are laid on their patch grid (``align.common_maps``).
    """
    m_s, m_t, align_cache = common_maps(f_s, f_t, class_token, "at_loss")
    z_s, map_cache = attention_map_forward(m_s, p)
    z_t, _ = attention_map_forward(m_t, p)
    diff = z_s - z_t
    return float((diff * diff).mean()), (diff, map_cache, align_cache)


def at_loss_backward(dloss: float, cache: tuple) -> np.ndarray:
    """dz_s = 2 (z_s - z_t) / (N H W), then through the attention map and the alignment."""
    diff, map_cache, align_cache = cache
    dm = attention_map_backward(diff * diff.dtype.type(2.0 * dloss / diff.size), map_cache)
    return common_maps_backward(dm, align_cache)


# ---------------------------------------------------------------------------- relational KD
def pdist_forward(e: np.ndarray) -> tuple[np.ndarray, tuple]:
    """D_ij = sqrt(max(|e_i|^2 + |e_j|^2 - 2 e_i.e_j, eps)), D_ii = 0.    e: (N, D)  ->  (N, N)."""
    sq = (e * e).sum(axis=1)
    d2 = sq[:, None] + sq[None, :] - 2 * (e @ e.T)
    dist = np.sqrt(np.maximum(d2, EPS)).astype(e.dtype)
    np.fill_diagonal(dist, 0)
    return dist, (e, dist, d2 >= EPS)


def pdist_backward(ddist: np.ndarray, cache: tuple) -> np.ndarray:
    """dD2 = dD / (2 D) off the diagonal (0 where clamped);  de = 2 (rowsum(S) e - S e),  S = dD2 + dD2^T."""
    e, dist, unclamped = cache
    off = ~np.eye(len(e), dtype=bool) & unclamped
    dd2 = np.where(off, ddist / np.where(off, 2 * dist, 1), 0).astype(e.dtype)
    s = dd2 + dd2.T
    return 2 * (s.sum(axis=1, keepdims=True) * e - s @ e)


def _flat_pair(f_s: np.ndarray, f_t: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    if len(f_s) != len(f_t) or len(f_s) < 2:
        raise ValueError(f"{name}: expected student and teacher features with the same N >= 2, got "
                         f"{f_s.shape} and {f_t.shape}")
    return f_s.reshape(len(f_s), -1), f_t.reshape(len(f_t), -1)


def _normalised_distances(e: np.ndarray) -> tuple[np.ndarray, tuple]:
    dist, cache = pdist_forward(e)
    mean = dist[dist > 0].mean()
    return dist / mean, (cache, dist, dist > 0, mean)


def rkd_distance_forward(f_s: np.ndarray, f_t: np.ndarray) -> tuple[float, tuple]:
    """L_d = smooth_l1(D_s / mean(D_s), D_t / mean(D_t)), means over the positive (off-diagonal) D.

    f_s: (N, ...), f_t: (N, ...) flattened per sample; feature sizes may differ.
    """
    e_s, e_t = _flat_pair(f_s, f_t, "rkd_distance")
    d_t, _ = _normalised_distances(e_t)
    d_s, norm_cache = _normalised_distances(e_s)
    loss, sl1_cache = smooth_l1_forward(d_s, d_t)
    return loss, (f_s.shape, norm_cache, sl1_cache)


def rkd_distance_backward(dloss: float, cache: tuple) -> np.ndarray:
    """With g = dL/d(D/m), m = mean of the k positive D:  dD = g / m - [D > 0] sum(g D) / (m^2 k)."""
    shape, (pdist_cache, dist, positive, mean), sl1_cache = cache
    g = smooth_l1_backward(dloss, sl1_cache)
    ddist = g / mean - positive * ((g * dist).sum() / (mean * mean * positive.sum()))
    return pdist_backward(ddist.astype(dist.dtype), pdist_cache).reshape(shape)


def _angles(e: np.ndarray) -> tuple[np.ndarray, tuple]:
    """A_ijk = u_ij . u_ik,  u_ij = (e_j - e_i) / max(|e_j - e_i|, eps).    e: (N, D)  ->  (N, N, N)."""
    v = e[None, :, :] - e[:, None, :]                                  # (N, N, D): v_ij = e_j - e_i
    norm = np.sqrt((v * v).sum(axis=2, keepdims=True))                 # (N, N, 1)
    denom = np.maximum(norm, EPS).astype(e.dtype)
    u = v / denom
    return np.einsum("ijd,ikd->ijk", u, u), (u, norm, denom)


def rkd_angle_forward(f_s: np.ndarray, f_t: np.ndarray) -> tuple[float, tuple]:
    """L_a = smooth_l1(A_s, A_t), mean over all N^3 triplets (A_iik = 0 on both sides)."""
    e_s, e_t = _flat_pair(f_s, f_t, "rkd_angle")
    a_t, _ = _angles(e_t)
    a_s, angle_cache = _angles(e_s)
    loss, sl1_cache = smooth_l1_forward(a_s, a_t)
    return loss, (f_s.shape, angle_cache, sl1_cache)


def rkd_angle_backward(dloss: float, cache: tuple) -> np.ndarray:
    """du_ij = sum_k (g_ijk + g_ikj) u_ik;  dv = (du - u (u . du)) / |v|;  de_j += sum_i dv_ij, de_i -= sum_j dv_ij."""
    shape, (u, norm, denom), sl1_cache = cache
    g = smooth_l1_backward(dloss, sl1_cache)                           # (N, N, N)
    du = np.einsum("ijk,ikd->ijd", g + g.transpose(0, 2, 1), u)         # (N, N, D)
    dv = np.where(norm >= EPS, (du - u * (u * du).sum(axis=2, keepdims=True)) / denom, du / denom)
    return (dv.sum(axis=0) - dv.sum(axis=1)).reshape(shape)


# ---------------------------------------------------------------------------- modules
class HintLoss(Module):
    """FitNets hint: L = mean((regressor(f_s) - f_t)^2), the regressor learned with the student.

    ``regressor`` defaults to ``Conv2d(student_channels, teacher_channels, 1)`` on maps (``conv=True``)
    or ``Linear(student_channels, teacher_channels)`` over the last axis (``conv=False``: vectors
    (N, D), tokens (N, S, D), or maps read channels-last). Features of the same layout and size are
    compared as they are; otherwise both become maps of one spatial size (``align.common_maps``: tokens
    laid on their patch grid without the class token, the larger map adaptive-average-pooled), the
    student's *before* the regressor (for a 1x1 conv or a Linear that is the same as after).
    ``loss(f_s, f_t)`` returns a float; ``loss.backward()`` returns d loss / d f_s and accumulates the
    regressor's gradients.
    """

    def __init__(self, student_channels: int, teacher_channels: int, conv: bool = True,
                 regressor: Module | None = None, rng: Any = None, class_token: bool = True) -> None:
        super().__init__()
        if regressor is None:
            regressor = (Conv2d(student_channels, teacher_channels, 1, rng=rng) if conv
                         else Linear(student_channels, teacher_channels, rng=rng))
        self.regressor = regressor
        self.student_channels, self.teacher_channels = student_channels, teacher_channels
        self.conv, self.class_token = conv, class_token

    def forward(self, f_s: np.ndarray, f_t: np.ndarray) -> float:
        f_s = np.asarray(f_s)
        f_t = np.asarray(f_t, dtype=f_s.dtype)
        align_cache = None
        same_layout = f_s.ndim == f_t.ndim and f_s.shape[:-1] == f_t.shape[:-1] and f_s.ndim in (2, 3)
        if not same_layout and not (f_s.ndim == f_t.ndim == 4 and f_s.shape[2:] == f_t.shape[2:]):
            f_s, f_t, align_cache = common_maps(f_s, f_t, self.class_token, self._name())
        last = not self.conv and f_s.ndim == 4                  # a Linear over the channels of a map
        out = self.regressor(channels_last(f_s) if last else f_s)
        target = channels_last(f_t) if last else f_t
        if np.shape(out) != np.shape(target):
            raise ValueError(f"{self._name()}: regressed student feature {np.shape(out)} does not match the "
                             f"teacher feature {np.shape(target)}")
        loss, cache = mse_loss_forward(out, target.astype(out.dtype, copy=False))
        self._save_for_backward((cache, last, align_cache))
        return float(loss)

    def backward(self, grad_output: float = 1.0) -> np.ndarray:
        cache, last, align_cache = self._saved()
        grad = self.regressor.backward(mse_loss_backward(grad_output, cache))
        grad = grad.transpose(0, 3, 1, 2) if last else grad      # channels-last back to (N, C, H, W)
        return grad if align_cache is None else common_maps_backward(grad, align_cache)

    def extra_repr(self) -> str:
        return f"{self.student_channels}, {self.teacher_channels}"


class ATLoss(Module):
    """Attention transfer: ``loss(f_s, f_t)`` = mean((z(f_s) - z(f_t))^2), z = normalize(sum_c |f_c|^p).

    p >= 1 (below 1, |f|^p has no derivative at 0); maps of any channel counts and sizes, or tokens
    (see ``at_loss_forward``).
    """

    def __init__(self, p: float = 2.0, class_token: bool = True) -> None:
        super().__init__()
        if not p >= 1:
            raise ValueError(f"ATLoss: p must be >= 1, got {p!r}")
        self.p, self.class_token = p, class_token

    def forward(self, f_s: np.ndarray, f_t: np.ndarray) -> float:
        f_s = np.asarray(f_s)
        loss, cache = at_loss_forward(f_s, np.asarray(f_t, dtype=f_s.dtype), self.p, self.class_token)
        self._save_for_backward(cache)
        return loss

    def backward(self, grad_output: float = 1.0) -> np.ndarray:
        return at_loss_backward(grad_output, self._saved())

    def extra_repr(self) -> str:
        return f"p={self.p}"


class RKDLoss(Module):
    """Relational KD: ``loss(f_s, f_t)`` = w_d * distance term + w_a * angle term (RepDistiller's weights)."""

    def __init__(self, w_d: float = 25.0, w_a: float = 50.0) -> None:
        super().__init__()
        self.w_d, self.w_a = w_d, w_a

    def forward(self, f_s: np.ndarray, f_t: np.ndarray) -> float:
        f_s = np.asarray(f_s)
        f_t = np.asarray(f_t, dtype=f_s.dtype)
        loss_d, cache_d = rkd_distance_forward(f_s, f_t)
        loss_a, cache_a = rkd_angle_forward(f_s, f_t)
        self._save_for_backward((cache_d, cache_a))
        return self.w_d * loss_d + self.w_a * loss_a

    def backward(self, grad_output: float = 1.0) -> np.ndarray:
        cache_d, cache_a = self._saved()
        return (rkd_distance_backward(self.w_d * grad_output, cache_d)
                + rkd_angle_backward(self.w_a * grad_output, cache_a))

    def extra_repr(self) -> str:
        return f"w_d={self.w_d}, w_a={self.w_a}"
