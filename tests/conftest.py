import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def randomize_(module: torch.nn.Module, std: float = 0.2) -> torch.nn.Module:
    """Give every parameter and BN buffer non-trivial values (zero-init would hide bugs)."""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, std)
        for name, b in module.named_buffers():
            if name.endswith("running_var"):
                b.uniform_(0.5, 2.0)
            elif name.endswith("running_mean"):
                b.normal_(0, 0.5)
    return module
