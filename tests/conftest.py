from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_model_config():
    """gb-tiny with the from-scratch hashing text tower: fast, and independent of MiniLM."""
    from geobridge.models import get_model_config

    config = get_model_config("gb-tiny")
    config.text.kind = "hashing"
    return config
