"""The protocol record: count labels, and --compare refusing results scored under different protocols."""
import pytest

from enat_lightning.errors import UserError
from enat_lightning.evaluation.protocol import (compare_results, count_label, metric_label, metric_table,
                                                protocol_differences, protocol_record)


class _Net:
    name, num_features, predicts_labels = "inception-v3-2015-12-05:pool3-2048", 2048, False
    description = "test network"


def test_labels_carry_the_sample_count_never_rounded_up():
    assert [count_label(n) for n in (50_000, 5_000, 500, 12_345, 49_999)] == ["50K", "5K", "500", "12345", "49999"]
    assert metric_label("fid", 5_000) == "FID-5K" and metric_label("sfid", 50_000) == "sFID-50K"
    assert metric_label("accuracy", 500) == "Accuracy"


def result(**changes) -> dict:
    proto = protocol_record(num_samples=500, extractor=_Net(), metrics=("fid", "precision", "recall"), labels="x")
    proto.update(changes)
    return {"fid": 12.5, "precision": 0.7, "recall": 0.5, "protocol": proto,
            "subject": {"checkpoint": {"sha256": "aa"}, "seed": 0}}


def test_record_names_what_decides_the_number():
    p = protocol_record(num_samples=500, extractor=_Net(), metrics=("fid", "sfid", "is"), is_splits=10)
    assert p["resize"].startswith("TF1 resize_bilinear") and "floor" in p["uint8_conversion"]
    assert p["spatial_feature"].endswith("mixed_6-conv-7x17x17") and p["is_splits"] == 10
    assert p["precision_recall"] is None and p["metric_set"] == ["fid", "sfid", "is"]


def test_compare_side_by_side_when_protocols_match():
    a, b = result(), result()
    b["fid"], b["subject"] = 10.0, {"checkpoint": {"sha256": "bb"}, "seed": 0}
    table = compare_results(a, b, names=("a.json", "b.json"))
    assert "FID-500" in table and "12.5000" in table and "10.0000" in table
    assert "checkpoint.sha256" in table  # what differs between the subjects is shown
    assert "FID-500: 12.5000" in metric_table(a)


def test_compare_refuses_another_protocol_naming_the_field_unless_forced():
    a, b = result(), result(num_samples=5000)
    with pytest.raises(UserError, match=r"protocol\.num_samples is 500 in a\.json but 5000 in b\.json.*--force"):
        compare_results(a, b, names=("a.json", "b.json"))
    table = compare_results(a, b, names=("a.json", "b.json"), force=True)
    assert "FID (N=500 / 5000)" in table and "protocol.num_samples (differs)" in table
    c = result()
    c["protocol"]["reference"] = {"path": "/elsewhere/ref.npz", "sha256": "ff"}
    d = result()
    d["protocol"]["reference"] = {"path": "ref.npz", "sha256": "ff"}
    assert protocol_differences(c["protocol"], d["protocol"]) == []  # same file bytes, another place
    d["protocol"]["reference"]["sha256"] = "00"
    assert protocol_differences(c["protocol"], d["protocol"]) == ["reference.sha256"]
