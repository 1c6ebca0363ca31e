import pytest
import torch

from repel import data


@pytest.fixture(scope="session")
def digits():
    """The default offline dataset, prepared once for the whole test session."""
    return data.prepare("digits", "unused", val_fraction=0.1, test_fraction=0.2, seed=0)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # CI has 2 cores; tests are small
