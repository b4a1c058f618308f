"""One preprocessing definition: the training pipeline and the runtime give the same tensors."""
import numpy as np
import pytest
import torch

from edgefashion.data import load_images, read_image
from edgefashion.data.folders import load_folder_dataset
from edgefashion.meta import fashion_mnist_meta, photo_meta
from edgefashion.runtime.preprocess import fashion_mnist_domain, normalize, prepare, preprocess
from edgefashion.training.datasets import _to_tensor, batch_to_input, load_data


@pytest.mark.parametrize("size,resize", [(96, "center_crop"), (64, "stretch"), (227, "center_crop")])
def test_photo_training_pipeline_matches_runtime(shared_data, size, resize):
    ds = load_folder_dataset(shared_data / "clothing-small")
    paths = ds.splits["test"][0][::40]
    meta = photo_meta("seq5", ds.labels, size).replace(resize=resize)
    # Training: decode once into the uint8 cache, then normalise batches in torch.
    cache, kept = load_images(paths, lambda bgr: prepare(bgr, meta))
    split = _to_tensor(cache, np.zeros(len(kept), np.int64), torch.device("cpu"))
    train_x = batch_to_input(split.x, meta).numpy()
    # Runtime: file -> OpenCV image -> preprocess.
    run_x = preprocess([read_image(p) for p in paths], meta)
    assert run_x.shape == (len(paths), 3, size, size) and run_x.dtype == np.float32
    assert np.abs(train_x - run_x).max() <= 1e-5


def test_fashion_mnist_training_pipeline_matches_runtime(shared_data):
    bundle = load_data("fashion-mnist", shared_data, model="cnn4", img_size=28, in_chans=1, limit=500)
    test = bundle.splits["test"]
    train_x = batch_to_input(test.x, bundle.meta).numpy()
    images = [im for im in test.x[:, 0].numpy()]  # as the runtime gets them from the IDX file
    run_x = preprocess(images, bundle.meta)
    assert np.abs(train_x - run_x).max() <= 1e-5
    # At another input size both sides resize the same way.
    b32 = load_data("fashion-mnist", shared_data, model="resnet20", img_size=32, in_chans=1, limit=100)
    assert b32.splits["test"].x.shape[-2:] == (32, 32)
    r32 = preprocess([im for im in test.x[:100, 0].numpy()], b32.meta)
    assert r32.shape == (100, 1, 32, 32)


def test_fashion_mnist_domain_maps_a_product_photo():
    # A dark shirt-like blob on a white, wide photo: inverted, cropped to the object, centred, 28x28.
    img = np.full((480, 640, 3), 235, np.uint8)
    img[100:400, 380:560] = 40
    out = fashion_mnist_domain(img)
    assert out.shape == (28, 28) and out.dtype == np.uint8
    assert out[14, 14] > 180  # object is light after inversion
    assert out[0, 0] < 40 and out[27, 27] < 40  # background black
    cols = np.where(out.max(0) > 100)[0]
    assert abs((cols.min() + cols.max()) / 2 - 13.5) <= 1.5  # centred horizontally


def test_normalize_formula():
    meta = fashion_mnist_meta("cnn4", [str(i) for i in range(10)])
    x = normalize(np.array([[[0, 255]]], np.uint8), meta)
    assert x.shape == (1, 1, 1, 2)
    assert np.allclose(x[0, 0, 0], [(0 - 0.2860) / 0.3530, (1 - 0.2860) / 0.3530])
    with pytest.raises(ValueError, match="uint8"):
        prepare(np.zeros((28, 28), np.float32), meta)
