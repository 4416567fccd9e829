"""What an audit run is: a plain, picklable description that every worker builds from.

A worker (the local engine's loop or a Ray actor on another machine) receives an
:class:`AuditConfig` and builds the model itself from ``config.model``: a spec string or a
zero-argument factory. A live model object is only accepted by the local engine, which uses
it as it is; it is never pickled to a worker.

Model specs (:func:`build_model`):

``demo`` / ``demo:torch`` / ``demo:tensorflow`` / ``demo:jax``
    The bundled shapes classifier (:mod:`interp_core.datasets.demo`), 64x64 inputs.
anything ``interp explain`` accepts
    A model file (:func:`interp_core.io.models.load_model`: ``.keras``/``.h5``/``.hdf5``,
    ``.pt2``, a pickled ``.pt`` with ``trust_model=True``), or ``module:attribute`` naming a
    model or a zero-argument factory (``module`` a dotted import path or a ``.py`` file),
    with ``weights`` loaded into it.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

DEMO_PREFIX = "demo"
TARGET_MODES = ("predicted", "label")
FAITHFULNESS = ("deletion", "insertion", "average_drop")
#: Environment variables that fix the CPU threads of the numeric libraries a framework uses.
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
              "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")


@dataclass(frozen=True)
class AuditConfig:
    """Everything a worker needs to turn a batch of image rows into result rows.

    Attributes
    ----------
    model : str or callable
        A model spec (see the module docstring) or a zero-argument factory (picklable for the
        Ray engine: a module-level function or class).
    method : str
        CAM method name (``ic.methods()``).
    layer : str, list of str or None
        Target layer(s); None picks the last spatial layer.
    backend : str or None
        Force an adapter; None detects it from the model.
    target : str or int
        ``"predicted"`` (each image's top-1 class), ``"label"`` (the true class where known,
        else the prediction) or a class index.
    classes : tuple of str or None
        Names of the model's outputs in order; None when labels are class numbers.
    size : tuple of int
        Model input size: one number for every spatial axis, ``(height, width)`` or
        ``(depth, height, width)``; inputs are resized to it.
    channels : int or None
        Channels the model takes; None: what the model declares (its first convolution,
        its input shape), else 3. Images are converted to it (gray, RGB, RGBA).
    mean, std : tuple of float
        Normalisation of inputs scaled to [0, 1]: one number, or one per channel.
    batch_size : int
        Images per forward/backward pass.
    map_size : int
        Longest side of the stored map (it is resized down, never up).
    faithfulness : tuple of str
        Among ``deletion``, ``insertion``, ``average_drop``.
    overlays : bool
        Write ``overlays/*.png``.
    alpha : float
        Heatmap weight of the overlays.
    out : str
        Absolute output folder (overlays are written there by the workers).
    threads : int or None
        CPU threads per worker for the framework; None leaves the framework's default.
    device : str or None
        ``"cuda"`` moves a model with a ``.to`` method there (Ray actors given a GPU).
    cwd : str
        The driver's working folder, put on ``sys.path`` so ``module:attr`` specs import alike.
    method_options : dict
        Extra keyword arguments of the method (``fc=`` for CAM).
    trust_model : bool
        Load pickled model files (running the code inside them); see
        :func:`interp_core.io.models.load_model`.
    weights : str or None
        Weights file loaded into the model built from ``model``.
    """

    model: Any
    out: str
    method: str = "gradcam"
    layer: Any = None
    backend: str | None = None
    target: str | int = "predicted"
    classes: tuple[str, ...] | None = None
    size: tuple[int, ...] = (224, 224)
    channels: int | None = None
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    batch_size: int = 32
    map_size: int = 32
    faithfulness: tuple[str, ...] = ()
    overlays: bool = True
    alpha: float = 0.5
    threads: int | None = None
    device: str | None = None
    cwd: str = field(default_factory=os.getcwd)
    method_options: dict[str, Any] = field(default_factory=dict)
    trust_model: bool = False
    weights: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.target, str) and self.target not in TARGET_MODES:
            raise ValueError(
                f"target={self.target!r} must be 'predicted', 'label' or a class index"
            )
        unknown = [m for m in self.faithfulness if m not in FAITHFULNESS]
        if unknown:
            raise ValueError(f"faithfulness metrics {unknown} are unknown; choose from "
                             f"{list(FAITHFULNESS)}")
        for name in ("batch_size", "map_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive integer")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads={self.threads!r} must be a positive integer or None")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha={self.alpha} must be in [0, 1]")

    def identity(self) -> dict[str, Any]:
        """The settings that decide a row's content: a resumed run must match them."""
        keep = ("method", "layer", "backend", "target", "classes", "size", "channels", "mean",
                "std", "map_size", "faithfulness", "method_options", "weights")
        data = {k: v for k, v in asdict(self).items() if k in keep}
        data["model"] = model_name(self.model)
        return _jsonable(data)

    def describe(self) -> dict[str, Any]:
        """Every setting as JSON-friendly values (for audit.json and trackers)."""
        data = asdict(self)
        data["model"] = model_name(self.model)
        return _jsonable(data)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return repr(value)


def is_factory(model: Any) -> bool:
    """A zero-argument factory (function, class or partial), as opposed to a live model."""
    return (inspect.isfunction(model) or inspect.isclass(model)
            or isinstance(model, functools.partial))


def model_name(model: Any) -> str:
    """A stable text name of a model spec or factory."""
    if isinstance(model, str):
        return model
    if isinstance(model, functools.partial):
        return f"partial({model_name(model.func)})"
    if is_factory(model):
        return f"{model.__module__}:{model.__qualname__}"
    return f"<live {type(model).__module__}.{type(model).__qualname__}>"


def is_demo_spec(model: Any) -> bool:
    return isinstance(model, str) and (model == DEMO_PREFIX or model.startswith(DEMO_PREFIX + ":"))


def absolute_spec(spec: str) -> str:
    """``spec`` with a relative file path made absolute, so workers elsewhere find it."""
    if is_demo_spec(spec):
        return spec
    path = Path(spec)
    if path.is_file():  # a model file (any format an installed adapter loads)
        return str(path.resolve())
    module, sep, attr = spec.rpartition(":")
    if sep and module.endswith(".py") and Path(module).is_file():
        return f"{Path(module).resolve()}:{attr}"
    return spec


def build_model(model: Any, cwd: str | None = None, *, trust: bool = False,
                weights: str | None = None) -> Any:
    """The model a spec or factory names (see the module docstring); live models pass through.

    Raises
    ------
    ModelLoadError
        A spec that names no model (the message says which forms work), or a pickled file
        without ``trust``.
    """
    if is_demo_spec(model):
        from interp_core.datasets.demo import demo_model

        _, _, backend = model.partition(":")
        return demo_model(backend or None)
    if isinstance(model, str):
        from interp_core.io.models import load_model

        if cwd and cwd not in sys.path:
            sys.path.insert(0, cwd)
        return load_model(model, trust=trust, weights=weights)
    if is_factory(model):
        model = model()
    if weights is not None:
        from interp_core.io.models import load_weights

        model = load_weights(model, weights)
    return model


def demo_defaults(model: Any) -> dict[str, Any]:
    """Layer, input size and class names of the demo model when ``model`` names it."""
    if not is_demo_spec(model):
        return {}
    from interp_core.datasets.demo import CLASSES, IMAGE_SIZE, LAYER

    return {"layer": LAYER, "size": (IMAGE_SIZE, IMAGE_SIZE), "classes": tuple(CLASSES)}


def check_engine_model(model: Any, engine: str) -> None:
    """Only the local engine takes a live model: other engines build it in each worker."""
    if engine != "local" and not isinstance(model, str) and not is_factory(model):
        raise TypeError(
            f"engine={engine!r} builds the model in each worker and cannot ship a live "
            f"{type(model).__name__}; pass a spec ('module:attr', a .pt/.keras file, "
            "'demo:torch') or a zero-argument factory function"
        )


def thread_env(threads: int | None) -> dict[str, str]:
    """Environment variables that hold the numeric libraries to ``threads`` CPU threads."""
    if threads is None:
        return {}
    return dict.fromkeys(THREAD_ENV, str(threads))


def set_framework_threads(threads: int | None) -> Callable[[], None]:
    """Hold an already-imported framework to ``threads`` CPU threads; returns an undo.

    Reads ``sys.modules`` (never imports a framework): torch's intra-op pool is set where
    torch is loaded. Other frameworks follow the environment variables of
    :func:`thread_env`, which must be set before they start.
    """
    torch = sys.modules.get("torch")
    if threads is None or torch is None or not hasattr(torch, "set_num_threads"):
        return lambda: None
    before = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    return lambda: torch.set_num_threads(before)


def as_numbers(value: float | Sequence[float], name: str) -> tuple[float, ...]:
    """One number for all channels, or one per channel."""
    values = (float(value),) if isinstance(value, int | float) else tuple(float(v) for v in value)
    if not values:
        raise ValueError(f"{name}={value!r} must be one number or one per channel")
    return values


def as_size(value: int | Sequence[int]) -> tuple[int, ...]:
    """``224`` -> (224,) (every spatial axis); ``(h, w)`` and ``(d, h, w)`` stay."""
    values = (int(value),) if isinstance(value, int) else tuple(int(v) for v in value)
    if not 1 <= len(values) <= 3 or min(values) < 1:
        raise ValueError(f"size={value!r} must be a positive int, (height, width) or "
                         "(depth, height, width)")
    return values
