"""The README's "analyze any PyTorch model" examples, run as written (issue 13)."""

import torch
from torch import nn

import bnstruct as bn


def _digits(n: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    d = load_digits()
    X = torch.tensor(d.data[:n] / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    return X, torch.tensor(d.target[:n])


def test_example_small_cnn_trained_on_digits():
    # --- README example: a small CNN trained on scikit-learn's 8x8 digits ---
    torch.manual_seed(0)
    X, y = _digits()
    cnn = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # 8 x 4 x 4
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 16 x 2 x 2
        nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    opt = torch.optim.Adam(cnn.parameters(), lr=2e-2, weight_decay=1e-4)
    for _ in range(60):
        opt.zero_grad()
        nn.functional.cross_entropy(cnn(X), y).backward()
        opt.step()
    a = bn.analyze(cnn, X)              # float64, model.eval() during the measurements
    print(a.layers[["name", "n_out", "n_in", "s1", "s2", "gap_rank"]])
    print(a.representations[["name", "shape", "rep_energy_rank", "chan_rank_numerical",
                             "jac_rank"]])
    print(a.summary["bottleneck_rank"], a.summary["bottleneck_rank_method"])
    # ---
    acc = (cnn(X).argmax(1) == y).float().mean()
    assert acc > 0.8
    reps = a.representations
    assert list(reps["name"]) == ["1", "4", "8", "output"]
    assert a.summary["implementation"] == "autodiff"
    k, _ = bn.conventions.bottleneck_rank(a.weight_spectra,
                                          jacobian_rank=a.summary["jacobian_rank"])
    assert a.summary["bottleneck_rank"] == min(k, 10)  # one definition, capped at d_out
    assert a.summary["ntk_max_eig"] > 0 and reps["rep_energy_rank"].iloc[-1] <= 10


class Block(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.l1, self.act, self.l2 = nn.Linear(d, d), nn.ReLU(), nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.l2(self.act(self.l1(x)))


class Net(nn.Module):
    """A custom forward over nested containers."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(20, 32), nn.GELU(), nn.Dropout(0.1))
        self.blocks = nn.ModuleList([Block(32) for _ in range(3)])
        self.head = nn.Linear(32, 20)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)
        for b in self.blocks:
            h = b(h)
        return self.head(h), h          # prediction and features


def test_example_residual_gelu_dropout_custom_forward():
    # --- README example: your own module (residual blocks, GELU, dropout, a tuple output) ---
    task = bn.make_task("composite", n_train=128, seed=0)
    net = Net()
    a = bn.analyze(net, task.X, output=0, layers=["encoder.1", "blocks.0", "blocks.1",
                                                  "blocks.2", "head"])
    print(a.representations[["name", "rep_energy_rank", "rep_erank_participation"]])
    print(a.summary["theory"])          # why the bound and balancedness are null here
    # ---
    assert list(a.representations["name"]) == ["encoder.1", "blocks.0", "blocks.1",
                                               "blocks.2", "head"]
    assert net.training                 # the user's mode is restored
    assert a.summary["bound_slack_min"] is None and "homogeneous chain" in a.summary["theory"]
