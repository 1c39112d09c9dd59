#!/usr/bin/python3
"""Converts TorchEasyRec (tzrec) checkpoints to safetensors and back.

tzrec saves a checkpoint as torch distributed checkpoint (DCP) directories
(tzrec/utils/checkpoint_util.py ``save_model``):

    <model_dir>/model.ckpt-<step>/model/      model.state_dict()
    <model_dir>/model.ckpt-<step>/optimizer/  optimizer.state_dict() (training)
    <model_dir>/model.ckpt-<step>/plan        torchrec sharding plan (JSON)
    <model_dir>/model.ckpt-<step>/dataloader_state.json

Each DCP directory holds a pickled ``.metadata`` and ``__<rank>_<n>.distcp``
files of ``torch.save`` blobs; a sharded embedding table is one blob per shard
(chunk). ``fine_tune_checkpoint`` takes only this layout: ``restore_model``
loads ``<ckpt>/model`` with ``torch.distributed.checkpoint.load``.

    to-safetensors CKPT OUT.safetensors [--no-optimizer]
        CKPT: a model_dir (its latest model.ckpt-N, as tzrec picks it), a
        model.ckpt-N directory, or a DCP directory. Writes every tensor under
        its tzrec key, e.g. ``model.mmoe.gate_finals.0.weight`` and, from the
        optimizer directory, ``state.model.<param>.exp_avg``; chunks of sharded
        tables are reassembled; float16/bfloat16 become float32 (exact), other
        dtypes are kept (BatchNorm ``num_batches_tracked`` stays I64).
        Metadata: ``source`` "tzrec", ``checkpoint`` (directory name), ``step``.

    to-tzrec IN.safetensors OUT_DIR [--step N] [--no-optimizer]
        Writes OUT_DIR/model.ckpt-<step>/model (and /optimizer when IN has
        optimizer tensors), a DCP that tzrec's fine_tune_checkpoint (or
        --fine_tune_checkpoint OUT_DIR) loads. Accepts tzrec keys as written by
        to-safetensors and denorec's names (no ``model.`` prefix, optimizer
        state as ``optimizer.<param>.<state>``); see ``tzrec_names``.

Reading needs only numpy: ``.metadata`` is read by an unpickler that maps
classes by name (torch 1.13 ``torch.distributed._shard.checkpoint`` and
torch 2.x ``torch.distributed.checkpoint`` paths alike) and never runs code
from the file, and ``torch.save`` blobs are decoded from their zip records.
Writing uses ``torch.save`` for the blobs (torch 1.13 or 2.x) and writes
``.metadata`` with torch 2.x class paths. See tools/README.md for what was
verified against which torch.

    /usr/bin/python3 tools/tzrec_checkpoint.py to-safetensors exp/model.ckpt-100 exp.safetensors
"""

import argparse
import io
import json
import os
import pickle
import re
import sys
import zipfile
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

# ------------------------------------------------------------------ dtypes
# torch dtype name -> (safetensors dtype, numpy dtype, torch storage class).
# bfloat16 has no numpy dtype: it is read as its uint16 bit pattern.
DTYPES: Dict[str, Tuple[str, str, str]] = {
    "float64": ("F64", "<f8", "DoubleStorage"),
    "float32": ("F32", "<f4", "FloatStorage"),
    "float16": ("F16", "<f2", "HalfStorage"),
    "bfloat16": ("BF16", "<u2", "BFloat16Storage"),
    "int64": ("I64", "<i8", "LongStorage"),
    "int32": ("I32", "<i4", "IntStorage"),
    "int16": ("I16", "<i2", "ShortStorage"),
    "int8": ("I8", "<i1", "CharStorage"),
    "uint8": ("U8", "<u1", "ByteStorage"),
    "bool": ("BOOL", "<?", "BoolStorage"),
}
SAFETENSORS_TO_TORCH = {st: name for name, (st, _, _) in DTYPES.items()}
STORAGE_TO_TORCH = {storage: name for name, (_, _, storage) in DTYPES.items()}
NUMPY_TO_TORCH = {np.dtype(npd): name for name, (_, npd, _) in DTYPES.items() if name != "bfloat16"}


def bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) -> float32, exact (bf16 is f32's top half)."""
    return (bits.astype("<u4") << 16).view("<f4")


def _little_endian(arr: Any) -> np.ndarray:
    """C-contiguous, little-endian; keeps 0-d arrays 0-d (np.ascontiguousarray would not)."""
    arr = np.asarray(arr)
    return arr.astype(arr.dtype.newbyteorder("<"), order="C", copy=False)


# ------------------------------------------------------------- safetensors
# The format: u64 little-endian header length N, N bytes of JSON
# {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}},
# then the raw little-endian data; the tensors tile the data section.


def write_safetensors(
    path: str, tensors: Dict[str, np.ndarray], metadata: Optional[Dict[str, str]] = None
) -> None:
    """Writes `tensors` (numpy arrays of a dtype in DTYPES, not bfloat16).

    As the reference `safetensors.serialize`: tensors ordered by element size
    (largest first, so 8-byte values stay 8-byte aligned) then name, the
    header padded with spaces to a multiple of 8. Written to a temporary file
    and renamed, so `path` is never left half written.
    """
    entries = []
    for name, arr in tensors.items():
        arr = _little_endian(arr)
        if arr.dtype not in NUMPY_TO_TORCH:
            raise TypeError(f"safetensors: tensor {name!r}: dtype {arr.dtype} is not writable")
        entries.append((name, DTYPES[NUMPY_TO_TORCH[arr.dtype]][0], arr))
    entries.sort(key=lambda e: (-e[2].dtype.itemsize, e[0]))
    header: Dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in sorted(metadata.items())}
    offset = 0
    for name, code, arr in entries:
        header[name] = {
            "dtype": code,
            "shape": list(arr.shape),
            "data_offsets": [offset, offset + arr.nbytes],
        }
        offset += arr.nbytes
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(len(text).to_bytes(8, "little"))
            f.write(text)
            for _, _, arr in entries:
                f.write(arr.tobytes())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def read_safetensors(path: str) -> Tuple[Dict[str, np.ndarray], Dict[str, str]]:
    """Reads a safetensors file: ({name: array}, metadata), in header order.

    BF16 tensors come back as float32 (numpy has no bfloat16); every other
    dtype as it is stored. Checks what the reference reader checks: the header
    fits, offsets match shapes, the tensors tile the data section.
    """
    with open(path, "rb") as f:
        data = f.read()
    where = f"safetensors {path}"
    if len(data) < 8:
        raise ValueError(f"{where}: {len(data)} bytes, shorter than the 8-byte header length")
    n = int.from_bytes(data[:8], "little")
    if 8 + n > len(data):
        raise ValueError(f"{where}: header length {n} runs past the end ({len(data)} bytes)")
    try:
        header = json.loads(data[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{where}: header is not UTF-8 JSON: {e}") from None
    if not isinstance(header, dict):
        raise ValueError(f"{where}: header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    body = memoryview(data)[8 + n :]
    spans = []
    tensors: Dict[str, np.ndarray] = {}
    for name, info in header.items():
        try:
            code, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
        except (TypeError, KeyError, ValueError):
            raise ValueError(
                f"{where}: tensor {name!r}: entry {info!r} lacks dtype/shape/data_offsets"
            ) from None
        if code not in SAFETENSORS_TO_TORCH:
            raise ValueError(
                f"{where}: tensor {name!r}: dtype {code!r} is not supported "
                f"(supported: {', '.join(sorted(SAFETENSORS_TO_TORCH))})"
            )
        npd = np.dtype(DTYPES[SAFETENSORS_TO_TORCH[code]][1])
        count = int(np.prod(shape, dtype=np.int64))
        if end - begin != count * npd.itemsize or begin < 0 or end > len(body):
            raise ValueError(
                f"{where}: tensor {name!r}: data_offsets [{begin}, {end}] do not hold "
                f"{code} {shape} inside the {len(body)}-byte data section"
            )
        arr = np.frombuffer(body[begin:end], dtype=npd).reshape(shape).copy()
        tensors[name] = bf16_to_f32(arr) if code == "BF16" else arr
        spans.append((begin, end, name))
    spans.sort()
    covered = 0
    for begin, end, name in spans:
        if begin != covered:
            raise ValueError(
                f"{where}: tensor {name!r} starts at {begin}, expected {covered} "
                "(tensors must tile the data section)"
            )
        covered = end
    if covered != len(body):
        raise ValueError(f"{where}: {len(body) - covered} trailing data bytes belong to no tensor")
    return tensors, {str(k): str(v) for k, v in metadata.items()}


# ------------------------------------------------------- torch.save blobs
class _Storage:
    """A torch storage reference in a torch.save pickle: dtype + raw bytes."""

    def __init__(self, dtype: str, raw: bytes, byteorder: str) -> None:
        self.dtype = dtype
        npd = np.dtype(DTYPES[dtype][1])
        self.array = np.frombuffer(raw, dtype=npd.newbyteorder(byteorder))


class _StorageType:
    def __init__(self, dtype: str) -> None:
        self.dtype = dtype


def _rebuild_tensor(storage: _Storage, offset: int, size, stride, *_ignored) -> np.ndarray:
    """torch._utils._rebuild_tensor_v2: a strided view of the storage, copied."""
    arr = storage.array
    item = arr.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        arr[offset:], shape=tuple(size), strides=tuple(s * item for s in stride), writeable=False
    )
    out = np.array(view, dtype=arr.dtype.newbyteorder("<"))
    return bf16_to_f32(out) if storage.dtype == "bfloat16" else out


def _rebuild_parameter(data: np.ndarray, *_ignored) -> np.ndarray:
    return data


class _TensorUnpickler(pickle.Unpickler):
    """Unpickles a torch.save'd tensor into numpy without torch: only the
    globals a tensor pickle holds are allowed."""

    def __init__(self, stream, archive: zipfile.ZipFile, prefix: str, byteorder: str) -> None:
        super().__init__(stream)
        self.archive, self.prefix, self.byteorder = archive, prefix, byteorder

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch._utils" and name in (
            "_rebuild_parameter",
            "_rebuild_parameter_with_state",
        ):
            return _rebuild_parameter
        if module == "torch" and name in STORAGE_TO_TORCH:
            return _StorageType(STORAGE_TO_TORCH[name])
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        raise pickle.UnpicklingError(f"unexpected global {module}.{name} in a tensor pickle")

    def persistent_load(self, pid: Any) -> _Storage:
        # ('storage', storage_type, key, location, numel), torch/serialization.py
        kind = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
        if kind != "storage" or not isinstance(pid[1], _StorageType):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        raw = self.archive.read(f"{self.prefix}data/{pid[2]}")
        return _Storage(pid[1].dtype, raw, self.byteorder)


def load_torch_tensor(blob: bytes, where: str) -> np.ndarray:
    """A tensor written by torch.save (zip format, torch >= 1.6) as numpy;
    bfloat16 becomes float32."""
    if not blob.startswith(b"PK\x03\x04"):
        raise ValueError(f"{where}: not a torch.save zip blob (starts with {blob[:4]!r})")
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        pkls = [n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pkls) != 1:
            raise ValueError(f"{where}: torch.save blob has {len(pkls)} data.pkl records")
        prefix = pkls[0][: -len("data.pkl")]
        names = set(archive.namelist())
        byteorder = "<"
        if f"{prefix}byteorder" in names:
            byteorder = "<" if archive.read(f"{prefix}byteorder").strip() == b"little" else ">"
        with archive.open(pkls[0]) as stream:
            try:
                value = _TensorUnpickler(stream, archive, prefix, byteorder).load()
            except pickle.UnpicklingError as e:
                raise ValueError(f"{where}: {e}") from None
    if not isinstance(value, np.ndarray):
        raise ValueError(f"{where}: blob holds {type(value).__name__}, not a tensor")
    return value


# ------------------------------------------------------------ DCP metadata
# Classes of a DCP .metadata pickle, by class name. torch 1.13 pickles them
# from torch.distributed._shard.checkpoint.{metadata,filesystem} and
# torch.distributed._shard.sharded_tensor.metadata, torch 2.x from
# torch.distributed.checkpoint.{metadata,filesystem} (TensorProperties of a
# ShardedTensor may still come from _shard.sharded_tensor.metadata). Fields
# in constructor order, for objects pickled by constructor call.
DCP_FIELDS: Dict[str, List[str]] = {
    "Metadata": ["state_dict_metadata", "planner_data", "storage_data", "storage_meta", "version"],
    "TensorStorageMetadata": ["properties", "size", "chunks"],
    "ChunkStorageMetadata": ["offsets", "sizes"],
    "BytesStorageMetadata": [],
    "TensorProperties": ["dtype", "layout", "requires_grad", "memory_format", "pin_memory"],
    "MetadataIndex": ["fqn", "offset", "index"],
    "_StorageInfo": ["relative_path", "offset", "length", "transform_descriptors"],
    "StorageMeta": ["checkpoint_id", "save_id", "load_id", "modules"],
}


class Record:
    """An object of a class named in a DCP pickle; never runs code of the file."""

    kind = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        for field, value in zip(DCP_FIELDS.get(self.kind, []), args):
            setattr(self, field, value)
        if len(args) > len(DCP_FIELDS.get(self.kind, [])):
            self.args = args
        self.__dict__.update(kwargs)

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):
            state = {**(state[0] or {}), **state[1]}  # (dict, slots) form
        if isinstance(state, dict):
            self.__dict__.update(state)
        else:  # TensorProperties' __getstate__ tuple
            for field, value in zip(DCP_FIELDS.get(self.kind, []), state):
                setattr(self, field, value)

    def __repr__(self) -> str:
        return f"{self.kind}({self.__dict__})"


_RECORD_CLASSES: Dict[str, type] = {}


def _record_class(name: str) -> type:
    if name not in _RECORD_CLASSES:
        _RECORD_CLASSES[name] = type(name, (Record,), {"kind": name})
    return _RECORD_CLASSES[name]


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module == "torch":
            if name == "Size":
                return tuple
            if name in DTYPES:  # a torch.dtype pickles as the global torch.<canonical name>
                return name
            return f"torch.{name}"  # layouts, memory formats: not needed
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        # Every other global (the classes of DCP_FIELDS, an Enum, torch 2.x's
        # pathlib.PosixPath in StorageMeta, anything a newer torch adds)
        # becomes an inert record.
        return _record_class(name)


def read_dcp_metadata(dcp_dir: str) -> Record:
    path = os.path.join(dcp_dir, ".metadata")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{dcp_dir}: no .metadata (not a torch distributed checkpoint directory)"
        )
    with open(path, "rb") as f:
        try:
            md = _MetadataUnpickler(f).load()
        except Exception as e:  # a corrupt pickle raises anything from EOFError to KeyError
            raise ValueError(f"{path}: cannot read the DCP metadata pickle: {e!r}") from None
    if getattr(md, "kind", None) != "Metadata" or not isinstance(
        getattr(md, "state_dict_metadata", None), dict
    ):
        raise ValueError(f"{path}: holds {md!r:.200}, not a DCP Metadata")
    return md


def read_dcp(dcp_dir: str) -> Tuple[Dict[str, np.ndarray], Dict[str, str], List[str]]:
    """Every tensor of a DCP directory, reassembled from its chunks (float16
    and bfloat16 as float32, exactly), the stored torch dtype of each, and the
    keys of non-tensor entries (skipped: tzrec's optimizer param_groups)."""
    md = read_dcp_metadata(dcp_dir)
    storage = {}
    for index, info in (md.storage_data or {}).items():
        offset = getattr(index, "offset", None)
        storage[(index.fqn, None if offset is None else tuple(offset))] = info
    tensors: Dict[str, np.ndarray] = {}
    dtypes: Dict[str, str] = {}
    skipped: List[str] = []
    files: Dict[str, Any] = {}
    try:
        for fqn, entry in md.state_dict_metadata.items():
            if entry.kind == "BytesStorageMetadata":
                skipped.append(fqn)
                continue
            if entry.kind != "TensorStorageMetadata":
                raise ValueError(f"{dcp_dir}: {fqn}: unknown storage metadata {entry.kind}")
            tensors[fqn] = _assemble(dcp_dir, fqn, entry, storage, files)
            dtypes[fqn] = entry.properties.dtype
    finally:
        for f in files.values():
            f.close()
    return tensors, dtypes, skipped


def _assemble(dcp_dir: str, fqn: str, entry: Record, storage, files) -> np.ndarray:
    dtype = entry.properties.dtype
    if dtype not in DTYPES:
        raise ValueError(f"{dcp_dir}: {fqn}: dtype {dtype} is not supported")
    size = tuple(entry.size)
    full = np.zeros(size, dtype="<f4" if dtype in ("float16", "bfloat16") else DTYPES[dtype][1])
    volume = 0
    boxes = []
    for chunk in entry.chunks:
        offsets, sizes = tuple(chunk.offsets), tuple(chunk.sizes)
        where = f"{dcp_dir}: {fqn} chunk at {list(offsets)} of {list(size)}"
        if len(offsets) != len(size) or any(
            o < 0 or o + s > d for o, s, d in zip(offsets, sizes, size)
        ):
            raise ValueError(f"{where}: sizes {list(sizes)} fall outside the tensor")
        for other in boxes:
            if all(o1 < o2 + s2 and o2 < o1 + s1 for o1, s1, o2, s2 in zip(offsets, sizes, *other)):
                raise ValueError(f"{where}: overlaps the chunk at {list(other[0])}")
        boxes.append((offsets, sizes))
        info = storage.get((fqn, offsets))
        if info is None:
            raise ValueError(f"{where}: no storage entry for it in .metadata")
        if getattr(info, "transform_descriptors", None):
            raise ValueError(
                f"{where}: stored with stream transforms {info.transform_descriptors} "
                "(compressed DCP items are not supported)"
            )
        path = os.path.join(dcp_dir, info.relative_path)
        if path not in files:
            try:
                files[path] = open(path, "rb")
            except FileNotFoundError:
                raise FileNotFoundError(
                    f"{where}: stored in {info.relative_path}, which is missing "
                    "(copy every rank's .distcp file)"
                ) from None
        f = files[path]
        f.seek(info.offset)
        blob = f.read(info.length)
        if len(blob) != info.length:
            raise ValueError(
                f"{where}: {info.relative_path} ends before byte {info.offset + info.length}"
            )
        arr = load_torch_tensor(blob, f"{where} ({info.relative_path} @{info.offset})")
        if arr.shape != sizes:
            raise ValueError(
                f"{where}: blob has shape {list(arr.shape)}, metadata says {list(sizes)}"
            )
        full[tuple(slice(o, o + s) for o, s in zip(offsets, sizes))] = arr
        volume += int(np.prod(sizes, dtype=np.int64))
    if volume != int(np.prod(size, dtype=np.int64)):
        raise ValueError(
            f"{dcp_dir}: {fqn}: chunks cover {volume} of {int(np.prod(size))} elements "
            "(a rank's shards are missing from .metadata)"
        )
    return full


# ------------------------------------------------------------- DCP writing
class _Ref:
    """A global (`module.name`), pickled by reference."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name


class _Call:
    """Pickled as `ref(*args)` (REDUCE): the loader calls the constructor."""

    def __init__(self, ref: _Ref, args: tuple) -> None:
        self.ref, self.args = ref, args


class _MetadataPickler(pickle._Pickler):  # the pure-Python pickler has a per-type dispatch table
    dispatch = dict(pickle._Pickler.dispatch)

    def save_ref(self, obj: _Ref) -> None:
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode("utf-8"))
        self.memoize(obj)

    def save_call(self, obj: _Call) -> None:
        self.save(obj.ref)
        self.save(obj.args)
        self.write(pickle.REDUCE)
        self.memoize(obj)

    dispatch[_Ref] = save_ref
    dispatch[_Call] = save_call


# torch 2.x class paths (torch/distributed/checkpoint/{metadata,filesystem}.py).
# Every object is built by its constructor with positional arguments, which
# every torch 2.x accepts (fields added later have defaults).
_MD = "torch.distributed.checkpoint.metadata"
_FS = "torch.distributed.checkpoint.filesystem"


def _size(shape) -> _Call:
    return _Call(_Ref("torch", "Size"), (tuple(int(d) for d in shape),))


def write_dcp(dcp_dir: str, tensors: Dict[str, Any], planner_paths: Dict[str, tuple]) -> None:
    """Writes `tensors` (numpy arrays; name -> array) as a one-rank DCP
    directory: `__0_0.distcp` (torch.save blobs back to back) and `.metadata`,
    as torch 2.x `torch.distributed.checkpoint.save` lays them out with
    `FileSystemWriter(single_file_per_rank=True)`. `planner_paths[name]` is the
    key's path in the unflattened state dict (Metadata.planner_data)."""
    import torch  # blobs must be real torch.save output

    os.makedirs(dcp_dir, exist_ok=False)
    file_name = "__0_0.distcp"
    state_dict_metadata: Dict[str, Any] = {}
    storage_data: Dict[Any, Any] = {}
    with open(os.path.join(dcp_dir, file_name), "wb") as f:
        for name, arr in tensors.items():
            arr = _little_endian(arr)
            dtype = NUMPY_TO_TORCH.get(arr.dtype)
            if dtype is None:
                raise TypeError(f"{name}: dtype {arr.dtype} cannot be written")
            offset = f.tell()
            torch.save(torch.from_numpy(arr.copy()), f)
            zeros = (0,) * arr.ndim
            state_dict_metadata[name] = _Call(
                _Ref(_MD, "TensorStorageMetadata"),
                (
                    _Call(_Ref(_MD, "TensorProperties"), (_Ref("torch", dtype),)),
                    _size(arr.shape),
                    [_Call(_Ref(_MD, "ChunkStorageMetadata"), (_size(zeros), _size(arr.shape)))],
                ),
            )
            index = _Call(_Ref(_MD, "MetadataIndex"), (name, _size(zeros), 0))
            storage_data[index] = _Call(
                _Ref(_FS, "_StorageInfo"), (file_name, offset, f.tell() - offset)
            )
        f.flush()
        os.fsync(f.fileno())
    metadata = _Call(
        _Ref(_MD, "Metadata"), (state_dict_metadata, dict(planner_paths), storage_data)
    )
    with open(os.path.join(dcp_dir, ".metadata"), "wb") as f:
        _MetadataPickler(f, protocol=2).dump(metadata)


# -------------------------------------------------------------- tzrec layout
CKPT_RE = re.compile(r"^model\.ckpt-(\d+)$")
EMBEDDING_RE = re.compile(r"\.ebc\.embedding_bags\.([^.]+)\.weight$")


def find_checkpoint(path: str) -> Tuple[str, Optional[str], int]:
    """(model DCP dir, optimizer DCP dir or None, step) for `path`: a model_dir
    (latest model.ckpt-N by step, as tzrec's latest_checkpoint), a
    model.ckpt-N directory, or a DCP directory itself (step 0)."""
    path = path.rstrip(os.sep)
    if os.path.isfile(os.path.join(path, ".metadata")):
        return path, None, 0
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: no such checkpoint directory")
    ckpts = [
        d for d in os.listdir(path) if CKPT_RE.match(d) and os.path.isdir(os.path.join(path, d))
    ]
    if ckpts:
        path = os.path.join(path, max(ckpts, key=lambda d: int(CKPT_RE.match(d).group(1))))
    m = CKPT_RE.match(os.path.basename(path))
    step = int(m.group(1)) if m else 0
    model = os.path.join(path, "model")
    if not os.path.isfile(os.path.join(model, ".metadata")):
        raise FileNotFoundError(
            f"{path}: no model/.metadata (expected a tzrec model_dir, "
            "a model.ckpt-N directory or a DCP directory)"
        )
    optimizer = os.path.join(path, "optimizer")
    return (
        model,
        (optimizer if os.path.isfile(os.path.join(optimizer, ".metadata")) else None),
        step,
    )


def tzrec_to_safetensors(
    src: str, out: str, with_optimizer: bool = True, log=print
) -> Dict[str, np.ndarray]:
    model_dir, optimizer_dir, step = find_checkpoint(src)
    tensors, dtypes, skipped = read_dcp(model_dir)
    if with_optimizer and optimizer_dir:
        optim, optim_dtypes, optim_skipped = read_dcp(optimizer_dir)
        clash = sorted(set(optim) & set(tensors))
        if clash:
            raise ValueError(f"{optimizer_dir}: keys also in the model checkpoint: {clash[:5]}")
        tensors.update(optim)
        dtypes.update(optim_dtypes)
        skipped += optim_skipped
    for name, dtype in dtypes.items():
        if dtype in ("float16", "bfloat16"):
            log(f"{name}: {dtype} -> float32")
    if skipped:
        log(
            f"skipped {len(skipped)} non-tensor entries: {', '.join(skipped[:8])}"
            + (" ..." if len(skipped) > 8 else "")
        )
    metadata = {
        "source": "tzrec",
        "checkpoint": os.path.basename(os.path.dirname(model_dir)),
        "step": str(step),
    }
    write_safetensors(out, tensors, metadata)
    log(
        f"{out}: {len(tensors)} tensors from {model_dir}"
        f"{' and ' + optimizer_dir if with_optimizer and optimizer_dir else ''}, step {step}"
    )
    return tensors


def _model_key(name: str) -> str:
    """A parameter name as tzrec's checkpoint keys it: TrainWrapper's `model.`
    prefix; denorec's old embedding names `embedding_group.<table>.weight` are
    tzrec's `embedding_group.emb_impls.__BASE__.ebc.embedding_bags.<table>.weight`
    (every feature this library supports is in data group __BASE__)."""
    if name.startswith("model."):
        return name
    m = re.match(r"^embedding_group\.([^.]+)\.weight$", name)
    if m:
        name = f"embedding_group.emb_impls.__BASE__.ebc.embedding_bags.{m.group(1)}.weight"
    return "model." + name


def tzrec_names(
    tensors: Dict[str, np.ndarray], step: int, with_optimizer: bool, log=print
) -> Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]:
    """Splits a safetensors file's tensors into tzrec's model and optimizer
    state dicts, keyed as tzrec's DCP keys them.

    - `model.*` -> model, as is; `state.*` / `param_groups.*` -> optimizer, as is.
    - `optimizer.<param>.<state>` (denorec) -> `state.model.<param>.<state>`:
      dense Adam exp_avg / exp_avg_sq and dense Adagrad sum get torch's `step`
      (float32 scalar), SGD momentum_buffer has none; the sparse Adagrad `sum`
      of table t is torchrec's fused `state.<param>.<t>.momentum1`.
    - any other name is a model parameter (`_model_key`).
    A BatchNorm without `num_batches_tracked` gets int64 `step` (tzrec counts
    one per train step); tzrec's export refuses checkpoints missing any key.
    """
    model: Dict[str, np.ndarray] = {}
    optim: Dict[str, np.ndarray] = {}
    for name, arr in tensors.items():
        if name.startswith(("state.", "param_groups.")):
            optim[name] = arr
        elif name.startswith("optimizer."):
            param, _, state = name[len("optimizer.") :].rpartition(".")
            param = _model_key(param)
            table = EMBEDDING_RE.search(param)
            if table and state == "sum":
                optim[f"state.{param}.{table.group(1)}.momentum1"] = arr
            elif table:
                raise ValueError(
                    f"{name}: sparse optimizer state {state!r} has no verified torchrec "
                    "name (only Adagrad's sum does); convert with --no-optimizer"
                )
            elif state in ("exp_avg", "exp_avg_sq", "sum", "momentum_buffer"):
                optim[f"state.{param}.{state}"] = arr
                if state != "momentum_buffer":
                    optim[f"state.{param}.step"] = np.array(step, dtype=np.float32)
            else:
                raise ValueError(f"{name}: unknown optimizer state {state!r}")
        else:
            key = _model_key(name)
            if key in model:
                raise ValueError(f"{name}: two tensors map to {key}")
            model[key] = arr
    for key in [k for k in model if k.endswith(".running_mean")]:
        tracked = key[: -len("running_mean")] + "num_batches_tracked"
        if tracked not in model:
            model[tracked] = np.array(step, dtype=np.int64)
            log(f"{tracked}: absent, set to the step count {step}")
    if not with_optimizer:
        optim = {}
    return model, optim


def _planner_path(key: str) -> tuple:
    """Metadata.planner_data: a key's path in the nested state dict
    (`state.<param>.<name>` is state[param][name] of optimizer.state_dict())."""
    if key.startswith("state."):
        param = key[len("state.") :]
        m = re.match(r"^(.*\.(?:weight|bias|running_mean|running_var))\.(.+)$", param)
        if m:
            return ("state", m.group(1), m.group(2))
    return (key,)


def safetensors_to_tzrec(
    src: str, out_dir: str, step: Optional[int] = None, with_optimizer: bool = True, log=print
) -> str:
    tensors, metadata = read_safetensors(src)
    if step is None:
        step = int(metadata["step"]) if re.fullmatch(r"\d+", metadata.get("step", "")) else 0
    model, optim = tzrec_names(tensors, step, with_optimizer, log)
    ckpt = os.path.join(out_dir, f"model.ckpt-{step}")
    if os.path.exists(ckpt):
        raise FileExistsError(f"{ckpt} exists")
    write_dcp(os.path.join(ckpt, "model"), model, {k: _planner_path(k) for k in model})
    if optim:
        write_dcp(os.path.join(ckpt, "optimizer"), optim, {k: _planner_path(k) for k in optim})
    log(
        f"{ckpt}: model ({len(model)} tensors)"
        + (f", optimizer ({len(optim)} tensors)" if optim else "")
    )
    return ckpt


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    a = sub.add_parser("to-safetensors", help="tzrec checkpoint -> safetensors")
    a.add_argument("checkpoint")
    a.add_argument("output")
    a.add_argument("--no-optimizer", action="store_true", help="leave out the optimizer state")
    b = sub.add_parser("to-tzrec", help="safetensors -> tzrec model.ckpt-N (fine_tune_checkpoint)")
    b.add_argument("input")
    b.add_argument("output_dir")
    b.add_argument(
        "--step", type=int, help="checkpoint step (default: the file's `step` metadata, else 0)"
    )
    b.add_argument("--no-optimizer", action="store_true", help="leave out the optimizer state")
    args = parser.parse_args(argv)
    try:
        if args.command == "to-safetensors":
            tzrec_to_safetensors(args.checkpoint, args.output, not args.no_optimizer)
        else:
            safetensors_to_tzrec(args.input, args.output_dir, args.step, not args.no_optimizer)
    except (OSError, ValueError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
