"""Arrays, volumes and DICOM images as model inputs: ``.npy``, ``.npz``, NIfTI and DICOM.

:func:`read_array` gives the stored values of a file as float32, with nothing scaled but
what the format itself defines (NIfTI ``scl_slope``/``scl_inter``, the DICOM modality
rescale); :func:`arrange` lays them out channels-last for a model with a given number of
spatial axes and channels; :func:`resize_volume` brings them to the model's size. The
display helpers (:func:`middle_slice`, :func:`display_image`, :func:`middle_slice_map`) turn
a volume and its map into 2-D pictures for overlays.

Every failure is a :class:`~interp_core.io.errors.FileReadError` whose ``reason`` says what
is wrong and what would be right. The size of an array is checked against a budget from the
file's header, before its data is read. NIfTI needs the optional ``nibabel``
(``pip install interp-core[nifti]``), DICOM the optional ``pydicom``
(``pip install interp-core[dicom]``); both are imported only when such a file is read.
"""

from __future__ import annotations

import math
import os
import stat
import zipfile
from collections.abc import Sequence
from typing import IO, Any

import numpy as np

from interp_core.io.errors import FileReadError
from interp_core.methods.postprocess import resize_bilinear

#: The file suffixes :func:`read_array` reads (compared case-insensitively).
ARRAY_SUFFIXES: tuple[str, ...] = (".npy", ".npz", ".nii", ".nii.gz", ".dcm")

#: Default budget of values in one file (2**28 values: 1 GiB as float32).
MAX_ELEMENTS = 2**28

#: ``.npz`` members chosen, in this order, when the file holds more than one array
#: (``arr_0`` only when it is the one positional array beside named ones).
NPZ_PREFERRED: tuple[str, ...] = ("image", "x", "arr_0")

#: dtype kinds read as numbers: bool, signed and unsigned integers, floats.
_NUMERIC_KINDS = "biuf"

#: DICOM elements read lazily: pixel data stays on disk until the budget has been checked.
_DICOM_DEFER_BYTES = 1 << 20

PathLike = str | os.PathLike[str]


def _suffix(path: PathLike) -> str | None:
    """The entry of :data:`ARRAY_SUFFIXES` that ``path`` ends with, or None."""
    name = os.fspath(path).lower()
    # longest first, so that ".nii.gz" wins over any shorter suffix
    for suffix in sorted(ARRAY_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    return None


def is_array_file(path: PathLike) -> bool:
    """Whether :func:`read_array` reads ``path``, judged by its suffix (any case).

    Parameters
    ----------
    path : str or os.PathLike
        A file name; ``.nii.gz`` counts as one (double) suffix.

    Returns
    -------
    bool
    """
    return _suffix(path) is not None


# --------------------------------------------------------------------------- reading


def read_array(path: PathLike, *, max_elements: int = MAX_ELEMENTS) -> np.ndarray:
    """The values stored in an array, volume or DICOM file, as float32.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.npy``, ``.npz``, ``.nii``, ``.nii.gz`` or ``.dcm`` file (see
        :data:`ARRAY_SUFFIXES`).
    max_elements : int
        Most values the file may hold; checked from the header before the data is read.

    Returns
    -------
    np.ndarray
        float32, C-contiguous, every value finite, in the file's own shape and axis order:

        - ``.npy``: the array (bool, integer or float dtypes);
        - ``.npz``: its only array, else the one named ``image``, else ``x``, else ``arr_0``
          when it is the only positional array (``numpy.savez(f, a, mask=m)``);
        - NIfTI: the voxel array in stored ``(i, j, k[, ...])`` order, not reoriented, with
          ``scl_slope``/``scl_inter`` applied;
        - DICOM: the stored values, with the modality rescale (``RescaleSlope`` and
          ``RescaleIntercept``, or a Modality LUT), e.g. Hounsfield units for CT; no
          windowing. ``(H, W)`` for one grey frame, ``(frames, H, W)`` for several,
          ``(H, W, 3)`` (``(frames, H, W, 3)``) for colour, as RGB.

    Raises
    ------
    FileReadError
        For every failure: unknown suffix, missing file or optional package, a file that is
        not of its format or is truncated, non-numeric or complex values, more values than
        ``max_elements``, an empty array, NaN or infinite values. ``MemoryError`` and
        ``KeyboardInterrupt`` propagate.
    """
    suffix = _suffix(path)
    if suffix is None:
        raise FileReadError(path, f"not an array file; expected one of {', '.join(ARRAY_SUFFIXES)}")
    if max_elements < 1:
        raise ValueError(f"max_elements must be >= 1, got {max_elements}")
    _check_regular_file(path)
    readers = {
        ".npy": _read_npy,
        ".npz": _read_npz,
        ".nii": _read_nifti,
        ".nii.gz": _read_nifti,
        ".dcm": _read_dicom,
    }
    try:
        array = readers[suffix](path, max_elements)
    except (FileReadError, MemoryError):
        raise
    except FileNotFoundError:
        raise FileReadError(path, "no such file") from None
    except IsADirectoryError:
        raise FileReadError(path, "is a directory, not a file") from None
    except PermissionError:
        raise FileReadError(path, "permission denied") from None
    except Exception as exc:  # any other failure of a reader is a bad file
        raise FileReadError(path, f"unreadable {suffix} file ({_describe(exc)})") from exc
    return _finish(array, path)


def _check_regular_file(path: PathLike) -> None:
    """A pipe or a device named like an array would block or never end: refuse it."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise FileReadError(path, "no such file") from None
    except OSError as exc:
        raise FileReadError(path, f"cannot open it: {exc.strerror or exc}") from None
    except ValueError:  # a NUL byte in the name
        raise FileReadError(path, "the file name holds a NUL byte") from None
    if stat.S_ISDIR(info.st_mode):
        raise FileReadError(path, "is a directory, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise FileReadError(path, "not a regular file (a pipe or a device)")


def _describe(exc: BaseException) -> str:
    """``Type: message`` of an exception, on one line and not too long."""
    text = " ".join(str(exc).split())
    if len(text) > 200:
        text = text[:197] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _check_size(path: PathLike, shape: Sequence[int], max_elements: int, what: str = "") -> None:
    """Refuse an empty array or one of more than ``max_elements`` values (from its header)."""
    shape = tuple(int(n) for n in shape)
    count = math.prod(shape)
    prefix = f"{what} " if what else ""
    if count == 0:
        raise FileReadError(
            path, f"{prefix}shape {shape} holds no values; expected a non-empty array"
        )
    if count > max_elements:
        raise FileReadError(
            path,
            f"{prefix}shape {shape} holds {count} values, over the budget of {max_elements} "
            "(max_elements); downsample or crop the array",
        )


def _check_dtype(path: PathLike, dtype: np.dtype, what: str = "") -> None:
    """Refuse every dtype but bool, integers and floats, saying what would be right."""
    if dtype.kind in _NUMERIC_KINDS:
        return
    prefix = f"{what} " if what else ""
    if dtype.hasobject:
        problem = "holds Python objects (a pickle)"
    elif dtype.kind == "c":
        problem = f"holds complex values ({dtype})"
    elif dtype.fields is not None:
        problem = f"has a structured dtype {dtype}"
    else:
        problem = f"has the non-numeric dtype {dtype}"
    raise FileReadError(path, f"{prefix}{problem}; expected a bool, integer or float array")


def _npy_header(fp: IO[bytes], path: PathLike, what: str = "") -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from an ``.npy`` header; ``fp`` is left at the start of the data."""
    fmt = np.lib.format
    prefix = f"{what} " if what else ""
    try:
        version = fmt.read_magic(fp)
    except ValueError:
        raise FileReadError(
            path, f"{prefix}is not an .npy array (no NumPy header); write it with numpy.save"
        ) from None
    _check_header_length(fp, path, version, prefix)
    if version == (1, 0):
        shape, _, dtype = fmt.read_array_header_1_0(fp)
    elif version == (2, 0):
        shape, _, dtype = fmt.read_array_header_2_0(fp)
    else:
        # numpy writes format 3.0 only for structured dtypes with non-Latin-1 field names
        raise FileReadError(
            path,
            f"{prefix}uses .npy format {version[0]}.{version[1]} (a structured dtype); "
            "expected a bool, integer or float array",
        )
    return tuple(int(n) for n in shape), np.dtype(dtype)


def _check_header_length(fp: IO[bytes], path: PathLike, version: tuple[int, int],
                         prefix: str) -> None:
    """The header length the file declares must fit in the file: a 12-byte file can claim a
    4 GB header, which NumPy would allocate before finding out."""
    width = 2 if version == (1, 0) else 4
    start = fp.tell()
    raw = fp.read(width)
    fp.seek(start)
    if len(raw) < width:
        return  # NumPy reports the truncation itself
    declared = int.from_bytes(raw, "little")
    fp.seek(0, os.SEEK_END)
    size = fp.tell()
    fp.seek(start)
    if start + width + declared > size:
        raise FileReadError(path, f"{prefix}truncated: its header claims {declared:,} bytes, "
                                  f"the file has {size:,}")


def _read_npy(path: PathLike, max_elements: int) -> np.ndarray:
    with open(path, "rb") as fp:
        shape, dtype = _npy_header(fp, path)
        _check_dtype(path, dtype)
        _check_size(path, shape, max_elements)
        needed = math.prod(shape) * dtype.itemsize
        held = os.fstat(fp.fileno()).st_size - fp.tell()
    if held < needed:
        raise FileReadError(
            path,
            f"truncated: the header declares shape {shape} of {dtype} ({needed} bytes), "
            f"the file holds {held} bytes of data",
        )
    return np.load(path, allow_pickle=False)


def _read_npz(path: PathLike, max_elements: int) -> np.ndarray:
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise FileReadError(
            path, "not an .npz file (not a readable zip archive); write it with numpy.savez"
        ) from None
    with archive:
        members = {
            info.filename[: -len(".npy")]: info
            for info in archive.infolist()
            if info.filename.endswith(".npy")
        }
        if not members:
            raise FileReadError(
                path, "holds no arrays (no .npy members); write it with numpy.savez"
            )
        if len(members) == 1:
            (name,) = members
        else:
            # arr_0 is the input only beside named arrays: among several positional
            # arrays (arr_0, arr_1, ...) none is more the input than another
            positional = [n for n in members if n.startswith("arr_") and n[4:].isdigit()]
            preferred = NPZ_PREFERRED if len(positional) <= 1 else NPZ_PREFERRED[:-1]
            name = next((n for n in preferred if n in members), "")
            if not name:
                listed = ", ".join(repr(n) for n in sorted(members))
                raise FileReadError(
                    path,
                    f"holds {len(members)} arrays ({listed}); save one array, or name the "
                    "input 'image' (or 'x', 'arr_0')",
                )
        info = members[name]
        what = f"array {name!r}"
        with archive.open(info) as fp:
            shape, dtype = _npy_header(fp, path, what)
            _check_dtype(path, dtype, what)
            _check_size(path, shape, max_elements, what)
            needed = math.prod(shape) * dtype.itemsize
            held = info.file_size - fp.tell()
        if held < needed:
            raise FileReadError(
                path,
                f"{what} truncated: the header declares shape {shape} of {dtype} "
                f"({needed} bytes), the member holds {held} bytes of data",
            )
        with archive.open(info) as fp:
            return np.lib.format.read_array(fp, allow_pickle=False)


def _missing(path: PathLike, package: str, extra: str) -> FileReadError:
    return FileReadError(
        path,
        f"needs the optional package {package}: pip install {package} (or interp-core[{extra}])",
    )


def _read_nifti(path: PathLike, max_elements: int) -> np.ndarray:
    try:
        import nibabel
        from nibabel.filebasedimages import ImageFileError
    except ImportError:
        raise _missing(path, "nibabel", "nifti") from None
    try:
        image: Any = nibabel.load(os.fspath(path))
    except ImageFileError as exc:
        raise FileReadError(path, f"not a NIfTI file ({_describe(exc)})") from None
    if not isinstance(image, nibabel.Nifti1Image | nibabel.Nifti2Image):
        raise FileReadError(path, f"is a {type(image).__name__}, not a NIfTI-1 or NIfTI-2 image")
    dtype = np.dtype(image.get_data_dtype())
    _check_dtype(path, dtype, "voxel data")
    _check_size(path, image.shape, max_elements)
    offset = int(image.header.get("vox_offset", 0) or 0)
    needed = offset + math.prod(image.shape) * dtype.itemsize
    held = _nifti_data_bytes(path)
    if held is not None and held < needed:  # nibabel would allocate it all before failing
        raise FileReadError(path, f"truncated: the header declares shape {image.shape} of "
                                  f"{dtype} ({needed:,} bytes with the header), the file holds "
                                  f"{held:,}")
    return image.get_fdata(dtype=np.float32, caching="unchanged")


def _nifti_data_bytes(path: PathLike) -> int | None:
    """Bytes of the (uncompressed) NIfTI file: its size, or for ``.nii.gz`` the gzip trailer's
    length (modulo 2**32, which the element budget keeps volumes below); None if unknown."""
    size = os.path.getsize(path)
    if _suffix(path) != ".nii.gz":
        return size
    if size < 18:
        return None
    with open(path, "rb") as fp:
        fp.seek(-4, os.SEEK_END)
        return int.from_bytes(fp.read(4), "little")


def _read_dicom(path: PathLike, max_elements: int) -> np.ndarray:
    try:
        import pydicom
        from pydicom.errors import InvalidDicomError
    except ImportError:
        raise _missing(path, "pydicom", "dicom") from None
    try:
        ds = pydicom.dcmread(os.fspath(path), defer_size=_DICOM_DEFER_BYTES)
    except InvalidDicomError:
        raise FileReadError(
            path, "not a DICOM file (no 'DICM' marker after the 128-byte preamble)"
        ) from None
    pixel_keys = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
    if not any(key in ds for key in pixel_keys):
        raise FileReadError(path, "holds no pixel data; expected a DICOM image")
    rows, columns = ds.get("Rows"), ds.get("Columns")
    if not rows or not columns:
        raise FileReadError(path, "has pixel data but no Rows/Columns; expected a DICOM image")
    frames = int(ds.get("NumberOfFrames") or 1)
    samples = int(ds.get("SamplesPerPixel") or 1)
    _check_size(path, (frames, int(rows), int(columns), samples), max_elements)
    pixels = np.asarray(ds.pixel_array)
    if samples == 1:
        return _modality_rescale(pixels, ds, frames)
    return pixels.astype(np.float32, copy=False)


def _rescale_of(item: Any) -> tuple[float, float] | None:
    """``(slope, intercept)`` of a dataset or functional-group item, or None."""
    slope, intercept = item.get("RescaleSlope"), item.get("RescaleIntercept")
    if slope is None and intercept is None:
        return None
    return (1.0 if slope is None else float(slope), 0.0 if intercept is None else float(intercept))


def _group_rescale(group: Any) -> tuple[float, float] | None:
    """The rescale in an enhanced multi-frame functional-group item, or None."""
    transforms = group.get("PixelValueTransformationSequence") if group is not None else None
    return _rescale_of(transforms[0]) if transforms else None


def _modality_rescale(pixels: np.ndarray, ds: Any, frames: int) -> np.ndarray:
    """Grey DICOM values with the modality LUT or rescale applied, float32.

    The rescale comes from the top-level elements, else (enhanced multi-frame objects) from the
    shared and per-frame functional groups.
    """
    if ds.get("ModalityLUTSequence"):
        from pydicom.pixels import apply_modality_lut

        return np.asarray(apply_modality_lut(pixels, ds), dtype=np.float32)
    out = pixels.astype(np.float32)
    top = _rescale_of(ds)
    if top is not None:
        slope, intercept = top
        out *= np.float32(slope)
        out += np.float32(intercept)
        return out
    shared_groups = ds.get("SharedFunctionalGroupsSequence")
    shared = _group_rescale(shared_groups[0]) if shared_groups else None
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    stack = out.reshape((frames, *out.shape[-2:]))  # a view: one frame or (frames, H, W)
    for index in range(frames):
        group = per_frame[index] if index < len(per_frame) else None
        rescale = _group_rescale(group) or shared
        if rescale is not None:
            stack[index] *= np.float32(rescale[0])
            stack[index] += np.float32(rescale[1])
    return out


def _finish(array: np.ndarray, path: PathLike) -> np.ndarray:
    """float32, C-contiguous and finite, or a FileReadError."""
    with np.errstate(over="ignore"):  # values beyond float32 become inf, counted below
        out = np.ascontiguousarray(array, dtype=np.float32)
    finite = np.isfinite(out)
    if not finite.all():
        bad = out.size - int(np.count_nonzero(finite))
        raise FileReadError(
            path,
            f"holds {bad} non-finite values (NaN or inf, as float32); expected finite values",
        )
    return out


# --------------------------------------------------------------------------- layout


def _axis_names(spatial_dims: int) -> list[str]:
    if spatial_dims <= 3:
        return ["D", "H", "W"][3 - spatial_dims :] if spatial_dims > 1 else ["L"]
    return [f"S{i + 1}" for i in range(spatial_dims)]


def arrange(
    array: np.ndarray, *, spatial_dims: int, channels: int | None, path: PathLike
) -> np.ndarray:
    """A stored array as a channels-last model input ``(*spatial, C)``.

    Parameters
    ----------
    array : np.ndarray
        From :func:`read_array`: ``(*spatial)``, ``(*spatial, C)`` or ``(C, *spatial)``.
    spatial_dims : int
        Spatial axes the model takes (2 for images, 3 for volumes).
    channels : int or None
        Channels the model takes; None when unknown (the file's count is kept).
    path : str or os.PathLike
        The file, for the error.

    Returns
    -------
    np.ndarray
        float32 ``(*spatial, C)``. An array with ``spatial_dims`` axes gains a channel axis of
        1. One with ``spatial_dims + 1`` axes is channels-last, except when its first axis
        equals ``channels`` (or is 1) and its last does not: then the first axis (the
        ``(C, D, H, W)`` layout) is moved last. One channel is repeated to ``channels`` when
        the model takes more.

    Raises
    ------
    FileReadError
        When the number of axes fits neither layout, or the channel counts differ (and the
        file's is not 1); the reason names the shape and what was expected.
    """
    if spatial_dims < 1:
        raise ValueError(f"spatial_dims must be >= 1, got {spatial_dims}")
    if channels is not None and channels < 1:
        raise ValueError(f"channels must be >= 1 or None, got {channels}")
    out = np.asarray(array, dtype=np.float32)
    shape = tuple(out.shape)
    if out.ndim == spatial_dims:
        out = out[..., np.newaxis]
    elif out.ndim == spatial_dims + 1:
        if channels is not None and shape[0] in (channels, 1) and shape[-1] != channels:
            out = np.moveaxis(out, 0, -1)
    else:
        names = _axis_names(spatial_dims)
        plain = f"({', '.join(names)})"
        if channels is None:
            layouts = f"{plain} or ({', '.join([*names, 'C'])})"
            model = f"a {spatial_dims}-D model"
        else:
            last = ", ".join([*names, str(channels)])
            first = ", ".join([str(channels), *names])
            layouts = f"{plain}, ({last}) or ({first})"
            model = f"a {spatial_dims}-D model with {channels} channel{'s' * (channels != 1)}"
        raise FileReadError(path, f"shape {shape} has {out.ndim} axes; {model} takes {layouts}")
    have = out.shape[-1]
    if channels is not None and have != channels:
        if have != 1:
            raise FileReadError(
                path,
                f"shape {shape} gives {have} channels; the model takes {channels} (or 1, repeated)",
            )
        out = np.repeat(out, channels, axis=-1)
    return np.ascontiguousarray(out, dtype=np.float32)


def resize_volume(array: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Linear (half-pixel) resize of a channels-last array's spatial axes.

    Parameters
    ----------
    array : np.ndarray
        ``(*spatial, C)``.
    size : sequence of int
        The new spatial shape, ``len(size) == array.ndim - 1``.

    Returns
    -------
    np.ndarray
        float32 ``(*size, C)``; the input as float32 when the size is already right.
    """
    size = tuple(int(n) for n in size)
    if len(size) != array.ndim - 1:
        raise ValueError(
            f"size {size} has {len(size)} axes; an array of shape {array.shape} needs "
            f"{array.ndim - 1}"
        )
    if tuple(array.shape[:-1]) == size:
        return np.asarray(array, dtype=np.float32)
    channels_first = np.moveaxis(np.asarray(array, dtype=np.float32), -1, 0)
    resized = resize_bilinear(channels_first, size)
    return np.ascontiguousarray(np.moveaxis(resized, 0, -1), dtype=np.float32)


# --------------------------------------------------------------------------- display


def middle_slice(volume: np.ndarray) -> np.ndarray:
    """The middle slice of a channels-last volume, for display.

    Parameters
    ----------
    volume : np.ndarray
        ``(D, H, W, C)``, or an image ``(H, W, C)``.

    Returns
    -------
    np.ndarray
        ``(H, W, C)``: ``volume[D // 2]`` (a view), or the image itself.
    """
    return _middle(volume, 3, "(D, H, W, C) or (H, W, C)")


def middle_slice_map(maps: np.ndarray) -> np.ndarray:
    """The middle slice of a volume's map, for display.

    Parameters
    ----------
    maps : np.ndarray
        ``(D, H, W)``, or a 2-D map ``(H, W)``.

    Returns
    -------
    np.ndarray
        ``(H, W)``: ``maps[D // 2]`` (a view), or the map itself.
    """
    return _middle(maps, 2, "a (D, H, W) or (H, W) map")


def _middle(array: np.ndarray, slice_ndim: int, expected: str) -> np.ndarray:
    """``array[D // 2]`` for one more axis than a slice has, ``array`` for a slice."""
    if array.ndim == slice_ndim + 1:
        return array[array.shape[0] // 2]
    if array.ndim == slice_ndim:
        return array
    raise ValueError(f"expected {expected}, got shape {array.shape}")


def display_image(image: np.ndarray) -> np.ndarray:
    """An image of any value range as RGB in [0, 1], for overlays.

    Parameters
    ----------
    image : np.ndarray
        ``(H, W, C)`` (or ``(H, W)``), any values.

    Returns
    -------
    np.ndarray
        float32 ``(H, W, 3)`` in [0, 1]: min-max scaled over the whole image (a constant
        image gives zeros; non-finite values count as 0). One or two channels show the first
        as grey; three are kept; more keep the first three.
    """
    arr = np.asarray(image, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[..., np.newaxis]
    if arr.ndim != 3:
        raise ValueError(f"expected an (H, W, C) or (H, W) image, got shape {image.shape}")
    arr = arr[..., :3] if arr.shape[-1] >= 3 else np.repeat(arr[..., :1], 3, axis=-1)
    arr = np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(arr.min()), float(arr.max())
    if not high > low:
        return np.zeros(arr.shape, dtype=np.float32)
    out = (arr.astype(np.float64) - low) / (high - low)
    return np.clip(out, 0.0, 1.0).astype(np.float32)
