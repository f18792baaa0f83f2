"""Pack engine jobs into Flower ``RecordDict``s and back, and validate what comes back.

Message kinds (DESIGN.md): ``train`` (phase 1; the reply also carries the phase-1 model's
true-class probabilities on the peers' rows, saving the separate ``query.predict`` round),
``train.xdiff`` (phase 2) and ``query.predict`` (probabilities of a given model on given rows).
"""

from __future__ import annotations

import json

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from fedmist.config import RunConfig
from fedmist.training.jobs import LocalJob, LocalResult, PredictJob, PredictResult, State, XdiffJob, XdiffResult  # noqa: E501

TRAIN, XDIFF, PREDICT = "train", "train.xdiff", "query.predict"


class BadReply(ValueError):
    """A client's reply cannot be used (NaN/Inf, wrong names or shapes)."""


def _arrays(**named: np.ndarray) -> ArrayRecord:
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in named.items()})


def _meta(cfg: RunConfig, client: int, epoch: int, lr: float) -> ConfigRecord:
    return ConfigRecord({"run-config": json.dumps(cfg.to_dict()), "client": client, "epoch": epoch, "lr": lr})


def config_of(content: RecordDict) -> tuple[RunConfig, int, int, float]:
    meta = content.config_records["meta"]
    cfg = RunConfig.from_dict(json.loads(str(meta["run-config"])))
    return cfg, int(meta["client"]), int(meta["epoch"]), float(meta["lr"])


def state_record(state: State) -> ArrayRecord:
    return ArrayRecord({k: Array(v.detach().cpu().numpy()) for k, v in state.items()})


def record_state(record: ArrayRecord) -> State:
    return {k: torch.from_numpy(np.array(record[k].numpy())) for k in record.keys()}


# --- phase 1 -----------------------------------------------------------------------------------
def pack_local(cfg: RunConfig, job: LocalJob) -> RecordDict:
    meta = _meta(cfg, job.client, job.epoch, job.lr)
    meta["step"] = job.step
    content = RecordDict({
        "meta": meta,
        "weights": state_record(job.state),
        "rows": _arrays(train=job.train_rows, predict=job.predict_rows, reference=job.reference_rows,
                        ascent=job.ascent_rows),
    })
    if job.soft_targets is not None:
        content["soft-targets"] = _arrays(targets=job.soft_targets)
    return content


def unpack_local(content: RecordDict) -> tuple[RunConfig, LocalJob]:
    cfg, client, epoch, lr = config_of(content)
    rows = content.array_records["rows"]
    soft = (content.array_records["soft-targets"]["targets"].numpy()
            if "soft-targets" in content.array_records else None)
    ascent = rows["ascent"].numpy() if "ascent" in rows.keys() else np.empty(0, dtype=np.int64)
    return cfg, LocalJob(client, epoch, lr, record_state(content.array_records["weights"]),
                         rows["train"].numpy(), rows["predict"].numpy(), str(content.config_records["meta"]["step"]),
                         rows["reference"].numpy(), soft, ascent)


def pack_local_result(res: LocalResult) -> RecordDict:
    return RecordDict({
        "weights": state_record(res.state),
        "probs": _arrays(probs=res.probs),
        "metrics": MetricRecord({"loss": res.loss, "num-examples": res.n, "client": res.client, "seconds": res.seconds}),
    })


def unpack_local_result(content: RecordDict, job: LocalJob) -> LocalResult:
    state = _checked_state(content, job.state, job.client)
    probs = _checked_array(content, "probs", "probs", job.predict_rows.shape, job.client)
    m = content.metric_records["metrics"]
    loss = _checked_metric(m, "loss", job.client)
    return LocalResult(job.client, state, loss, int(m["num-examples"]), probs, float(m["seconds"]))


# --- phase 2 -----------------------------------------------------------------------------------
def pack_xdiff(cfg: RunConfig, job: XdiffJob) -> RecordDict:
    content = RecordDict({
        "meta": _meta(cfg, job.client, job.epoch, job.lr),
        "weights": state_record(job.state),
        "rows": _arrays(train=job.train_rows),
    })
    if job.targets is not None:
        content["targets"] = _arrays(targets=job.targets)
    for i, peer in enumerate(job.peer_states or []):
        content[f"peer-{i}"] = state_record(peer)
    return content


def unpack_xdiff(content: RecordDict) -> tuple[RunConfig, XdiffJob]:
    cfg, client, epoch, lr = config_of(content)
    targets = content.array_records["targets"]["targets"].numpy() if "targets" in content.array_records else None
    peers = [record_state(content.array_records[k]) for k in sorted(content.array_records) if k.startswith("peer-")]
    return cfg, XdiffJob(client, epoch, lr, record_state(content.array_records["weights"]),
                         content.array_records["rows"]["train"].numpy(), targets, peers or None)


def pack_xdiff_result(res: XdiffResult) -> RecordDict:
    return RecordDict({
        "weights": state_record(res.state),
        "metrics": MetricRecord({"xdiff": res.xdiff, "num-examples": res.n, "client": res.client, "seconds": res.seconds}),
    })


def unpack_xdiff_result(content: RecordDict, job: XdiffJob) -> XdiffResult:
    state = _checked_state(content, job.state, job.client)
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
        "rows": _arrays(predict=job.rows),
    })


def unpack_predict(content: RecordDict) -> tuple[RunConfig, PredictJob]:
    cfg, client, epoch, _ = config_of(content)
    return cfg, PredictJob(client, epoch, record_state(content.array_records["weights"]),
                           content.array_records["rows"]["predict"].numpy(), bool(content.config_records["meta"]["full"]))


def pack_predict_result(res: PredictResult) -> RecordDict:
    return RecordDict({"probs": _arrays(probs=res.probs),
                       "metrics": MetricRecord({"client": res.client, "seconds": res.seconds})})


def unpack_predict_result(content: RecordDict, job: PredictJob) -> PredictResult:
    shape = (len(job.rows), _num_classes(content)) if job.full else job.rows.shape
    probs = _checked_array(content, "probs", "probs", shape, job.client)
    return PredictResult(job.client, probs, float(content.metric_records["metrics"]["seconds"]))


def _num_classes(content: RecordDict) -> int:
    try:
        arr = content.array_records["probs"]["probs"]
        return int(arr.shape[1]) if len(arr.shape) == 2 else -1
    except KeyError:
        return -1


# --- validation ---------------------------------------------------------------------------------
def _checked_state(content: RecordDict, like: State, client: int) -> State:
    if "weights" not in content.array_records:
        raise BadReply(f"client {client}: reply has no 'weights' record")
    rec = content.array_records["weights"]
    if sorted(rec.keys()) != sorted(like):
        raise BadReply(f"client {client}: weight names {sorted(rec.keys())} differ from the model's")
    state = record_state(rec)
    for k, v in state.items():
        if tuple(v.shape) != tuple(like[k].shape):
            raise BadReply(f"client {client}: {k} has shape {tuple(v.shape)}, expected {tuple(like[k].shape)}")
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise BadReply(f"client {client}: {k} contains NaN/Inf")
    return state


def _checked_metric(record: MetricRecord, name: str, client: int) -> float:
    value = float(record[name])
    if not np.isfinite(value):
        raise BadReply(f"client {client}: metric {name} is {value}")
    return value


def _checked_array(content: RecordDict, record: str, name: str, shape: tuple, client: int) -> np.ndarray:
    if record not in content.array_records or name not in content.array_records[record]:
        raise BadReply(f"client {client}: reply has no '{record}/{name}' array")
    arr = content.array_records[record][name].numpy()
    if arr.shape != tuple(shape):
        raise BadReply(f"client {client}: {name} has shape {arr.shape}, expected {tuple(shape)}")
    if not np.isfinite(arr).all():
        raise BadReply(f"client {client}: {name} contains NaN/Inf")
    return arr
