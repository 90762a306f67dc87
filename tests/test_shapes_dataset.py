"""Tests for the procedurally generated `alexnet_shapes` dataset."""

from __future__ import annotations

import socket

import numpy as np
import pytest

from alexnet_jax.datasets import shapes

SMALL = 64  # render size for the statistical tests (fast)


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def _render_set(seed: int, n: int, size: int = SMALL):
    images = np.stack([shapes.render_example(seed, i, size)[0] for i in range(n)])
    labels = np.array([shapes.example_label(i) for i in range(n)])
    return images, labels


@pytest.fixture(scope='module')
def small_sets():
    """600 train / 300 test images at 64 px, from seeds unrelated to the splits."""
    return _render_set(11, 600), _render_set(12, 300)


def _fit_logreg(x, y, num_classes=shapes.NUM_CLASSES, steps=400, lr=0.5,
                l2=1e-3):
    """Multinomial logistic regression by full-batch gradient descent (numpy)."""
    mu, sd = x.mean(0), x.std(0) + 1e-8

    def design(v):
        v = (v - mu) / sd
        return np.concatenate([v, np.ones((len(v), 1))], axis=1)

    xs = design(x)
    onehot = np.eye(num_classes)[y]
    w = np.zeros((xs.shape[1], num_classes))
    for _ in range(steps):
        z = xs @ w
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        w -= lr * (xs.T @ (p - onehot) / len(xs) + l2 * w)
    return lambda v: (design(v) @ w).argmax(axis=1)


def _accuracy(features, sets):
    (x_tr, y_tr), (x_te, y_te) = sets
    predict = _fit_logreg(features(x_tr), y_tr)
    return float(np.mean(predict(features(x_te)) == y_te))


def _colour_stats(images):
    """Per-image mean and std of each colour channel."""
    x = images.reshape(len(images), -1, 3).astype(np.float64)
    return np.concatenate([x.mean(axis=1), x.std(axis=1)], axis=1)


def _colour_histograms(images, bins=8):
    """Mean/std plus an 8-bin intensity histogram per channel."""
    n_pix = images.shape[1] * images.shape[2]
    hists = [
        np.stack([np.histogram(im[..., c], bins=bins, range=(0, 256))[0]
                  for im in images]) / n_pix
        for c in range(3)
    ]
    return np.concatenate([_colour_stats(images)] + hists, axis=1)


def _foreground_mask(img):
    """Pixels far (in RGB) from the median colour of the image border."""
    x = img.astype(np.float64)
    border = np.concatenate([x[0], x[-1], x[:, 0], x[:, -1]])
    dist = np.linalg.norm(x - np.median(border, axis=0), axis=-1)
    return dist > 0.6 * np.percentile(dist, 97)


def _outline_features(img, n_angles=32, n_radial=8):
    """Translation/rotation/scale-invariant descriptors of the foreground blob.

    Foreground = pixels far (in RGB) from the median border colour. Features:
    radial histogram of foreground pixels around their centroid, Fourier
    magnitudes of the angular max-radius profile, second-moment elongation,
    whether the centroid is foreground (ring, crescent) and max radius.
    """
    mask = _foreground_mask(img)
    ys, xs = np.nonzero(mask)
    if len(xs) < 5:
        return np.zeros(n_radial + 8 + 3)
    cy, cx = ys.mean(), xs.mean()
    dy, dx = ys - cy, xs - cx
    r = np.hypot(dx, dy)
    scale = np.sqrt(len(xs))
    radial = np.histogram(r / scale, bins=n_radial, range=(0, 1))[0] / len(xs)
    ang = ((np.arctan2(dy, dx) + np.pi) / (2 * np.pi) * n_angles).astype(int)
    profile = np.zeros(n_angles)
    np.maximum.at(profile, ang % n_angles, r)
    fourier = (np.abs(np.fft.rfft(profile))[1:9]
               / (profile.mean() + 1e-9) / n_angles)
    ev = np.linalg.eigvalsh(np.cov(np.stack([dx, dy])))
    centre = float(mask[int(round(cy)), int(round(cx))])
    return np.concatenate(
        [radial, fourier, [ev[0] / (ev[1] + 1e-9), centre, r.max() / scale]])


def _outline_feature_matrix(images):
    return np.stack([_outline_features(im) for im in images])


# ---------------------------------------------------------------------------
# render_image
# ---------------------------------------------------------------------------


@pytest.mark.parametrize('size', [256, 96, SMALL])
def test_render_image_dtype_and_shape(size):
    for label in range(shapes.NUM_CLASSES):
        img = shapes.render_image(np.random.default_rng(label), label, size)
        assert img.dtype == np.uint8
        assert img.shape == (size, size, 3)


def test_render_image_is_deterministic():
    for label in (0, 4, 9):
        a = shapes.render_image(np.random.default_rng(123), label)
        b = shapes.render_image(np.random.default_rng(123), label)
        c = shapes.render_image(np.random.default_rng(124), label)
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)


def test_examples_do_not_depend_on_generation_order():
    forward = [shapes.render_example(5, i, SMALL)[0] for i in range(4)]
    backward = [shapes.render_example(5, i, SMALL)[0] for i in reversed(range(4))]
    for a, b in zip(forward, reversed(backward)):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(shapes.render_example(5, 0, SMALL)[0],
                              shapes.render_example(6, 0, SMALL)[0])


def test_render_image_rejects_bad_label():
    with pytest.raises(ValueError):
        shapes.render_image(np.random.default_rng(0), shapes.NUM_CLASSES)


def test_class_names():
    assert len(shapes.CLASS_NAMES) == 10
    assert len(set(shapes.CLASS_NAMES)) == 10
    assert shapes.AlexnetShapes.TRAIN_SEED != shapes.AlexnetShapes.VALIDATION_SEED


def test_shape_area_does_not_depend_on_class(small_sets):
    # Every class draws its area from the same range, so the foreground
    # fraction (estimated by segmentation) has about the same mean per class.
    for label in range(shapes.NUM_CLASSES):
        assert shapes._unit_geometry(label)[0] > 0.5
    (images, labels), _ = small_sets
    frac = np.array([np.mean(_foreground_mask(im)) for im in images])
    per_class = np.array([frac[labels == k].mean()
                          for k in range(shapes.NUM_CLASSES)])
    print('foreground fraction per class:', np.round(per_class, 3))
    lo, hi = shapes.AREA_FRACTION_RANGE
    assert per_class.max() / per_class.min() < 1.4
    assert lo * 0.7 < per_class.min() and per_class.max() < hi * 1.3


# ---------------------------------------------------------------------------
# Statistical properties: not solvable from colour, learnable from shape
# ---------------------------------------------------------------------------


def test_not_predictable_from_colour_statistics(small_sets):
    acc = _accuracy(_colour_stats, small_sets)
    print(f'mean/std RGB logistic regression test accuracy: {acc:.3f}')
    assert acc < 0.25  # chance is 0.10


def test_not_predictable_from_colour_histograms(small_sets):
    acc = _accuracy(_colour_histograms, small_sets)
    print(f'RGB histogram logistic regression test accuracy: {acc:.3f}')
    assert acc < 0.25


def test_learnable_from_outline(small_sets):
    acc = _accuracy(_outline_feature_matrix, small_sets)
    print(f'outline-feature logistic regression test accuracy: {acc:.3f}')
    assert acc > 0.6


def test_outline_features_fail_on_noise(small_sets):
    # Control: the same pipeline on pure-noise images is at chance, so the
    # assertion above measures the shapes, not the classifier.
    (x_tr, y_tr), (x_te, y_te) = small_sets
    rng = np.random.default_rng(0)
    noise = ((rng.integers(0, 256, x_tr.shape, dtype=np.uint8), y_tr),
             (rng.integers(0, 256, x_te.shape, dtype=np.uint8), y_te))
    acc = _accuracy(_outline_feature_matrix, noise)
    assert acc < 0.25


# ---------------------------------------------------------------------------
# TFDS builder
# ---------------------------------------------------------------------------


class _TinyShapes(shapes.AlexnetShapes, skip_registration=True):
    name = 'alexnet_shapes_tiny_test'
    NUM_TRAIN_EXAMPLES = 20
    NUM_VALIDATION_EXAMPLES = 10


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError('network access attempted in a test')

    monkeypatch.setattr(socket.socket, 'connect', refuse)
    monkeypatch.setattr(socket.socket, 'connect_ex', refuse)
    monkeypatch.setattr(socket, 'create_connection', refuse)
    monkeypatch.setattr(socket, 'getaddrinfo', refuse)


def test_builder_is_registered():
    import tensorflow_datasets as tfds

    assert tfds.builder_cls('alexnet_shapes') is shapes.AlexnetShapes
    assert str(shapes.AlexnetShapes.VERSION) == '1.0.0'
    assert shapes.AlexnetShapes.NUM_TRAIN_EXAMPLES == 5000
    assert shapes.AlexnetShapes.NUM_VALIDATION_EXAMPLES == 1000


def test_tiny_build_and_read_back(tmp_path, no_network):
    import tensorflow_datasets as tfds

    builder = _TinyShapes(data_dir=str(tmp_path))
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False))

    info = builder.info
    assert info.features['label'].names == list(shapes.CLASS_NAMES)
    assert info.features['image'].shape == (256, 256, 3)
    assert info.splits['train'].num_examples == 20
    assert info.splits['validation'].num_examples == 10

    # Read back through a reader that only knows the directory (the metadata
    # written to disk is complete), and through the builder itself.
    reloaded = tfds.builder_from_directory(builder.data_dir)
    for split, n in (('train', 20), ('validation', 10)):
        for b in (builder, reloaded):
            examples = list(tfds.as_numpy(b.as_dataset(split=split)))
            assert len(examples) == n
            labels = []
            for ex in examples:
                assert ex['image'].shape == (256, 256, 3)
                assert ex['image'].dtype == np.uint8
                assert 0 <= ex['label'] < shapes.NUM_CLASSES
                labels.append(int(ex['label']))
            # Balanced: label = index % 10.
            assert np.bincount(labels, minlength=10).tolist() == [n // 10] * 10

    # Stored images are the rendered ones (up to JPEG loss).
    rendered = {shapes.render_example(_TinyShapes.VALIDATION_SEED, i)[0]
                .astype(np.float64).mean() for i in range(10)}
    stored = [ex['image'].astype(np.float64).mean()
              for ex in tfds.as_numpy(builder.as_dataset(split='validation'))]
    for m in stored:
        assert min(abs(m - r) for r in rendered) < 2.0

    # Second preparation reuses the data (no regeneration, no network).
    again = _TinyShapes(data_dir=str(tmp_path))
    again.download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    assert again.info.splits['train'].num_examples == 20
