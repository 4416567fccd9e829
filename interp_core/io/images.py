"""Finding and reading image files and masks: the one reader of every entry point.

- Every format Pillow reads. Values keep their depth: 8-bit images are scaled by 255, 16-bit
  ones by 65535 (a 16-bit PNG is never clipped to white), float TIFFs keep their values.
- The channels stay as stored (1 for grayscale, 3 for colour, 4 with alpha) until
  :func:`to_channels` converts them to what the model takes.
- The pixel budget is checked from the header, before anything is decoded; JPEGs that are
  shrunk anyway are decoded at a reduced scale (``draft``), so a large photo costs little.
- Every failure is a :class:`~interp_core.io.errors.FileReadError` naming the file: a run lists
  it in ``errors.jsonl`` and goes on.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from interp_core.io.errors import FileReadError, InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")

#: Images with more pixels than this are refused before decoding (Pillow's own default
#: limit, about 0.25 GiB as RGB): a small file can claim a huge image (a decompression bomb).
MAX_PIXELS = 89_478_485

#: Pillow modes with one sample of more than 8 bits: 16-bit grayscale (PNG, TIFF) and 32-bit
#: integers, read as 16-bit values (65535 is white).
_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
#: Pillow modes read as they are, and how many channels each gives.
_NATIVE_CHANNELS = {"L": 1, "RGB": 3, "RGBA": 4}
#: ITU-R 601-2 luma weights, as Pillow's own RGB -> L conversion.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class FoundFiles:
    """The input files of a run, and the entries that were skipped, with why.

    Attributes
    ----------
    files : list of Path
        Files named directly (any suffix) and files found in folders (known suffixes only),
        folders searched recursively in sorted order, symbolic links followed once.
    problems : list of (Path, str)
        Broken symbolic links (dangling or looping) met in folders, with the reason; a run
        writes each as a line of ``errors.jsonl``.
    """

    files: list[Path]
    problems: list[tuple[Path, str]] = field(default_factory=list)


def find_files(paths: Iterable[str | os.PathLike[str]],
               suffixes: Sequence[str] = IMAGE_SUFFIXES) -> FoundFiles:
    """The files named in ``paths`` or found in the folders among them.

    Parameters
    ----------
    paths : iterable of path
        Files (kept whatever their suffix: a file that cannot be read is reported when it is
        read) and folders (searched recursively for files ending in one of ``suffixes``).
    suffixes : sequence of str
        Lower-case suffixes that count in folders; ``".nii.gz"`` style double suffixes work.

    Raises
    ------
    InputError
        A path that does not exist, or a folder without a single matching file.
    """
    found = FoundFiles([])
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            before = len(found.files)
            _walk(path, tuple(s.lower() for s in suffixes), found)
            if len(found.files) == before:
                raise InputError(
                    f"folder {str(path)!r} has no input files ({', '.join(suffixes)})")
        elif path.is_file():
            found.files.append(path)
        elif path.is_symlink():
            raise InputError(f"{str(path)!r} is a broken symbolic link ({_link_problem(path)})")
        else:
            raise InputError(f"no such file or folder: {str(path)!r}")
    return found


def _walk(root: Path, suffixes: tuple[str, ...], found: FoundFiles) -> None:
    """Depth-first, sorted; each real folder is entered once, so link loops end."""
    seen: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            info = folder.stat()
            key = (info.st_dev, info.st_ino)
            if key in seen:
                found.problems.append((folder, "symbolic link loop (a folder that contains "
                                               "itself); skipped"))
                continue
            seen.add(key)
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            found.problems.append((folder, f"cannot list the folder: {exc.strerror or exc}"))
            continue
        subfolders = []
        for entry in entries:
            path = Path(entry.path)
            try:
                is_dir = entry.is_dir()
                is_file = not is_dir and entry.is_file()
            except OSError:
                is_dir = is_file = False
            if is_dir:
                subfolders.append(path)
            elif is_file:
                if path.name.lower().endswith(suffixes):
                    found.files.append(path)
            elif entry.is_symlink():
                found.problems.append((path, _link_problem(path)))
        stack.extend(reversed(subfolders))


def file_problem(path: Path, exc: OSError) -> str:
    """A few words on why the system could not open ``path`` (a broken link, a folder, no
    permission), or the decoder's own message."""
    with contextlib.suppress(OSError):  # a name too long cannot even be looked at
        if path.is_symlink():
            return _link_problem(path)
    words = {errno.ENOENT: "no such file", errno.EISDIR: "a folder, not a file",
             errno.EACCES: "permission denied", errno.ELOOP: "symbolic link loop",
             errno.ENAMETOOLONG: "file name too long"}
    return words.get(exc.errno or -1, f"{type(exc).__name__}: {exc}")


def _link_problem(path: Path) -> str:
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symbolic link loop; skipped"
        return f"broken symbolic link to {os.readlink(path)!r}, which does not exist; skipped"
    return "not a regular file; skipped"


@dataclass(frozen=True)
class DecodedImage:
    """An image as read, before the model's channels and normalisation.

    Attributes
    ----------
    pixels : np.ndarray
        float32 ``(H, W, C)``, ``C`` 1, 3 or 4 as stored; integer images scaled to [0, 1]
        (by 255 or 65535), float images as stored.
    width, height : int
        The image's size in the file (before any resize).
    """

    pixels: np.ndarray
    width: int
    height: int


def read_image(path: str | os.PathLike[str], size: tuple[int, int] | None = None, *,
               max_pixels: int = MAX_PIXELS) -> DecodedImage:
    """One image file, resized to ``size`` (bilinear) when given.

    Grayscale stays one channel, RGBA and palette images with transparency keep alpha (4),
    CMYK, YCbCr and the other colour modes become RGB. An animated image gives its first frame.

    Parameters
    ----------
    path : path
        The file.
    size : (int, int), optional
        ``(height, width)`` to resize to.
    max_pixels : int
        The most pixels decoded (checked from the header, before decoding).

    Returns
    -------
    DecodedImage
        ``pixels`` float32 ``(H, W, C)`` (``size`` when given).

    Raises
    ------
    FileReadError
        An empty, truncated or unrecognised file, one that claims more than ``max_pixels``
        pixels, or any other decoding failure; the message names the file.
    """
    with _opened(path, size, max_pixels) as (img, width, height):
        return DecodedImage(_to_array(img, size, path), width, height)


def read_mask(path: str | os.PathLike[str], size: tuple[int, int], *,
              max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """A mask image as bool ``(H, W)`` at ``size`` (nearest neighbour): non-zero is the object.

    Raises
    ------
    FileReadError
        As :func:`read_image`, with ``mask`` in the reason.
    """
    try:
        with _opened(path, size, max_pixels) as (img, _, _):
            if img.mode in ("1", "P", "L", "LA", "RGB", "RGBA", "CMYK", "YCbCr"):
                img = img.convert("L")
            small = img.resize((size[1], size[0]), _pillow()[0].Resampling.NEAREST)
            return np.asarray(small) > 0
    except FileReadError as exc:
        raise FileReadError(exc.path, f"mask: {exc.reason}") from exc


@contextmanager
def _opened(path: str | os.PathLike[str], size: tuple[int, int] | None,
            max_pixels: int) -> Iterator[tuple[Any, int, int]]:
    """``with _opened(path, size, budget) as (img, width, height)``: a checked, decoded image;
    every failure, in the block too, becomes a :class:`FileReadError` naming the file."""
    Image, Unidentified = _pillow()
    path = Path(path)
    img = None
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):  # a pipe or a device: reading would never end
            raise FileReadError(path, "a folder, not a file" if stat.S_ISDIR(info.st_mode)
                                else "not a regular file (a pipe or a device)")
        if info.st_size == 0:
            raise FileReadError(path, "empty file (0 bytes)")
        with warnings.catch_warnings():
            # The budget below is ours; Pillow still raises above twice its own limit.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
        width, height = img.size
        if size is not None and img.format == "JPEG":
            img.draft(img.mode, (size[1], size[0]))  # decode at 1/2, 1/4 or 1/8 scale
        # A progressive JPEG keeps every DCT coefficient of its full size whatever the scale
        # (a 500-byte file claiming 13000x13000 would cost 0.5 GB): its header size counts.
        decoded = (width, height) if img.info.get("progressive") else img.size
        if decoded[0] * decoded[1] > max_pixels or width <= 0 or height <= 0:
            raise FileReadError(
                path, f"its header claims {width}x{height} pixels, more than the limit of "
                f"{max_pixels:,} (a decompression bomb?)")
        img.load()  # decode now: a truncated file fails here
        yield img, width, height
    except (FileReadError, MemoryError):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise FileReadError(path, f"refused as a decompression bomb: {exc}") from exc
    except Unidentified as exc:
        raise FileReadError(path, "not an image format Pillow recognises") from exc
    except OSError as exc:
        raise FileReadError(path, file_problem(path, exc)) from exc
    except Exception as exc:  # decoders raise many kinds; a bad file must not stop a run
        raise FileReadError(path, f"{type(exc).__name__}: {exc}") from exc
    finally:
        if img is not None:
            img.close()


def _pillow() -> tuple[Any, type[Exception]]:
    """Pillow's ``Image`` module and its unidentified-image error (our error if absent)."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as exc:
        raise InputError("reading image files needs Pillow: pip install 'interp-core[cli]'"
                         ) from exc
    return Image, UnidentifiedImageError


def _to_array(img: Any, size: tuple[int, int] | None,
              path: str | os.PathLike[str]) -> np.ndarray:
    """Pillow image -> float32 ``(H, W, C)``, resized in its own mode where it can be (a
    large 8-bit image is never held as float32 at full size). Float samples must be finite
    (as :func:`~interp_core.io.volumes.read_array` wants them): NaN or inf would spread
    through the resize, the model and the overlay."""
    from PIL import Image

    bilinear = Image.Resampling.BILINEAR
    target = None if size is None else (size[1], size[0])
    if img.mode in _WIDE_MODES or img.mode == "F":
        values = np.asarray(img, dtype=np.float32)
        if img.mode != "F":
            values = np.clip(values / 65535.0, 0.0, 1.0)
        elif not np.isfinite(values).all():
            bad = values.size - int(np.count_nonzero(np.isfinite(values)))
            raise FileReadError(path, f"holds {bad} non-finite float values (NaN or inf); "
                                "expected finite values")
        if target is not None and target != img.size:
            values = np.asarray(Image.fromarray(values, mode="F").resize(target, bilinear),
                                dtype=np.float32)
        return values[..., None]
    mode = _pillow_mode(img)
    if img.mode != mode:
        img = img.convert(mode)
    if target is not None and target != img.size:
        img = img.resize(target, bilinear)
    pixels = np.asarray(img, dtype=np.float32) / 255.0
    return pixels[..., None] if pixels.ndim == 2 else pixels


def _pillow_mode(img: Any) -> str:
    """The mode an image is read in: L, RGB or RGBA."""
    if img.mode in _NATIVE_CHANNELS:
        return str(img.mode)
    if img.mode == "1":
        return "L"
    if img.mode in ("LA", "La", "PA", "RGBa") or (
            img.mode == "P" and "transparency" in img.info):
        return "RGBA"
    return "RGB"


def to_channels(pixels: np.ndarray, channels: int, path: str | os.PathLike[str] = "") -> np.ndarray:
    """An image with ``channels`` channels, as the model takes it.

    1 -> 3 repeats the gray value; 3 or 4 -> 1 is Pillow's luma (ITU-R 601-2); 4 -> 3 drops
    alpha; 1 or 3 -> 4 adds an opaque alpha channel.

    Parameters
    ----------
    pixels : np.ndarray
        ``(..., C)`` float32.
    channels : int
        What the model takes.
    path : path
        The file, for the error message.

    Raises
    ------
    FileReadError
        Counts with no such conversion (e.g. 2 -> 3, 3 -> 5); the message names both.
    """
    have = pixels.shape[-1]
    if have == channels:
        return pixels
    if channels == 1 and have in (3, 4):
        return (pixels[..., :3] @ _LUMA)[..., None].astype(np.float32)
    if channels == 3 and have in (1, 4):
        return np.repeat(pixels, 3, axis=-1) if have == 1 else pixels[..., :3]
    if channels == 4 and have in (1, 3):
        rgb = np.repeat(pixels, 3, axis=-1) if have == 1 else pixels
        return np.concatenate([rgb, np.ones_like(rgb[..., :1])], axis=-1)
    raise FileReadError(
        path, f"it has {have} channel(s) and the model takes {channels}; interp converts "
        "between 1 (gray), 3 (RGB) and 4 (RGBA) only: convert the file, or set --channels")


def display_rgb(pixels: np.ndarray) -> np.ndarray:
    """An image for an overlay: float32 ``(H, W, 3)`` in [0, 1].

    Values already in [0, 1] are kept; others (float TIFFs, arrays, volumes) are min-max
    scaled. One channel is repeated, alpha and further channels are dropped.
    """
    image = pixels[..., :3] if pixels.shape[-1] >= 3 else np.repeat(pixels[..., :1], 3, -1)
    low, high = float(image.min(initial=0.0)), float(image.max(initial=0.0))
    if low < 0.0 or high > 1.0:
        span = high - low
        image = (image - low) / span if span > 0 else np.zeros_like(image)
    return np.asarray(image, dtype=np.float32)
