"""COCO captions + images -> text shards (encoder and precomputed .npy paths), null caption, FID prompts."""
import numpy as np
import pytest
import torch

from enat_lightning.data.coco import (configure_text_model, eval_prompts, null_condition_from_text_info,
                                      read_coco_captions, tokenize_coco)
from t2i_helpers import CAPTIONS, make_coco, read_all, tokenizer

from enat_lightning.text import HashTextEncoder


def test_read_coco_captions(tmp_path):
    images, caps, _ = make_coco(tmp_path)
    items = read_coco_captions(caps, images)
    assert [im.image_id for im in items] == [1, 2, 3, 7]  # sorted, image 9 has no caption
    assert items[0].captions == CAPTIONS[1] and items[2].captions == CAPTIONS[3]
    assert len(read_coco_captions(caps, images, limit=2)) == 2


@pytest.mark.parametrize("content, match", [
    ("{", "not valid JSON"), ('{"images": []}', "'annotations'"),
    ('{"images": [{"id": 1, "file_name": "a.png"}], "annotations": [{"image_id": 5, "caption": "x"}]}',
     "image_id 5"),
    ('{"images": [{"id": 1, "file_name": "a.png"}], "annotations": [{"image_id": 1}]}', r"annotations\[0\]"),
])
def test_bad_captions_json(tmp_path, content, match):
    p = tmp_path / "caps.json"
    p.write_text(content)
    with pytest.raises(ValueError, match=match):
        read_coco_captions(p, tmp_path)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        read_coco_captions(tmp_path / "missing.json", tmp_path)


def test_tokenize_coco_with_encoder(tmp_path):
    images, caps, _ = make_coco(tmp_path)
    enc = HashTextEncoder(dim=12, length=6)
    res = tokenize_coco(images, caps, tokenizer(), tmp_path / "out", resolution=16, text_encoder=enc,
                        shard_size=3, batch_size=2, progress=False)
    m, samples = read_all(tmp_path / "out")
    assert m.sample_count == 4 and m.num_classes is None and m.has_flip and len(m.shards) == 2
    assert (m.text["encoder"], m.text["max_len"], m.text["dim"], m.text["captions"]) == ("hash", 6, 12, 8)
    assert m.text["identity"]["test_double"] is True
    by_count = sorted(samples, key=lambda s: s.key)
    for s, iid in zip(by_count, [1, 2, 3, 7]):
        ref, ref_mask = enc.encode(CAPTIONS[iid])
        assert s.text.dtype == np.float16 and s.text.shape == (len(CAPTIONS[iid]), 6, 12)
        np.testing.assert_allclose(s.text.astype(np.float32), ref.numpy(), atol=1e-2)
        assert (s.text_mask == ref_mask.numpy()).all() and s.tokens.shape == (4, 4) and s.label is None
    null = null_condition_from_text_info(m.text)
    ref, ref_mask = enc.encode([""])
    np.testing.assert_allclose(null[0], ref[0].numpy(), atol=1e-2)
    assert (null[1] == ref_mask[0].numpy()).all()
    assert res.unreadable == []


def test_precomputed_embeddings_give_the_same_shards(tmp_path):
    images, caps, anns = make_coco(tmp_path)
    enc = HashTextEncoder(dim=12, length=6)
    emb, mask = enc.encode([a["caption"] for a in anns])  # row i = annotations[i]
    np.save(tmp_path / "emb.npy", emb.numpy().astype(np.float16))
    np.save(tmp_path / "mask.npy", mask.numpy())
    np.save(tmp_path / "null.npy", enc.encode([""])[0][0].numpy())
    np.save(tmp_path / "null_mask.npy", enc.encode([""])[1][0].numpy())
    kw = dict(resolution=16, shard_size=3, progress=False)
    tokenize_coco(images, caps, tokenizer(), tmp_path / "a", text_encoder=enc, **kw)
    tokenize_coco(images, caps, tokenizer(), tmp_path / "b", embeddings=tmp_path / "emb.npy",
                  embeddings_mask=tmp_path / "mask.npy", null_embedding=tmp_path / "null.npy",
                  null_mask=tmp_path / "null_mask.npy", **kw)
    (ma, sa), (mb, sb) = read_all(tmp_path / "a"), read_all(tmp_path / "b")
    assert mb.text["encoder"] == "precomputed" and mb.text["null_text"] == ma.text["null_text"]
    for x, y in zip(sa, sb):
        assert x.key == y.key and (x.text == y.text).all() and (x.text_mask == y.text_mask).all()
    # without a null file the manifest has no null caption (the model's null is then "no text")
    tokenize_coco(images, caps, tokenizer(), tmp_path / "c", embeddings=tmp_path / "emb.npy", **kw)
    mc, sc = read_all(tmp_path / "c")
    assert null_condition_from_text_info(mc.text) is None and sc[0].text_mask.all()


def test_source_errors(tmp_path):
    images, caps, _ = make_coco(tmp_path)
    with pytest.raises(ValueError, match="exactly one caption source"):
        tokenize_coco(images, caps, tokenizer(), tmp_path / "o", resolution=16)
    np.save(tmp_path / "bad.npy", np.zeros((3, 6, 12), np.float16))
    with pytest.raises(ValueError, match=r"N_annotations=8"):
        tokenize_coco(images, caps, tokenizer(), tmp_path / "o", resolution=16, embeddings=tmp_path / "bad.npy")
    with pytest.raises(FileNotFoundError, match="nothere.npy"):
        tokenize_coco(images, caps, tokenizer(), tmp_path / "o", resolution=16, embeddings=tmp_path / "nothere.npy")


def test_configure_text_model_and_eval_prompts(tmp_path):
    from enat_lightning.models import ENAT, ENATConfig

    images, caps, _ = make_coco(tmp_path)
    enc = HashTextEncoder(dim=12, length=6)
    tokenize_coco(images, caps, tokenizer(), tmp_path / "out", resolution=16, text_encoder=enc, progress=False)
    m, _ = read_all(tmp_path / "out")
    small = dict(codebook_size=16, grid=4, width=16, heads=2, enc_depth=1, dec_depth=1)
    model = ENAT(ENATConfig(**small, condition="text", text_dim=12, text_len=6))
    configure_text_model(model, m.text)
    assert model.conditioner.null_mask.sum() == 2
    torch.testing.assert_close(model.conditioner.null_text, enc.encode([""])[0][0], atol=1e-2, rtol=0)
    with pytest.raises(ValueError, match="condition: text"):
        configure_text_model(ENAT(ENATConfig(**small)), m.text)
    wrong = ENAT(ENATConfig(**small, condition="text", text_dim=8, text_len=6))
    with pytest.raises(ValueError, match="text_dim=8"):
        configure_text_model(wrong, m.text)
    with pytest.raises(ValueError, match="hold no text"):
        configure_text_model(model, None)
    batches = list(eval_prompts(str(tmp_path / "out"), num=3, seed=0, batch_size=2))
    assert [b[0].shape for b in batches] == [(2, 6, 12), (1, 6, 12)]
    again = list(eval_prompts(str(tmp_path / "out"), num=3, seed=0, batch_size=2))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, again))
    with pytest.raises(ValueError, match="fewer than the 5"):
        next(eval_prompts(str(tmp_path / "out"), num=5))
