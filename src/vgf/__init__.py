"""Value Gradient Flow: behavior-regularized RL by transporting reference samples along the critic's gradient."""

__version__ = "0.1.0"
