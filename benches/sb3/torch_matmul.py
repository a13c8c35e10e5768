"""torch's f32 matrix-product rate on one thread, for the README's comparison
with klrl's kernels (`cargo bench -p klrl-policy --bench policy -- gemm_peak`
times the same two products). Run with the comparison's environment:

    benches/sb3/.venv/bin/python benches/sb3/torch_matmul.py
"""

import time

import torch

torch.set_num_threads(1)
for m, n, k, reps in [(1024, 1024, 1024, 20), (64, 256, 256, 20000)]:
    a, b = torch.randn(m, k), torch.randn(k, n)
    for _ in range(3):
        a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    dt = (time.perf_counter() - t) / reps
    print(f"{m}x{k}x{n} f32, 1 thread: {dt * 1e6:.1f} us, {2 * m * n * k / dt / 1e9:.0f} GFLOP/s")
print(f"torch {torch.__version__}")
