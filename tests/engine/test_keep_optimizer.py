"""``keep_optimizer``: each client's SGD momentum is carried across phases and epochs in the
training state (``aux/opt/client{c}/...``), comes back to that client, and is never averaged."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedmist.config import RunConfig
from fedmist.engine import loop
from fedmist.flower.messages import pack_local, pack_local_result, unpack_local, unpack_local_result
from fedmist.runs.inprocess import InProcessFederation
from fedmist.runs.rundir import open_run, prepare_config
from fedmist.training.batches import shuffled_batches
from fedmist.training.jobs import LocalJob, model_part
from fedmist.training.local import OPT_PREFIX, for_client, kept_momentum, opt_prefix, sgd_pass


def _ce(model: nn.Module):
    return lambda pos, xb, yb: F.cross_entropy(model(xb), yb)


def test_kept_momentum_is_one_optimizer_across_passes() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(60, 5), torch.randint(0, 3, (60,))
    rows = np.arange(60)
    a = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    b = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    b.load_state_dict(a.state_dict())
    buffers: dict[str, torch.Tensor] = {}
    with kept_momentum(a, buffers):
        for seed in (1, 2):  # two passes, e.g. phase 1 then phase 2
            sgd_pass(a, x, y, rows, _ce(a), lr=0.1, batch_size=16, rng=np.random.default_rng(seed),
                     momentum=0.9, weight_decay=1e-3)
    opt = torch.optim.SGD(b.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)  # the authors' way
    for seed in (1, 2):
        for pos in shuffled_batches(60, 16, np.random.default_rng(seed)):
            opt.zero_grad()
            F.cross_entropy(b(x[pos]), y[pos]).backward()
            opt.step()
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6)
        torch.testing.assert_close(buffers[name], opt.state[q]["momentum_buffer"], rtol=0, atol=1e-6)
    # without kept_momentum the second pass starts fresh: a different result
    c = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    c.load_state_dict(b.state_dict())
    for seed in (1, 2):
        sgd_pass(c, x, y, rows, _ce(c), lr=0.1, batch_size=16, rng=np.random.default_rng(seed), momentum=0.9)
    assert not torch.allclose(next(c.parameters()), next(a.parameters()), atol=1e-4)


def test_other_modules_are_not_affected() -> None:
    torch.manual_seed(1)
    x, y = torch.randn(20, 4), torch.randint(0, 2, (20,))
    model, other = nn.Linear(4, 2), nn.Linear(4, 2)
    buffers: dict[str, torch.Tensor] = {}
    with kept_momentum(model, buffers):
        sgd_pass(other, x, y, np.arange(20), _ce(other), lr=0.1, batch_size=5, rng=np.random.default_rng(0),
                 momentum=0.9)
    assert buffers == {}


def _cfg(tiny_cfg: RunConfig, **kw) -> RunConfig:
    return prepare_config(dataclasses.replace(tiny_cfg, **kw))


class Recording(InProcessFederation):
    """Records the states each client is sent and sends back."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int, int, dict]] = []
        self.back: list[tuple[str, int, int, dict]] = []

    def local(self, cfg, jobs):
        out = super().local(cfg, jobs)
        self.sent += [("local", j.epoch, j.client, j.state) for j in jobs]
        self.back += [("local", j.epoch, r.client, r.state) for j, r in zip(jobs, out)]
        return out

    def xdiff(self, cfg, jobs):
        out = super().xdiff(cfg, jobs)
        self.sent += [("xdiff", j.epoch, j.client, j.state) for j in jobs]
        self.back += [("xdiff", j.epoch, r.client, r.state) for j, r in zip(jobs, out)]
        return out


def _opt(state: dict, client: int) -> dict:
    p = opt_prefix(client)
    return {k: v for k, v in state.items() if k.startswith(p)}


def test_each_client_gets_its_own_buffers_back_never_averaged(tiny_cfg: RunConfig) -> None:
    cfg = _cfg(tiny_cfg, keep_optimizer=True, epochs=2)
    run = open_run(cfg, None)
    opt_keys = [k for k in run.state if k.startswith(OPT_PREFIX)]
    assert opt_keys and all(float(run.state[k].abs().sum()) == 0 for k in opt_keys)  # zeros at first
    assert {k.split("/")[2] for k in opt_keys} == {f"client{c}" for c in range(cfg.clients)}
    fed = Recording()
    state = run.state
    after: list[dict] = []
    for epoch in (1, 2):
        state, _ = loop.run_epoch(cfg, run.spec, fed, state, run.split.members, epoch)
        after.append(state)
    for kind, epoch, c, sent in fed.sent:  # a client is sent its own buffers only
        assert {k for k in sent if k.startswith(OPT_PREFIX)} == set(_opt(sent, c))
    ups = {(kind, e, c): s for kind, e, c, s in fed.back}
    for epoch, state_after in ((1, after[0]), (2, after[1])):
        for c in range(cfg.clients):
            mine = _opt(state_after, c)
            uploaded = _opt(ups[("xdiff", epoch, c)], c)
            assert mine and all(torch.equal(mine[k], uploaded[k]) for k in mine)  # client c's, not an average
            assert any(float(v.abs().sum()) > 0 for v in mine.values())
        k = next(iter(_opt(state_after, 0))).split("/", 3)[3]
        assert not torch.equal(state_after[opt_prefix(0) + k], state_after[opt_prefix(1) + k])
    # phase 1 of epoch 2 starts from the buffers client c had after phase 2 of epoch 1
    sent = {(kind, e, c): s for kind, e, c, s in fed.sent}
    for c in range(cfg.clients):
        a, b = _opt(sent[("local", 2, c)], c), _opt(ups[("xdiff", 1, c)], c)
        assert all(torch.equal(a[k], b[k]) for k in a)
        # and phase 2 starts from those phase 1 left
        a, b = _opt(sent[("xdiff", 2, c)], c), _opt(ups[("local", 2, c)], c)
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_option_changes_the_weights_and_resumes_from_the_state(tiny_cfg: RunConfig) -> None:
    off = _cfg(tiny_cfg)
    on = _cfg(tiny_cfg, keep_optimizer=True)
    run_off, run_on = open_run(off, None), open_run(on, None)
    assert not any(k.startswith(OPT_PREFIX) for k in run_off.state)
    a = loop.train(off, run_off.spec, InProcessFederation(), run_off.state, run_off.split.members)
    b = loop.train(on, run_on.spec, InProcessFederation(), run_on.state, run_on.split.members)
    assert not any(k.startswith(OPT_PREFIX) for k in a)
    assert not all(torch.allclose(a[k], v, atol=1e-4) for k, v in model_part(b).items())
    # a resumed run (epoch 2 from the state after epoch 1, as a checkpoint holds it) is the same run
    s1, _ = loop.run_epoch(on, run_on.spec, InProcessFederation(), run_on.state, run_on.split.members, 1)
    resumed = loop.train(on, run_on.spec, InProcessFederation(), s1, run_on.split.members, start_epoch=2)
    assert set(resumed) == set(b) and all(torch.equal(resumed[k], b[k]) for k in b)


def test_flower_messages_carry_the_buffers(tiny_cfg: RunConfig) -> None:
    cfg = _cfg(tiny_cfg, keep_optimizer=True)
    run = open_run(cfg, None)
    parts = loop.partition(run.split.members, cfg.clients, cfg.seed, 1)
    job = LocalJob(1, 1, cfg.lr, for_client(run.state, 1), parts[1])
    _, back = unpack_local(pack_local(cfg, job))
    assert set(_opt(back.state, 1)) == set(_opt(run.state, 1)) and not _opt(back.state, 0)
    res = InProcessFederation().local(cfg, [back])[0]
    got = unpack_local_result(pack_local_result(res), job)  # the reply has the job's keys
    assert all(torch.equal(got.state[k], res.state[k]) for k in res.state)


def test_weight_decay_reaches_both_phases(tiny_cfg: RunConfig, monkeypatch) -> None:
    seen: list[float] = []
    import fedmist.training.local as local

    real = local.make_optimizer

    def spy(model, lr, momentum=0.0, weight_decay=0.0):
        seen.append(weight_decay)
        return real(model, lr, momentum, weight_decay)

    monkeypatch.setattr(local, "make_optimizer", spy)
    cfg = _cfg(tiny_cfg, weight_decay=1e-5, epochs=1)
    run = open_run(cfg, None)
    loop.run_epoch(cfg, run.spec, InProcessFederation(), run.state, run.split.members, 1)
    assert len(seen) == 2 * cfg.clients and set(seen) == {1e-5}  # phase 1 and phase 2 of every client
