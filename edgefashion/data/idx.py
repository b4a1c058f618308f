"""The IDX format of (Fashion-)MNIST: a 4-byte magic (0, 0, dtype code, ndim), ndim big-endian uint32 sizes,
then the big-endian payload. Files may be gzip-compressed, whatever their name says."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Tuple, Union

import numpy as np

from .common import DataError, one_line

GZIP_MAGIC = b"\x1f\x8b"

# The type codes of the IDX specification (http://yann.lecun.com/exdb/mnist/).
IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _gunzip(raw: bytes, path: Path) -> Tuple[bytearray, bool]:
    """Decompress all gzip members of `raw`. Returns (data, complete): an incomplete stream (a truncated
    download) still yields what it held, so the caller can say how much of the payload is missing."""
    out = bytearray()
    rest = raw
    while rest:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out += d.decompress(rest)
            out += d.flush()
        except zlib.error as e:
            raise DataError(f"{path}: corrupt gzip file ({one_line(e)})") from None
        if not d.eof:
            return out, False
        rest = d.unused_data
        # gzip tolerates zero padding after the last member (tape-era writers); anything else is not gzip.
        if rest and not rest.startswith(GZIP_MAGIC):
            if rest.strip(b"\x00"):
                raise DataError(f"{path}: corrupt gzip file ({len(rest)} bytes of trailing garbage)")
            break
    return out, True


def read_idx(path: Union[str, Path]) -> np.ndarray:
    """Read an IDX file (raw or gzip) into a writable native-endian array of the declared shape."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read IDX file ({one_line(e.strerror or e)})") from None
    complete = True
    if raw.startswith(GZIP_MAGIC):
        data, complete = _gunzip(raw, path)
        del raw
    else:
        # frombuffer over a bytearray gives a writable array (torch.from_numpy warns on read-only ones).
        data = bytearray(raw)
        del raw
    if len(data) < 4:
        what = "gzip stream ends early" if not complete else f"{len(data)} bytes"
        raise DataError(f"{path}: truncated IDX file: too short for an IDX header ({what})")
    if data[0] != 0 or data[1] != 0:
        raise DataError(f"{path}: not an IDX file (magic bytes {bytes(data[:4]).hex()} do not start with 0000)")
    code, ndim = data[2], data[3]
    if code not in IDX_DTYPES:
        raise DataError(f"{path}: unsupported IDX data type code 0x{code:02x}")
    if ndim == 0:
        raise DataError(f"{path}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX file: header of {ndim} dimensions needs {header} bytes, "
                        f"found {len(data)}")
    shape = struct.unpack(f">{ndim}I", bytes(data[4:header]))
    dtype = IDX_DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    found = len(data) - header
    if found < expected or not complete:
        note = " (gzip stream ends early)" if not complete else ""
        raise DataError(f"{path}: truncated IDX file{note}: expected {expected} bytes of data, found {found}")
    if found > expected:
        raise DataError(f"{path}: {found - expected} bytes of trailing data after the IDX payload: "
                        f"expected {expected} bytes of data, found {found}")
    arr = np.frombuffer(data, dtype=dtype, count=expected // dtype.itemsize, offset=header).reshape(shape)
    if dtype.byteorder == ">":
        arr = arr.astype(dtype.newbyteorder("="))
    return arr


def write_idx(path: Union[str, Path], array: np.ndarray, *, compress: bool = False) -> Path:
    """Write `array` as an IDX file (gzip when `compress`): for tests and for exporting subsets."""
    array = np.asarray(array)
    codes = {dt.newbyteorder("="): code for code, dt in IDX_DTYPES.items()}
    native = array.dtype.newbyteorder("=")
    if native not in codes:
        raise ValueError(f"IDX cannot store dtype {array.dtype}")
    code = codes[native]
    body = array.astype(IDX_DTYPES[code], copy=False).tobytes()
    blob = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + body
    if compress:
        import gzip
        blob = gzip.compress(blob, compresslevel=6)
    path = Path(path)
    path.write_bytes(blob)
    return path
