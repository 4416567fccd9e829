"""Fuzzing the file door: the image and array readers and the manifest parser.

Thousands of generated inputs (hypothesis, derandomised, so every run sees the same ones):

- random bytes, bare or behind the magic number of a format, under every suffix;
- valid small files of every format (8-bit, 16-bit, float, RGBA, palette, CMYK, progressive,
  compressed, animated; arrays, NIfTI, DICOM) cut short or with bytes flipped;
- headers that claim huge sizes over a tiny body (PNG, GIF, BMP, TIFF, JPEG, WebP, .npy,
  .npz, NIfTI, DICOM);
- CSV manifests of random columns and cells, Parquet manifests with columns of the wrong type,
  and corrupted manifest files;
- odd paths, as a manifest may name them: missing, folders, broken and looping links, FIFOs,
  devices, names too long or with a NUL byte, names in any script.

Each call returns what it promises (dtype, shape, finite values) or fails with the one error
of its door: :class:`FileReadError` for the readers (a line of ``errors.jsonl``), ``ValueError``
naming the manifest or the label for manifests (never a pyarrow, csv or codec error). Every
call is timed (a hang fails the test, an alarm stops it) and runs under an address-space cap
(a reader that reads a device forever fails instead of exhausting the machine); the peak
memory of the huge-size cases is measured in a fresh interpreter, one forked child a case.
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import decimal
import functools
import gzip
import io
import json
import math
import os
import re
import resource
import signal
import struct
import subprocess
import sys
import time
import traceback
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from interp_core.io.errors import FileReadError
from interp_core.io.images import IMAGE_SUFFIXES, MAX_PIXELS, DecodedImage, read_image, read_mask
from interp_core.io.preprocess import InputFormat, LoadedInput

Image = pytest.importorskip("PIL.Image")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

try:  # the array reader is optional here only while it is being written
    from interp_core.io.volumes import ARRAY_SUFFIXES, is_array_file, read_array
except ImportError:  # pragma: no cover - present in the tree this file was written for
    ARRAY_SUFFIXES, is_array_file, read_array = (), None, None

try:
    import nibabel
except ImportError:  # pragma: no cover - a dev requirement
    nibabel = None
try:
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian
except ImportError:  # pragma: no cover - a dev requirement
    pydicom = None

from interp_core.audit.sources import work_schema, work_table  # noqa: E402

pytestmark = [  # broken files make the decoders talk; what counts is what the readers raise
    pytest.mark.filterwarnings("ignore::UserWarning:PIL"),
    pytest.mark.filterwarnings("ignore::UserWarning:pydicom"),
    pytest.mark.filterwarnings("ignore:Generating overly large repr"),
]

#: One call longer than this is a hang; the alarm stops a call stuck for HANG_ABORT_S.
HANG_S = 5.0
HANG_ABORT_S = 10.0
#: Peak RSS growth allowed over the huge-declared-size cases (measured in a fresh process).
MEMORY_BOUND_MB = 200
#: The pixel budget of the in-process fuzzing of huge claims and of the memory probe's cases
#: that claim less than the default budget: a file may cost what its budget allows (a 89 M
#: pixel image is 0.25 GiB as RGB), never what its header claims beyond that.
SMALL_BUDGET = 1 << 22
SIZE = (8, 8)

SUFFIXES = (*IMAGE_SUFFIXES, *ARRAY_SUFFIXES, ".txt", "")
MAGIC = {
    "png": b"\x89PNG\r\n\x1a\n",
    "jpeg": b"\xff\xd8\xff",
    "gif87": b"GIF87a",
    "gif89": b"GIF89a",
    "tiff_le": b"II*\x00",
    "tiff_be": b"MM\x00*",
    "bigtiff": b"II+\x00\x08\x00\x00\x00",
    "bmp": b"BM",
    "webp": b"RIFF\x00\x01\x00\x00WEBP",
    "webp_vp8x": b"RIFF\x00\x01\x00\x00WEBPVP8X\x0a\x00\x00\x00",
    "npy": b"\x93NUMPY",
    "npy1": b"\x93NUMPY\x01\x00",
    "npy2": b"\x93NUMPY\x02\x00",
    "zip": b"PK\x03\x04",
    "gzip": b"\x1f\x8b\x08",
    "nifti": b"\x5c\x01\x00\x00",
    "dicom": b"\x00" * 128 + b"DICM",
    "ico": b"\x00\x00\x01\x00",
    "none": b"",
}

FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large],
)


# --------------------------------------------------------------------------- checking calls


class _Hung(BaseException):
    """Raised by the alarm in a call stuck for HANG_ABORT_S (a BaseException, so that the
    readers' ``except Exception`` cannot turn it into an ordinary read error)."""


@contextlib.contextmanager
def _abort_after(seconds: float) -> Iterator[None]:
    if not hasattr(signal, "setitimer"):  # pragma: no cover - not POSIX
        yield
        return

    def ring(signum: int, frame: Any) -> None:
        raise _Hung(f"still running after {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def _memory_cap(extra: int = 2 << 30) -> Iterator[None]:
    """Cap the address space at its current size plus ``extra`` while one call runs: a reader
    that reads a device forever fails with MemoryError instead of exhausting the machine."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        with open("/proc/self/statm") as statm:
            size = int(statm.read().split()[0]) * resource.getpagesize()
    except (OSError, ValueError, AttributeError):  # pragma: no cover - not Linux
        yield
        return
    cap = size + extra if hard == resource.RLIM_INFINITY else min(size + extra, hard)
    if soft != resource.RLIM_INFINITY and soft <= cap:
        yield
        return
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@contextlib.contextmanager
def _guarded() -> Iterator[None]:
    """Around one call: an alarm for hangs and a cap for runaway memory."""
    with _abort_after(HANG_ABORT_S), _memory_cap():
        yield


def _describe(path: Path) -> str:
    """The input, as a reader of the failure wants to see it."""
    try:
        data = path.read_bytes() if path.is_file() else b""
    except (OSError, ValueError):
        data = b""
    head = data[:48].hex(" ")
    shown = f"{path.name[:60]} ({len(data)} bytes, first {min(len(data), 48)}: {head})"
    if path.suffix.lower() == ".csv":
        shown += f"; as text: {data[:300]!r}"
    elif path.suffix.lower() in (".parquet", ".pq"):
        with contextlib.suppress(Exception):
            table = pq.read_table(path)
            shown += f"; schema {table.schema.to_string(show_schema_metadata=False)!r}, rows "
            shown += repr(table.slice(0, 4).to_pylist())[:600]
    return shown


def _float_samples(path: Path) -> bool:
    """Whether Pillow reads the file as float samples (values kept as stored, any range)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as img:
                return img.mode == "F"
    except Exception:
        return False


def _check_decoded(image: Any, path: Path, size: tuple[int, int] | None) -> None:
    assert isinstance(image, DecodedImage)
    pixels = image.pixels
    assert isinstance(image.width, int) and isinstance(image.height, int)
    assert image.width >= 1 and image.height >= 1
    expected = size if size is not None else (image.height, image.width)
    assert pixels.dtype == np.float32 and pixels.ndim == 3, (pixels.dtype, pixels.shape)
    assert pixels.shape[:2] == expected and pixels.shape[2] in (1, 3, 4), pixels.shape
    assert np.isfinite(pixels).all(), "non-finite pixel values"
    if not _float_samples(path):
        assert pixels.min() >= 0.0 and pixels.max() <= 1.0, (pixels.min(), pixels.max())


def _check_mask(mask: Any, size: tuple[int, int]) -> None:
    assert isinstance(mask, np.ndarray) and mask.dtype == np.bool_, type(mask)
    assert mask.shape == size, mask.shape


def _check_loaded(loaded: Any, path: Path, size: tuple[int, ...], channels: int) -> None:
    assert isinstance(loaded, LoadedInput)
    assert loaded.pixels.dtype == np.float32, loaded.pixels.dtype
    assert loaded.pixels.shape == (*size, channels), loaded.pixels.shape
    assert np.isfinite(loaded.pixels).all(), "non-finite input values"
    assert len(loaded.shape) == len(size) and all(n >= 1 for n in loaded.shape), loaded.shape
    display = loaded.display
    assert display.dtype == np.float32 and display.ndim == 3 and display.shape[2] == 3
    assert np.isfinite(display).all(), "non-finite display values"
    assert display.min() >= 0.0 and display.max() <= 1.0, (display.min(), display.max())
    assert loaded.is_array == bool(is_array_file and is_array_file(path))


def _check_array(array: Any) -> None:
    assert isinstance(array, np.ndarray) and array.dtype == np.float32, type(array)
    assert array.size >= 1 and array.flags.c_contiguous
    assert np.isfinite(array).all(), "non-finite values"


Call = tuple[str, Callable[[], Any], Callable[[Any], None]]


def _reader_calls(path: Path, budget: int = MAX_PIXELS, size: tuple[int, int] = SIZE,
                  full: bool = True) -> list[Call]:
    """Every reader of the door on one file, with what a success must look like."""
    flat = InputFormat(size, max_pixels=budget)
    deep = InputFormat((4, *size), channels=1, max_pixels=budget)
    calls: list[Call] = [
        ("read_image(path, size)", lambda: read_image(path, size, max_pixels=budget),
         lambda r: _check_decoded(r, path, size)),
        ("read_mask(path, size)", lambda: read_mask(path, size, max_pixels=budget),
         lambda r: _check_mask(r, size)),
        ("InputFormat(size).load", lambda: flat.load(path),
         lambda r: _check_loaded(r, path, size, 3)),
        ("InputFormat((4, *size), channels=1).load", lambda: deep.load(path),
         lambda r: _check_loaded(r, path, (4, *size), 1)),
    ]
    if full:  # decoded at full size: a small budget keeps a flipped header cheap
        calls.append(("read_image(path)", lambda: read_image(path, max_pixels=1 << 20),
                      lambda r: _check_decoded(r, path, None)))
    if read_array is not None:
        calls.append(("read_array(path)", lambda: read_array(path, max_elements=budget * 4),
                      _check_array))
    return calls


def _check_file(path: Path, calls: list[Call] | None = None) -> None:
    """Run every reader on ``path``: a checked success or a FileReadError naming the file,
    within HANG_S; anything else fails the test, with the input shown."""
    for name, call, check in calls if calls is not None else _reader_calls(path):
        start = time.perf_counter()
        try:
            with _guarded():
                result = call()
        except FileReadError as exc:
            assert exc.path == path, (exc.path, path)
            assert isinstance(exc.reason, str) and exc.reason.strip(), exc.reason
            str(exc).encode("utf-8")  # an errors.jsonl line: no lone surrogates
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            pytest.fail(f"{name} on {_describe(path)} raised {type(exc).__name__}: {exc}\n"
                        + "".join(traceback.format_exception(exc)[-6:]))
        else:
            try:
                check(result)
            except AssertionError as exc:
                pytest.fail(f"{name} on {_describe(path)} returned a bad result: {exc}")
        elapsed = time.perf_counter() - start
        assert elapsed < HANG_S, f"{name} on {_describe(path)} took {elapsed:.1f} s"


def _write(folder: Path, suffix: str, data: bytes) -> Path:
    path = folder / f"case{suffix}"
    path.write_bytes(data)
    return path


# --------------------------------------------------------------------------- valid files


def _pillow(mode: str, fmt: str, size: tuple[int, int] = (12, 10), **options: Any) -> bytes:
    rng = np.random.default_rng(len(mode) * 31 + len(fmt))
    w, h = size
    if mode in ("I;16", "I"):
        img = Image.fromarray(rng.integers(0, 65536, (h, w)).astype(np.uint16))
        if mode == "I":
            img = img.convert("I")
    elif mode == "F":
        img = Image.fromarray(rng.normal(0, 100, (h, w)).astype(np.float32), mode="F")
    else:
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode)
    out = io.BytesIO()
    img.save(out, fmt, **options)
    return out.getvalue()


def _animated(fmt: str, **options: Any) -> bytes:
    frames = [Image.new("RGB", (9, 7), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    out = io.BytesIO()
    frames[0].save(out, fmt, save_all=True, append_images=frames[1:], **options)
    return out.getvalue()


def _npy(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, array, allow_pickle=False)
    return out.getvalue()


def _npz(**arrays: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.savez_compressed(out, **arrays)
    return out.getvalue()


def _nifti(array: np.ndarray, slope: float | None = None) -> bytes:
    img = nibabel.Nifti1Image(array, np.eye(4))
    if slope is not None:
        img.header.set_slope_inter(slope, 1.0)
    return img.to_bytes()


def _dicom(rows: int, columns: int, pixels: bytes, frames: int | None = None,
           samples: int = 1) -> bytes:
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, "1.2.3.4"
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated = ds.BitsStored = 8 if samples == 3 else 16
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = "RGB" if samples == 3 else "MONOCHROME2"
    if samples == 3:
        ds.PlanarConfiguration = 0
    else:
        ds.RescaleSlope, ds.RescaleIntercept = 2, -1024
    if frames is not None:
        ds.NumberOfFrames = frames
    ds.PixelData = pixels
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


@functools.cache
def valid_files() -> tuple[tuple[str, str, bytes], ...]:
    """(name, suffix, bytes) of valid small files of every kind the door reads."""
    files: list[tuple[str, str, bytes]] = []

    def add(name: str, suffix: str, make: Callable[[], bytes]) -> None:
        with contextlib.suppress(Exception):  # a codec this Pillow lacks: fewer samples
            files.append((name, suffix, make()))

    for mode in ("1", "L", "LA", "P", "RGB", "RGBA", "I;16", "I"):
        add(f"png-{mode}", ".png", functools.partial(_pillow, mode, "PNG"))
    add("png-P-transparent", ".png", lambda: _pillow("P", "PNG", transparency=3))
    for mode in ("L", "RGB", "CMYK"):
        add(f"jpeg-{mode}", ".jpg", functools.partial(_pillow, mode, "JPEG", quality=80))
    add("jpeg-progressive", ".jpg", lambda: _pillow("RGB", "JPEG", progressive=True))
    add("jpeg-444", ".jpeg", lambda: _pillow("RGB", "JPEG", subsampling=0))
    for mode in ("1", "L", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F"):
        add(f"tiff-{mode}", ".tif", functools.partial(_pillow, mode, "TIFF"))
    for compression in ("tiff_lzw", "tiff_adobe_deflate", "packbits", "jpeg", "tiff_deflate"):
        add(f"tiff-{compression}", ".tiff",
            functools.partial(_pillow, "RGB", "TIFF", compression=compression))
    add("tiff-multipage", ".tif", lambda: _animated("TIFF"))
    for mode in ("L", "P", "RGB"):
        add(f"gif-{mode}", ".gif", functools.partial(_pillow, mode, "GIF"))
    add("gif-transparent", ".gif", lambda: _pillow("P", "GIF", transparency=0))
    add("gif-animated", ".gif", lambda: _animated("GIF", duration=40, loop=0))
    for mode in ("1", "L", "P", "RGB", "RGBA"):
        add(f"bmp-{mode}", ".bmp", functools.partial(_pillow, mode, "BMP"))
    add("bmp-rle8", ".bmp", lambda: _pillow("P", "BMP", compression="RLE8"))
    add("webp-lossy", ".webp", lambda: _pillow("RGB", "WEBP", quality=50))
    add("webp-lossless-rgba", ".webp", lambda: _pillow("RGBA", "WEBP", lossless=True))
    add("webp-animated", ".webp", lambda: _animated("WEBP", lossless=True))
    rng = np.random.default_rng(0)
    add("npy-f4", ".npy", lambda: _npy(rng.normal(size=(12, 10)).astype(np.float32)))
    add("npy-u1-hwc", ".npy", lambda: _npy(rng.integers(0, 255, (9, 8, 3), dtype=np.uint8)))
    add("npy-bool-chw", ".npy", lambda: _npy(rng.random((1, 6, 7)) > 0.5))
    add("npy-i2-vol", ".npy", lambda: _npy(rng.integers(-99, 99, (5, 6, 7)).astype(">i2")))
    add("npy-f8-fortran", ".npy",
        lambda: _npy(np.asfortranarray(rng.normal(size=(6, 8)))))
    add("npz-one", ".npz", lambda: _npz(arr_0=rng.normal(size=(7, 9)).astype(np.float32)))
    add("npz-named", ".npz", lambda: _npz(image=rng.normal(size=(3, 7, 9)).astype(np.float32),
                                          mask=np.ones((7, 9), np.uint8)))
    if nibabel is not None:
        add("nifti-f4", ".nii", lambda: _nifti(rng.normal(size=(6, 7, 5)).astype(np.float32)))
        add("nifti-i2-scaled", ".nii",
            lambda: _nifti(rng.integers(0, 99, (5, 6, 4)).astype(np.int16), slope=0.5))
        add("nifti-gz", ".nii.gz",
            lambda: gzip.compress(_nifti(rng.normal(size=(6, 6, 3)).astype(np.float32)),
                                  mtime=0))
    if pydicom is not None:
        add("dicom-16", ".dcm", lambda: _dicom(8, 6, bytes(range(96))))
        add("dicom-frames", ".dcm", lambda: _dicom(4, 4, bytes(range(96)), frames=3))
        add("dicom-rgb", ".dcm", lambda: _dicom(4, 5, bytes(range(60)), samples=3))
    return tuple(files)


def test_the_valid_samples_are_read(tmp_path):
    """The corpus the mutations start from: every sample is read, and passes the checks."""
    names = [name for name, _, _ in valid_files()]
    assert len(names) >= 40, names
    for name, suffix, data in valid_files():
        path = _write(tmp_path, suffix, data)
        try:
            if suffix in IMAGE_SUFFIXES:
                read_image(path, SIZE)
            elif read_array is not None:
                read_array(path)
        except FileReadError as exc:
            pytest.fail(f"the valid sample {name} is refused: {exc}")
        _check_file(path)
        path.unlink()


# --------------------------------------------------------------------------- 1. random bytes


@settings(FUZZ, max_examples=2000)
@given(suffix=st.sampled_from(SUFFIXES), magic=st.sampled_from(sorted(MAGIC)),
       body=st.binary(max_size=3000))
def test_random_bytes_behind_magic_numbers(tmp_path, suffix, magic, body):
    _check_file(_write(tmp_path, suffix, MAGIC[magic] + body))


# --------------------------------------------------------------------------- 2. mutations


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, str, bytes]:
    name, suffix, data = draw(st.sampled_from(valid_files()))
    out = bytearray(data)
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["flip", "set", "cut", "drop", "repeat"]))
        if not out:
            break
        at = draw(st.integers(0, len(out) - 1))
        if kind == "flip":
            out[at] ^= draw(st.integers(1, 255))
        elif kind == "set":  # a header field at an extreme
            width = draw(st.integers(1, 4))
            out[at:at + width] = draw(st.sampled_from([b"\xff", b"\x00", b"\x7f"])) * width
        elif kind == "cut":
            del out[at:]
        elif kind == "drop":
            del out[at:at + draw(st.integers(1, 64))]
        else:
            out[at:at] = out[at:at + draw(st.integers(1, 64))] * draw(st.integers(1, 8))
    if draw(st.integers(0, 9)) == 0:  # sometimes under another suffix
        suffix = draw(st.sampled_from(SUFFIXES))
    return f"{name} mutated", suffix, bytes(out)


@settings(FUZZ, max_examples=3000)
@given(case=mutated())
def test_truncated_and_flipped_valid_files(tmp_path, case):
    _, suffix, data = case
    _check_file(_write(tmp_path, suffix, data))


# --------------------------------------------------------------------------- odd paths

ODD = ("missing", "folder", "broken_link", "link_loop", "fifo", "long_name", "nul_byte",
       "dev_null", "dev_zero", "dev_urandom")


def _odd_path(folder: Path, kind: str, name: str, suffix: str) -> Path:
    """A path of ``kind`` in ``folder``, as a manifest may name it (nothing readable there)."""
    path = folder / f"{name or 'x'}{suffix}"
    if kind == "folder":
        path.mkdir()
    elif kind == "broken_link":
        path.symlink_to(folder / "nowhere")
    elif kind == "link_loop":
        path.symlink_to(path)
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "long_name":
        path = folder / f"{'n' * 300}{suffix}"
    elif kind == "nul_byte":
        path = folder / f"a\x00b{suffix}"
    elif kind.startswith("dev_"):
        path.symlink_to(f"/dev/{kind[4:]}")
    return path


_NAME = st.text(alphabet=st.characters(blacklist_characters="/\x00", codec="utf-8"),
                min_size=1, max_size=12).filter(lambda n: n not in (".", ".."))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX file kinds")
@pytest.mark.parametrize("kind", ODD)
def test_odd_paths_named_by_a_manifest(tmp_path, kind):
    """A manifest names any path: missing, a folder, a broken or looping link, a FIFO, a
    device, a name too long or with a NUL byte. Every reader refuses it at once with a
    FileReadError (a FIFO must not block, a device must not be read forever)."""
    failures = []
    for index, suffix in enumerate(SUFFIXES):
        folder = tmp_path / str(index)
        folder.mkdir()
        try:
            _check_file(_odd_path(folder, kind, "x", suffix))
        except (AssertionError, pytest.fail.Exception) as exc:
            failures.append(f"{suffix or 'no suffix'}: {str(exc).splitlines()[0][:300]}")
    assert not failures, f"{kind}:\n" + "\n".join(failures)


@settings(FUZZ, max_examples=200)
@given(name=_NAME, sample=st.sampled_from(valid_files()), exists=st.booleans())
def test_any_file_name(tmp_path, name, sample, exists):
    """Names with spaces, newlines, quotes, percent signs, any script: read as any other."""
    path = tmp_path / f"{name}{sample[1]}"
    if exists:
        path.write_bytes(sample[2])
    _check_file(path)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX file kinds")
@pytest.mark.parametrize("kind", ODD)
@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_odd_manifest_paths(tmp_path, kind, suffix):
    """The manifest itself at an odd path: FileNotFoundError or a ValueError, at once."""
    path = _odd_path(tmp_path, kind, "manifest", suffix)
    start = time.perf_counter()
    try:
        with _guarded():
            work_table(path)
    except FileNotFoundError:
        pass
    except ValueError as exc:
        assert not isinstance(exc, pa.ArrowException | UnicodeError), repr(exc)
        assert MESSAGE.search(str(exc)), f"the message names no manifest: {exc}"
    except BaseException as exc:
        pytest.fail(f"work_table on a {kind} raised {type(exc).__module__}."
                    f"{type(exc).__name__}: {exc}")
    else:
        pytest.fail(f"work_table read a {kind} as a manifest")
    assert time.perf_counter() - start < HANG_S


# --------------------------------------------------------------------------- 3. huge claims


def _png_claiming(width: int, height: int, mode: str = "RGB", keep_body: bool = True) -> bytes:
    data = bytearray(_pillow(mode, "PNG", (4, 4)))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    return bytes(data if keep_body else data[:33] + data[-12:])


def _gif_claiming(width: int, height: int, frame: bool = True) -> bytes:
    data = bytearray(_pillow("P", "GIF", (4, 4)))
    data[6:10] = struct.pack("<HH", width, height)  # the logical screen
    at = 13 + (3 << ((data[10] & 7) + 1) if data[10] & 0x80 else 0)
    while at < len(data) and data[at] == 0x21:  # extensions: skip their sub-blocks
        at += 2
        while data[at]:
            at += data[at] + 1
        at += 1
    if frame and data[at] == 0x2C:  # the image descriptor
        data[at + 5:at + 9] = struct.pack("<HH", width, height)
    return bytes(data)


def _bmp_claiming(width: int, height: int, bits: int = 24) -> bytes:
    data = bytearray(_pillow("RGB", "BMP", (4, 4)))
    data[18:26] = struct.pack("<ii", width, height)
    if bits != 24:
        data[28:30] = struct.pack("<H", bits)
    return bytes(data)


def _tiff_claiming(width: int, height: int, big_endian: bool = False, bits: int = 8,
                   samples: int = 1, compression: int = 1) -> bytes:
    """A hand-written one-strip TIFF whose tags claim ``width`` x ``height`` over 16 bytes."""
    e = ">" if big_endian else "<"
    body = bytes(range(16))
    count = 9
    body_at = 8 + 2 + 12 * count + 4

    def short(tag: int, value: int) -> bytes:
        return struct.pack(f"{e}HHIHH", tag, 3, 1, value, 0)

    def long(tag: int, value: int) -> bytes:
        return struct.pack(f"{e}HHII", tag, 4, 1, value)

    entries = [long(256, width), long(257, height), short(258, bits), short(259, compression),
               short(262, 2 if samples >= 3 else 1), long(273, body_at), short(277, samples),
               long(278, height), long(279, len(body))]
    head = (b"MM\x00*" if big_endian else b"II*\x00") + struct.pack(f"{e}I", 8)
    return head + struct.pack(f"{e}H", count) + b"".join(entries) + b"\0\0\0\0" + body


def _jpeg_claiming(width: int, height: int, progressive: bool = False) -> bytes:
    data = bytearray(_pillow("RGB", "JPEG", (16, 16), progressive=progressive))
    at = 2
    while data[at + 1] not in (0xC0, 0xC1, 0xC2):  # walk the segments to the frame header
        at += 2 + struct.unpack(">H", data[at + 2:at + 4])[0]
    data[at + 5:at + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _webp_claiming(width: int, height: int, canvas: bool = False) -> bytes:
    data = bytearray(_pillow("RGB", "WEBP", (4, 4), lossless=True))
    at = data.index(b"VP8L") + 9  # after the chunk header and the 0x2f signature
    bits = struct.unpack("<I", data[at:at + 4])[0] & ~((1 << 28) - 1)
    bits |= ((width - 1) & 0x3FFF) | (((height - 1) & 0x3FFF) << 14)
    data[at:at + 4] = struct.pack("<I", bits)
    if not canvas:
        return bytes(data)
    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\0" * 4
    vp8x += ((width - 1) & 0xFFFFFF).to_bytes(3, "little")
    vp8x += ((height - 1) & 0xFFFFFF).to_bytes(3, "little")
    chunks = vp8x + bytes(data[12:])
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WEBP" + chunks


def _npy_claiming(shape: tuple[int, ...], descr: str = "<f4", body: int = 16) -> bytes:
    out = io.BytesIO()
    header = {"descr": descr, "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(out, header)
    return out.getvalue() + bytes(body)


def _npz_claiming(shape: tuple[int, ...], descr: str = "<f4") -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("image.npy", _npy_claiming(shape, descr))
    return out.getvalue()


def _nifti_claiming(shape: tuple[int, ...], gz: bool = False) -> bytes:
    data = bytearray(_nifti(np.zeros((2, 2, 2), np.float32)))
    dims = (len(shape), *shape, *([1] * (7 - len(shape))))
    data[40:56] = struct.pack("<8h", *dims)
    return gzip.compress(bytes(data), mtime=0) if gz else bytes(data)


def _dicom_claiming(rows: int, columns: int, frames: int | None = None) -> bytes:
    return _dicom(rows, columns, bytes(32), frames=frames)


#: format -> (suffix, builder of (width, height, variant)); the variant picks a sub-kind
CLAIMS: dict[str, tuple[str, Callable[[int, int, int], bytes]]] = {
    "png": (".png", lambda w, h, v: _png_claiming(
        w, h, ("L", "RGB", "RGBA", "I;16", "P")[v % 5], keep_body=v % 2 == 0)),
    "gif": (".gif", lambda w, h, v: _gif_claiming(min(w, 65535), min(h, 65535), v % 2 == 0)),
    "bmp": (".bmp", lambda w, h, v: _bmp_claiming(
        min(w, 2**31 - 1), min(h, 2**31 - 1) * (-1 if v % 3 == 1 else 1),
        (24, 32, 8, 1, 16)[v % 5])),
    "tiff": (".tif", lambda w, h, v: _tiff_claiming(
        min(w, 2**32 - 1), min(h, 2**32 - 1), v % 2 == 1, (8, 16, 1, 32)[v % 4],
        (1, 3, 4)[v % 3], (1, 5, 8, 32773)[v % 4])),
    "jpeg": (".jpg", lambda w, h, v: _jpeg_claiming(
        max(1, min(w, 65535)), max(1, min(h, 65535)), v % 2 == 1)),
    "webp": (".webp", lambda w, h, v: _webp_claiming(w, h, v % 2 == 1)),
    "npy": (".npy", lambda w, h, v: _npy_claiming(
        ((w, h), (v + 1, h, w), (h, w, 3), (w * h,))[v % 4], ("<f4", "|u1", "<f8")[v % 3])),
    "npz": (".npz", lambda w, h, v: _npz_claiming(((h, w), (v + 1, h, w))[v % 2])),
}
if nibabel is not None:
    CLAIMS["nifti"] = (".nii", lambda w, h, v: _nifti_claiming(
        (min(w, 32767), min(h, 32767), v % 300 + 1)))
    CLAIMS["nifti-gz"] = (".nii.gz", lambda w, h, v: _nifti_claiming(
        (min(w, 32767), min(h, 32767), v % 300 + 1), gz=True))
if pydicom is not None:
    CLAIMS["dicom"] = (".dcm", lambda w, h, v: _dicom_claiming(
        max(1, min(h, 65535)), max(1, min(w, 65535)), v if v > 1 else None))

#: sides: the edges of every header field, the budget's edge, and anything between
SIDES = st.one_of(
    st.sampled_from([1, 2, 255, 256, 9459, 9460, 13377, 16384, 32767, 32768, 65535, 65536,
                     2**24, 2**31 - 1, 2**31, 2**32 - 1]),
    st.integers(1, 2**31 - 1),
    st.integers(1, 70000),
)


@settings(FUZZ, max_examples=800)
@given(fmt=st.sampled_from(sorted(CLAIMS)), width=SIDES, height=SIDES,
       variant=st.integers(0, 400))
def test_huge_declared_sizes(tmp_path, fmt, width, height, variant):
    suffix, build = CLAIMS[fmt]
    try:
        data = build(width, height, variant)
    except (struct.error, OverflowError, ValueError):  # a size the header cannot even hold
        return
    path = _write(tmp_path, suffix, data)
    _check_file(path, _reader_calls(path, SMALL_BUDGET))


def _memory_cases() -> list[tuple[str, str, bytes, int]]:
    """(name, suffix, bytes, pixel budget) of the memory probe: claims beyond the default
    budget at the default budget, everything else at SMALL_BUDGET, array files (whose data
    size the header gives) at the default budget whatever they claim."""
    import random

    rng = random.Random(20261203)
    cases: list[tuple[str, str, bytes, int]] = []
    over = [(2**31 - 1, 2**31 - 1), (65535, 65535), (16384, 16384), (13377, 13377),
            (9460, 9460), (1, 2**31 - 1), (2**31 - 1, 1), (2**24, 2**24)]
    sides = [*over, *((int(math.exp(rng.uniform(0, 21.5))), int(math.exp(rng.uniform(0, 21.5))))
                      for _ in range(15))]
    for fmt, (suffix, build) in CLAIMS.items():
        arrays = bool(is_array_file and is_array_file(f"x{suffix}"))
        for index, (w, h) in enumerate(sides):
            for variant in range(4):
                try:
                    data = build(w, h, variant + index)
                except (struct.error, OverflowError, ValueError):
                    continue
                budget = MAX_PIXELS if arrays or _claims_over_budget(data) else SMALL_BUDGET
                cases.append((f"{fmt} {w}x{h} variant {variant + index}", suffix, data,
                              budget))
    # array files that claim sizes within the default budget over a tiny body
    for shape in [(1000, 1000, 300), (300, 1000, 1000), (18000, 18000), (89_000_000,),
                  (20_000, 16_000)]:
        cases.append((f"npy {shape}", ".npy", _npy_claiming(shape), MAX_PIXELS))
        cases.append((f"npz {shape}", ".npz", _npz_claiming(shape), MAX_PIXELS))
        if nibabel is not None and len(shape) == 3:
            cases.append((f"nifti {shape}", ".nii", _nifti_claiming(shape), MAX_PIXELS))
            cases.append((f"nifti-gz {shape}", ".nii.gz", _nifti_claiming(shape, gz=True),
                          MAX_PIXELS))
    if pydicom is not None:
        for rows, cols, frames in [(65535, 65535, None), (9000, 9000, 4), (4, 4, 10**7)]:
            cases.append((f"dicom {rows}x{cols}x{frames}", ".dcm",
                          _dicom_claiming(rows, cols, frames), MAX_PIXELS))
    return cases


def _claims_over_budget(data: bytes) -> bool:
    """Whether Pillow's header parse of ``data`` gives more than MAX_PIXELS (or refuses it)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as img:
                return img.size[0] * img.size[1] > MAX_PIXELS
    except Image.DecompressionBombError:
        return True
    except Exception:
        return True  # not opened: refused before any decoding, whatever the budget


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _probe_case(path: Path, name: str, budget: int) -> dict[str, Any]:
    """Read one memory case in a forked child: its own peak RSS growth (a forked child's
    ``ru_maxrss`` starts at its current size) and its problems; a crash is a problem too."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        try:
            os.close(read_end)
            start, problems = _peak_mb(), []
            for call_name, call, _ in _reader_calls(path, budget, size=(32, 32), full=False):
                began = time.perf_counter()
                try:
                    call()
                except FileReadError:
                    pass
                except BaseException as exc:
                    problems.append(f"{call_name} on {name}: {type(exc).__name__}: {exc}")
                if time.perf_counter() - began > HANG_S:
                    problems.append(
                        f"{call_name} on {name}: {time.perf_counter() - began:.1f} s")
            payload = json.dumps({"growth_mb": _peak_mb() - start, "problems": problems})
            with os.fdopen(write_end, "w") as pipe:
                pipe.write(payload)
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        payload = pipe.read()
    _, status = os.waitpid(pid, 0)
    if not payload:
        return {"growth_mb": 0.0, "problems": [f"{name}: the reading process died ({status})"]}
    return json.loads(payload)


def memory_probe(folder: str) -> None:
    """Run in a fresh interpreter by the test below: read every memory case (each in a forked
    child), print a JSON line with the peak RSS growth and the costliest cases."""
    folder_path = Path(folder)
    for _name, suffix, data in valid_files():  # warm up: every plugin and codec imported
        path = _write(folder_path, suffix, data)
        for _, call, _ in _reader_calls(path, size=(32, 32), full=False):
            with contextlib.suppress(Exception):
                call()
        path.unlink()
    cases = _memory_cases()
    growths, problems = [], []
    for name, suffix, data, budget in cases:
        path = _write(folder_path, suffix, data)
        result = _probe_case(path, name, budget)
        growths.append((round(result["growth_mb"], 1), name))
        problems.extend(result["problems"])
        path.unlink()
    growths.sort(reverse=True)
    with open("/proc/self/statm") as statm:
        resident = int(statm.read().split()[1]) * resource.getpagesize() / 2**20
    print(json.dumps({"cases": len(cases), "peak_growth_mb": growths[0][0],
                      "base_mb": round(resident, 1), "costliest": growths[:8],
                      "problems": problems}))


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB on Linux")
def test_memory_peak_of_huge_declared_sizes(tmp_path):
    """Files that claim huge sizes over tiny bodies cost what their budget allows, never what
    their header claims: the peak RSS growth of each, measured in a fresh interpreter (so
    nothing earlier counts) and a forked child per case, stays under MEMORY_BOUND_MB."""
    here = str(Path(__file__).resolve().parent)
    script = (f"import sys; sys.path.insert(0, {here!r}); import test_io_fuzz; "
              "test_io_fuzz.memory_probe(sys.argv[1])")
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONHASHSEED": "0"})
    assert proc.returncode == 0, f"the probe failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"\nmemory probe: {result['cases']} huge-size cases, peak RSS growth of one case "
          f"{result['peak_growth_mb']} MB (over the probe's {result['base_mb']} MB); costliest "
          f"(MB, case): {result['costliest']}")
    assert not result["problems"], result["problems"]
    assert result["peak_growth_mb"] < MEMORY_BOUND_MB, (
        f"peak RSS growth {result['peak_growth_mb']} MB >= {MEMORY_BOUND_MB} MB over "
        f"{result['cases']} cases; the costliest (MB, case): {result['costliest']}")


# --------------------------------------------------------------------------- 4. manifests

KNOWN = ("path", "id", "label", "group", "x0", "y0", "x1", "y1", "mask")
BOX = ("x0", "y0", "x1", "y1")
MESSAGE = re.compile(r"manifest|label|SOURCE|folder", re.IGNORECASE)


def _check_manifest(path: Path, classes: list[str] | None, no_reprs: bool = False) -> None:
    """``work_table`` gives a checked table or a ValueError naming the manifest or label."""
    start = time.perf_counter()
    try:
        with _guarded():
            table, names = work_table(path, classes)
    except KeyboardInterrupt:
        raise
    except ValueError as exc:
        if isinstance(exc, pa.ArrowException | UnicodeError):
            pytest.fail(f"work_table on {_describe(path)} raised a raw {type(exc).__module__}."
                        f"{type(exc).__name__} (not naming the manifest): {exc}")
        assert MESSAGE.search(str(exc)), (
            f"work_table on {_describe(path)}: the message names no manifest nor label: {exc}")
    except BaseException as exc:
        pytest.fail(f"work_table on {_describe(path)} raised {type(exc).__module__}."
                    f"{type(exc).__name__}: {exc}\n"
                    + "".join(traceback.format_exception(exc)[-6:]))
    else:
        try:
            _check_table(table, names, classes)
            if no_reprs:
                _check_no_reprs(table, path)
        except AssertionError as exc:
            pytest.fail(f"work_table on {_describe(path)} gave a bad table: {exc}")
    elapsed = time.perf_counter() - start
    assert elapsed < HANG_S, f"work_table on {_describe(path)} took {elapsed:.1f} s"


def _check_table(table: Any, names: Any, classes: list[str] | None) -> None:
    assert table.schema.equals(work_schema()), table.schema
    rows = table.to_pylist()
    ids = [row["id"] for row in rows]
    assert None not in ids and len(set(ids)) == len(ids), f"ids: {ids}"
    assert [row["index"] for row in rows] == list(range(len(rows)))
    for row in rows:
        assert isinstance(row["path"], str) and os.path.isabs(row["path"]), row
        box = [row[f"box_{c}"] for c in BOX]
        assert all(v is None for v in box) or all(
            v is not None and math.isfinite(v) for v in box), (
            f"the box {box} of row {row['index']} is neither absent nor four finite numbers")
        label, index = row["label"], row["label_index"]
        assert (label is None) == (index is None), row
        if index is not None:
            assert index >= 0, f"label {label!r} gives the class index {index}"
            if names is not None:
                assert index < len(names), (index, names)
    if classes is not None:
        assert names == tuple(classes)


def _check_no_reprs(table: Any, path: Path) -> None:
    """A list, struct, map or bytes cell is refused or read as its text, never written as its
    Python repr (``"['a']"``, ``"b'a'"``), which names no file, label or group."""
    base = str(path.resolve().parent)
    assert not any(c in base for c in REPR_CHARACTERS), base
    for name in ("id", "path", "label", "group", "mask"):
        for value in table.column(name).to_pylist():
            if value is not None:
                assert not any(c in value for c in REPR_CHARACTERS), (
                    f"column {name!r} holds {value!r}, the Python repr of a "
                    "non-scalar cell; refuse the column (ValueError) or read its text")


_CELLS = st.one_of(
    st.just(""),
    st.text(max_size=10),
    st.sampled_from([
        "a.png", "img/b.png", "../c.png", "/abs/d.png", " ", "nan", "NaN", "inf", "-inf",
        "1e999", "-1e999", "1e300", "-1", "0", "3", "1.5", " 2 ", "1_000", "0x10", "true",
        "\x00", '"', '""', "'", "\ufeff", "\uff12", "\u0663", "a,b", "a\nb", "\r", "\\",
        "99999999999", "-2147483649", "2147483648", "9" * 5000, "p" * 140_000, "cat",
    ]),
    st.integers(-(2**70), 2**70).map(str),
    st.floats().map(repr),
)
_NAMES = st.one_of(st.sampled_from(KNOWN), st.text(max_size=6),
                   st.sampled_from(["\ufeffpath", "PATH", " path", "path ", "x", ""]))


def _good_cell(column: str, row: int, numbers: bool = False) -> st.SearchStrategy[Any]:
    """A right value of ``column`` in ``row`` (unique where it must be); labels are class
    numbers or names."""
    if column == "path":
        return st.sampled_from([f"img{row}.png", f"sub dir/img{row}.jpg", f"/data/{row}.npy"])
    if column == "id":
        return st.just(f"id-{row}")
    if column == "mask":
        return st.just(f"masks/{row}.png")
    if column == "label":
        return st.sampled_from(["0", "1", "2", "7"] if numbers else ["cat", "dog", "7"])
    if column == "group":
        return st.sampled_from(["a", "b", "site 3"])
    if column in BOX:
        return st.integers(0, 64) | st.floats(0, 64, allow_nan=False)
    return _CELLS


def _rarely(draw: st.DrawFn, one_in: int) -> bool:
    """True about once in ``one_in`` draws (never for hypothesis' simplest choice)."""
    return draw(st.integers(0, one_in - 1)) == one_in - 1


def _manifest_columns(draw: st.DrawFn) -> list[str]:
    """Mostly a usable header: path, some known columns, a box (rarely half of one), odd
    names."""
    columns = [] if _rarely(draw, 20) else ["path"]
    columns += [name for name in ("id", "label", "group", "mask") if draw(st.booleans())]
    box = draw(st.integers(0, 5))
    if box in (3, 4):
        columns += BOX
    elif box == 5:
        columns += [c for c in BOX if draw(st.booleans())]
    if _rarely(draw, 4):
        columns += draw(st.lists(_NAMES, min_size=1, max_size=2))
    return draw(st.permutations(columns))


def _row_count(draw: st.DrawFn) -> int:
    return 0 if _rarely(draw, 20) else draw(st.integers(1, 6))


@st.composite
def csv_manifest(draw: st.DrawFn) -> bytes:
    """A CSV manifest: mostly right cells and a few wrong ones (any text, NUL, huge, non-finite,
    out-of-range numbers), ragged rows, then sometimes a BOM, a cut or another encoding."""
    columns = _manifest_columns(draw)
    numbers = draw(st.booleans())
    rows = []
    for row in range(_row_count(draw)):
        cells = [draw(_CELLS if _rarely(draw, 12) else _good_cell(name, row, numbers))
                 for name in columns]
        if _rarely(draw, 10):  # a short or long row
            cells = cells[: draw(st.integers(0, len(cells)))] + draw(st.lists(_CELLS, max_size=2))
        rows.append(cells)
    quoting = draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC]))
    out = io.StringIO()
    writer = csv.writer(out, quoting=quoting, lineterminator=draw(st.sampled_from(["\n", "\r\n"])))
    for cells in [columns, *rows]:
        writer.writerow(cells)
    text = out.getvalue()
    if _rarely(draw, 8):
        text = draw(st.sampled_from(["\ufeff", "\ufeff\ufeff", "\x00", '"', "\n\n"])) + text
    if text and _rarely(draw, 8):
        text = text[: draw(st.integers(0, len(text)))]
    encoding = draw(st.sampled_from(["utf-8"] * 6 + ["utf-8-sig", "latin-1", "utf-16"]))
    return text.encode(encoding, errors="replace")


@settings(FUZZ, max_examples=1000)
@given(data=csv_manifest(), classes=st.none() | st.lists(st.text(max_size=3), max_size=4))
def test_csv_manifests(tmp_path, data, classes):
    _check_manifest(_write(tmp_path, ".csv", data), classes)


#: What a repr of a list, dict, tuple or bytes holds and no generated text or bytes does: a
#: text cell of the work table holding one of these is such a repr, not the manifest's text.
REPR_CHARACTERS = "[{'\""
_SAFE_TEXT = st.text(alphabet=st.characters(blacklist_characters=REPR_CHARACTERS,
                                            codec="utf-8"), max_size=8)
_SAFE_BYTES = st.binary(max_size=8).map(
    lambda b: bytes(c for c in b if chr(c) not in REPR_CHARACTERS))
#: kind -> (pyarrow type, strategy of one value)
KINDS: dict[str, tuple[Any, st.SearchStrategy[Any]]] = {
    "string": (pa.string(), _SAFE_TEXT),
    "large_string": (pa.large_string(), _SAFE_TEXT),
    "numeric_string": (pa.string(), st.sampled_from(["1", "2.5", "-1", "nan", "1e999", "x"])),
    "int64": (pa.int64(), st.integers(-(2**63), 2**63 - 1)),
    "int8": (pa.int8(), st.integers(-128, 127)),
    "small_int": (pa.int64(), st.integers(-3, 9)),
    "uint64": (pa.uint64(), st.integers(0, 2**64 - 1)),
    "float64": (pa.float64(), st.floats()),
    "float32": (pa.float32(), st.floats(width=32)),
    "bool": (pa.bool_(), st.booleans()),
    "binary": (pa.binary(), _SAFE_BYTES),
    "fixed_binary": (pa.binary(3), _SAFE_BYTES.map(lambda b: (b + b"abc")[:3])),
    "list_string": (pa.list_(pa.string()), st.lists(_SAFE_TEXT, max_size=3)),
    "list_int": (pa.list_(pa.int64()), st.lists(st.integers(-5, 5), max_size=3)),
    "struct": (pa.struct([("a", pa.int64()), ("b", pa.string())]),
               st.fixed_dictionaries({"a": st.integers(-5, 5), "b": _SAFE_TEXT})),
    "map": (pa.map_(pa.string(), pa.int64()),
            st.lists(st.tuples(_SAFE_TEXT, st.integers(-5, 5)), max_size=2)),
    "dictionary": (pa.dictionary(pa.int32(), pa.string()), _SAFE_TEXT),
    "timestamp": (pa.timestamp("s"), st.datetimes(datetime.datetime(1900, 1, 1),
                                                  datetime.datetime(2200, 1, 1),
                                                  ).map(lambda d: d.replace(microsecond=0))),
    "date": (pa.date32(), st.dates(datetime.date(1900, 1, 1), datetime.date(2200, 1, 1))),
    "decimal": (pa.decimal128(12, 2), st.decimals(-(10**9), 10**9, places=2,
                                                  allow_nan=False, allow_infinity=False)),
    "null": (pa.null(), st.none()),
}
#: the kinds that are no text: a cell of one is refused or read as text, never as its repr
NOT_TEXT = ("list_string", "list_int", "struct", "map", "binary", "fixed_binary")


#: the types a known column has in a right manifest
NATURAL = {"path": ("string",), "id": ("string",), "mask": ("string",), "group": ("string",),
           "label": ("string", "small_int", "int64"),
           **{c: ("float64", "small_int") for c in BOX}}


@st.composite
def parquet_manifest(draw: st.DrawFn) -> bytes:
    """A Parquet manifest: known columns mostly of their right type and values, some of any
    other type (int or float paths, list, struct, map or binary cells, string or bool boxes,
    int labels), and odd extra columns."""
    names = list(dict.fromkeys(_manifest_columns(draw)))
    count = _row_count(draw)
    arrays = []
    for name in names:
        natural = NATURAL.get(name, ())
        kind = draw(st.sampled_from(natural)) if natural else ""
        if not kind or _rarely(draw, 4):
            kind = draw(st.sampled_from(sorted(KINDS)))
        type_, values = KINDS[kind]
        column = []
        for row in range(count):
            if kind in natural and not _rarely(draw, 10):
                value = draw(_good_cell(name, row, numbers=kind in ("small_int", "int64")))
                value = {"float64": float, "small_int": int, "int64": int}.get(kind, str)(value)
            else:
                value = draw(st.none() | values)
            column.append(value)
        if kind == "dictionary":
            array = pa.array(column, pa.string()).dictionary_encode()
        elif kind == "decimal":
            array = pa.array([None if v is None else decimal.Decimal(v) for v in column], type_)
        else:
            array = pa.array(column, type_)
        arrays.append(array)
    out = io.BytesIO()
    pq.write_table(pa.table(arrays, names=names) if names else pa.table({}), out)
    return out.getvalue()


@settings(FUZZ, max_examples=800)
@given(data=parquet_manifest(),
       classes=st.none() | st.lists(st.sampled_from(["0", "1", "cat", "dog"]), max_size=3,
                                    unique=True))
def test_parquet_manifests_with_wrong_column_types(tmp_path, data, classes):
    _check_manifest(_write(tmp_path, ".parquet", data), classes, no_reprs=True)


@functools.cache
def _valid_parquet() -> bytes:
    out = io.BytesIO()
    pq.write_table(pa.table({"path": ["a.png", "b/c.png"], "label": ["cat", "dog"],
                             "x0": [1.0, 2.0], "y0": [1.0, 2.0], "x1": [5.0, 6.0],
                             "y1": [5.0, 6.0]}), out)
    return out.getvalue()


@st.composite
def corrupted_manifest(draw: st.DrawFn) -> tuple[str, bytes]:
    suffix = draw(st.sampled_from([".csv", ".parquet", ".pq", ".CSV", ".PARQUET"]))
    kind = draw(st.sampled_from(["random", "magic", "mutated"]))
    if kind == "random":
        return suffix, draw(st.binary(max_size=2000))
    if kind == "magic":
        return suffix, b"PAR1" + draw(st.binary(max_size=2000)) + b"PAR1"
    data = bytearray(_valid_parquet())
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data) - 1))
        if draw(st.booleans()):
            data[at] ^= draw(st.integers(1, 255))
        else:
            del data[at:at + draw(st.integers(1, 32))]
    return suffix, bytes(data)


@settings(FUZZ, max_examples=500)
@given(case=corrupted_manifest())
def test_corrupted_manifest_files(tmp_path, case):
    suffix, data = case
    _check_manifest(_write(tmp_path, suffix, data), None)
