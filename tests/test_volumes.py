"""interp_core.io.volumes: .npy/.npz arrays, NIfTI volumes and DICOM images as model inputs.

Every file is written here, in ``tmp_path``: with NumPy, nibabel and pydicom, or by hand for
the broken ones.
"""

from __future__ import annotations

import gzip
import io
import pickle
import sys
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

from interp_core.io.errors import FileReadError
from interp_core.io.volumes import (
    ARRAY_SUFFIXES,
    MAX_ELEMENTS,
    arrange,
    display_image,
    is_array_file,
    middle_slice,
    middle_slice_map,
    read_array,
    resize_volume,
)

# --------------------------------------------------------------------------- helpers


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def npy_header_only(shape: tuple[int, ...], descr: str = "<f4", body: bytes = b"\0" * 16) -> bytes:
    """An .npy header declaring ``shape`` followed by a tiny body."""
    buf = io.BytesIO()
    header = {"descr": descr, "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue() + body


def reason_of(path: Path, **kwargs) -> str:
    with pytest.raises(FileReadError) as info:
        read_array(path, **kwargs)
    assert info.value.path == path
    assert str(path) in str(info.value)
    return info.value.reason


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    *,
    slope: float | None = None,
    intercept: float | None = None,
    colour: bool = False,
    pixel_data: bool = True,
) -> Path:
    """A minimal valid DICOM file (Explicit VR Little Endian) holding ``pixels``.

    ``pixels``: uint16/int16 ``(H, W)`` or ``(frames, H, W)``, or uint8 ``(H, W, 3)`` with
    ``colour``.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    if colour:
        ds.Rows, ds.Columns = pixels.shape[:2]
        ds.SamplesPerPixel = 3
        ds.PhotometricInterpretation = "RGB"
        ds.PlanarConfiguration = 0
        bits = 8
    else:
        ds.Rows, ds.Columns = pixels.shape[-2:]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        bits = 16
        if pixels.ndim == 3:
            ds.NumberOfFrames = pixels.shape[0]
    ds.BitsAllocated = bits
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 1 if pixels.dtype.kind == "i" else 0
    if slope is not None:
        ds.RescaleSlope = slope
    if intercept is not None:
        ds.RescaleIntercept = intercept
    if pixel_data:
        ds.PixelData = pixels.astype(pixels.dtype.newbyteorder("<")).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def write_nifti(path: Path, data: np.ndarray, *, slope: float = 1.0, inter: float = 0.0) -> Path:
    nib = pytest.importorskip("nibabel")
    image = nib.Nifti1Image(data, np.diag([2.0, 3.0, 4.0, 1.0]))
    image.header.set_slope_inter(slope, inter)
    image.to_filename(str(path))
    return path


# --------------------------------------------------------------------------- suffixes


def test_suffixes_and_is_array_file():
    assert ARRAY_SUFFIXES == (".npy", ".npz", ".nii", ".nii.gz", ".dcm")
    for name in ["a.npy", "A.NPY", "b.npz", "c.nii", "d.nii.gz", "E.NII.GZ", "f.Dcm"]:
        assert is_array_file(name)
        assert is_array_file(Path("dir") / name)
    for name in ["a.png", "b.gz", "c.tar.gz", "npy", "d.nii.zip", "e.dicom"]:
        assert not is_array_file(name)


def test_unknown_suffix_and_missing_file(tmp_path):
    other = tmp_path / "a.png"
    other.write_bytes(b"x")
    assert ".nii.gz" in reason_of(other)
    assert reason_of(tmp_path / "missing.npy") == "no such file"
    folder = tmp_path / "folder.npy"
    folder.mkdir()
    assert "directory" in reason_of(folder)


# --------------------------------------------------------------------------- .npy

DTYPES = [
    np.bool_, np.int8, np.int16, np.int32, np.int64,
    np.uint8, np.uint16, np.uint32, np.uint64,
    np.float16, np.float32, np.float64, ">i2", ">f8",
]  # fmt: skip


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_npy_every_numeric_dtype(tmp_path, dtype):
    values = np.array([[0, 1, 2], [3, 4, 5]]).astype(dtype)
    if np.dtype(dtype).kind in "iuf" and np.dtype(dtype).itemsize >= 2:
        values[1, 2] = 300  # above 255: kept as is
    path = tmp_path / "a.npy"
    np.save(path, values)
    out = read_array(path)
    assert out.dtype == np.float32 and out.shape == (2, 3) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, values.astype(np.float32))


def test_npy_large_stored_values_and_fortran_order(tmp_path):
    values = np.asfortranarray(np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000)
    path = tmp_path / "a.npy"
    np.save(path, values)
    out = read_array(path)
    np.testing.assert_array_equal(out, values.astype(np.float32))
    assert out.max() == 55000.0 and out.flags.c_contiguous


@pytest.mark.parametrize(
    ("array", "words"),
    [
        (np.array(["ab", "cd"]), "non-numeric dtype <U2"),
        (np.array([b"ab", b"cd"]), "non-numeric dtype |S2"),
        (np.zeros(3, dtype=[("a", "<f4"), ("b", "<i4")]), "structured dtype"),
        (np.array([1 + 2j]), "complex values"),
        (np.array(["2020-01-01"], dtype="datetime64[D]"), "non-numeric dtype"),
    ],
    ids=["unicode", "bytes", "structured", "complex", "datetime"],
)
def test_npy_non_numeric_dtypes_refused(tmp_path, array, words):
    path = tmp_path / "a.npy"
    np.save(path, array)
    reason = reason_of(path)
    assert words in reason
    assert "expected a bool, integer or float array" in reason


def test_npy_object_array_refused_without_unpickling(tmp_path, monkeypatch):
    path = tmp_path / "a.npy"
    np.save(path, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    monkeypatch.setattr(pickle, "load", lambda *a, **k: pytest.fail("unpickled"))
    assert "Python objects" in reason_of(path)


def test_plain_pickle_named_npy_refused(tmp_path):
    path = tmp_path / "a.npy"
    path.write_bytes(pickle.dumps(np.zeros(3)))
    assert "numpy.save" in reason_of(path)


def test_npy_truncated(tmp_path):
    data = npy_bytes(np.arange(100, dtype=np.float32))
    path = tmp_path / "a.npy"
    path.write_bytes(data[:-10])
    reason = reason_of(path)
    assert reason.startswith("truncated") and "390" in reason and "400" in reason
    for cut in [0, 3, 8, 20, 60]:  # inside the magic and the header
        path.write_bytes(data[:cut])
        reason_of(path)


def test_npy_huge_header_refused_by_budget_without_allocating(tmp_path, monkeypatch):
    path = tmp_path / "huge.npy"
    path.write_bytes(npy_header_only((100000, 100000)))
    monkeypatch.setattr(np, "load", lambda *a, **k: pytest.fail("data read"))
    tracemalloc.start()
    try:
        reason = reason_of(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "(100000, 100000)" in reason and "10000000000 values" in reason
    assert f"budget of {MAX_ELEMENTS}" in reason and "max_elements" in reason
    assert peak < 10 * 2**20


def test_npy_budget_is_the_argument(tmp_path):
    path = tmp_path / "a.npy"
    np.save(path, np.zeros((4, 5)))
    assert read_array(path, max_elements=20).shape == (4, 5)
    assert "budget of 19" in reason_of(path, max_elements=19)


def test_npy_empty_refused(tmp_path):
    path = tmp_path / "a.npy"
    np.save(path, np.zeros((0, 5)))
    assert "shape (0, 5) holds no values" in reason_of(path)


def test_non_finite_values_refused(tmp_path):
    values = np.ones((3, 3))
    values[0, 0], values[1, 1], values[2, 2] = np.nan, np.inf, -np.inf
    path = tmp_path / "a.npy"
    np.save(path, values)
    assert "holds 3 non-finite values" in reason_of(path)
    np.save(path, np.array([1e300, 1.0]))  # beyond float32
    assert "holds 1 non-finite values" in reason_of(path)


# --------------------------------------------------------------------------- .npz


def test_npz_single_array(tmp_path):
    path = tmp_path / "a.npz"
    np.savez(path, np.arange(6, dtype=np.int16).reshape(2, 3))
    np.testing.assert_array_equal(read_array(path), np.arange(6).reshape(2, 3))
    np.savez_compressed(path, volume=np.full((2, 2, 2), 7, dtype=np.uint16))
    np.testing.assert_array_equal(read_array(path), np.full((2, 2, 2), 7.0))


def test_npz_preferred_names(tmp_path):
    path = tmp_path / "a.npz"
    image, x, first = np.full(2, 1.0), np.full(2, 2.0), np.full(2, 3.0)
    np.savez(path, first, image=image, x=x, mask=np.zeros(2))
    np.testing.assert_array_equal(read_array(path), image)
    np.savez(path, first, x=x, mask=np.zeros(2))
    np.testing.assert_array_equal(read_array(path), x)
    np.savez(path, first, mask=np.zeros(2))  # arr_0 beside named arrays
    np.testing.assert_array_equal(read_array(path), first)


def test_npz_ambiguous_arrays_refused(tmp_path):
    path = tmp_path / "a.npz"
    np.savez(path, np.zeros(2), np.ones(2))  # arr_0 and arr_1: neither is the input
    reason = reason_of(path)
    assert "holds 2 arrays ('arr_0', 'arr_1')" in reason and "'image'" in reason
    np.savez(path, a=np.zeros(2), b=np.ones(2))
    assert "('a', 'b')" in reason_of(path)


def test_npz_member_checks(tmp_path):
    path = tmp_path / "a.npz"
    np.savez(path, image=np.array(["a"]))
    assert "array 'image' has the non-numeric dtype" in reason_of(path)
    np.savez(path, image=np.array([np.nan, 1.0]))
    assert "holds 1 non-finite values" in reason_of(path)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("image.npy", npy_header_only((100000, 100000)))
    assert "array 'image' shape (100000, 100000)" in reason_of(path)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("image.npy", npy_header_only((4, 4), body=b"\0" * 8))
    assert "array 'image' truncated" in reason_of(path)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("image.npy", b"not an array")
    assert "no NumPy header" in reason_of(path)


def test_zip_that_is_not_npz(tmp_path):
    path = tmp_path / "a.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")
    assert "no .npy members" in reason_of(path)
    path.write_bytes(b"PK not really a zip")
    assert "not a readable zip archive" in reason_of(path)


def test_npz_truncated(tmp_path):
    path = tmp_path / "a.npz"
    np.savez_compressed(path, image=np.random.default_rng(0).random((20, 20)))
    data = path.read_bytes()
    for cut in [0, 10, len(data) // 2, len(data) - 5]:
        path.write_bytes(data[:cut])
        reason_of(path)


# --------------------------------------------------------------------------- NIfTI


@pytest.mark.parametrize("name", ["vol.nii", "vol.nii.gz", "VOL.NII.GZ"])
def test_nifti_scaled_values_and_axis_order(tmp_path, name):
    stored = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4) * 20
    path = write_nifti(tmp_path / name, stored, slope=2.0, inter=10.0)
    out = read_array(path)
    assert out.dtype == np.float32 and out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, stored * 2.0 + 10.0)  # voxel (i, j, k) order kept


def test_nifti_4d(tmp_path):
    stored = np.random.default_rng(0).random((3, 4, 5, 2)).astype(np.float32)
    out = read_array(write_nifti(tmp_path / "a.nii.gz", stored))
    np.testing.assert_array_equal(out, stored)


def test_nifti_budget_and_bad_files(tmp_path):
    path = write_nifti(tmp_path / "a.nii", np.zeros((4, 4, 4), dtype=np.float32))
    assert "shape (4, 4, 4) holds 64 values, over the budget of 63" in reason_of(
        path, max_elements=63
    )
    data = path.read_bytes()
    for cut in [0, 100, 348, len(data) - 8]:
        path.write_bytes(data[:cut])
        reason_of(path)
    not_nifti = tmp_path / "b.nii"
    not_nifti.write_bytes(b"\x01" * 600)
    reason_of(not_nifti)
    gz = write_nifti(tmp_path / "c.nii.gz", np.ones((8, 8, 8), dtype=np.float32))
    gz.write_bytes(gz.read_bytes()[:-20])
    reason_of(gz)
    not_gzip = tmp_path / "d.nii.gz"
    not_gzip.write_bytes(b"plain text")
    reason_of(not_gzip)


def test_nifti_non_finite_and_complex(tmp_path):
    data = np.ones((2, 2, 2), dtype=np.float32)
    data[0, 0, 0] = np.nan
    assert "holds 1 non-finite values" in reason_of(write_nifti(tmp_path / "a.nii", data))
    complex_path = write_nifti(tmp_path / "b.nii", np.ones((2, 2, 2), dtype=np.complex64))
    assert "voxel data holds complex values" in reason_of(complex_path)


def test_missing_nibabel(tmp_path, monkeypatch):
    path = tmp_path / "a.nii.gz"
    with gzip.open(path, "wb") as fp:
        fp.write(b"\0" * 400)
    monkeypatch.setitem(sys.modules, "nibabel", None)
    reason = reason_of(path)
    assert "pip install nibabel" in reason and "interp-core[nifti]" in reason


# --------------------------------------------------------------------------- DICOM


@pytest.fixture
def pydicom():
    return pytest.importorskip("pydicom")


def test_dicom_16_bit_values_kept(tmp_path, pydicom):
    stored = np.array([[0, 255, 256], [1000, 4095, 65535]], dtype=np.uint16)
    out = read_array(write_dicom(tmp_path / "a.dcm", stored))
    assert out.dtype == np.float32 and out.shape == (2, 3)
    np.testing.assert_array_equal(out, stored.astype(np.float32))


def test_dicom_modality_rescale(tmp_path, pydicom):
    stored = np.array([[0, 24], [1024, 3000]], dtype=np.uint16)
    path = write_dicom(tmp_path / "ct.DCM", stored, slope=1.0, intercept=-1024.0)
    np.testing.assert_array_equal(read_array(path), [[-1024, -1000], [0, 1976]])
    signed = np.array([[-2000, -1], [0, 1200]], dtype=np.int16)
    path = write_dicom(tmp_path / "b.dcm", signed, slope=0.5, intercept=3.0)
    np.testing.assert_array_equal(read_array(path), signed * 0.5 + 3.0)
    path = write_dicom(tmp_path / "c.dcm", signed, slope=2.0)  # no intercept: 0
    np.testing.assert_array_equal(read_array(path), signed * 2.0)


def test_dicom_multi_frame(tmp_path, pydicom):
    stored = np.arange(3 * 4 * 5, dtype=np.uint16).reshape(3, 4, 5) * 100
    out = read_array(write_dicom(tmp_path / "a.dcm", stored, slope=2.0, intercept=1.0))
    assert out.shape == (3, 4, 5)
    np.testing.assert_array_equal(out, stored * 2.0 + 1.0)


def test_dicom_enhanced_functional_group_rescale(tmp_path, pydicom):
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    stored = np.arange(2 * 2 * 3, dtype=np.uint16).reshape(2, 2, 3)
    path = write_dicom(tmp_path / "a.dcm", stored)
    ds = pydicom.dcmread(path)

    def group(slope: float, intercept: float) -> Dataset:
        transform = Dataset()
        transform.RescaleSlope, transform.RescaleIntercept = slope, intercept
        item = Dataset()
        item.PixelValueTransformationSequence = Sequence([transform])
        return item

    ds.SharedFunctionalGroupsSequence = Sequence([group(10.0, 0.0)])
    ds.PerFrameFunctionalGroupsSequence = Sequence([Dataset(), group(1.0, -5.0)])
    ds.save_as(path)
    out = read_array(path)
    np.testing.assert_array_equal(out[0], stored[0] * 10.0)  # shared
    np.testing.assert_array_equal(out[1], stored[1] - 5.0)  # per-frame wins


def test_dicom_colour(tmp_path, pydicom):
    rgb = np.random.default_rng(0).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    out = read_array(write_dicom(tmp_path / "a.dcm", rgb, colour=True))
    assert out.shape == (4, 5, 3)
    np.testing.assert_array_equal(out, rgb.astype(np.float32))


def test_dicom_errors(tmp_path, pydicom):
    not_dicom = tmp_path / "a.dcm"
    not_dicom.write_bytes(b"\0" * 300)
    assert "not a DICOM file" in reason_of(not_dicom)
    no_pixels = write_dicom(tmp_path / "b.dcm", np.zeros((2, 2), np.uint16), pixel_data=False)
    assert "holds no pixel data" in reason_of(no_pixels)
    big = write_dicom(tmp_path / "c.dcm", np.zeros((3, 4, 5), np.uint16))
    assert "shape (3, 4, 5, 1) holds 60 values, over the budget of 59" in reason_of(
        big, max_elements=59
    )
    data = big.read_bytes()
    for cut in [10, 140, len(data) // 2, len(data) - 7]:
        big.write_bytes(data[:cut])
        reason_of(big)


def test_dicom_budget_checked_before_pixels(tmp_path, pydicom, monkeypatch):
    path = write_dicom(tmp_path / "a.dcm", np.zeros((2, 2), np.uint16))
    ds = pydicom.dcmread(path)
    ds.Rows, ds.Columns, ds.NumberOfFrames = 60000, 60000, 100  # a lying header
    ds.save_as(path)
    monkeypatch.setattr(
        pydicom.dataset.Dataset, "pixel_array", property(lambda self: pytest.fail("decoded"))
    )
    assert "over the budget" in reason_of(path)


def test_missing_pydicom(tmp_path, monkeypatch):
    path = tmp_path / "a.dcm"
    path.write_bytes(b"\0" * 300)
    monkeypatch.setitem(sys.modules, "pydicom", None)
    reason = reason_of(path)
    assert "pip install pydicom" in reason and "interp-core[dicom]" in reason


@pytest.mark.parametrize("suffix", ARRAY_SUFFIXES)
def test_random_bytes_give_file_read_error(tmp_path, suffix):
    rng = np.random.default_rng(len(suffix))
    for size in [0, 1, 64, 1000]:
        path = tmp_path / f"junk{size}{suffix}"
        path.write_bytes(rng.integers(0, 256, size, dtype=np.uint8).tobytes())
        reason_of(path)


# --------------------------------------------------------------------------- arrange


def test_arrange_adds_a_channel_axis():
    image = np.arange(12, dtype=np.int32).reshape(3, 4)
    out = arrange(image, spatial_dims=2, channels=None, path="a.npy")
    assert out.shape == (3, 4, 1) and out.dtype == np.float32
    np.testing.assert_array_equal(out[..., 0], image)
    out = arrange(image, spatial_dims=2, channels=1, path="a.npy")
    assert out.shape == (3, 4, 1)
    volume = np.zeros((2, 3, 4))
    assert arrange(volume, spatial_dims=3, channels=None, path="v.nii").shape == (2, 3, 4, 1)


def test_arrange_repeats_one_channel():
    image = np.arange(6.0).reshape(2, 3)
    out = arrange(image, spatial_dims=2, channels=3, path="a.npy")
    assert out.shape == (2, 3, 3) and out.flags.c_contiguous
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], image)
    out = arrange(image[..., None], spatial_dims=2, channels=3, path="a.npy")
    assert out.shape == (2, 3, 3)
    volume = np.arange(24.0).reshape(2, 3, 4)
    out = arrange(volume[None], spatial_dims=3, channels=2, path="v.npy")  # (1, D, H, W)
    assert out.shape == (2, 3, 4, 2)
    np.testing.assert_array_equal(out[..., 1], volume)
    out = arrange(volume[None], spatial_dims=3, channels=1, path="v.npy")
    assert out.shape == (2, 3, 4, 1)


def test_arrange_channels_last_kept():
    image = np.random.default_rng(0).random((4, 5, 3))
    out = arrange(image, spatial_dims=2, channels=3, path="a.npy")
    np.testing.assert_array_equal(out, image.astype(np.float32))
    kept = arrange(np.zeros((4, 5, 6)), spatial_dims=2, channels=None, path="a.npy")
    assert kept.shape == (4, 5, 6)
    both = arrange(np.zeros((3, 5, 3)), spatial_dims=2, channels=3, path="a.npy")
    assert both.shape == (3, 5, 3)  # first and last both 3: channels-last


def test_arrange_moves_channels_first():
    volume = np.random.default_rng(0).random((2, 4, 5, 6))  # (C, D, H, W)
    out = arrange(volume, spatial_dims=3, channels=2, path="v.npy")
    assert out.shape == (4, 5, 6, 2) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, np.moveaxis(volume, 0, -1).astype(np.float32))
    image = np.random.default_rng(1).random((3, 7, 8))  # (C, H, W)
    out = arrange(image, spatial_dims=2, channels=3, path="a.npy")
    np.testing.assert_array_equal(out, np.moveaxis(image, 0, -1).astype(np.float32))


def test_arrange_wrong_number_of_axes():
    with pytest.raises(FileReadError) as info:
        arrange(np.zeros((4, 5)), spatial_dims=3, channels=None, path="v.npy")
    assert info.value.reason == (
        "shape (4, 5) has 2 axes; a 3-D model takes (D, H, W) or (D, H, W, C)"
    )
    assert info.value.path == Path("v.npy")
    with pytest.raises(FileReadError) as info:
        arrange(np.zeros((1, 2, 4, 5)), spatial_dims=2, channels=3, path="a.npy")
    assert info.value.reason == (
        "shape (1, 2, 4, 5) has 4 axes; a 2-D model with 3 channels takes (H, W), (H, W, 3) "
        "or (3, H, W)"
    )
    with pytest.raises(FileReadError, match="a 1-D model takes"):
        arrange(np.zeros((2, 3, 4)), spatial_dims=1, channels=None, path="s.npy")


def test_arrange_channel_count_mismatch():
    with pytest.raises(FileReadError) as info:
        arrange(np.zeros((4, 5, 4)), spatial_dims=2, channels=3, path="a.npy")
    assert info.value.reason == (
        "shape (4, 5, 4) gives 4 channels; the model takes 3 (or 1, repeated)"
    )
    with pytest.raises(FileReadError, match="gives 3 channels; the model takes 1"):
        arrange(np.zeros((4, 5, 3)), spatial_dims=2, channels=1, path="a.npy")
    with pytest.raises(FileReadError, match="gives 2 channels; the model takes 3"):
        arrange(np.zeros((2, 4, 5, 2)), spatial_dims=3, channels=3, path="v.npy")


def test_arrange_bad_arguments():
    with pytest.raises(ValueError):
        arrange(np.zeros((2, 2)), spatial_dims=0, channels=None, path="a.npy")
    with pytest.raises(ValueError):
        arrange(np.zeros((2, 2)), spatial_dims=2, channels=0, path="a.npy")


def test_read_then_arrange_dicom_colour(tmp_path, pydicom):
    rgb = np.random.default_rng(0).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    path = write_dicom(tmp_path / "a.dcm", rgb, colour=True)
    out = arrange(read_array(path), spatial_dims=2, channels=3, path=path)
    np.testing.assert_array_equal(out, rgb.astype(np.float32))


# --------------------------------------------------------------------------- resize


def test_resize_volume_shapes_and_noop():
    volume = np.random.default_rng(0).random((4, 6, 8, 2)).astype(np.float32)
    same = resize_volume(volume, (4, 6, 8))
    np.testing.assert_array_equal(same, volume)
    out = resize_volume(volume, (8, 3, 5))
    assert out.shape == (8, 3, 5, 2) and out.dtype == np.float32 and out.flags.c_contiguous
    assert resize_volume(np.zeros((5, 7, 3)), (10, 14)).shape == (10, 14, 3)
    with pytest.raises(ValueError, match="needs 3"):
        resize_volume(volume, (4, 6))


def test_resize_volume_keeps_a_ramp():
    d, h, w = np.meshgrid(np.arange(8.0), np.arange(8.0), np.arange(8.0), indexing="ij")
    ramp = d + 10 * h + 100 * w
    volume = np.stack([ramp, -ramp], axis=-1)
    out = resize_volume(volume, (4, 4, 4))  # half-pixel: samples 0.5, 2.5, 4.5, 6.5
    centres = np.array([0.5, 2.5, 4.5, 6.5])
    cd, ch, cw = np.meshgrid(centres, centres, centres, indexing="ij")
    expected = cd + 10 * ch + 100 * cw
    np.testing.assert_allclose(out[..., 0], expected, rtol=1e-6)
    np.testing.assert_allclose(out[..., 1], -expected, rtol=1e-6)
    up = resize_volume(np.arange(4.0)[:, None], (8,))[:, 0]  # interior stays linear
    np.testing.assert_allclose(np.diff(up[1:-1]), 0.5, rtol=1e-6)
    np.testing.assert_allclose(up[[0, -1]], [0.0, 3.0])


# --------------------------------------------------------------------------- display


def test_middle_slice():
    volume = np.arange(5 * 2 * 3 * 1, dtype=np.float32).reshape(5, 2, 3, 1)
    np.testing.assert_array_equal(middle_slice(volume), volume[2])
    even = np.arange(4 * 2 * 3 * 2).reshape(4, 2, 3, 2)
    np.testing.assert_array_equal(middle_slice(even), even[2])
    image = np.zeros((2, 3, 3))
    assert middle_slice(image) is image
    with pytest.raises(ValueError):
        middle_slice(np.zeros((2, 3)))


def test_middle_slice_map():
    maps = np.random.default_rng(0).random((7, 3, 4))
    np.testing.assert_array_equal(middle_slice_map(maps), maps[3])
    flat = np.zeros((3, 4))
    assert middle_slice_map(flat) is flat
    with pytest.raises(ValueError):
        middle_slice_map(np.zeros((1, 2, 3, 4)))


def test_display_image():
    grey = np.array([[-1000.0, 0.0], [1000.0, 3000.0]])[..., None]
    out = display_image(grey)
    assert out.shape == (2, 2, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out[..., 0], [[0.0, 0.25], [0.5, 1.0]])
    np.testing.assert_array_equal(out[..., 0], out[..., 2])
    np.testing.assert_array_equal(display_image(grey[..., 0]), out)  # (H, W) too
    four = np.random.default_rng(0).random((3, 4, 4)) * 50
    out = display_image(four)
    assert out.shape == (3, 4, 3) and out.min() >= 0 and out.max() <= 1
    lo, hi = four[..., :3].min(), four[..., :3].max()
    np.testing.assert_allclose(out, (four[..., :3] - lo) / (hi - lo), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(display_image(np.full((2, 2, 1), 7.0)), np.zeros((2, 2, 3)))
    two = display_image(np.stack([np.eye(2), np.ones((2, 2))], axis=-1))
    np.testing.assert_array_equal(two[..., 1], np.eye(2))
