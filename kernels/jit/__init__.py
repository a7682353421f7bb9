"""The ``@triton.jit`` kernels, one module per kernel family of ``kernels``.

Importing any module here imports Triton (and fixes, from ``TRITON_INTERPRET``, whether its
kernels are compiled or interpreted), so only the launch paths import them, through
``kernels._common.jit_module``: ``import kernels`` works where Triton is not installed.
"""
