"""One training engine: a run's weights are the same bits whichever path trains it.

The configuration is chaotic: 3000 steps of the default recipe (the penalty switches on after
500), where a one-ulp change of one initial weight moves the final weights by 1% (float64)
to 20% (float32) of their norm (checked below, so the equality tests can fail). Against it:
``bnstruct.train`` in memory, ``bnstruct.run`` into a store, batches of several sizes with
the run at several rows (its neighbours with other seeds, ``lr`` and ``lam``), the local
executor's training thread and a worker process, and a Ray task.
"""

import pytest
import torch

import bnstruct as bn
from bnstruct.executors import LocalExecutor, RayExecutor, execute, train_group

DTYPES = ["float32", "float64"]


def cfg(dtype, seed=5, depth=8, lam=0.005, lr=1.5e-3):
    return bn.RunConfig(task=bn.TaskSpec("composite", (("n_test", 32), ("n_train", 128))),
                        model=bn.ModelSpec("mlp", 32, depth),
                        stages=bn.default_recipe(lam=lam, steps=3000, lr=lr), seed=seed,
                        dtype=dtype, log_every=500, checkpoint_every=None, device="cpu")


def weights(path):
    return (path / "weights.safetensors").read_bytes()


@pytest.fixture(scope="module")
def alone(tmp_path_factory):
    """The reference: ``bnstruct.run`` of the config into a store, per dtype."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    store = tmp_path_factory.mktemp("alone")
    out = {d: weights(bn.run(cfg(d), store, progress=False).path) for d in DTYPES}
    torch.set_num_threads(n)
    return out


pytestmark = pytest.mark.usefixtures("one_thread")


def _flat(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_config_is_chaotic(dtype):
    """A one-ulp change of one initial weight changes the final weights by more than 1e-3
    of their norm: a path that rounds differently anywhere cannot pass the tests below."""
    c = cfg(dtype)
    task = c.task.build()
    a, b = (c.model.build(task.d_in, task.d_out, seed=5, dtype=getattr(torch, dtype),
                          device="cpu") for _ in range(2))
    with torch.no_grad():
        w = b.layers[3].weight
        w[0, 0] = torch.nextafter(w[0, 0], torch.tensor(float("inf"), dtype=w.dtype))
    for m in (a, b):
        bn.train(m, task, c.stages, seed=5, log_every=500, progress=False)
    pa, pb = _flat(a), _flat(b)
    assert float((pa - pb).norm() / pa.norm()) > 1e-3


@pytest.mark.parametrize("dtype", DTYPES)
def test_train_in_memory(alone, dtype, tmp_path):
    """``bnstruct.train`` on the built model gives the stored run's weights."""
    from safetensors.torch import save

    c = cfg(dtype)
    task = c.task.build()
    m = c.model.build(task.d_in, task.d_out, seed=5, dtype=getattr(torch, dtype), device="cpu")
    bn.train(m, task, c.stages, seed=5, log_every=500, progress=False)
    assert save({k: v.contiguous() for k, v in m.state_dict().items()}) == alone[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size,row", [(3, 0), (5, 4)])
def test_any_batch_any_row(alone, dtype, size, row):
    """In a batch of ``size`` at row ``row``, next to networks with other seeds, learning
    rates and penalties."""
    others = iter([cfg(dtype, seed=100 + i, lam=0.002 * (i + 1), lr=1e-3 * (1 + i / 4))
                   for i in range(size)])
    batch = [cfg(dtype) if i == row else next(others) for i in range(size)]
    results = train_group(batch)
    assert results[row].weights == alone[dtype]
    assert len({r.weights for r in results}) == size  # the neighbours really differ


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_local_executor_thread_and_worker_process(alone, dtype, tmp_path):
    """Two batches on two workers: the longer one (depth 12) starts first, on this
    process's training thread, the other on a worker process; then the reverse."""
    for other_depth, tag in ((12, "worker process"), (4, "training thread")):
        store = tmp_path / tag.replace(" ", "-")
        runs = execute([cfg(dtype, depth=other_depth, seed=1), cfg(dtype)], store,
                       executor=LocalExecutor(workers=2))
        assert weights(runs[1].path) == alone[dtype], tag


def test_ray(alone, tmp_path):
    ray = pytest.importorskip("ray")
    import logging

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             logging_level=logging.WARNING)
    try:
        runs = execute([cfg(d) for d in DTYPES], tmp_path, executor=RayExecutor())
    finally:
        ray.shutdown()
    for d, r in zip(DTYPES, runs, strict=True):
        assert weights(r.path) == alone[d], d


def test_a_moved_store_keeps_working(tmp_path):
    """The index keeps paths relative to the store's root: a store copied elsewhere is
    listed, loaded and reused there (nothing retrained)."""
    import shutil

    c = bn.RunConfig(task=bn.TaskSpec("composite", (("n_test", 16), ("n_train", 32))),
                     model=bn.ModelSpec("mlp", 4, 2), stages=bn.default_recipe(steps=30),
                     log_every=10, device="cpu")
    (r,) = execute([c], tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "a")
    idx = bn.runs(tmp_path / "b")
    assert list(idx["path"]) == [str((tmp_path / "b" / r.path.name).resolve())]
    back = bn.load_run(idx["path"][0])
    assert back.status == "completed"
    before = weights(tmp_path / "b" / r.path.name)
    (again,) = execute([c], tmp_path / "b")
    assert again.path == tmp_path / "b" / r.path.name and weights(again.path) == before
