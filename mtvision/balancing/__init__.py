"""Ways of combining task losses: one file per family, registered by name in ``BALANCERS``."""

from mtvision.balancing import (  # noqa: F401 - registers them
    aligned_mtl,
    cagrad,
    db_mtl,
    dwa,
    famo,
    gls,
    graddrop,
    gradnorm,
    gradvac,
    imtl,
    mgda,
    nash_mtl,
    pcgrad,
    rlw,
    uncertainty,
    upgrad,
)
from mtvision.balancing.base import Balancer
from mtvision.balancing.fixed import FixedWeights
from mtvision.balancing.functional import aggregate
from mtvision.balancing.gradient import GradientBalancer
from mtvision.registry import BALANCERS


def build_balancer(cfg: dict, tasks: list[str]) -> Balancer:
    """Build from the ``balancer`` config section for the model's ``tasks``."""
    return BALANCERS.build(cfg, "balancer", tasks=tasks)


__all__ = ["Balancer", "FixedWeights", "GradientBalancer", "aggregate", "build_balancer"]
