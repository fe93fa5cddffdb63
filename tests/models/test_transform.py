"""A model's input transform and output mapping: plain JSON in MLmodel, checked when logged,
applied by the pyfunc wrapper that MLflow's and mlkit's servers call."""

from __future__ import annotations

import pytest

from mlkit.errors import InvalidInputError
from mlkit.models.transform import Transform, from_dict

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch


@pytest.mark.parametrize(
    "bad, where",
    [
        ({"input": {"kind": "resize"}}, "transform.input.kind"),
        ({"input": {"kind": "affine", "scale": "x"}}, "transform.input.scale"),
        ({"input": {"kind": "affine", "shape": [1, 0]}}, "transform.input.shape"),
        ({"input": {"kind": "affine", "dtype": "float8"}}, "transform.input.dtype"),
        ({"output": {"kind": "labels", "labels": []}}, "transform.output.labels"),
        ({"output": {"kind": "labels", "labels": [1.5]}}, "transform.output.labels"),
        ({"inputs": {}}, "transform."),
    ],
)
def test_bad_transform_is_refused_naming_the_field(bad, where):
    with pytest.raises(InvalidInputError) as info:
        from_dict(bad)
    assert info.value.message.startswith(where)


def test_logged_model_predicts_labels_on_raw_rows(nets, tmp_path):
    import json

    import numpy as np

    from mlkit.models.format import read_mlmodel
    from mlkit.models.pyfunc import _load_pyfunc
    from mlkit.models.save import save_model

    net = nets.SmallCNN(channels=1, classes=3, width=4).eval()
    transform = Transform.image_classifier(scale=1 / 8, offset=-1, shape=(1, 8, 8), labels=["a", "b", "c"])
    raw = np.random.default_rng(0).integers(0, 17, size=(5, 64)).astype(np.float64)
    save_model(net, tmp_path / "m", input_example=raw[:2], transform=transform)

    mlmodel = read_mlmodel(tmp_path / "m")
    assert mlmodel["flavors"]["mlkit"]["transform"] == transform.to_dict()
    assert json.loads(mlmodel["signature"]["inputs"])[0]["tensor-spec"] == {
        "dtype": "float64",
        "shape": [-1, 64],
    }
    assert json.loads((tmp_path / "m" / "input_example.json").read_text())["inputs"] == raw[:2].tolist()

    got = _load_pyfunc(str(tmp_path / "m" / "data")).predict(raw)  # what MLflow's pyfunc loader calls
    with torch.no_grad():
        logits = net(torch.tensor(raw, dtype=torch.float32).reshape(-1, 1, 8, 8) / 8 - 1)
    assert got.tolist() == [["a", "b", "c"][i] for i in logits.argmax(1).tolist()]
    with pytest.raises(InvalidInputError, match="each row must hold 64 values"):
        _load_pyfunc(str(tmp_path / "m" / "data")).predict(raw[:, :10])


def test_byte_lm_takes_strings_and_answers_the_next_character(nets, tmp_path):
    from mlkit.models.pyfunc import load_predictor
    from mlkit.models.save import save_model
    from mlkit.models.transform import byte_lm

    net = nets.CharRNN(vocab=256, hidden=8).eval()
    save_model(net, tmp_path / "m", input_example=["hello wor"], transform=byte_lm())
    out = load_predictor(tmp_path / "m").predict(
        ["hello wor", "ab"]
    )  # different lengths: not padded together
    assert len(out) == 2 and all(isinstance(c, str) and len(c) == 1 for c in out.tolist())


@pytest.mark.parametrize(
    "dtype, scale, expect", [("int64", 1.0, [3, 7]), ("int32", 2.0, [7, 15]), ("float32", 2.0, [7.0, 15.0])]
)
def test_an_integer_input_reaches_the_model_as_integers(dtype, scale, expect):
    # token ids for an embedding: the transform's dtype is what forward() gets, whatever the arithmetic
    from mlkit.models.transform import InputTransform, prepare_input

    transform = Transform(
        input=InputTransform(kind="affine", scale=scale, offset=1.0 if scale != 1 else 0.0, dtype=dtype)
    )
    (tensor,) = prepare_input(transform, [[3], [7]], torch, "cpu")
    assert tensor.dtype == getattr(torch, dtype)
    assert tensor.flatten().tolist() == expect
