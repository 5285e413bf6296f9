import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in these tests may reach a hub
torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

# Small models on a shared CPU run fastest on one thread; more threads only contend.
torch.set_num_threads(1)
