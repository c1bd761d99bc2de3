"""Fixtures for evaluation tests."""
import pytest


@pytest.fixture(scope="session")
def demo_classifier_file(tmp_path_factory):
    from enat_lightning.demo.classifier import build_demo_classifier

    # one file per test session, shared with tests/commands and tests/callbacks (built if absent)
    return build_demo_classifier(tmp_path_factory.getbasetemp() / "shared_demo_classifier.pt", dataset="digits")
