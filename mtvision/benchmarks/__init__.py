"""Benchmarks behind ``tools/benchmark.py``, one module per subcommand.

    kernels     the fused Triton losses of ``kernels/`` against the plain-PyTorch losses
    balancing   one training step with each balancing method against equal weighting
"""
