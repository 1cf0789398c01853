"""scikit-learn baselines from the seed's homework: GaussianNB and SGD, optionally standardised."""

from __future__ import annotations

from typing import Any

from mnist_pipeline.config import GaussianNBParams, SGDParams


def build_gaussian_nb(params: GaussianNBParams) -> Any:
    from sklearn.naive_bayes import GaussianNB

    return GaussianNB(var_smoothing=params.var_smoothing)


def build_sgd(params: SGDParams) -> Any:
    from sklearn.linear_model import SGDClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    classifier = SGDClassifier(
        loss=params.loss,
        alpha=params.alpha,
        max_iter=params.max_iter,
        tol=params.tol,
        early_stopping=params.early_stopping,
        validation_fraction=params.validation_fraction,
        n_iter_no_change=params.n_iter_no_change,
        average=params.average,
        n_jobs=params.n_jobs,
        random_state=params.seed,
    )
    if not params.standardize:
        return classifier
    return Pipeline([("scaler", StandardScaler()), ("sgd", classifier)])


LEARNED_ATTRIBUTES = ("coef_", "intercept_", "theta_", "var_", "class_prior_")
SCALER_ATTRIBUTES = ("mean_", "scale_")  # var_ is scale_ squared: not a separate statistic


def parameter_counts(model: Any) -> dict[str, int]:
    """Learned numbers: fitted weights count as trainable, a scaler's statistics as non-trainable."""
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    steps = [step for _, step in model.steps] if isinstance(model, Pipeline) else [model]
    trainable = non_trainable = 0
    for step in steps:
        if isinstance(step, StandardScaler):
            non_trainable += sum(getattr(step, name).size for name in SCALER_ATTRIBUTES)
        else:
            trainable += sum(getattr(step, name).size for name in LEARNED_ATTRIBUTES if hasattr(step, name))
    return {"total": int(trainable + non_trainable), "trainable": int(trainable), "non_trainable": int(non_trainable)}
