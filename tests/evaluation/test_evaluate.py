import json

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from enat_lightning.evaluation.frechet import frechet_distance, stats_from_features
from enat_lightning.evaluation import (SamplerSettings, evaluate, gather_rows, generate_images, load_samples,
                                       sample_labels, score_images)
from enat_lightning.evaluation.evaluate import my_chunks

from eval_helpers import PaletteTokenizer, ProjectionFeatures, tiny_model

SETTINGS = SamplerSettings(steps=3, cfg_scale=1.0, mask_temp=1.0, samp_temp=1.0)


def reference():
    feats = torch.randn(40, 6, generator=torch.Generator().manual_seed(5), dtype=torch.float64) * 0.3
    return stats_from_features(feats, "toy-projection")


def run_eval(**kw):
    return evaluate(tiny_model(), PaletteTokenizer(), ProjectionFeatures(), num_samples=10, ref=reference(),
                    settings=SETTINGS, seed=3, batch_size=3, is_splits=2, **kw)


def test_labels_balanced_and_random():
    assert sample_labels(7, 3).tolist() == [0, 1, 2, 0, 1, 2, 0]
    r = sample_labels(50, 4, per_class_balanced=False, seed=1)
    assert torch.equal(r, sample_labels(50, 4, per_class_balanced=False, seed=1)) and set(r.tolist()) <= {0, 1, 2, 3}
    with pytest.raises(ValueError, match="num_samples"):
        sample_labels(0, 3)


def test_chunks_partition_the_samples():
    for world in (1, 2, 3, 5):
        rows = sorted(i for r in range(world) for _, a, b in my_chunks(10, 3, r, world) for i in range(a, b))
        assert rows == list(range(10))


def test_evaluate_single_process_matches_manual_pipeline():
    res = run_eval(return_samples=True)
    assert res["num_samples"] == 10 and res["sampler"]["steps"] == 3 and res["world_size"] == 1
    images, labels = res["images"], res["labels"]
    assert images.dtype == torch.uint8 and images.shape == (10, 3, 8, 8)
    assert labels.tolist() == [i % 5 for i in range(10)]
    f = ProjectionFeatures()(images)
    st = stats_from_features(f.features)
    ref = reference()
    assert res["fid"] == pytest.approx(frechet_distance(st.mu, st.sigma, ref.mu, ref.sigma), rel=1e-12)
    acc = float((f.logits.argmax(1) == labels).double().mean())
    assert res["accuracy"] == pytest.approx(acc)
    # Deterministic: same seed, same numbers; another seed, other samples.
    assert run_eval()["fid"] == res["fid"]
    other = evaluate(tiny_model(), PaletteTokenizer(), ProjectionFeatures(), num_samples=10, ref=reference(),
                     settings=SETTINGS, seed=4, batch_size=3, is_splits=2)
    assert other["fid"] != res["fid"]


def test_batch_size_changes_nothing_but_seeds_per_chunk():
    # Sample i always draws from sample_seed(seed, i) with the same label, whatever the rank layout.
    idx_a, img_a = generate_images(tiny_model(), PaletteTokenizer(), sample_labels(10, 5), SETTINGS, seed=3,
                                   batch_size=3, rank=0, world_size=2)
    idx_b, img_b = generate_images(tiny_model(), PaletteTokenizer(), sample_labels(10, 5), SETTINGS, seed=3,
                                   batch_size=3, rank=0, world_size=1)
    assert idx_a.tolist() == [0, 1, 2, 6, 7, 8]
    assert torch.equal(img_a, img_b[idx_a])


def test_reference_of_another_network_is_refused():
    ref = stats_from_features(torch.randn(20, 6, dtype=torch.float64), "inception-v3-2015-12-05:pool3-2048")
    with pytest.raises(ValueError, match="inception-v3"):
        evaluate(tiny_model(), PaletteTokenizer(), ProjectionFeatures(), num_samples=4, ref=ref, settings=SETTINGS)


def _worker(rank: int, world: int, init_file: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        res = run_eval(return_samples=True)
        feats = gather_rows(torch.full((rank + 1, 2), float(rank)), torch.arange(rank * 1, rank * 1 + rank + 1), 3)
        with open(f"{out}.{rank}", "w") as f:
            json.dump({k: v for k, v in res.items() if k not in ("images", "labels")} |
                      {"images_sum": int(res["images"].long().sum()), "gathered": feats.tolist()}, f)
    finally:
        dist.destroy_process_group()


def test_two_process_evaluation_equals_single_process(tmp_path):
    single = run_eval(return_samples=True)
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path / "res")), nprocs=2, join=True)
    for rank in (0, 1):
        multi = json.loads((tmp_path / f"res.{rank}").read_text())
        assert multi["world_size"] == 2
        assert multi["images_sum"] == int(single["images"].long().sum())
        for key in ("fid", "is_mean", "is_std", "accuracy"):
            assert multi[key] == pytest.approx(single[key], rel=1e-12, abs=1e-12), key
        # uneven rows per rank (1 vs 2) land at their global indices
        assert multi["gathered"] == [[0.0, 0.0], [1.0, 1.0], [1.0, 1.0]]


def test_score_existing_samples_file(tmp_path):
    from enat_lightning.sampling.io import save_npz

    res = run_eval(return_samples=True)
    path = save_npz(tmp_path / "samples.npz", arr_0=res["images"].permute(0, 2, 3, 1).numpy(),
                    labels=res["labels"].numpy())
    images, labels = load_samples(path)
    again = score_images(images, labels, ProjectionFeatures(), reference(), is_splits=2)
    for key in ("fid", "is_mean", "accuracy"):
        assert again[key] == pytest.approx(res[key], rel=1e-12)


def test_load_samples_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        load_samples(tmp_path / "nope.npz")
    np.savez(tmp_path / "x.npz", foo=np.zeros(3))
    with pytest.raises(ValueError, match="arr_0"):
        load_samples(tmp_path / "x.npz")
    np.savez(tmp_path / "y.npz", arr_0=np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        load_samples(tmp_path / "y.npz")
