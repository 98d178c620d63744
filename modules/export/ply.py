"""PLY files without third-party code: a binary little-endian writer and a small reader.

The writer packs numpy structured arrays after a text header (one ``element`` per array, in order); a field with a
fixed shape ``(k,)`` becomes a ``property list uchar <type> name`` whose every row has ``k`` entries (triangles).
The reader handles the PLYs this project writes and the common ones other tools write: ``ascii``,
``binary_little_endian`` and ``binary_big_endian``; scalar properties and list properties (rows of equal length are
read in one pass; ragged lists row by row). It returns each element as a structured array: ``data["vertex"]["x"]``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["PlyFormatError", "ply_bytes", "read_ply"]

# PLY type names (both spellings) -> numpy kind and size
_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}  # fmt: skip
_NAMES = {"i1": "char", "u1": "uchar", "i2": "short", "u2": "ushort", "i4": "int", "u4": "uint", "f4": "float", "f8": "double"}  # fmt: skip


class PlyFormatError(ValueError):
    """The file is not a PLY this reader understands (the message names the file and the problem)."""


def ply_bytes(elements: dict[str, np.ndarray], comments: list[str] | tuple[str, ...] = ()) -> bytes:
    """Binary little-endian PLY of structured arrays: ``{element name: [N] structured array}``, in order.

    Scalar fields become scalar properties; a field of shape ``(k,)`` becomes a list property with ``k`` entries per
    row (count type uchar, so k <= 255).
    """
    header = ["ply", "format binary_little_endian 1.0", *[f"comment {c}" for c in comments]]
    body = []
    for name, arr in elements.items():
        if arr.dtype.names is None:
            raise TypeError(f"element {name!r}: expected a structured array, got dtype {arr.dtype}")
        header.append(f"element {name} {len(arr)}")
        fields = []
        for field in arr.dtype.names:
            ftype = arr.dtype.fields[field][0]
            base = ftype.base.newbyteorder("<") if ftype.base.itemsize > 1 else ftype.base
            kind = base.str.lstrip("<>|=")
            if kind not in _NAMES:
                raise TypeError(f"element {name!r} field {field!r}: no PLY type for {ftype}")
            if ftype.shape == ():
                header.append(f"property {_NAMES[kind]} {field}")
                fields.append((field, base))
            elif len(ftype.shape) == 1 and 0 < ftype.shape[0] <= 255:
                header.append(f"property list uchar {_NAMES[kind]} {field}")
                fields += [(f"{field}__count", "u1"), (field, base, ftype.shape)]
            else:
                raise TypeError(f"element {name!r} field {field!r}: shape {ftype.shape} cannot be a PLY list")
        packed = np.empty(len(arr), dtype=fields)
        for field in arr.dtype.names:
            packed[field] = arr[field]
            if f"{field}__count" in packed.dtype.names:
                packed[f"{field}__count"] = arr.dtype.fields[field][0].shape[0]
        body.append(packed.tobytes())
    header.append("end_header")
    return ("\n".join(header) + "\n").encode("ascii") + b"".join(body)


def _parse_header(path: Path, raw: bytes):
    end = raw.find(b"end_header")
    if not raw.startswith(b"ply") or end < 0:
        raise PlyFormatError(f"{path}: not a PLY file (no 'ply' magic or no end_header)")
    nl = raw.find(b"\n", end)
    start = len(raw) if nl < 0 else nl + 1
    fmt, elements = None, []
    for line in raw[:end].decode("ascii", errors="replace").splitlines()[1:]:
        words = line.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "format":
            fmt = words[1]
        elif words[0] == "element":
            elements.append((words[1], int(words[2]), []))
        elif words[0] == "property":
            if not elements:
                raise PlyFormatError(f"{path}: property before any element")
            try:
                if words[1] == "list":
                    prop = (words[4], _TYPES[words[3]], _TYPES[words[2]])  # (name, item type, count type)
                else:
                    prop = (words[2], _TYPES[words[1]], None)
            except (KeyError, IndexError):
                raise PlyFormatError(f"{path}: unsupported property line {line!r}") from None
            elements[-1][2].append(prop)
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise PlyFormatError(f"{path}: unsupported PLY format {fmt!r}")
    return fmt, elements, start


def _read_binary(path, buf, offset, count, props, order):
    """One binary element -> (structured array, next offset)."""
    lists = [p for p in props if p[2] is not None]
    if not lists:
        dtype = np.dtype([(n, order + t) for n, t, _ in props])
        arr = np.frombuffer(buf, dtype=dtype, count=count, offset=offset)
        return arr.copy(), offset + count * dtype.itemsize
    if count == 0:
        return np.empty(0, dtype=[(n, order + t) for n, t, _ in props]), offset
    # rows of equal list lengths: take the lengths of the first row and check every row has them
    lengths, pos = {}, offset
    for name, t, ct in props:
        if ct is None:
            pos += np.dtype(t).itemsize
        else:
            lengths[name] = int(np.frombuffer(buf, dtype=order + ct, count=1, offset=pos)[0])
            pos += np.dtype(ct).itemsize + lengths[name] * np.dtype(t).itemsize
    fields = []
    for name, t, ct in props:
        if ct is None:
            fields.append((name, order + t))
        else:
            fields += [(f"{name}__count", order + ct), (name, order + t, (lengths[name],))]
    dtype = np.dtype(fields)
    if offset + count * dtype.itemsize <= len(buf):
        arr = np.frombuffer(buf, dtype=dtype, count=count, offset=offset)
        if all((arr[f"{n}__count"] == k).all() for n, k in lengths.items()):
            out = np.empty(count, dtype=[(n, order + t) if ct is None else (n, order + t, (lengths[n],))
                                         for n, t, ct in props])  # fmt: skip
            for name, _, _ in props:
                out[name] = arr[name]
            return out, offset + count * dtype.itemsize
    # ragged lists: row by row, lists as object arrays
    out = np.empty(count, dtype=[(n, order + t) if ct is None else (n, object) for n, t, ct in props])
    pos = offset
    for i in range(count):
        for name, t, ct in props:
            if ct is None:
                out[name][i] = np.frombuffer(buf, dtype=order + t, count=1, offset=pos)[0]
                pos += np.dtype(t).itemsize
            else:
                k = int(np.frombuffer(buf, dtype=order + ct, count=1, offset=pos)[0])
                pos += np.dtype(ct).itemsize
                out[name][i] = np.frombuffer(buf, dtype=order + t, count=k, offset=pos).copy()
                pos += k * np.dtype(t).itemsize
    return out, pos


def _read_ascii(lines, count, props):
    has_list = any(ct is not None for _, _, ct in props)
    rows = [next(lines).split() for _ in range(count)]
    if not has_list:
        table = np.array(rows, dtype=np.float64).reshape(count, len(props))
        out = np.empty(count, dtype=[(n, t) for n, t, _ in props])
        for j, (name, _, _) in enumerate(props):
            out[name] = table[:, j]
        return out
    out = np.empty(count, dtype=[(n, t if ct is None else object) for n, t, ct in props])
    for i, words in enumerate(rows):
        j = 0
        for name, t, ct in props:
            if ct is None:
                out[name][i] = float(words[j])
                j += 1
            else:
                k = int(words[j])
                out[name][i] = np.array(words[j + 1 : j + 1 + k], dtype=np.float64).astype(t)
                j += 1 + k
    return out


def read_ply(path: str | os.PathLike) -> dict:
    """Read a PLY file.

    Returns:
        {"elements": {name: count}, "properties": {name: [property names]}, "data": {name: structured array}};
        a list property whose rows all have k entries is a [N, k] field (``data["face"]["vertex_indices"]``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such PLY file")
    raw = path.read_bytes()
    fmt, elements, start = _parse_header(path, raw)
    data = {}
    try:
        if fmt == "ascii":
            lines = iter(raw[start:].decode("ascii").splitlines())
            for name, count, props in elements:
                data[name] = _read_ascii(lines, count, props)
        else:
            order = "<" if fmt == "binary_little_endian" else ">"
            offset = start
            for name, count, props in elements:
                data[name], offset = _read_binary(path, raw, offset, count, props, order)
    except (ValueError, StopIteration, IndexError) as exc:
        raise PlyFormatError(f"{path}: truncated or malformed PLY body ({exc})") from None
    return {
        "elements": {name: count for name, count, _ in elements},
        "properties": {name: [p[0] for p in props] for name, _, props in elements},
        "data": data,
    }
