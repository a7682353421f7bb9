"""Package discovery (the rest of the metadata is in pyproject.toml).

Two folders at the repository's top install inside the package: ``kernels/`` as
``mtvision.kernels`` (the Triton kernels; nothing called ``kernels`` lands at the top of
site-packages, where Hugging Face's ``kernels`` package lives) and ``configs/`` as
``mtvision/configs`` (package data), so configs can be named from an installed package
(``mtvision train demo``) while the checkout keeps its paths. pyproject.toml alone cannot add
packages mapped from other folders to the discovered ones, hence this file.
"""

from setuptools import find_namespace_packages, find_packages, setup

# Every folder of configs/ becomes a data-only package under mtvision.configs.
CONFIGS = ["mtvision.configs",
           *(f"mtvision.configs.{name}" for name in find_namespace_packages("configs"))]

KERNELS = ["mtvision.kernels", *(f"mtvision.kernels.{p}" for p in find_packages("kernels"))]

setup(
    packages=[*find_packages(include=["mtvision*"]), *KERNELS, *CONFIGS],
    package_dir={"mtvision.configs": "configs", "mtvision.kernels": "kernels"},
    package_data={name: ["*.yaml", "*.yml"] for name in CONFIGS},
)
