import pytest

from edgefashion.meta import MetaError, ModelMeta, fashion_mnist_meta, photo_meta


def test_round_trip_json_and_onnx_props():
    m = photo_meta("resnet20", ["dress", "hat", "pants"], 128, dataset="clothing-small")
    m = m.replace(extra={"val_accuracy": 0.9})
    assert ModelMeta.from_json(m.to_json()) == m
    props = m.to_onnx_props()
    assert ModelMeta.from_onnx_props(props) == m
    assert props["input_size"] == "128"


@pytest.mark.parametrize("change,msg", [
    ({"labels": []}, "no labels"),
    ({"labels": ["a", "a"]}, "not unique"),
    ({"mean": [0.5]}, "mean/std"),
    ({"resize": "zoom"}, "resize"),
    ({"color": "gray"}, "does not fit"),
    ({"std": [1, 0, 1]}, "positive"),
])
def test_invalid_meta_is_refused(change, msg):
    d = photo_meta("x", ["a", "b"], 64).to_dict()
    d.update(change)
    with pytest.raises(MetaError, match=msg):
        ModelMeta.from_dict(d)


def test_missing_or_foreign_metadata():
    with pytest.raises(MetaError, match="model.onnx: no edgefashion metadata"):
        ModelMeta.from_onnx_props({"producer": "x"}, source="model.onnx")
    with pytest.raises(MetaError, match="not valid JSON"):
        ModelMeta.from_onnx_props({"edgefashion": "{"})
    with pytest.raises(MetaError, match="lacks"):
        ModelMeta.from_dict({"model": "x"})
    d = fashion_mnist_meta("cnn4", list("abcdefghij")).to_dict()
    d["format_version"] = 99
    with pytest.raises(MetaError, match="newer"):
        ModelMeta.from_dict(d)
