import pytest
import torch

from enat_lightning.evaluation.features import (INCEPTION_FILE, InceptionV3Features, check_uint8_images,
                                                load_feature_extractor, to_uint8)
from enat_lightning.sampling.io import to_uint8 as io_to_uint8


def test_missing_inception_weights_names_path_and_origin(tmp_path):
    missing = tmp_path / "weights" / INCEPTION_FILE
    with pytest.raises(FileNotFoundError) as e:
        InceptionV3Features(missing)
    msg = str(e.value)
    assert str(missing) in msg and "pytorch-fid" in msg and "torch-fidelity" in msg
    assert "nothing is downloaded" in msg
    with pytest.raises(FileNotFoundError, match="weights"):
        load_feature_extractor(f"inception:{missing}")


def test_inception_loads_the_local_file(tmp_path, monkeypatch):
    """The network's weights are exactly the file at the given path (skipped without torch-fidelity,
    which needs a torchvision build matching torch; see the README)."""
    pytest.importorskip("torch_fidelity")
    from torchmetrics.image.fid import NoTrainInceptionV3

    # 1. the module layout with random init: construct once with load_state_dict disabled
    empty = tmp_path / "empty.pth"
    torch.save({}, empty)
    with monkeypatch.context() as m:
        m.setattr(NoTrainInceptionV3, "load_state_dict", lambda self, sd, strict=True: None)
        layout = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"],
                                    feature_extractor_weights_path=str(empty)).state_dict()
    path = tmp_path / INCEPTION_FILE
    torch.save(layout, path)
    # 2. our extractor loads that file (strictly) and computes pool3 + logits
    ex = InceptionV3Features(path)
    for k, v in ex.net.state_dict().items():
        assert torch.equal(v, layout[k]), k
    out = ex(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8))
    assert out.features.shape == (2, 2048) and out.logits.shape == (2, 1008)


def test_uint8_conversion_matches_sample_writer():
    x = torch.tensor([-0.2, 0.0, 0.5 / 255, 1.5 / 255, 0.5, 1.0, 1.3]).view(1, 1, 1, 7).expand(1, 3, 1, 7)
    ours = to_uint8(x)
    assert ours.dtype == torch.uint8
    assert torch.equal(ours.permute(0, 2, 3, 1), torch.from_numpy(io_to_uint8(x)))
    assert ours[0, 0, 0].tolist() == [0, 0, 1, 2, 128, 255, 255]


def test_extractors_reject_float_images():
    with pytest.raises(ValueError, match="uint8"):
        check_uint8_images(torch.rand(1, 3, 8, 8))


def test_unknown_feature_spec():
    with pytest.raises(ValueError, match="unknown feature network 'clip'"):
        load_feature_extractor("clip")


def test_evaluation_and_analysis_import_no_lightning():
    import subprocess
    import sys

    code = ("import sys, enat_lightning.evaluation, enat_lightning.evaluation.reference, "
            "enat_lightning.evaluation.frechet, enat_lightning.evaluation.flops; "
            "assert 'lightning' not in sys.modules and 'lightning.pytorch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_low_packages_never_import_the_demo():
    """The demo sits above tokenizers/, data/, evaluation/, callbacks/, models/, sampling/: none of their
    modules imports enat_lightning.demo (the demo classifier registers itself in the evaluation registries from
    above, so evaluation.features -> classifier is never an import and no cycle is possible)."""
    import ast
    from pathlib import Path

    import enat_lightning

    root = Path(enat_lightning.__file__).parent

    def imports(path: Path) -> set[str]:
        out = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                out |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                base = node.module if node.level == 0 else ".".join(
                    [*path.relative_to(root.parent).with_suffix("").parts[:-node.level], node.module])
                out.add(base)
        return out

    for pkg in ("tokenizers", "data", "evaluation", "callbacks", "models", "sampling"):
        for path in (root / pkg).rglob("*.py"):
            bad = sorted(m for m in imports(path) if m.startswith("enat_lightning.demo"))
            assert not bad, f"{path.relative_to(root)} imports {bad}"
    classifier = imports(root / "demo" / "classifier.py")
    assert "enat_lightning.evaluation.extractors" in classifier


def test_the_demo_feature_network_is_registered_from_above():
    """evaluation/ holds registries, not "module:function" strings; importing the demo classifier fills them."""
    import subprocess
    import sys

    code = ("import enat_lightning.evaluation.features as f, enat_lightning.evaluation.reference as r; "
            "assert 'demo' not in f.FEATURE_NETWORKS and 'demo' not in r.REFERENCES; "
            "import enat_lightning.demo.classifier as c; "
            "assert f.FEATURE_NETWORKS['demo'] is c.load_demo_features and r.REFERENCES['demo'] is c.demo_reference_stats")
    subprocess.run([sys.executable, "-c", code], check=True)
