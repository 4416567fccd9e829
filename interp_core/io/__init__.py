"""The one door for files, models and output folders, used by every entry point
(``interp explain``, ``interp audit`` on every engine, ``interp demo``, ``ic.audit``).

- :mod:`~interp_core.io.images`: finding and reading images and masks (every Pillow format,
  16-bit and float values kept, a pixel budget checked from the header);
- :mod:`~interp_core.io.volumes`: ``.npy``/``.npz`` arrays, NIfTI volumes and DICOM images;
- :mod:`~interp_core.io.models`: model files and ``module:attribute`` specs (pickles run only
  with ``trust=True``);
- :mod:`~interp_core.io.outputs`: output folders that a run owns through its manifest;
- :mod:`~interp_core.io.errors`: the errors, each naming the bad value.

Nothing here imports a framework: model files go through the adapters' hooks.
"""

from interp_core.io.errors import FileReadError, InputError, ModelLoadError

__all__ = ["FileReadError", "InputError", "ModelLoadError"]
