"""Image parametrisations and regularisers for activation maximisation (NumPy only).

An image parametrisation holds ``K`` channels-last images ``(K, *size, C)`` in [0, 1], turns a
gradient with respect to those images into an update of its own parameters, and applies the
regularisers (L2 decay, blur, clipping) in its own space:

- :class:`PixelImage`: the pixels themselves; normalised gradient ascent (RMS 1 per image),
  decay towards grey, a separable Gaussian blur, clipping to [0, 1].
- :class:`DecorrelatedImage`: Lucid's parametrisation (Olah et al., 2017): the image is
  ``sigmoid(colour @ irfftn(scale * spectrum) / 4)`` with a ``1/f`` frequency ``scale`` and, for
  3 channels, decorrelated colours. The spectrum is updated with Adam; the blur is the Gaussian's
  transfer function applied to the spectrum.

Every update is linear in the gradient where float noise could be amplified (Adam's epsilon is
relative to the gradient's RMS), so float32 differences between backends stay small.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from interp_core.imaging import gaussian_blur

#: Lucid's square root of the ImageNet colour correlation matrix, columns scaled to unit max
#: norm: the colour half of the decorrelated parametrisation.
COLOR_SQRT = np.array(
    [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype=np.float64
)
COLOR_SQRT /= np.max(np.linalg.norm(COLOR_SQRT, axis=0))
COLOR_SQRT.setflags(write=False)

_MAGIC = 4.0  # Lucid's divisor of the irfft output, keeps the sigmoid's input near 0
_ADAM = (0.9, 0.999)
_ADAM_EPS = 1e-2  # relative to the per-image RMS of the gradient (see the module docstring)


def _per_image(values: np.ndarray, ndim: int) -> np.ndarray:
    return values.reshape((-1,) + (1,) * (ndim - 1))


def _rms(x: np.ndarray) -> np.ndarray:
    """Root mean square per image, float64 ``(K,)``; complex entries count by magnitude."""
    flat = x.reshape(len(x), -1)
    if np.iscomplexobj(flat):
        flat = np.abs(flat)
    return np.sqrt(np.einsum("ij,ij->i", flat, flat).astype(np.float64) / flat.shape[1])


# -- pixels ---------------------------------------------------------------------------------
class PixelImage:
    """Images optimised in pixel space.

    Parameters
    ----------
    noise : np.ndarray
        ``(K, *noise_shape(size, C))`` standard normal noise.
    init_scale : float
        The starting images are ``clip(0.5 + init_scale * noise, 0, 1)``.
    """

    @staticmethod
    def noise_shape(size: tuple[int, ...], channels: int) -> tuple[int, ...]:
        """Shape of one image's starting noise: ``(*size, C)``."""
        return (*size, channels)

    def __init__(self, noise: np.ndarray, init_scale: float, size: tuple[int, ...]) -> None:
        self.pixels = np.clip(0.5 + init_scale * noise, 0.0, 1.0).astype(np.float32)

    def images(self) -> np.ndarray:
        """float32 ``(K, *size, C)`` in [0, 1]."""
        return self.pixels

    def step(self, grads: np.ndarray, lr: float, decay: float, blur_sigma: float) -> None:
        """Ascend ``grads`` (d objective / d images), then decay, blur (sigma > 0), clip."""
        scale = (lr / np.maximum(_rms(grads), 1e-30)).astype(np.float32)
        x = _per_image(scale, grads.ndim) * grads
        x += self.pixels
        if decay:  # x <- 0.5 + (1 - decay) * (x - 0.5)
            x *= np.float32(1.0 - decay)
            x += np.float32(0.5 * decay)
        if blur_sigma > 0:
            x = gaussian_blur(x, blur_sigma, range(1, x.ndim - 1), borders="reflect")
        self.pixels = np.clip(x, 0.0, 1.0, out=x)


# -- decorrelated (Fourier, colour) ---------------------------------------------------------
@lru_cache(maxsize=1)
def _fft() -> Any:
    """``scipy.fft`` where installed (several times faster on float32), else ``numpy.fft``.

    Imported on first use, so that ``import interp_core`` stays light.
    """
    try:
        from scipy import fft
    except ImportError:
        return np.fft
    return fft


@lru_cache(maxsize=16)
def _frequencies(size: tuple[int, ...]) -> np.ndarray:
    """``|f|`` (cycles per pixel) on the ``rfftn`` grid of ``size``."""
    freqs = [np.fft.fftfreq(n) for n in size[:-1]] + [np.fft.rfftfreq(size[-1])]
    grid = np.meshgrid(*freqs, indexing="ij")
    out = np.sqrt(sum(g * g for g in grid))
    out.setflags(write=False)
    return out


@lru_cache(maxsize=16)
def _adjoint_weights(size: tuple[int, ...]) -> np.ndarray:
    """Weights that make ``rfftn(g) * w`` the adjoint of ``irfftn(., s=size)``.

    The last axis's bins stand for two conjugate bins (weight 2), except DC and, for even
    lengths, Nyquist (weight 1); ``irfftn`` divides by the number of pixels.
    """
    n = size[-1]
    w = np.full(n // 2 + 1, 2.0)
    w[0] = 1.0
    if n % 2 == 0:
        w[-1] = 1.0
    out = w / float(np.prod(size))
    out.setflags(write=False)
    return out


class DecorrelatedImage:
    """Images ``sigmoid(colour @ irfftn(scale * spectrum) / 4)``, Adam on the spectrum.

    Kept channels-first inside, ``(K, C, *size)``, so that the FFTs run over contiguous axes,
    in float32 / complex64.

    Parameters
    ----------
    noise : np.ndarray
        ``(K, *noise_shape(size, C))`` standard normal noise: real and imaginary parts of the
        starting spectrum.
    init_scale : float
        Standard deviation of the starting images' pixels around grey (smooth noise: the
        spectrum is scaled to give it).
    size : tuple of int
        Spatial size of the images.
    """

    @staticmethod
    def noise_shape(size: tuple[int, ...], channels: int) -> tuple[int, ...]:
        """Shape of one image's starting noise: ``(2, C, *rfftn_shape(size))``."""
        return (2, channels, *_frequencies(tuple(size)).shape)

    def __init__(self, noise: np.ndarray, init_scale: float, size: tuple[int, ...]) -> None:
        self.size = tuple(size)
        self.axes = tuple(range(2, 2 + len(self.size)))
        self.channels = noise.shape[2]
        self.spectrum = (noise[:, 0] + 1j * noise[:, 1]).astype(np.complex64)
        scale = np.sqrt(np.prod(self.size)) / np.maximum(_frequencies(self.size),
                                                         1.0 / max(self.size))
        self.scale = scale.astype(np.float32)
        # rfftn(g) * adjoint is the gradient w.r.t. the spectrum of a gradient g w.r.t. z.
        self.adjoint = (scale * _adjoint_weights(self.size) / _MAGIC).astype(np.float32)
        colour = COLOR_SQRT if self.channels == 3 else np.eye(self.channels)
        self.colour = colour.astype(np.float32)
        self.m = np.zeros(self.spectrum.shape, np.complex64)
        self.v = np.zeros(self.spectrum.shape, np.float32)
        self.t = 0
        # Scale each image's starting spectrum so that its pixels have std ~init_scale: the
        # sigmoid's slope at 0 is 1/4, so the logits need std 4 * init_scale.
        logits_std = self._logits().reshape(len(noise), -1).std(axis=1)
        want = 4.0 * init_scale / np.maximum(logits_std, 1e-12)
        self.spectrum *= _per_image(want.astype(np.float32), self.spectrum.ndim)
        self._render()

    def _logits(self) -> np.ndarray:
        """``colour @ irfftn(scale * spectrum) / 4``, channels-first ``(K, C, *size)``."""
        z = _fft().irfftn(self.spectrum * self.scale, s=self.size, axes=self.axes)
        k, c = z.shape[:2]
        return (self.colour @ z.reshape(k, c, -1)).reshape(z.shape) / np.float32(_MAGIC)

    def _render(self) -> None:
        logits = self._logits().astype(np.float32)
        self._images_cf = 1.0 / (1.0 + np.exp(-logits))
        self._images = np.ascontiguousarray(np.moveaxis(self._images_cf, 1, -1))

    def images(self) -> np.ndarray:
        """float32 ``(K, *size, C)`` in (0, 1)."""
        return self._images

    def spectrum_gradient(self, grads: np.ndarray) -> np.ndarray:
        """d objective / d spectrum (as ``d/dRe + i d/dIm``), ``(K, C, *rfftn_shape)``, from
        d objective / d images ``(K, *size, C)``."""
        img = self._images_cf
        g = np.moveaxis(grads, -1, 1) * img * (1.0 - img)  # through the sigmoid
        k, c = g.shape[:2]
        g = (self.colour.T @ g.reshape(k, c, -1)).reshape(g.shape)
        return _fft().rfftn(g, axes=self.axes) * self.adjoint

    def step(self, grads: np.ndarray, lr: float, decay: float, blur_sigma: float) -> None:
        """Adam ascent of the spectrum along ``grads``, then decay and blur of the spectrum."""
        g = self.spectrum_gradient(grads)
        g *= _per_image((1.0 / np.maximum(_rms(g), 1e-30)).astype(np.float32), g.ndim)
        b1, b2 = _ADAM
        self.t += 1
        self.m *= np.float32(b1)
        self.m += np.float32(1 - b1) * g
        self.v *= np.float32(b2)
        self.v += np.float32(1 - b2) * (g.real * g.real + g.imag * g.imag)
        denom = np.sqrt(self.v * np.float32(1.0 / (1 - b2**self.t)))
        denom += np.float32(_ADAM_EPS)
        self.spectrum += np.float32(lr / (1 - b1**self.t)) * self.m / denom
        if decay:
            self.spectrum *= np.float32(1.0 - decay)
        if blur_sigma > 0:
            self.spectrum *= _gaussian_transfer(self.size, float(blur_sigma))
        self._render()


@lru_cache(maxsize=16)
def _gaussian_transfer(size: tuple[int, ...], sigma: float) -> np.ndarray:
    """A circular Gaussian blur as a multiplier of the ``rfftn`` spectrum."""
    out = np.exp(-2.0 * (np.pi * sigma * _frequencies(size)) ** 2).astype(np.float32)
    out.setflags(write=False)
    return out
