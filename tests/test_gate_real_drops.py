"""Real drops fail the gate: models trained on the full MNIST with worse settings, judged as CI would.

Each case trains with the project's own code and the committed default params, changed in one
way, then judges the result against the committed baseline (``metrics/<m>.json`` at ``HEAD``) with the
tolerances the committed noise model gives. A gate whose tolerance swallowed these would be
useless; one that failed the default settings would be noise. Marked slow: full data, ~3 min.
"""

from __future__ import annotations

import pytest

from conftest import REPO_ROOT, SHARED_MIRROR

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not SHARED_MIRROR.exists(), reason="needs the offline MNIST mirror")]


@pytest.fixture(scope="module")
def mnist():
    from mnist_pipeline.data.idx import read_idx_gz
    from mnist_pipeline.data.preprocess import preprocess

    params = _params()
    files = params.data.files

    def pair(images, labels):
        return read_idx_gz(SHARED_MIRROR / images.filename, "images"), read_idx_gz(SHARED_MIRROR / labels.filename, "labels")

    return preprocess(pair(files.train_images, files.train_labels), pair(files.test_images, files.test_labels), params.preprocess)


def _params():
    from mnist_pipeline.config import load_params

    return load_params(REPO_ROOT / "params.yaml")


def _judge(name, model_params, mnist):
    from mnist_pipeline.reporting import noise
    from mnist_pipeline.models.base import params_hash
    from mnist_pipeline.evaluation import compute_metrics, predict_proba
    from mnist_pipeline.reporting.gate import baseline_metrics, check, derive_tolerances, verify_ref
    from mnist_pipeline.models import registry
    from mnist_pipeline.training import fit, targets_for

    params = _params()
    representation = registry.input_representation(model_params)
    result = fit(name, model_params, mnist["train"][representation], mnist["train"][targets_for(model_params)], verbose=0)
    proba = predict_proba(result.model, registry.of(model_params).framework, mnist["test"][representation], 1000)
    current = compute_metrics(mnist["test"]["labels"], proba)
    # The committed file, not the workspace's: CI runs this beside `make run`, which rewrites it.
    baseline = baseline_metrics(verify_ref("HEAD"), params.paths.metrics_file(name))
    defaults = {model: params_hash(p, without_seed=True) for model, p in params.models.items()}
    # As `make run` after `dvc exp run -S models.<name>...` judges it: the baseline (HEAD) runs the
    # defaults, and only this model reran (every other metrics file is the baseline's own).
    tolerances = derive_tolerances(
        params.gate, noise.load(REPO_ROOT / params.paths.noise_model),
        defaults | {name: params_hash(model_params, without_seed=True)}, baseline_hashes=defaults, models_in_question=1,
    )
    return check({name: current}, {name: baseline}, params.gate, [name], tolerances)


def _changed(name, **changes):
    model = _params().model(name)
    return model.model_copy(update=changes)


@pytest.mark.parametrize(
    "name, change",
    [
        ("mlp", {"epochs": 1}),
        ("cnn", {"epochs": 1}),
        ("cnn", "learning_rate x100"),
    ],
    ids=["mlp-1-epoch", "cnn-1-epoch", "cnn-learning-rate-x100"],
)
def test_a_real_drop_fails_naming_the_model(mnist, name, change, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)  # git resolves the metrics path against the working directory
    if change == "learning_rate x100":
        # One epoch, not ten, to keep CI short: at 100x the learning rate the CNN has diverged to
        # chance (about 11%) after the first epoch already, and more epochs change nothing. So that
        # the short training cannot be what fails it, it must fail the absolute floor too, which a
        # one-epoch CNN at the right learning rate clears (98.5% against 98%).
        optimizer = _params().model(name).optimizer
        model_params = _changed(
            name, epochs=1, optimizer=optimizer.model_copy(update={"learning_rate": optimizer.learning_rate * 100})
        )
    else:
        model_params = _changed(name, **change)
    rows = _judge(name, model_params, mnist)
    accuracy = next(row for row in rows if row.metric == "accuracy")
    print(f"\n{name} {change}: {accuracy.reason or accuracy}")  # the README quotes these lines (pytest -s)
    assert accuracy.verdict == "REGRESSION", accuracy
    assert accuracy.reason.startswith(f"{name} accuracy ")
    if change == "learning_rate x100":
        assert " < floor " in accuracy.reason, accuracy.reason
