"""Pack engine jobs into Flower ``RecordDict``s and back, and validate what comes back.

Message kinds (DESIGN.md): ``train`` (phase 1; the reply also carries the phase-1 model's
true-class probabilities on the peers' rows, saving the separate ``query.predict`` round),
``train.xdiff`` (phase 2) and ``query.predict`` (probabilities of a given model on given rows).
"""

from __future__ import annotations

import io
import json
import os
import struct
import zipfile
from collections.abc import Mapping

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from fedmist.config import RunConfig
from fedmist.training.jobs import (
    HeldOnClient,
    LocalJob,
    LocalResult,
    PredictJob,
    PredictResult,
    State,
    XdiffJob,
    XdiffResult,
)

TRAIN, XDIFF, PREDICT = "train", "train.xdiff", "query.predict"


class BadReply(ValueError):
    """A client's reply cannot be used (NaN/Inf, wrong names or shapes)."""


#: Error reason of a ``train.xdiff`` whose held phase-1 weights the client no longer has (its
#: ClientApp process restarted): the server then sends the weights themselves.
NOT_HELD = "fedmist: phase-1 weights not held"


class NotHeld(LookupError):
    def __init__(self, digest: str) -> None:
        super().__init__(f"{NOT_HELD} ({digest[:12]})")


BUNDLE = "fedmist.arrays"  # the stype of a bundle: named arrays laid end to end in one Flower Array
NPZ = "numpy.npz"  # the previous bundle format (FEDMIST_BUNDLE=npz writes it, for side-by-side benchmarks)
_ALIGN = 64  # every array starts at a multiple of this offset, so views of it are aligned


def _aligned(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN


def bundle(named: Mapping[str, np.ndarray]) -> ArrayRecord:
    """Several arrays as one Flower ``Array``: a JSON header (name, dtype, shape, offset of each)
    and the arrays' bytes laid end to end.

    Why one Array: Flower sends every ``Array`` (and each of its 5 MB chunks) as an object of its
    own, and a deployment fetches each object with its own HTTPS request on every hop (ServerApp →
    SuperLink → SuperNode → ClientApp and back); a Location message of 10 weight tensors and 4 row
    arrays was ~30 objects, bundled ~10. Why not ``.npz``: its zip CRCs made packing a Location
    state 16 ms and reading it 6 ms, against ~1.5 ms and ~0.6 ms for this layout, and a MIST epoch
    packs and reads 32 of them. Lossless: names, dtypes, shapes and order travel in the header.
    """
    if os.environ.get("FEDMIST_BUNDLE") == "npz":
        return _bundle_npz(named)
    arrays = [np.asarray(v, order="C") for v in named.values()]  # (ascontiguousarray makes 0-d arrays 1-d)
    entries, offset = [], 0
    for name, a in zip(named, arrays):
        if a.dtype.hasobject:
            raise TypeError(f"array {name!r} holds Python objects; only plain dtypes travel")
        offset = _aligned(offset)
        entries.append([name, a.dtype.str, list(a.shape), offset])
        offset += a.nbytes
    header = json.dumps(entries).encode()
    start = _aligned(8 + len(header))
    buf = bytearray(start + offset)
    struct.pack_into("<Q", buf, 0, len(header))
    buf[8:8 + len(header)] = header
    view = np.frombuffer(buf, np.uint8)
    for (_, _, _, at), a in zip(entries, arrays):
        view[start + at:start + at + a.nbytes] = a.reshape(-1).view(np.uint8)
    data = bytes(buf)
    return ArrayRecord({"bundle": Array(dtype="uint8", shape=(len(data),), stype=BUNDLE, data=data)})


def unbundle(record: ArrayRecord) -> dict[str, np.ndarray]:
    """The arrays of a :func:`bundle` (writable copies), in their order; ``BadReply`` for anything else."""
    if list(record.keys()) != ["bundle"] or record["bundle"].stype not in (BUNDLE, NPZ):
        raise BadReply(f"expected one {BUNDLE} array, got {list(record.keys())}")
    data = record["bundle"].data
    if record["bundle"].stype == NPZ:
        return _unbundle_npz(data)
    try:
        (n,) = struct.unpack_from("<Q", data, 0)
        entries = json.loads(data[8:8 + n])
        start = _aligned(8 + n)
        out = {}
        for name, dtype, shape, at in entries:
            dt = np.dtype(dtype)
            count = int(np.prod(shape, dtype=np.int64))
            if dt.hasobject or at < 0 or start + at + count * dt.itemsize > len(data):
                raise ValueError(f"array {name!r} does not fit the bundle")
            out[str(name)] = np.frombuffer(data, dt, count, start + at).reshape(tuple(shape)).copy()
        return out
    except (ValueError, TypeError, KeyError, struct.error, json.JSONDecodeError) as err:
        raise BadReply(f"unreadable {BUNDLE} array: {err}") from err


def _bundle_npz(named: Mapping[str, np.ndarray]) -> ArrayRecord:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as npz:  # np.savez's format, any key allowed
        for name, value in named.items():
            with npz.open(f"{name}.npy", "w") as member:
                np.lib.format.write_array(member, np.asarray(value), allow_pickle=False)
    data = buf.getvalue()
    return ArrayRecord({"bundle": Array(dtype="uint8", shape=(len(data),), stype=NPZ, data=data)})


def _unbundle_npz(data: bytes) -> dict[str, np.ndarray]:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (ValueError, OSError, zipfile.BadZipFile) as err:
        raise BadReply(f"unreadable {NPZ} array: {err}") from err


def _meta(cfg: RunConfig, client: int, epoch: int, lr: float) -> ConfigRecord:
    return ConfigRecord({"run-config": json.dumps(cfg.to_dict()), "client": client, "epoch": epoch, "lr": lr})


def config_of(content: RecordDict) -> tuple[RunConfig, int, int, float]:
    meta = content.config_records["meta"]
    cfg = RunConfig.from_dict(json.loads(str(meta["run-config"])))
    return cfg, int(meta["client"]), int(meta["epoch"]), float(meta["lr"])


def state_record(state: State) -> ArrayRecord:
    return bundle({k: v.detach().cpu().numpy() for k, v in state.items()})


def record_state(record: ArrayRecord) -> State:
    return {k: torch.from_numpy(v) for k, v in unbundle(record).items()}


# --- phase 1 -----------------------------------------------------------------------------------
def pack_local(cfg: RunConfig, job: LocalJob, hold: bool = False) -> RecordDict:
    """``hold``: ask the client to keep its phase-1 weights for ``train.xdiff`` (pack_xdiff)."""
    meta = _meta(cfg, job.client, job.epoch, job.lr)
    meta["step"] = job.step
    meta["hold-weights"] = hold
    meta["upload-weights"] = job.upload or not hold  # a client that holds nothing must send them
    content = RecordDict({
        "meta": meta,
        "weights": state_record(job.state),
        "rows": bundle({"train": job.train_rows, "predict": job.predict_rows, "reference": job.reference_rows,
                         "ascent": job.ascent_rows}),
    })
    if job.soft_targets is not None:
        content["soft-targets"] = bundle({"targets": job.soft_targets})
    return content


def hold_asked(content: RecordDict) -> bool:
    return bool(content.config_records["meta"].get("hold-weights", False))


def unpack_local(content: RecordDict) -> tuple[RunConfig, LocalJob]:
    cfg, client, epoch, lr = config_of(content)
    rows = unbundle(content.array_records["rows"])
    soft = _optional(content, "soft-targets", "targets")
    ascent = rows.get("ascent", np.empty(0, dtype=np.int64))
    meta = content.config_records["meta"]
    return cfg, LocalJob(client, epoch, lr, record_state(content.array_records["weights"]),
                         rows["train"], rows["predict"], str(meta["step"]), rows["reference"], soft, ascent,
                         upload=bool(meta.get("upload-weights", True)))


def pack_local_result(res: LocalResult, held: str | None = None) -> RecordDict:
    """``held``: the name under which the client kept its phase-1 weights; they stay out of the
    reply (the server needs only the probabilities, and phase 2 names them)."""
    content = RecordDict({
        "probs": bundle({"probs": res.probs}),
        "metrics": MetricRecord({"loss": res.loss, "num-examples": res.n, "client": res.client, "seconds": res.seconds}),
    })
    if held is None:
        content["weights"] = state_record(res.state)
    else:
        content["held"] = ConfigRecord({"name": held})
    return content


def all_finite(state: State) -> bool:
    """No NaN/Inf in any floating tensor (a client checks weights it would keep instead of sending)."""
    return all(_finite(v) for v in state.values() if v.is_floating_point())


def unpack_local_result(content: RecordDict, job: LocalJob) -> LocalResult:
    if not job.upload and "held" in content.config_records:
        state: State = HeldOnClient(str(content.config_records["held"]["name"]))
    else:
        state = _checked_state(content, job.state, job.client)
    probs = _checked_array(content, "probs", "probs", job.predict_rows.shape, job.client)
    m = content.metric_records["metrics"]
    loss = _checked_metric(m, "loss", job.client)
    return LocalResult(job.client, state, loss, int(m["num-examples"]), probs, float(m["seconds"]))


# --- phase 2 -----------------------------------------------------------------------------------
def weights_digest(content: RecordDict) -> str:
    """The name under which a client holds a reply's weights: Flower's own content address of the
    packed Array (a SHA-256 over its chunks' hashes), which Flower computes to send it anyway."""
    return content.array_records["weights"]["bundle"].object_id


def pack_xdiff(cfg: RunConfig, job: XdiffJob, held: str | None = None, redo: LocalJob | None = None) -> RecordDict:
    """``held``: the name of the client's own phase-1 weights, which it kept; the message then
    names those weights instead of carrying them back (in a deployment each weight set crosses
    three hops per direction, and phase 2 starts from exactly what phase 1 replied).

    ``redo``: the phase-1 job of a client that lost weights the server never had; the message
    carries that job's weights and rows, and the client runs phase 1 again (the same seeded pass,
    so the same weights) before phase 2."""
    meta = _meta(cfg, job.client, job.epoch, job.lr)
    rows = {"train": job.train_rows}
    content = RecordDict({"meta": meta})
    if redo is not None:
        if redo.soft_targets is not None or len(redo.ascent_rows):
            raise ValueError("phase 1 with soft targets or ascent rows is never left on the client")
        meta["redo-step"] = redo.step
        rows["redo-train"], rows["redo-reference"] = redo.train_rows, redo.reference_rows
        content["weights"] = state_record(redo.state)
    elif held is None:
        content["weights"] = state_record(job.state)
    else:
        meta["held-weights"] = held
    content["rows"] = bundle(rows)
    if job.targets is not None:
        content["targets"] = bundle({"targets": job.targets})
    for i, peer in enumerate(job.peer_states or []):
        content[f"peer-{i}"] = state_record(peer)
    return content


def unpack_xdiff(content: RecordDict, held: Mapping[str, State] | None = None) -> tuple[RunConfig, XdiffJob]:
    """The job; weights named by digest come from ``held`` (``NotHeld`` when absent)."""
    cfg, client, epoch, lr = config_of(content)
    meta, held = content.config_records["meta"], held or {}
    if "held-weights" in meta:
        digest = str(meta["held-weights"])
        if digest not in held:
            raise NotHeld(digest)
        state = held[digest]
    else:
        state = record_state(content.array_records["weights"])
    targets = _optional(content, "targets", "targets")
    peers = [record_state(content.array_records[f"peer-{i}"])
             for i in range(sum(k.startswith("peer-") for k in content.array_records))]
    return cfg, XdiffJob(client, epoch, lr, state, unbundle(content.array_records["rows"])["train"], targets,
                         peers or None)


def redo_job(content: RecordDict, job: XdiffJob) -> LocalJob | None:
    """The phase-1 job a ``train.xdiff`` asks to run again first (pack_xdiff's ``redo``), or None."""
    meta = content.config_records["meta"]
    if "redo-step" not in meta:
        return None
    rows = unbundle(content.array_records["rows"])
    return LocalJob(job.client, job.epoch, job.lr, job.state, rows["redo-train"], step=str(meta["redo-step"]),
                    reference_rows=rows["redo-reference"])


def pack_xdiff_result(res: XdiffResult) -> RecordDict:
    return RecordDict({
        "weights": state_record(res.state),
        "metrics": MetricRecord({"xdiff": res.xdiff, "num-examples": res.n, "client": res.client, "seconds": res.seconds}),
    })


def unpack_xdiff_result(content: RecordDict, job: XdiffJob, like: State | None = None) -> XdiffResult:
    """``like``: the weights' expected names and shapes when ``job.state`` stayed on the client."""
    state = _checked_state(content, job.state if like is None else like, job.client)
    m = content.metric_records["metrics"]
    xdiff = _checked_metric(m, "xdiff", job.client)
    return XdiffResult(job.client, state, xdiff, int(m["num-examples"]), float(m["seconds"]))


# --- query.predict ------------------------------------------------------------------------------
def pack_predict(cfg: RunConfig, job: PredictJob) -> RecordDict:
    meta = _meta(cfg, job.client, job.epoch, 0.0)
    meta["full"] = job.full
    return RecordDict({
        "meta": meta,
        "weights": state_record(job.state),
        "rows": bundle({"predict": job.rows}),
    })


def unpack_predict(content: RecordDict) -> tuple[RunConfig, PredictJob]:
    cfg, client, epoch, _ = config_of(content)
    return cfg, PredictJob(client, epoch, record_state(content.array_records["weights"]),
                           unbundle(content.array_records["rows"])["predict"], bool(content.config_records["meta"]["full"]))


def pack_predict_result(res: PredictResult) -> RecordDict:
    return RecordDict({"probs": bundle({"probs": res.probs}),
                       "metrics": MetricRecord({"client": res.client, "seconds": res.seconds})})


def unpack_predict_result(content: RecordDict, job: PredictJob) -> PredictResult:
    shape = (len(job.rows), None) if job.full else job.rows.shape  # full: one row per class, any number
    probs = _checked_array(content, "probs", "probs", shape, job.client)
    return PredictResult(job.client, probs, float(content.metric_records["metrics"]["seconds"]))


def _optional(content: RecordDict, record: str, name: str) -> np.ndarray | None:
    return unbundle(content.array_records[record])[name] if record in content.array_records else None


# --- validation ---------------------------------------------------------------------------------
def _checked_state(content: RecordDict, like: State, client: int) -> State:
    if "weights" not in content.array_records:
        raise BadReply(f"client {client}: reply has no 'weights' record")
    try:
        state = record_state(content.array_records["weights"])
    except BadReply as err:
        raise BadReply(f"client {client}: weights: {err}") from err
    if sorted(state) != sorted(like):
        raise BadReply(f"client {client}: weight names {sorted(state)} differ from the model's")
    for k, v in state.items():
        if tuple(v.shape) != tuple(like[k].shape):
            raise BadReply(f"client {client}: {k} has shape {tuple(v.shape)}, expected {tuple(like[k].shape)}")
        if v.is_floating_point() and not _finite(v):
            raise BadReply(f"client {client}: {k} contains NaN/Inf")
    return state


def _finite(t: torch.Tensor) -> bool:
    """No NaN/Inf in a CPU tensor: numpy's check, ~18x faster here than torch.isfinite(t).all()
    (0.3 vs 5.9 ms for a Location state), which the server runs on every reply."""
    if t.dtype in (torch.bfloat16,):  # no numpy twin
        return bool(torch.isfinite(t).all())
    return bool(np.isfinite(t.detach().cpu().numpy()).all())


def _checked_metric(record: MetricRecord, name: str, client: int) -> float:
    value = float(record[name])
    if not np.isfinite(value):
        raise BadReply(f"client {client}: metric {name} is {value}")
    return value


def _checked_array(content: RecordDict, record: str, name: str, shape: tuple, client: int) -> np.ndarray:
    """The named array of a reply, finite and of ``shape`` (``None``: any size in that dimension)."""
    try:
        arrays = unbundle(content.array_records[record]) if record in content.array_records else {}
    except BadReply as err:
        raise BadReply(f"client {client}: {record}: {err}") from err
    if name not in arrays:
        raise BadReply(f"client {client}: reply has no '{record}/{name}' array")
    arr = arrays[name]
    if len(arr.shape) != len(shape) or any(want is not None and got != want for got, want in zip(arr.shape, shape)):
        expected = tuple("any" if want is None else want for want in shape)
        raise BadReply(f"client {client}: {name} has shape {arr.shape}, expected {expected}")
    if not np.isfinite(arr).all():
        raise BadReply(f"client {client}: {name} contains NaN/Inf")
    return arr
