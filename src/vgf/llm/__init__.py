"""VGF for language models (PyTorch + Transformers; install with the `[llm]` extra).

Samples of a reference causal LM are transported in the reward model's input-embedding space by the same
SVGD step as `vgf.core` (mirrored in `vgf.llm.transport`), projected back to tokens among the reference's
top-k, re-scored and selected (`vgf.llm.decode`); `vgf.llm.finetune` distils the transported samples into
a new model. Nothing in the rest of vgf imports this package, and importing it (or `vgf.llm.cli`, which
the `vgf` command registers) loads PyTorch only when one of the names below is first used.
"""

import importlib

_EXPORTS = {
    "DecodeConfig": "decode", "Decoded": "decode", "best_of_n": "decode", "vgf_decode": "decode",
    "FinetuneConfig": "finetune", "SupervisedConfig": "finetune", "vgf_finetune": "finetune",
    "BradleyTerryConfig": "reward", "EmbeddingReward": "reward", "PreferencePair": "reward",
    "load_reward_model": "reward", "train_bradley_terry": "reward",
    "load_causal_lm": "sampler",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'vgf.llm' has no attribute {name!r}")
    return getattr(importlib.import_module(f"vgf.llm.{_EXPORTS[name]}"), name)
