"""Our VGF against golden figures computed by the authors' reference code (tests/fidelity/reference/README.md).

Every shape and setting is read from the files: a set regenerated with other shapes and settings must pass as is.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vgf.agents import vgf
from vgf.core import CriticEnsemble, FlowVelocity, aggregate_ensemble, sample_flow, svgd_direction, transport

REFERENCE = Path(__file__).parent / "reference"
ONE_STEP = dict(rtol=1e-5, atol=1e-5)  # float32, one step
SEVERAL_STEPS = dict(rtol=1e-4, atol=1e-4)  # float32, after several Adam steps


def load(name: str) -> dict[str, np.ndarray]:
    with np.load(REFERENCE / f"{name}.npz") as archive:
        return {key: archive[key] for key in archive.files}


def layer_params(arrays: dict, prefix: str) -> dict:
    """{layer: {param: array}} from keys `<prefix>/<layer>/<param>`."""
    layers: dict = {}
    for key, value in arrays.items():
        if key.startswith(prefix + "/"):
            layer, param = key[len(prefix) + 1 :].split("/")
            layers.setdefault(layer, {})[param] = jnp.asarray(value)
    return layers


def hidden_dims(layers: dict) -> tuple[int, ...]:
    """Widths of the hidden Dense layers (all but the last)."""
    dense = sorted((name for name in layers if name.startswith("Dense_")), key=lambda name: int(name.split("_")[1]))
    return tuple(int(layers[name]["bias"].shape[-1]) for name in dense[:-1])


def critic_params(arrays: dict) -> tuple[tuple[int, ...], dict]:
    """The reference critic's stacked ensemble [E, ...] as our CriticEnsemble's per-member parameters."""
    layers = layer_params(arrays, "critic/value_net")
    members = next(iter(layers["Dense_0"].values())).shape[0]
    params = {
        f"member_{e}": {layer: {name: value[e] for name, value in ps.items()} for layer, ps in layers.items()}
        for e in range(members)
    }
    return hidden_dims({k: {n: v[0] for n, v in ps.items()} for k, ps in layers.items()}), {"params": params}


def flow_params(arrays: dict) -> tuple[tuple[int, ...], dict]:
    layers = layer_params(arrays, "flow/mlp")
    return hidden_dims(layers), {"params": {"MLP_0": layers}}


def analytic_score(data: dict, agg: str):
    """grad_a of the members' `agg` of Q_e(s, a) = -w_e ||a - tanh(s W_e)||^2, for particles [B, N, A]."""
    centres = jnp.tanh(jnp.einsum("bd,eda->eba", data["obs"], data["W"]))[:, :, None, :]  # [E, B, 1, A]
    weights = jnp.asarray(data["w"])[:, None, None]

    def total_value(particles):
        q = -weights * jnp.sum((particles[None] - centres) ** 2, axis=-1)  # [E, B, N]
        return aggregate_ensemble(q, agg).sum()

    return jax.grad(total_value)


TRANSPORT = load("transport")
CASES = [tuple(case.split(",")) for case in TRANSPORT["cases"]]


@pytest.mark.parametrize("index", range(len(CASES)), ids=[",".join(case) for case in CASES])
def test_transport_matches_reference(index):
    agg, vgf_lr, alpha, steps = CASES[index]
    vgf_lr, alpha, steps = float(vgf_lr), float(alpha), int(steps)
    score = analytic_score(TRANSPORT, agg)
    x0 = jnp.asarray(TRANSPORT["x0"])

    phi = svgd_direction(x0, score(x0), alpha)
    np.testing.assert_allclose(phi, TRANSPORT[f"case{index}_phi_first_step"], **ONE_STEP)

    moved = transport(score, x0, steps, optax.adam(vgf_lr), alpha)
    np.testing.assert_allclose(moved, TRANSPORT[f"case{index}_out"], **SEVERAL_STEPS)


def test_textbook_bandwidth_is_a_different_transport():
    """Stopping the bandwidth gradient (textbook SVGD) must not reproduce the reference: the option is real."""
    agg, _, alpha, _ = CASES[0]
    score = analytic_score(TRANSPORT, agg)
    x0 = jnp.asarray(TRANSPORT["x0"])
    textbook = svgd_direction(x0, score(x0), float(alpha), bandwidth_gradient=False)
    assert np.abs(np.asarray(textbook) - TRANSPORT["case0_phi_first_step"]).max() > 1e-2


CRITIC = load("critic")


def test_critic_values_and_gradients_match_reference():
    dims, params = critic_params(CRITIC)
    members = len(params["params"])
    critic = CriticEnsemble(dims, members, layer_norm=True, layer_norm_order="pre")
    obs, actions = jnp.asarray(CRITIC["obs"]), jnp.asarray(CRITIC["actions"])
    np.testing.assert_allclose(critic.apply(params, obs, actions), CRITIC["q"], **ONE_STEP)
    for agg in ("mean", "min"):
        grad = jax.grad(lambda a, agg=agg: aggregate_ensemble(critic.apply(params, obs, a), agg).sum())(actions)
        np.testing.assert_allclose(grad, CRITIC[f"grad_{agg}"], **ONE_STEP)


def test_critic_layer_norm_after_activation_differs():
    """The FQL order (LayerNorm after ReLU) is a different network on the same weights."""
    dims, params = critic_params(CRITIC)
    critic = CriticEnsemble(dims, len(params["params"]), layer_norm=True, layer_norm_order="post")
    q = critic.apply(params, jnp.asarray(CRITIC["obs"]), jnp.asarray(CRITIC["actions"]))
    assert np.abs(np.asarray(q) - CRITIC["q"]).max() > 1e-2


FLOW = load("flow")
FLOW_STEPS = sorted(int(m.group(1)) for key in FLOW if (m := re.fullmatch(r"samples_(\d+)steps", key)))


@pytest.mark.parametrize("steps", FLOW_STEPS)
def test_flow_samples_match_reference(steps):
    dims, params = flow_params(FLOW)
    noise = jnp.asarray(FLOW["noise"])
    flow = FlowVelocity(dims, noise.shape[-1])
    observations = jnp.repeat(jnp.asarray(FLOW["obs"])[:, None, :], noise.shape[1], axis=1)
    samples = sample_flow(lambda o, x, t: flow.apply(params, o, x, t), observations, noise, steps)
    np.testing.assert_allclose(samples, FLOW[f"samples_{steps}steps"], **SEVERAL_STEPS)


ACT = load("act")
ACT_SETTINGS = sorted(
    (m.group(1), m.group(2), int(m.group(3)))
    for key in ACT
    if (m := re.fullmatch(r"transport_(mean|min)_select_(mean|min)_budget(\d+)", key))
)


def reference_agent(transport_q_agg: str, select_q_agg: str) -> vgf.VGFAgent:
    """A VGF agent with the golden critic and flow weights and the acting settings stored beside them."""
    dims, critic = critic_params(CRITIC)
    flow_dims, flow = flow_params(FLOW)
    assert flow_dims == dims, "the golden critic and flow must share hidden sizes"
    noise = ACT["noise"]
    config = dataclasses.replace(
        vgf.PRESETS["paper"],
        hidden_dims=dims,
        ensemble_size=len(critic["params"]),
        num_particles=noise.shape[1],
        bc_flow_steps=int(ACT["flow_steps"]),
        vgf_lr=float(ACT["vgf_lr"]),
        vgf_alpha=float(ACT["vgf_alpha"]),
        transport_q_agg=transport_q_agg,
        select_q_agg=select_q_agg,
        eval_particle_select="max",
    )
    agent = vgf.create(config, ACT["obs"].shape[-1], noise.shape[-1])
    return agent.replace(critic=agent.critic.replace(params=critic), flow=agent.flow.replace(params=flow))


@pytest.mark.parametrize("setting", ACT_SETTINGS, ids=[f"transport_{t}-select_{s}-budget{b}" for t, s, b in ACT_SETTINGS])
def test_acting_end_to_end_matches_reference(setting):
    transport_q_agg, select_q_agg, budget = setting
    agent = reference_agent(transport_q_agg, select_q_agg)
    obs = jnp.asarray(ACT["obs"])
    reference = agent.reference_from_noise(obs, jnp.asarray(ACT["noise"]))
    actions, _ = agent.act_from_reference(obs, reference, jax.random.PRNGKey(0), max_steps=budget)

    name = f"transport_{transport_q_agg}_select_{select_q_agg}_budget{budget}"
    np.testing.assert_allclose(actions, ACT[name], **SEVERAL_STEPS)
    particles = agent.transport(obs, reference, budget)
    values = aggregate_ensemble(agent.q_values(obs[:, None, :], particles), select_q_agg)
    np.testing.assert_array_equal(np.argmax(values, axis=-1), ACT[name + "_index"])
