#!/usr/bin/env python3
"""Converts the LPIPS v0.1 linear heads (`lpips/weights/v0.1/vgg.pth` inside the PyPI `lpips`
wheel) to safetensors with the standard library only: scripts/setup.sh runs it on a machine that
has no PyTorch. The .pth file is PyTorch's legacy format (pickles, then raw little-endian float32
storages); the pickle is read with a restricted unpickler that only rebuilds those tensors.

    python3 tools/lpips_heads_to_safetensors.py lpips-0.1.4-py3-none-any.whl out.safetensors
"""
import json
import pickle
import struct
import sys
import zipfile


class _Storage:
    def __init__(self, key):
        self.key = key


class _Tensor:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)


def _rebuild_tensor_v2(storage, offset, size, stride, *_):
    return _Tensor(storage, offset, size, stride)


class _Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor_v2
        if module == "torch" and name == "FloatStorage":
            return "float32"
        if module == "collections" and name == "OrderedDict":
            import collections
            return collections.OrderedDict
        raise pickle.UnpicklingError(f"unexpected object {module}.{name} in the LPIPS weights")

    def persistent_load(self, pid):
        # ('storage', storage_type, key, location, numel, view_metadata)
        if pid[0] != "storage" or pid[1] != "float32":
            raise pickle.UnpicklingError(f"unexpected storage {pid!r}")
        return _Storage(pid[2])


def read_pth(pth_bytes):
    """The tensors of a .pth file in PyTorch's legacy (pre-zip) format, which the lpips wheel uses:
    four pickles (magic number, protocol, system info, the state dict), a pickled list of storage
    keys, then each storage as an int64 element count and its raw bytes."""
    import io
    f = io.BytesIO(pth_bytes)
    if pickle.load(f) != 0x1950A86A20F9469CFC6C:
        raise ValueError("not a PyTorch legacy .pth file (magic number)")
    pickle.load(f)  # protocol version
    pickle.load(f)  # system info
    storages = {}
    unpickler = _Unpickler(f)
    state = unpickler.load()
    keys = pickle.load(f)
    for key in keys:
        (numel,) = struct.unpack("<q", f.read(8))
        storages[key] = f.read(4 * numel)
    out = {}
    for name, t in state.items():
        n = 1
        for s in t.size:
            n *= s
        expected, step = [], 1
        for s in reversed(t.size):
            expected.insert(0, step)
            step *= s
        if tuple(expected) != t.stride:
            raise ValueError(f"{name}: non-contiguous tensor in the LPIPS weights")
        out[name] = (t.size, storages[t.storage.key][4 * t.offset: 4 * (t.offset + n)])
    return out


def write_safetensors(path, tensors):
    header, offset, blobs = {}, 0, []
    for name in sorted(tensors):
        shape, raw = tensors[name]
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        blobs.append(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path + ".part", "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    import os
    os.replace(path + ".part", path)


def main():
    wheel, out = sys.argv[1], sys.argv[2]
    with zipfile.ZipFile(wheel) as z:
        pth = z.read("lpips/weights/v0.1/vgg.pth")
    write_safetensors(out, read_pth(pth))


if __name__ == "__main__":
    main()
