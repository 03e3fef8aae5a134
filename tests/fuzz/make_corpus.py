#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_safetensors (tests/fuzz/corpus/): small valid files of
every dtype, shape kind and metadata, and a few near-misses, so that libFuzzer starts
from inputs that reach deep into the reader. Deterministic; run it to regenerate."""
import json
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def file_bytes(header, data=b"", pad=True):
    text = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + data


def entries(specs):
    """specs: (name, dtype, shape, raw bytes) in data order."""
    header, data = {}, b""
    for name, dtype, shape, raw in specs:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    return header, data


def write(name, blob):
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(blob)


os.makedirs(OUT, exist_ok=True)
f32 = struct.pack("<6f", 1.5, -0.0, float("inf"), float("nan"), 1e-45, -2.0)
f64 = struct.pack("<2d", 3.25, -1e308)
i64 = struct.pack("<3q", -(2**63), 0, 2**63 - 1)
b8 = bytes([1, 0, 1, 1])

h, d = entries([("w", "F32", [2, 3], f32), ("b", "F64", [2], f64), ("i", "I64", [3], i64), ("m", "BOOL", [2, 2], b8)])
h["__metadata__"] = {"format": "pt", "note": "seed"}
write("every_dtype", file_bytes(h, d))

h, d = entries([("s", "F32", [], struct.pack("<f", 7.0)), ("z", "F64", [0, 4], b""), ("e", "I64", [3, 0, 2], b""),
                ("n", "BOOL", [0], b"")])
write("scalars_and_empty", file_bytes(h, d))

write("metadata_only", file_bytes({"__metadata__": {"a": "b", "format": "pt"}}))
write("empty_header", file_bytes({}))
write("unpadded", file_bytes(*entries([("x", "F32", [1], struct.pack("<f", 1.0))]), pad=False))

# a spool checkpoint's shape: model.* / optimizer.* tensors and JSON strings in __metadata__
h, d = entries([("model.weight", "F32", [2, 2], f32[:16]), ("model.bias", "F32", [2], f32[16:24]),
                ("optimizer.state.0.exp_avg", "F32", [2, 2], f32[:16])])
h["__metadata__"] = {"format": "spool-checkpoint", "version": "1", "step": "3", "epoch": "0",
                     "rng": '{"offset":12,"seed":1}', "user": '{"config":{}}',
                     "optimizer": '{"type":"Adam","param_groups":1,"param_groups.0.lr":0.001}'}
write("checkpoint_like", file_bytes(h, d))

# near misses: each one check away from valid
write("overlap", file_bytes({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                             "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, bytes(12)))
write("bad_bool", file_bytes(*entries([("m", "BOOL", [2], bytes([1, 2]))])))
write("unsupported_dtype", file_bytes({"h": {"dtype": "F16", "shape": [2], "data_offsets": [0, 4]}}, bytes(4)))
write("huge_shape", file_bytes({"z": {"dtype": "F32", "shape": [0, 2**61, 2], "data_offsets": [0, 0]}}))
write("truncated", file_bytes(*entries([("w", "F32", [2, 3], f32)]))[:-5])
