#!/usr/bin/python3
"""Tests of tools/tzrec_checkpoint.py with Debian's torch 1.13 (about 20 s):

    /usr/bin/python3 tools/test_tzrec_checkpoint.py

The tzrec checkpoint under test is written by torch itself: the trained model
of make_tzrec_model.py (model.ckpt-24/model and /optimizer, tables sharded
over 2 gloo ranks), plus float16 and bfloat16 tensors. torch's own DCP loader
is the reference for what the files hold.
"""

import contextlib
import io
import os
import pickle
import shutil
import sys
import tempfile
import unittest

import numpy as np
import torch

sys.dont_write_bytecode = True  # no tools/__pycache__ from the sibling imports
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_tzrec_model as fixture  # noqa: E402
import torch113_dcp  # noqa: E402
import tzrec_checkpoint as tc  # noqa: E402

TABLE = "model.embedding_group.emb_impls.__BASE__.ebc.embedding_bags.{}.weight"
# Globals a torch 2.x .metadata may name (torch/distributed/checkpoint/
# metadata.py and filesystem.py, read in the pytorch repository).
TORCH2_GLOBALS = {
    ("torch.distributed.checkpoint.metadata", n)
    for n in (
        "Metadata",
        "TensorStorageMetadata",
        "ChunkStorageMetadata",
        "TensorProperties",
        "MetadataIndex",
        "BytesStorageMetadata",
    )
} | {
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("torch", "Size"),
    ("torch", "float32"),
    ("torch", "int64"),
}


def numpy_of(value: torch.Tensor) -> np.ndarray:
    if value.dtype in (torch.float16, torch.bfloat16):
        return value.float().numpy()
    return value.numpy()


def torch_load_dcp(dcp_dir: str, like: dict, torch2_metadata: bool = False) -> dict:
    """torch 1.13's own DCP loader into fresh tensors shaped like `like`."""
    ckpt = torch113_dcp.shard().checkpoint
    target = {k: torch.zeros_like(v) for k, v in like.items()}
    reader = (
        torch113_dcp.reader_for_torch2_metadata(dcp_dir)
        if torch2_metadata
        else ckpt.FileSystemReader(dcp_dir)
    )
    ckpt.load_state_dict(target, reader, no_dist=True)
    return target


class TzrecCheckpointTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls.tmp = tempfile.mkdtemp(prefix="tzrec_ckpt_test_")
        cls.wrapper, model_state, optim_state = fixture.trained()
        layouts = fixture.layouts(model_state)
        g = torch.Generator().manual_seed(3)
        # a bfloat16 table (row-wise) and a float16 vector, as `data_type` / mixed precision give
        model_state["model.extra.ebc.embedding_bags.half_emb.weight"] = torch.randn(
            9, 4, generator=g
        ).bfloat16()
        model_state["model.extra.scale"] = torch.randn(5, generator=g).half()
        layouts["model.extra.ebc.embedding_bags.half_emb.weight"] = torch113_dcp.row_wise((9, 4), 5)
        cls.model_state, cls.optim_state = model_state, optim_state
        cls.model_dir = os.path.join(cls.tmp, "train")
        cls.ckpt = os.path.join(cls.model_dir, "model.ckpt-24")
        torch113_dcp.save_sharded(
            [
                (os.path.join(cls.ckpt, "model"), model_state, layouts),
                (os.path.join(cls.ckpt, "optimizer"), optim_state, fixture.layouts(optim_state)),
            ]
        )
        os.makedirs(
            os.path.join(cls.model_dir, "model.ckpt-5", "model")
        )  # older: latest is by step

    @classmethod
    def tearDownClass(cls) -> None:
        shutil.rmtree(cls.tmp)

    def path(self, name: str) -> str:
        return os.path.join(self.tmp, self._testMethodName + "." + name)

    # ------------------------------------------------------------ reading
    def test_reads_every_chunk_of_a_two_rank_checkpoint(self) -> None:
        self.assertEqual(
            sorted(os.listdir(os.path.join(self.ckpt, "model"))),
            [".metadata", "__0_0.distcp", "__1_0.distcp"],
        )
        tensors, dtypes, skipped = tc.read_dcp(os.path.join(self.ckpt, "model"))
        self.assertEqual(set(tensors), set(self.model_state))
        for k, v in self.model_state.items():
            self.assertEqual(tensors[k].shape, tuple(v.shape), k)
            np.testing.assert_array_equal(tensors[k], numpy_of(v), err_msg=k)
        self.assertEqual(tensors[TABLE.format("tag_ids_emb")].dtype, np.float32)
        self.assertEqual(dtypes["model.extra.ebc.embedding_bags.half_emb.weight"], "bfloat16")
        self.assertEqual(dtypes["model.extra.scale"], "float16")
        nbt = "model.mmoe.expert_mlps.0.mlp.1.perceptron.1.num_batches_tracked"
        self.assertEqual(
            (tensors[nbt].dtype, tensors[nbt].shape, int(tensors[nbt])), (np.int64, (), 24)
        )
        self.assertEqual(skipped, [])
        md = tc.read_dcp_metadata(os.path.join(self.ckpt, "model"))
        chunks = md.state_dict_metadata[TABLE.format("clicked_items_emb")].chunks  # column-wise
        self.assertEqual(
            [(c.offsets, c.sizes) for c in chunks], [((0, 0), (16, 2)), ((0, 2), (16, 2))]
        )

    def test_reader_agrees_with_torch_loader(self) -> None:
        for sub, state in (("model", self.model_state), ("optimizer", self.optim_state)):
            like = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
            ref = torch_load_dcp(os.path.join(self.ckpt, sub), like)
            tensors, _, skipped = tc.read_dcp(os.path.join(self.ckpt, sub))
            self.assertEqual(set(tensors), set(ref))
            for k in ref:
                np.testing.assert_array_equal(tensors[k], numpy_of(ref[k]), err_msg=k)
        self.assertEqual(sorted(skipped), ["param_groups.0.lr", "param_groups.1.lr"])

    def test_latest_checkpoint_by_step(self) -> None:
        self.assertEqual(
            tc.find_checkpoint(self.model_dir),
            (os.path.join(self.ckpt, "model"), os.path.join(self.ckpt, "optimizer"), 24),
        )
        self.assertEqual(
            tc.find_checkpoint(os.path.join(self.ckpt, "model")),
            (os.path.join(self.ckpt, "model"), None, 0),
        )
        with self.assertRaisesRegex(FileNotFoundError, r"no model/\.metadata"):
            tc.find_checkpoint(os.path.join(self.model_dir, "model.ckpt-5"))

    # ---------------------------------------------------------- both ways
    def test_to_safetensors_and_back_to_tzrec(self) -> None:
        out = self.path("safetensors")
        log = []
        tc.tzrec_to_safetensors(self.model_dir, out, log=log.append)
        tensors, metadata = tc.read_safetensors(out)
        self.assertEqual(metadata, {"source": "tzrec", "checkpoint": "model.ckpt-24", "step": "24"})
        optim = {k: v for k, v in self.optim_state.items() if isinstance(v, torch.Tensor)}
        self.assertEqual(set(tensors), set(self.model_state) | set(optim))
        for k, v in {**self.model_state, **optim}.items():
            np.testing.assert_array_equal(tensors[k], numpy_of(v), err_msg=k)
            self.assertEqual(
                tensors[k].dtype, np.int64 if v.dtype == torch.int64 else np.float32, k
            )
        self.assertIn("model.extra.ebc.embedding_bags.half_emb.weight: bfloat16 -> float32", log)
        self.assertIn("model.extra.scale: float16 -> float32", log)
        self.assertTrue(any(line.startswith("skipped 2 non-tensor entries") for line in log))

        back = self.path("tzrec")
        ckpt = tc.safetensors_to_tzrec(out, back, log=log.append)
        self.assertEqual(ckpt, os.path.join(back, "model.ckpt-24"))
        self.assertEqual(
            tc.find_checkpoint(back),
            (os.path.join(ckpt, "model"), os.path.join(ckpt, "optimizer"), 24),
        )
        for sub, state in (("model", self.model_state), ("optimizer", optim)):
            again, dtypes, _ = tc.read_dcp(os.path.join(ckpt, sub))
            self.assertEqual(set(again), set(state))
            for k, v in state.items():
                np.testing.assert_array_equal(again[k], numpy_of(v), err_msg=k)
            # torch loads what we wrote, through the torch 2.x class names
            ref = torch_load_dcp(
                os.path.join(ckpt, sub),
                {k: torch.from_numpy(a) for k, a in again.items()},
                torch2_metadata=True,
            )
            for k in ref:
                np.testing.assert_array_equal(ref[k].numpy(), again[k], err_msg=k)

    def test_written_checkpoint_restores_the_tzrec_module_tree(self) -> None:
        """What fine_tune_checkpoint does: DCP-load into the model's own
        state_dict (keys `model.*`), then load_state_dict; same predictions."""
        out, back = self.path("safetensors"), self.path("tzrec")
        tc.tzrec_to_safetensors(self.ckpt, out, with_optimizer=False, log=lambda _: None)
        ckpt = tc.safetensors_to_tzrec(out, back, log=lambda _: None)
        self.assertFalse(os.path.exists(os.path.join(ckpt, "optimizer")))
        fresh = fixture.build(seed=99)
        state = fresh.state_dict()
        ckpt_pkg = torch113_dcp.shard().checkpoint
        ckpt_pkg.load_state_dict(
            state,
            torch113_dcp.reader_for_torch2_metadata(os.path.join(ckpt, "model")),
            no_dist=True,
        )
        fresh.load_state_dict(state)
        rows = fixture.make_rows(torch.Generator().manual_seed(5), 16, edge_cases=True)
        fresh.eval()
        self.wrapper.eval()
        with torch.no_grad():
            want, _ = self.wrapper.model(fixture.parse_rows(rows))
            got, _ = fresh.model(fixture.parse_rows(rows))
        for k in want:
            torch.testing.assert_close(got[k], want[k], rtol=0, atol=0, msg=k)
        self.assertEqual(
            int(state["model.mmoe.expert_mlps.2.mlp.0.perceptron.1.num_batches_tracked"]), 24
        )

    def test_metadata_names_only_torch2_classes(self) -> None:
        dcp = self.path("dcp")
        tc.write_dcp(
            dcp,
            {"model.a.weight": np.ones((2, 3), np.float32), "model.n": np.array(3)},
            {"model.a.weight": ("model.a.weight",), "model.n": ("model.n",)},
        )
        seen = set()

        class Spy(tc._MetadataUnpickler):
            def find_class(self, module, name):
                seen.add((module, name))
                return super().find_class(module, name)

        with open(os.path.join(dcp, ".metadata"), "rb") as f:
            md = Spy(f).load()
        self.assertTrue(seen <= TORCH2_GLOBALS, seen - TORCH2_GLOBALS)
        self.assertEqual(
            md.planner_data, {"model.a.weight": ("model.a.weight",), "model.n": ("model.n",)}
        )
        info = next(iter(md.storage_data.values()))
        self.assertEqual((info.relative_path, info.offset), ("__0_0.distcp", 0))

    def test_denorec_names_become_tzrec_keys(self) -> None:
        """A denorec-style file (no `model.` prefix, old embedding names, no
        num_batches_tracked, optimizer.<param>.<state>) maps onto tzrec's keys."""
        tensors, _ = tc.read_safetensors(os.path.join(fixture.FIXTURE_DIR, "model.safetensors"))
        denorec = {}
        for k, v in tensors.items():
            if k.endswith("num_batches_tracked"):
                continue
            name = k[len("model.") :]
            m = tc.EMBEDDING_RE.search(name)
            denorec[f"embedding_group.{m.group(1)}.weight" if m else name] = v
        gate = "mmoe.gate_finals.0.weight"
        denorec[f"optimizer.{gate}.exp_avg"] = np.full((3, 5), 0.5, np.float32)
        denorec[f"optimizer.{gate}.exp_avg_sq"] = np.full((3, 5), 0.25, np.float32)
        denorec["optimizer.embedding_group.user_emb.weight.sum"] = np.full((24, 4), 2.0, np.float32)
        log = []
        model, optim = tc.tzrec_names(denorec, 24, True, log.append)
        self.assertEqual(set(model), set(tensors))
        for k, v in tensors.items():
            np.testing.assert_array_equal(model[k], v, err_msg=k)
            self.assertEqual(model[k].dtype, v.dtype, k)
        self.assertEqual(len(log), 6)  # 3 experts x 2 BatchNorm layers: num_batches_tracked
        self.assertEqual(
            sorted(optim),
            sorted(
                [
                    f"state.model.{gate}.exp_avg",
                    f"state.model.{gate}.exp_avg_sq",
                    f"state.model.{gate}.step",
                    "state." + TABLE.format("user_emb") + ".user_emb.momentum1",
                ]
            ),
        )
        self.assertEqual(
            (optim[f"state.model.{gate}.step"].dtype, float(optim[f"state.model.{gate}.step"])),
            (np.float32, 24.0),
        )
        with self.assertRaisesRegex(
            ValueError, r"sparse optimizer state 'exp_avg'.*--no-optimizer"
        ):
            tc.tzrec_names(
                {"optimizer.embedding_group.user_emb.weight.exp_avg": np.zeros(2, np.float32)},
                0,
                True,
                log.append,
            )
        self.assertEqual(
            tc.tzrec_names(
                {"optimizer.a.weight.exp_avg": np.zeros(2, np.float32)}, 0, False, log.append
            )[1],
            {},
        )

    def test_fixture_safetensors_is_the_converted_fixture_dcp(self) -> None:
        out = self.path("safetensors")
        tc.tzrec_to_safetensors(
            os.path.join(fixture.FIXTURE_DIR, "model.ckpt-24"), out, log=lambda _: None
        )
        with open(out, "rb") as a, open(
            os.path.join(fixture.FIXTURE_DIR, "model.safetensors"), "rb"
        ) as b:
            self.assertEqual(a.read(), b.read())

    # ------------------------------------------------------------ formats
    def test_safetensors_layout(self) -> None:
        out = self.path("safetensors")
        tc.write_safetensors(
            out, {"a": np.array([1.0, 2.0], np.float32), "n": np.array(5)}, {"step": "3"}
        )
        header = (
            '{"__metadata__":{"step":"3"},"n":{"dtype":"I64","shape":[],"data_offsets":[0,8]},'
            '"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}'
        )
        header += " " * (-len(header) % 8)
        expected = (
            len(header).to_bytes(8, "little")
            + header.encode()
            + (5).to_bytes(8, "little")
            + np.array([1.0, 2.0], "<f4").tobytes()
        )
        with open(out, "rb") as f:
            self.assertEqual(f.read(), expected)
        tensors, metadata = tc.read_safetensors(out)
        self.assertEqual(
            (metadata, tensors["n"].dtype, tensors["n"].shape, list(tensors["a"])),
            ({"step": "3"}, np.int64, (), [1.0, 2.0]),
        )

    def test_bfloat16_blob_and_safetensors_become_float32(self) -> None:
        values = torch.tensor([1.5, -2.25, 3.0e-3, 65280.0]).bfloat16()
        buf = io.BytesIO()
        torch.save(values, buf)
        np.testing.assert_array_equal(
            tc.load_torch_tensor(buf.getvalue(), "blob"), values.float().numpy()
        )
        out = self.path("safetensors")
        bits = values.view(torch.int16).numpy().tobytes()
        header = '{"w":{"dtype":"BF16","shape":[4],"data_offsets":[0,8]}}'
        with open(out, "wb") as f:
            f.write(len(header).to_bytes(8, "little") + header.encode() + bits)
        np.testing.assert_array_equal(tc.read_safetensors(out)[0]["w"], values.float().numpy())

    # ------------------------------------------------------------- errors
    def copy_ckpt(self) -> str:
        dst = self.path("ckpt")
        shutil.copytree(self.ckpt, dst)
        return dst

    def test_missing_rank_file_names_the_chunk(self) -> None:
        dst = self.copy_ckpt()
        os.remove(os.path.join(dst, "model", "__1_0.distcp"))
        with self.assertRaisesRegex(
            FileNotFoundError,
            r"chunk at \[.*\] of \[.*\]: stored in __1_0\.distcp, " r"which is missing",
        ):
            tc.read_dcp(os.path.join(dst, "model"))

    def test_truncated_distcp(self) -> None:
        dst = self.copy_ckpt()
        path = os.path.join(dst, "model", "__0_0.distcp")
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
        with self.assertRaisesRegex(ValueError, r"__0_0\.distcp ends before byte \d+"):
            tc.read_dcp(os.path.join(dst, "model"))

    def test_corrupt_metadata(self) -> None:
        dst = self.copy_ckpt()
        with open(os.path.join(dst, "model", ".metadata"), "wb") as f:
            f.write(b"\x80\x04garbage")
        with self.assertRaisesRegex(ValueError, r"\.metadata: cannot read the DCP metadata pickle"):
            tc.read_dcp(os.path.join(dst, "model"))

    def test_blob_pickle_cannot_run_code(self) -> None:
        class Evil:
            def __reduce__(self):
                return (os.system, ("echo pwned",))

        buf = io.BytesIO()
        torch.save(Evil(), buf)
        with self.assertRaisesRegex(ValueError, r"blob: unexpected global (posix|os)\.system"):
            tc.load_torch_tensor(buf.getvalue(), "blob")
        with self.assertRaisesRegex(ValueError, r"not a torch\.save zip blob"):
            tc.load_torch_tensor(pickle.dumps(1.0), "blob")

    def test_bad_safetensors(self) -> None:
        out = self.path("safetensors")
        tc.write_safetensors(out, {"a": np.zeros(4, np.float32)})
        with open(out, "r+b") as f:
            f.truncate(os.path.getsize(out) - 4)
        with self.assertRaisesRegex(
            ValueError, r"tensor 'a': data_offsets \[0, 16\] do not hold F32 \[4\]"
        ):
            tc.read_safetensors(out)
        header = '{"q":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[0,1]}}'
        with open(out, "wb") as f:
            f.write(len(header).to_bytes(8, "little") + header.encode() + b"\0")
        with self.assertRaisesRegex(ValueError, r"tensor 'q': dtype 'F8_E4M3' is not supported"):
            tc.read_safetensors(out)

    def test_cli(self) -> None:
        out, back = self.path("safetensors"), self.path("tzrec")
        err = io.StringIO()
        with contextlib.redirect_stdout(io.StringIO()):
            self.assertEqual(tc.main(["to-safetensors", self.ckpt, out, "--no-optimizer"]), 0)
            self.assertEqual(tc.main(["to-tzrec", out, back, "--step", "30"]), 0)
            self.assertTrue(
                os.path.isfile(os.path.join(back, "model.ckpt-30", "model", ".metadata"))
            )
            with contextlib.redirect_stderr(err):
                self.assertEqual(tc.main(["to-tzrec", out, back, "--step", "30"]), 1)
                self.assertEqual(tc.main(["to-safetensors", self.tmp, out]), 1)
        self.assertIn("model.ckpt-30 exists", err.getvalue())
        self.assertIn("no model/.metadata", err.getvalue())


if __name__ == "__main__":
    unittest.main()
