"""Pure JAX numerical core: networks, flow-matching BC, the RBF kernel, the VGF transport and losses."""

from vgf.core.flow import flow_matching_loss, sample_flow
from vgf.core.kernel import median_bandwidth, pairwise_sq_distances, rbf_kernel, svgd_direction
from vgf.core.losses import critic_loss, expectile_loss, sql_loss
from vgf.core.networks import LAYER_NORM_ORDERS, MLP, CriticEnsemble, FlowVelocity
from vgf.core.transport import PARTICLE_OPTIMIZERS, aggregate_ensemble, select_particles, transport

__all__ = [
    "LAYER_NORM_ORDERS",
    "PARTICLE_OPTIMIZERS",
    "MLP",
    "CriticEnsemble",
    "FlowVelocity",
    "aggregate_ensemble",
    "critic_loss",
    "expectile_loss",
    "flow_matching_loss",
    "median_bandwidth",
    "pairwise_sq_distances",
    "rbf_kernel",
    "sample_flow",
    "select_particles",
    "sql_loss",
    "svgd_direction",
    "transport",
]
