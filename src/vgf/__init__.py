"""Value Gradient Flow: behavior-regularized RL by transporting reference samples along the critic's gradient.

`vgf.fit(dataset, ...)` trains into a run directory and `vgf.load_policy(run_dir)` returns a NumPy policy
(`vgf.api`); they are imported on first use, so `import vgf` stays light.
"""

__version__ = "0.1.0"

_API = ("Policy", "fit", "load_policy")


def __getattr__(name: str):
    if name in _API:
        from vgf import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
