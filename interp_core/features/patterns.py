"""Filter patterns: the inputs a layer's channels respond to, by activation maximisation.

:func:`filter_patterns` runs gradient ascent on the input image entirely in NumPy; the only thing
a backend supplies per step is the input gradient
(:meth:`~interp_core.backend.protocol.InputGradientBackend.input_gradients`). All randomness (the
starting images, the jitter offsets) comes from NumPy generators seeded by ``seed``, so the same
seed and weights give the same patterns on torch, TensorFlow and JAX, up to float32 rounding.

Input layout: the core keeps images channels-last ``(K, *size, C_in)`` and converts to the
model's native layout for each call. A backend may say which layout it takes with an attribute
``input_layout``: ``"channels_first"``/``"channels_last"``, or a method of the model returning
one; without it, channels-last (the canonical layout). ``layout=`` overrides both.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from interp_core.backend.layout import CHANNELS_FIRST, input_layout
from interp_core.backend.protocol import INPUT_GRADIENTS
from interp_core.backend.registry import get_backend
from interp_core.features.maps import layer_output
from interp_core.features.params import DecorrelatedImage, PixelImage


# -- filter patterns ----------------------------------------------------------------------
def filter_patterns(
    model: Any,
    layer: Any,
    channels: int | Sequence[int] | np.ndarray,
    size: Sequence[int] = (64, 64),
    *,
    steps: int = 256,
    lr: float | None = None,
    jitter: int = 2,
    blur_every: int = 4,
    blur_sigma: float = 0.7,
    decay: float = 1e-3,
    decorrelate: bool = False,
    seed: int = 0,
    input_channels: int = 3,
    init_scale: float = 0.1,
    input_mean: Sequence[float] | None = None,
    input_std: Sequence[float] | None = None,
    batch_size: int | None = None,
    layout: str | None = None,
    backend: str | None = None,
    output: Any = None,
) -> np.ndarray:
    """Images that maximise the mean activation of each channel (activation maximisation).

    Each step takes the gradient of the channel's spatial mean with respect to the (jittered)
    image and ascends it; then the regularisers act: L2 decay, a Gaussian blur every
    ``blur_every`` steps, and clipping to [0, 1]. By default the pixels are the parameters
    (gradient normalised to RMS 1 per image, steps of ``lr`` pixel units); ``decorrelate=True``
    optimises Lucid's decorrelated Fourier parametrisation with Adam instead
    (:mod:`interp_core.features.params`). All channels run as one batch (or in chunks of
    ``batch_size``); a channel's pattern does not depend on the other channels in the batch.

    Parameters
    ----------
    model : framework model
        Any model whose backend has the ``"input_gradients"`` capability.
    layer : str, layer object or None
        The layer whose channels to maximise; None means the model output (class logits).
    channels : int or sequence of int
        Channel indices, ``K`` of them; one pattern each, in this order (repeats allowed).
    size : sequence of int
        Spatial size of the patterns, ``(H, W)`` for images (1-D and 3-D sizes work too).
    steps : int
        Gradient-ascent steps.
    lr : float, optional
        Step size: in pixel units (RMS per image) for pixels, default 0.05; Adam's step for
        ``decorrelate=True``, default 0.1.
    jitter : int
        Each step rolls the images by a random offset in ``[-jitter, jitter]`` per spatial axis
        (wrapping around) before the gradient, and the gradient back; 0 switches it off.
    blur_every, blur_sigma : int, float
        A Gaussian blur of standard deviation ``blur_sigma`` pixels every ``blur_every`` steps
        (0 switches it off).
    decay : float
        L2 decay per step of the parameters: pixels ``x <- 0.5 + (1 - decay) * (x - 0.5)``,
        or the spectrum ``s <- (1 - decay) * s``.
    decorrelate : bool
        Optimise ``sigmoid(colour @ irfftn(spectrum / f))``: a ``1/f`` Fourier basis and, for 3
        input channels, decorrelated colours (Olah et al., 2017). Smoother, more natural
        patterns; the blur then acts on the spectrum (circular borders).
    seed : int
        Seeds the starting images (per channel index) and the jitter offsets.
    input_channels : int
        Channels of the model's input (3 for RGB).
    init_scale : float
        Standard deviation of the starting images' pixels around grey 0.5 (white noise, or
        smooth noise with ``decorrelate=True``).
    input_mean, input_std : sequence of float, optional
        Per-input-channel normalisation the model expects: it is fed
        ``(image - input_mean) / input_std`` (e.g. ImageNet statistics).
    batch_size : int, optional
        At most this many channels per backend call (default: all at once).
    layout : str, optional
        ``"channels_first"`` or ``"channels_last"``: the model's input layout. Default: see
        :func:`interp_core.backend.layout.input_layout`.
    backend : str, optional
        Force an adapter; default: detected from the model's type.
    output : None, str, int or callable
        Which model output to use when ``layer`` is None and the model returns a structure.

    Returns
    -------
    np.ndarray
        float32 ``(K, *size, input_channels)``, channels last, values in [0, 1], ready for
        :func:`~interp_core.feature_grid` or :func:`~interp_core.save_png`.

    Raises
    ------
    ValueError
        Bad arguments (each message names the value); a layer with no channels dimension;
        channels out of range (the message gives the layer's channel count); a layer the
        objective cannot be differentiated through (the message names the layer).

    Warns
    -----
    RuntimeWarning
        Non-finite objectives or gradients: the optimisation stops there and the images
        reached before that step are returned. Also when the gradient is zero for some channels
        at the start (dead channels: their patterns stay noise).
    """
    chans = _check_channels(channels)
    if lr is None:
        lr = 0.1 if decorrelate else 0.05
    size = _check_args(size, steps, lr, jitter, blur_every, blur_sigma, decay, input_channels,
                       init_scale, batch_size)
    impl = get_backend(backend if backend is not None else model)
    if INPUT_GRADIENTS not in getattr(impl, "capabilities", ()):
        raise ValueError(
            f"backend {impl.name!r} does not declare the {INPUT_GRADIENTS!r} capability that "
            "filter_patterns needs"
        )
    feed = _InputFeed(impl, model, input_layout(impl, model, layout), input_channels, input_mean,
                      input_std)
    if layer is not None:
        _check_layer_channels(impl, model, layer, chans, feed.native(
            np.full((1, *size, input_channels), 0.5, np.float32)), output)
    schedule = np.random.default_rng([seed, 0]).integers(-jitter, jitter + 1,
                                                         size=(steps, len(size)))
    chunk = batch_size or len(chans)
    parts = []
    for start in range(0, len(chans), chunk):
        part = chans[start : start + chunk]
        param = _start(part, size, input_channels, seed, init_scale, decorrelate)
        parts.append(_ascend(feed, layer, part, param, schedule, lr=lr, blur_every=blur_every,
                             blur_sigma=blur_sigma, decay=decay, output=output))
    return np.concatenate(parts, axis=0)


class _InputFeed:
    """Channels-last NumPy images <-> the model's native input; input gradients back."""

    def __init__(self, impl: Any, model: Any, layout: str, channels: int,
                 mean: Sequence[float] | None, std: Sequence[float] | None) -> None:
        self.impl, self.model, self.layout = impl, model, layout
        self.mean = _per_channel(mean, channels, "input_mean", 0.0)
        self.std = _per_channel(std, channels, "input_std", 1.0)
        if np.any(self.std <= 0):
            raise ValueError(f"input_std must be positive, got {self.std.tolist()}")
        self.identity = not self.mean.any() and bool(np.all(self.std == 1))

    def native(self, images: np.ndarray) -> Any:
        x = images if self.identity else (images - self.mean) / self.std
        if self.layout == CHANNELS_FIRST:
            x = np.moveaxis(x, -1, 1)
        return self.impl.from_numpy(np.ascontiguousarray(x, dtype=np.float32), self.model)

    def gradients(self, layer: Any, images: np.ndarray, channels: np.ndarray,
                  output: Any) -> tuple[np.ndarray, np.ndarray]:
        """Objectives ``(K,)`` and their gradients w.r.t. ``images``, channels-last."""
        values, grads = self.impl.input_gradients(
            self.model, self.native(images), layer, channels, output=output)
        grads = np.asarray(grads, dtype=np.float32)
        if self.layout == CHANNELS_FIRST:
            grads = np.ascontiguousarray(np.moveaxis(grads, 1, -1))
        if grads.shape != images.shape:
            raise ValueError(
                f"backend {self.impl.name!r} returned input gradients of shape "
                f"{grads.shape} for images of shape {images.shape} ({self.layout}); pass "
                "layout= if the model takes the other layout"
            )
        return np.asarray(values, dtype=np.float32), grads if self.identity else grads / self.std


def _per_channel(value: Sequence[float] | None, channels: int, what: str,
                 default: float) -> np.ndarray:
    if value is None:
        return np.full(channels, default, np.float32)
    arr = np.asarray(value, dtype=np.float32).reshape(-1)
    if arr.size == 1:
        arr = np.repeat(arr, channels)
    if arr.size != channels:
        raise ValueError(f"{what} has {arr.size} values but the input has {channels} channels")
    return arr


def _check_channels(channels: int | Sequence[int] | np.ndarray) -> np.ndarray:
    arr = np.asarray([channels] if np.isscalar(channels) else channels)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"channels must be an int or a non-empty 1-D sequence, got {channels!r}")
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"channels must be integers, got {arr.tolist()!r}")
    if np.any(arr < 0):
        raise ValueError(f"channels must be >= 0, got {arr[arr < 0].tolist()}")
    return arr.astype(np.int64)


def _check_args(size: Sequence[int], steps: int, lr: float, jitter: int, blur_every: int,
                blur_sigma: float, decay: float, input_channels: int, init_scale: float,
                batch_size: int | None) -> tuple[int, ...]:
    dims = (size,) if np.isscalar(size) else tuple(size)
    if not dims or any(int(d) != d or d < 1 for d in dims):
        raise ValueError(f"size must be positive ints such as (64, 64), got {size!r}")
    checks = [
        ("steps", steps, steps >= 0), ("lr", lr, lr > 0), ("jitter", jitter, jitter >= 0),
        ("blur_every", blur_every, blur_every >= 0), ("blur_sigma", blur_sigma, blur_sigma >= 0),
        ("decay", decay, 0 <= decay < 1), ("input_channels", input_channels, input_channels >= 1),
        ("init_scale", init_scale, init_scale >= 0),
        ("batch_size", batch_size, batch_size is None or batch_size >= 1),
    ]
    for name, value, ok in checks:
        if not ok:
            raise ValueError(f"{name}={value!r} is out of range")
    return tuple(int(d) for d in dims)


def _check_layer_channels(impl: Any, model: Any, layer: Any, channels: np.ndarray, probe: Any,
                          output: Any) -> None:
    """One forward pass on a grey image: the layer must have channels, enough of them."""
    acts = layer_output(impl, model, probe, layer, output=output)
    count = acts.shape[-1]
    bad = channels[channels >= count]
    if bad.size:
        raise ValueError(
            f"channel {int(bad[0])} is out of range: layer {layer!r} has {count} channels "
            f"(output shape {acts.shape[1:]} channels-last), so channels must be in "
            f"[0, {count - 1}]"
        )


def _start(channels: np.ndarray, size: tuple[int, ...], input_channels: int, seed: int,
           scale: float, decorrelate: bool) -> PixelImage | DecorrelatedImage:
    """The starting images; each channel's noise depends only on (seed, channel index)."""
    kind = DecorrelatedImage if decorrelate else PixelImage
    shape = kind.noise_shape(size, input_channels)
    noise = np.stack([np.random.default_rng([seed, 1, int(c)]).standard_normal(shape)
                      for c in channels])
    return kind(noise, scale, size)


def _ascend(feed: _InputFeed, layer: Any, channels: np.ndarray,
            param: PixelImage | DecorrelatedImage, schedule: np.ndarray, *, lr: float,
            blur_every: int, blur_sigma: float, decay: float, output: Any) -> np.ndarray:
    axes = tuple(range(1, len(schedule[0]) + 1)) if len(schedule) else ()
    for step, shift in enumerate(schedule):
        images = param.images()
        moved = np.roll(images, tuple(shift), axis=axes) if shift.any() else images
        try:
            values, grads = feed.gradients(layer, moved, channels, output)
        except (ValueError, TypeError, RuntimeError, LookupError) as exc:
            if step:
                raise
            raise ValueError(
                f"filter_patterns cannot differentiate the mean activation of layer {layer!r} "
                f"with respect to the input on backend {feed.impl.name!r} (a non-differentiable "
                f"path, or a bad layer/channel): {exc}"
            ) from exc
        bad = ~np.isfinite(values) | ~np.isfinite(grads).reshape(len(grads), -1).all(axis=1)
        if bad.any():
            warnings.warn(
                f"filter_patterns: non-finite objective or gradient at step {step} for "
                f"channels {channels[bad].tolist()} of layer {layer!r}; stopped and returned the "
                f"images reached after {step} steps", RuntimeWarning, stacklevel=3,
            )
            break
        if shift.any():
            grads = np.roll(grads, tuple(-shift), axis=axes)
        if step == 0:
            dead = ~grads.reshape(len(grads), -1).any(axis=1)
            if dead.any():
                warnings.warn(
                    f"filter_patterns: the gradient of channels {channels[dead].tolist()} of "
                    f"layer {layer!r} is zero at the starting image (dead channels, or a path "
                    "without gradient such as rounding or argmax); their patterns stay noise",
                    RuntimeWarning, stacklevel=3,
                )
        blur = blur_sigma if blur_every and (step + 1) % blur_every == 0 else 0.0
        param.step(grads, lr, decay, blur)
    return param.images()
