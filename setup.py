"""Package discovery (the rest of the metadata is in pyproject.toml).

The repository's ``configs/`` folder ships inside the wheel as ``mtvision/configs`` (package
data), so configs can be named from an installed package (``mtvision train demo``) while the
checkout keeps its ``configs/`` paths. pyproject.toml alone cannot add a package mapped from
another folder to the discovered ones, hence this file.
"""

from setuptools import find_namespace_packages, find_packages, setup

# Every folder of configs/ becomes a data-only package under mtvision.configs.
CONFIGS = ["mtvision.configs",
           *(f"mtvision.configs.{name}" for name in find_namespace_packages("configs"))]

setup(
    packages=[*find_packages(include=["mtvision*", "kernels*"]), *CONFIGS],
    package_dir={"mtvision.configs": "configs"},
    package_data={name: ["*.yaml", "*.yml"] for name in CONFIGS},
)
