"""XLA:CPU runs a convolution's backward pass much slower inside a while loop (lax.scan) than outside one.

Two 3x3 convolutions (64 -> 64 channels, 28x28, batch 64) with a tanh between them: the forward pass and
its parameter gradient, each jit'd on its own and inside a length-1 lax.scan. On the project's 2-core CPU
(jax 0.10.2, 2026-12-04) the gradient took ~280 ms plain and ~14,100 ms inside the scan, the forward pass
~38 ms either way; --xla_cpu_use_thunk_runtime=false changed nothing. That is why the trainer's
the trainer calls one compiled step per step for image data on CPU (dsm_jax/platform.py: chunk_mode).

    python benchmarks/bench_conv_in_loop.py
"""
import os
import time

import jax
import jax.numpy as jnp


def conv(x, k):
  return jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def main(reps: int = 3):
  k = jax.random.normal(jax.random.PRNGKey(0), (3, 3, 64, 64)) * 0.05
  x = jax.random.normal(jax.random.PRNGKey(1), (64, 28, 28, 64))
  loss = lambda k, x: jnp.sum(conv(jnp.tanh(conv(x, k)), k) ** 2)
  grad = jax.grad(loss)
  in_scan = lambda f: (lambda k, x: jax.lax.scan(lambda c, _: (f(c, x), None), k, None, length=1)[0])
  cases = {
      "grad, plain jit": jax.jit(grad),
      "grad, inside lax.scan": jax.jit(in_scan(lambda c, x: c + 0 * grad(c, x))),
      "forward, plain jit": jax.jit(lambda k, x: conv(x, k)),
      "forward, inside lax.scan": jax.jit(lambda k, x: jax.lax.scan(lambda c, _: (conv(c, k), None), x, None,
                                                                    length=1)[0]),
  }
  print(f"# jax {jax.__version__}, {jax.default_backend()}, XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
  for name, fn in cases.items():
    jax.block_until_ready(fn(k, x))
    tic = time.perf_counter()
    for _ in range(reps):
      jax.block_until_ready(fn(k, x))
    print(f"{name}: {(time.perf_counter() - tic) / reps * 1e3:.1f} ms")


if __name__ == "__main__":
  main()
