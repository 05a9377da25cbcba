import math

import pytest
import torch

import bnstruct as bn
from bnstruct.testing import assert_close

TASK = bn.tasks.composite(n_train=64, n_test=32, seed=0)


def small(seed=0, dtype=torch.float64, depth=4):
    return bn.MLP(TASK.d_in, 16, depth, TASK.d_out, seed=seed, dtype=dtype)


def test_loss_decreases_and_history_is_logged():
    m = small()
    r = bn.train(m, TASK, [bn.Stage("adam", 3e-3, 1e-3, 200)], log_every=50, progress=False)
    h = r.history
    assert r.status == "completed" and r.steps == 200
    assert list(h.step) == [0, 50, 100, 150, 200]
    assert h.objective.iloc[-1] < 0.2 * h.objective.iloc[0]
    # the logged terms are consistent with the definitions
    assert_close(h.penalty, h.lam * h.param_norm2, rtol=1e-12, atol=0, what="penalty")
    assert_close(h.objective, h.fit + h.penalty, rtol=1e-12, atol=0, what="objective")
    with torch.no_grad():
        fit = (m(TASK.X) - TASK.Y).pow(2).sum(1).mean().item()
    assert_close(h.fit.iloc[-1], fit, rtol=1e-12, atol=0, what="final fit")


def _manual(stages, seed, explicit_penalty):
    """Reference: the plain loop a user writes, penalty summed explicitly in the loss."""
    m = small(seed)
    for st in stages:
        cls = torch.optim.Adam if st.optimizer == "adam" else torch.optim.SGD
        opt = cls(m.parameters(), lr=st.lr)
        for _ in range(st.steps):
            opt.zero_grad()
            loss = (m(TASK.X) - TASK.Y).pow(2).sum(1).mean()
            if explicit_penalty:
                loss = loss + st.lam * sum(p.pow(2).sum() for p in m.parameters())
            loss.backward()
            opt.step()
    return m


@pytest.mark.parametrize("opt", ["gd", "adam"])
@pytest.mark.parametrize("lam", [0.0, 0.01])
def test_objective_matches_a_plain_pytorch_loop(opt, lam):
    stages = [bn.Stage(opt, 1e-2 if opt == "gd" else 1e-3, lam, 30)]
    m = small(1)
    bn.train(m, TASK, stages, progress=False)
    ref = _manual(stages, 1, explicit_penalty=True)
    for p, q in zip(m.parameters(), ref.parameters(), strict=True):
        assert_close(p, q, rtol=1e-9, atol=1e-11, what=f"{opt} lam={lam} weights")


def test_penalty_changes_the_result():
    # guards the test above: with lam > 0 the unpenalized loop must differ
    stages = [bn.Stage("gd", 1e-2, 0.05, 30)]
    m = small(1)
    bn.train(m, TASK, stages, progress=False)
    ref = _manual(stages, 1, explicit_penalty=False)
    diff = max((p - q).abs().max().item() for p, q in zip(m.parameters(), ref.parameters(),
                                                          strict=True))
    assert diff > 1e-4


def test_same_seed_bit_identical_weights():
    stages = [bn.Stage("adam", 1e-3, 0.0, 20), bn.Stage("adam", 1e-3, 0.01, 20, batch_size=16)]
    ws = []
    for _ in range(2):
        m = small(2, torch.float32)
        bn.train(m, TASK, stages, seed=7, progress=False)
        ws.append([p.detach().clone() for p in m.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*ws, strict=True))
    m = small(2, torch.float32)
    bn.train(m, TASK, stages, seed=8, progress=False)  # other minibatch order
    assert not all(torch.equal(a, b.detach()) for a, b in zip(ws[0], m.parameters(),
                                                              strict=True))


def _first_nonfinite_loss_step(stages, seed=0):
    """Reference: a plain loop that reads the loss every step (``.item()``)."""
    m = small(seed)
    s = 0
    for st in stages:
        opt = torch.optim.SGD(m.parameters(), lr=st.lr, weight_decay=2 * st.lam)
        for _ in range(st.steps):
            opt.zero_grad()
            loss = (m(TASK.X) - TASK.Y).pow(2).sum(1).mean()
            if not math.isfinite(loss.item()):
                return s
            loss.backward()
            opt.step()
            s += 1
    return None


@pytest.mark.parametrize("log_every", [1, 10, 64])
def test_divergence_is_recorded_not_raised(log_every):
    stages = [bn.Stage("gd", 1e3, 0.0, 500)]
    ref = _first_nonfinite_loss_step(stages)
    assert ref is not None and 0 < ref < 500
    m = small()
    r = bn.train(m, TASK, stages, log_every=log_every, progress=False)
    assert r.status == "diverged"
    assert r.diverged_at == ref  # exact, although the loss is only read at the checks
    last = int(r.history["step"].iloc[-1])  # the run stops at the check that saw it
    assert r.steps == last and ref <= last < ref + log_every
    assert not math.isfinite(r.final["objective"])  # final metrics are not the last good ones


def test_the_step_does_not_sync(monkeypatch):
    """No host sync inside the step (divergence is a device buffer read at the checks)."""
    from bnstruct.training import make_optimizer, step

    m = small()
    opt = make_optimizer(bn.Stage("adam", 1e-3, 0.01, 1), m.parameters())
    losses = torch.empty(5, dtype=torch.float64)

    def boom(*a, **k):
        raise AssertionError("host sync inside the step")

    for name in ("item", "tolist", "__bool__", "__float__", "__int__"):
        monkeypatch.setattr(torch.Tensor, name, boom)
    for i in range(5):
        step(m, opt, TASK.X, TASK.Y, losses, i)
    monkeypatch.undo()
    assert torch.isfinite(losses).all()


def test_the_stacked_step_does_not_sync(monkeypatch):
    """Nor inside the stacked step every bnstruct network trains through."""
    from bnstruct.training import StackedBatch

    b = StackedBatch([small(1), small(2)])
    b.start([bn.Stage("adam", 1e-3, 0.01, 1), bn.Stage("adam", 2e-3, 0.0, 1)], None)
    losses = torch.empty(5, 2, dtype=torch.float64)

    def boom(*a, **k):
        raise AssertionError("host sync inside the step")

    b.step(TASK.X, TASK.Y, losses[0])  # buffers are made on the first step
    for name in ("item", "tolist", "__bool__", "__float__", "__int__"):
        monkeypatch.setattr(torch.Tensor, name, boom)
    for i in range(1, 5):
        b.step(TASK.X, TASK.Y, losses[i])
    monkeypatch.undo()
    assert torch.isfinite(losses).all()


def test_checks_only_at_logging_steps(monkeypatch):
    import bnstruct.training._loop as loop

    calls = []
    real = loop._first_nonfinite
    monkeypatch.setattr(loop, "_first_nonfinite", lambda t: calls.append(len(t)) or real(t))
    bn.train(small(), TASK, [bn.Stage("adam", 1e-3, 0.0, 200)], log_every=50, progress=False)
    assert calls == [50, 50, 50, 50]


@pytest.mark.parametrize("interrupt_at", [30, 40, 60])
def test_resume_equals_uninterrupted(tmp_path, interrupt_at):
    stages = [bn.Stage("adam", 2e-3, 0.0, 40), bn.Stage("adam", 1e-3, 0.01, 40, batch_size=24)]
    full = small(3, torch.float32)
    ref = bn.train(full, TASK, stages, seed=1, log_every=10, progress=False)

    def stop(step, row):
        if step == interrupt_at:
            raise KeyboardInterrupt

    ck = tmp_path / "ck"
    m = small(3, torch.float32)
    r1 = bn.train(m, TASK, stages, seed=1, log_every=10, checkpoint=ck, checkpoint_every=10,
                  callback=stop, progress=False)
    assert r1.status == "interrupted" and r1.steps == interrupt_at
    m2 = small(99, torch.float32)  # a fresh model: everything must come from the checkpoint
    r2 = bn.train(m2, TASK, stages, seed=1, log_every=10, checkpoint=ck, checkpoint_every=10,
                  resume=True, progress=False)
    assert r2.status == "completed" and r2.steps == 80
    for p, q in zip(m2.parameters(), full.parameters(), strict=True):
        assert torch.equal(p, q)
    assert list(r2.history.step) == list(ref.history.step)


def test_resume_ignores_a_stale_readable_checkpoint_copy(tmp_path):
    """A crash between the weights file and its readable JSON copy must not pair weights of
    one step with the history of another: the resume state is in the weights' header."""
    import json

    stages = [bn.Stage("adam", 2e-3, 0.0, 60)]
    full = small(3, torch.float32)
    bn.train(full, TASK, stages, seed=1, log_every=10, progress=False)

    def stop(step, row):
        if step == 40:
            raise KeyboardInterrupt

    ck = tmp_path / "ck"
    bn.train(small(3, torch.float32), TASK, stages, seed=1, log_every=10, checkpoint=ck,
             checkpoint_every=20, callback=stop, progress=False)
    stale = json.loads((tmp_path / "ck.json").read_text())
    assert stale["step"] == 40
    stale["step"], stale["history"] = 20, stale["history"][:3]  # the copy of an older step
    (tmp_path / "ck.json").write_text(json.dumps(stale))
    m = small(99, torch.float32)
    r = bn.train(m, TASK, stages, seed=1, log_every=10, checkpoint=ck, checkpoint_every=20,
                 resume=True, progress=False)
    assert r.status == "completed" and r.steps == 60
    for p, q in zip(m.parameters(), full.parameters(), strict=True):
        assert torch.equal(p, q)


def test_default_recipe_warms_the_penalty_up():
    st = bn.default_recipe(lam=0.01, steps=600)
    assert [s.lam for s in st] == [0.0, 0.01, 0.01]
    assert sum(s.steps for s in st) == 600


def test_stage_validation():
    with pytest.raises(bn.ConfigError, match="lr"):
        bn.Stage("adam", -1.0, 0.0, 10)
    with pytest.raises(bn.ConfigError, match="lam"):
        bn.Stage("adam", 1e-3, -0.1, 10)
    with pytest.raises(bn.ConfigError, match="steps"):
        bn.Stage("adam", 1e-3, 0.0, 0)
    with pytest.raises(bn.ConfigError, match="optimizer"):
        bn.Stage("sgdm", 1e-3, 0.0, 10)
    assert bn.parse_stage("gd:0.1:0.002:50:8") == bn.Stage("gd", 0.1, 0.002, 50, 8)
    with pytest.raises(bn.ConfigError, match="OPT:LR:LAM:STEPS"):
        bn.parse_stage("adam:1e-3")


def test_deferred_sigint_sets_the_token_and_a_second_press_raises():
    """Nested blocks of a thread share one token; another thread shares it only when handed
    it; ``set()`` is idempotent; in the main thread a first SIGINT sets the token and a
    second raises at once (held to the end of a ``hold_sigint`` block); the previous handler
    comes back."""
    import signal
    import threading

    from bnstruct.training import active_token, deferred_sigint, hold_sigint

    before = signal.getsignal(signal.SIGINT)
    assert active_token() is None
    with deferred_sigint() as outer:
        with deferred_sigint() as inner:
            assert inner is outer and active_token() is outer
        seen = []

        def helper():
            with deferred_sigint() as own:
                seen.append(own is outer)
            with deferred_sigint(outer) as shared:
                seen.append(shared is outer)

        t = threading.Thread(target=helper)
        t.start()
        t.join()
        assert seen == [False, True]
        assert not outer.is_set()
        outer.set()
        outer.set()
        assert outer.is_set() and outer.presses == 0
    assert active_token() is None and signal.getsignal(signal.SIGINT) is before
    with pytest.raises(KeyboardInterrupt):
        with deferred_sigint() as token:
            signal.raise_signal(signal.SIGINT)
            assert token.is_set() and token.presses == 1  # set, not raised
            signal.raise_signal(signal.SIGINT)
            pytest.fail("a second Ctrl-C raises at once")
    after = []
    with pytest.raises(KeyboardInterrupt):
        with deferred_sigint() as token:
            signal.raise_signal(signal.SIGINT)
            with hold_sigint():
                signal.raise_signal(signal.SIGINT)
                after.append(token.presses)  # held: the block runs to its end
    assert after == [2]
    with pytest.raises(KeyboardInterrupt):  # outside a deferred block: held, then raised
        with hold_sigint():
            signal.raise_signal(signal.SIGINT)
            after.append("held")
    assert after == [2, "held"]
    assert active_token() is None and signal.getsignal(signal.SIGINT) is before


def test_a_second_ctrl_c_never_cuts_a_step(monkeypatch):
    """Two Ctrl-Cs inside a step (here at step 50): the step completes, then the run stops
    (interrupted, no new checkpoint) with the weights and step count of that step, never
    half an update (the optimizer at lr 1 before its per-member scaling)."""
    import signal

    from bnstruct.training import StackedBatch

    stages = [bn.Stage("adam", 1e-3, 0.01, 100)]
    ref = small(3, torch.float32)
    bn.train(ref, TASK, [bn.Stage("adam", 1e-3, 0.01, 50)], log_every=10, progress=False)
    real, count = StackedBatch.step, [0]

    def step(self, X, Y, losses):
        count[0] += 1
        if count[0] == 50:
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)
        real(self, X, Y, losses)

    monkeypatch.setattr(StackedBatch, "step", step)
    m = small(3, torch.float32)
    r = bn.train(m, TASK, stages, log_every=10, progress=False)
    assert r.status == "interrupted" and r.steps == 50
    for p, q in zip(m.parameters(), ref.parameters(), strict=True):
        assert torch.equal(p, q)


def test_only_plain_chains_train_on_the_stacked_kernel():
    """A frozen layer stays frozen, a subclass's own forward is what trains, an extra
    parameter trains too: such models go through autograd (ModuleBatch)."""
    from bnstruct.training import ModuleBatch, StackedBatch, make_batch

    assert isinstance(make_batch([small(1)]), StackedBatch)
    frozen = small(1)
    frozen.layers[0].weight.requires_grad_(False)
    w0 = frozen.layers[0].weight.detach().clone()

    class Scaled(bn.MLP):
        def forward(self, x):
            return 0.1 * super().forward(x)

    class Extra(bn.MLP):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.scale = torch.nn.Parameter(torch.ones((), dtype=torch.float64))

        def forward(self, x):
            return self.scale * super().forward(x)

    scaled = Scaled(TASK.d_in, 8, 3, TASK.d_out, seed=1, dtype=torch.float64)
    extra = Extra(TASK.d_in, 8, 3, TASK.d_out, seed=1, dtype=torch.float64)
    for m in (frozen, scaled, extra):
        assert isinstance(make_batch([m]), ModuleBatch)
        r = bn.train(m, TASK, [bn.Stage("adam", 1e-2, 0.0, 50)], log_every=10,
                     progress=False)
        with torch.no_grad():
            fit = float((m(TASK.X) - TASK.Y).pow(2).sum(1).mean())
        assert r.final["fit"] == pytest.approx(fit, rel=1e-9)  # the model's own forward
    assert torch.equal(frozen.layers[0].weight, w0)
    assert float(extra.scale.detach()) != 1.0
