"""Minimal safetensors reader/writer (numpy only), for the torch oracle and benchmarks.

Format: u64 little-endian header length N, N bytes of JSON
{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}},
then the data buffer; offsets are relative to the buffer start.
"""
import json
import struct

import numpy as np

_DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"), "U8": np.dtype("u1"), "BOOL": np.dtype("?"),
    "BF16": None,  # decoded by hand
}
_NAMES = {v: k for k, v in _DTYPES.items() if v is not None}


def load(path):
    """Returns (tensors: dict name -> np.ndarray in header order, metadata: dict str -> str)."""
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise ValueError(f"{path}: too short for a safetensors header")
    (n,) = struct.unpack("<Q", raw[:8])
    if 8 + n > len(raw):
        raise ValueError(f"{path}: header length {n} exceeds file size {len(raw)}")
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    buf = memoryview(raw)[8 + n:]
    meta = header.pop("__metadata__", None) or {}
    out = {}
    for name, info in header.items():
        dt = info["dtype"]
        shape = [int(s) for s in info["shape"]]
        b, e = (int(x) for x in info["data_offsets"])
        if not (0 <= b <= e <= len(buf)):
            raise ValueError(f"{path}: {name}: data_offsets {b},{e} out of range")
        count = int(np.prod(shape)) if shape else 1
        if dt == "BF16":
            if e - b != 2 * count:
                raise ValueError(f"{path}: {name}: size mismatch")
            u = np.frombuffer(buf[b:e], dtype="<u2").astype(np.uint32) << 16
            arr = u.view(np.float32).reshape(shape)
        else:
            if dt not in _DTYPES:
                raise ValueError(f"{path}: {name}: unknown dtype {dt}")
            npdt = _DTYPES[dt]
            if e - b != npdt.itemsize * count:
                raise ValueError(f"{path}: {name}: {e - b} bytes for shape {shape} {dt}")
            arr = np.frombuffer(buf[b:e], dtype=npdt).reshape(shape).copy()
        out[name] = arr
    return out, {str(k): str(v) for k, v in meta.items()}


def save(path, tensors, metadata=None):
    """tensors: dict (insertion order kept) name -> np.ndarray (F64/F32/F16/I64/I32/...)."""
    header = {}
    blobs = []
    off = 0
    for name, arr in tensors.items():
        a = np.ascontiguousarray(arr)
        if a.dtype.byteorder == ">":
            a = a.astype(a.dtype.newbyteorder("<"))
        key = np.dtype(a.dtype.str.replace(">", "<").replace("=", "<"))
        if key not in _NAMES:
            raise ValueError(f"{name}: unsupported dtype {a.dtype}")
        data = a.tobytes()
        header[name] = {"dtype": _NAMES[key], "shape": list(a.shape),
                        "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    hj = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hj += b" " * ((8 - len(hj) % 8) % 8)  # 8-byte aligned data buffer
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for d in blobs:
            f.write(d)
