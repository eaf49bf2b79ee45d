"""The source checkpoint that the engine's fine-tune tests start from (pre-trained once per module)."""

import pytest

from tests.engine.training_helpers import pretrain


@pytest.fixture(scope="module")
def source(tiny_data_root, tmp_path_factory):
    return pretrain(tiny_data_root, tmp_path_factory.mktemp("source"))
