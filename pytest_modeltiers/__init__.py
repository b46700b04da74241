"""pytest-modeltiers: five tiers of PyTorch model validation as pytest suites."""
