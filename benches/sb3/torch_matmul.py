"""torch's f32 matrix-product rate on one thread, for the README's comparison
with klrl's kernels. Run with the comparison's environment:

    benches/sb3/.venv/bin/python benches/sb3/torch_matmul.py

`cargo bench -p klrl-policy --bench policy -- "gemm_peak|zoo_step_products"`
times the same products with klrl's kernels: two large ones (the machine's
practical peak), and one PPO-zoo minibatch step's products at their own
shapes (two 4-64-64 tanh networks with 2 and 1 outputs, 256 rows: each
network's forward pass h Wᵀ, then from the head down ∂W = δᵀ h, ∂b = 1ᵀ δ
and δ W; 13.535 MFLOP, see the bench's doc comment).
"""

import time

import torch

torch.set_num_threads(1)


def rate(label, flop, reps, fn):
    for _ in range(max(3, reps // 100)):
        fn()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    dt = (time.perf_counter() - t) / reps
    print(f"{label}, 1 thread: {dt * 1e6:.1f} us, {flop / dt / 1e9:.0f} GFLOP/s")


for m, n, k, reps in [(1024, 1024, 1024, 20), (64, 256, 256, 20000)]:
    a, b = torch.randn(m, k), torch.randn(k, n)
    rate(f"{m}x{k}x{n} f32", 2 * m * n * k, reps, lambda: a @ b)

N = 256


def net(out):
    return {
        "x": torch.randn(N, 4),
        "h1": torch.randn(N, 64),
        "h2": torch.randn(N, 64),
        "w": [torch.randn(64, 4), torch.randn(64, 64), torch.randn(out, 64)],
        "delta": [torch.randn(N, 64), torch.randn(N, 64), torch.randn(N, out)],
    }


nets = [net(2), net(1)]
ones = torch.ones(1, N)


def step(every=True):
    """every=False: only the three 256x64x64 products per network."""
    for q in nets:
        w, d = q["w"], q["delta"]
        if every:
            q["x"] @ w[0].t()
        q["h1"] @ w[1].t()
        if every:
            q["h2"] @ w[2].t()
            d[2].t() @ q["h2"]
            ones @ d[2]
            d[2] @ w[2]
        d[1].t() @ q["h1"]
        if every:
            ones @ d[1]
        d[1] @ w[1]
        if every:
            d[0].t() @ q["x"]
            ones @ d[0]


flop = sum(2 * N * (3 * 64 * 64 + 2 * 4 * 64 + 2 * 64 + o * (3 * 64 + 1)) for o in (2, 1))
assert flop == 13_534_720
rate("PPO-zoo step's products (13.535 MFLOP)", flop, 5000, step)
rate("the six 256x64x64 products only (12.583 MFLOP)", 6 * 2 * N * 64 * 64, 5000, lambda: step(False))
print(f"torch {torch.__version__}")
