"""The source checkpoint that the engine's fine-tune tests start from (pre-trained once per module).

With TRANSFERLAB_TEST_DEVICE=cuda the training tests run on the GPU, with PyTorch's deterministic
algorithms on: the tests compare weights bit for bit, which cuDNN's fastest kernels do not promise.
"""

import os

import pytest
import torch

from tests.engine.training_helpers import DEVICE, pretrain

if DEVICE.startswith("cuda"):
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False


@pytest.fixture(scope="module")
def source(tiny_data_root, tmp_path_factory):
    return pretrain(tiny_data_root, tmp_path_factory.mktemp("source"))
