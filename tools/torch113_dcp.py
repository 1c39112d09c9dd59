"""Debian's torch 1.13 distributed checkpoint (DCP), usable on Python 3.11.

torch 1.13's DCP is `torch.distributed._shard.checkpoint` (torch 2.x renamed
it `torch.distributed.checkpoint`). On Python 3.11 that package does not
import: `sharded_tensor/metadata.py` declares
`tensor_properties: TensorProperties = field(default=TensorProperties())`,
which Python 3.11's dataclasses refuse (an unhashable default). `shard()`
installs an import hook that compiles that one module with
`default_factory=TensorProperties` instead (same objects, same pickles), then
imports the package. Used by the fixture and the converter tests to create
real torch DCP checkpoints and to load the ones tools/tzrec_checkpoint.py
writes.
"""

import importlib.abc
import importlib.util
import os
import pickle
import sys
from types import ModuleType

import torch

_TARGET = "torch.distributed._shard.sharded_tensor.metadata"
_BAD = "field(default=TensorProperties())"
_GOOD = "field(default_factory=TensorProperties)"


class _PatchedSource(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self) -> None:
        self.origin = os.path.join(
            os.path.dirname(torch.__file__),
            "distributed",
            "_shard",
            "sharded_tensor",
            "metadata.py",
        )

    def find_spec(self, fullname, path=None, target=None):
        if fullname != _TARGET:
            return None
        return importlib.util.spec_from_file_location(fullname, self.origin, loader=self)

    def create_module(self, spec):
        return None

    def exec_module(self, module: ModuleType) -> None:
        with open(self.origin, encoding="utf-8") as f:
            source = f.read()
        if _BAD not in source and _GOOD not in source:
            raise ImportError(f"{self.origin}: expected declaration {_BAD!r} not found")
        exec(compile(source.replace(_BAD, _GOOD), self.origin, "exec"), module.__dict__)


def shard() -> ModuleType:
    """`torch.distributed._shard` (with `.checkpoint`, `.sharded_tensor`)."""
    if _TARGET not in sys.modules and not any(isinstance(f, _PatchedSource) for f in sys.meta_path):
        sys.meta_path.insert(0, _PatchedSource())
    import torch.distributed._shard as shard_pkg
    import torch.distributed._shard.checkpoint  # noqa: F401
    import torch.distributed._shard.sharded_tensor  # noqa: F401

    return shard_pkg


def reader_for_torch2_metadata(path: str):
    """A torch 1.13 FileSystemReader for a DCP whose .metadata names torch 2.x
    classes (`torch.distributed.checkpoint.*`, which 1.13 lacks): the same
    dataclasses under their 1.13 paths."""
    ckpt = shard().checkpoint
    from torch.distributed._shard.checkpoint import filesystem, metadata
    from torch.distributed._shard.sharded_tensor import metadata as st_metadata

    classes = {
        ("torch.distributed.checkpoint.metadata", name): getattr(metadata, name)
        for name in (
            "Metadata",
            "TensorStorageMetadata",
            "ChunkStorageMetadata",
            "BytesStorageMetadata",
            "MetadataIndex",
        )
    }
    classes[
        ("torch.distributed.checkpoint.metadata", "TensorProperties")
    ] = st_metadata.TensorProperties
    classes[
        ("torch.distributed.checkpoint.metadata", "_MEM_FORMAT_ENCODING")
    ] = st_metadata.MEM_FORMAT_ENCODING
    classes[("torch.distributed.checkpoint.filesystem", "_StorageInfo")] = filesystem._StorageInfo

    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            return classes.get((module, name)) or super().find_class(module, name)

    class Reader(ckpt.FileSystemReader):
        def read_metadata(self):
            with (self.path / ".metadata").open("rb") as f:
                return Unpickler(f).load()

    return Reader(path)


# --------------------------------------------------------- sharded saving
# A layout places a tensor's chunks on ranks: [(rank, offsets, sizes), ...].
# torchrec's sharding types as layouts of a [rows, dim] table on 2 ranks:


def table_wise(shape, rank: int):
    return [(rank, [0] * len(shape), list(shape))]


def row_wise(shape, split: int):
    rows, dim = shape
    return [(0, [0, 0], [split, dim]), (1, [split, 0], [rows - split, dim])]


def column_wise(shape, split: int):
    rows, dim = shape
    return [(0, [0, 0], [rows, split]), (1, [0, split], [rows, dim - split])]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _save_rank(rank: int, port: int, jobs_path: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", world_size=2, rank=rank)
    pkg = shard()
    from torch.distributed._shard.metadata import ShardMetadata
    from torch.distributed._shard.sharded_tensor import Shard, init_from_local_shards

    for out_dir, state, layouts in torch.load(jobs_path):
        state_dict = {}
        for key, value in state.items():
            if key not in layouts:
                state_dict[key] = value  # replicated: the coordinator (rank 0) writes it
                continue
            local = []
            for r, offsets, sizes in layouts[key]:
                if r == rank:
                    piece = value[tuple(slice(o, o + s) for o, s in zip(offsets, sizes))].clone()
                    local.append(Shard(piece, ShardMetadata(offsets, sizes, f"rank:{r}/cpu")))
            state_dict[key] = init_from_local_shards(local, *value.shape)
        pkg.checkpoint.save_state_dict(
            state_dict, pkg.checkpoint.FileSystemWriter(out_dir, single_file_per_rank=True)
        )
    dist.destroy_process_group()


def save_sharded(jobs) -> None:
    """Writes DCP directories as a 2-rank job does: `jobs` is a list of
    (out_dir, state_dict, layouts); a key with a layout is a ShardedTensor
    whose chunks each rank writes to its own `__<rank>_0.distcp`, the others
    are plain tensors or objects that rank 0 writes. Runs 2 processes joined
    by a gloo process group on 127.0.0.1."""
    import tempfile

    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        jobs_path = os.path.join(tmp, "jobs.pt")
        torch.save(list(jobs), jobs_path)
        mp.spawn(_save_rank, args=(_free_port(), jobs_path), nprocs=2, join=True)
