"""The noise model: summarising seeded runs, validating noise.json, and the tolerance derivation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mnist_pipeline.reporting import noise
from mnist_pipeline.errors import ArtifactError


def _row(model, seed, accuracy, params_hash="h1", loss=0.1, variant=None, **metrics):
    row = {
        "model": model, "type": "keras_mlp", "params_hash": params_hash, "seed": seed, "accuracy": accuracy,
        "loss": loss, "fit_seconds": 3.0, "epochs": 10, "machine": {"cpu": "cpu", "cpu_count": 2}, **metrics,
    }
    if variant is not None:
        row["variant"] = variant
    return row


def test_summarize_keeps_only_runs_of_the_current_params():
    rows = [_row("mlp", seed, 0.97 + seed / 1000) for seed in range(5)]
    rows += [_row("mlp", seed, 0.5, params_hash="old") for seed in range(5)]  # another setting: left out
    rows += [_row("nb", None, 0.55)]
    models = noise.summarize(rows, {"mlp": "h1", "nb": "h1", "cnn": "h1"})
    assert set(models) == {"mlp", "nb"}  # cnn has no runs: absent, not zero
    mlp = models["mlp"]
    accuracy = mlp["seeds"]["accuracy"]
    assert accuracy["n"] == 5 and accuracy["seeds"] == [0, 1, 2, 3, 4] and mlp["deterministic"] is False
    assert accuracy["mean"] == pytest.approx(0.972)
    assert accuracy["sd"] == pytest.approx(np.std([0.970, 0.971, 0.972, 0.973, 0.974], ddof=1))
    assert "same_seed" not in mlp  # no default seeds given, no variants run
    assert models["nb"]["deterministic"] is True and models["nb"]["seeds"]["accuracy"]["sd"] == 0.0


def test_summarize_measures_the_default_seed_over_its_numeric_variants():
    rows = [_row("mlp", seed, 0.97 + seed / 1000) for seed in range(5)]  # no "variant": the default numerics
    rows += [_row("mlp", 0, 0.9705, variant="onednn-off"), _row("mlp", 0, 0.9698, variant="threads-1")]
    rows += [_row("mlp", 0, 0.9, variant="onednn-off", params_hash="old")]  # another configuration's: in neither block
    rows += [_row("nb", None, 0.55), _row("nb", None, 0.55, variant="threads-1")]
    models = noise.summarize(rows, {"mlp": "h1", "nb": "h1"}, {"mlp": 0, "nb": None})
    mlp = models["mlp"]
    # The seeds are measured under the default numerics only.
    assert mlp["seeds"]["accuracy"]["values"] == pytest.approx([0.970, 0.971, 0.972, 0.973, 0.974])
    same = mlp["same_seed"]
    assert same["seed"] == 0 and same["variants"] == ["default", "onednn-off", "threads-1"]
    assert same["metrics"]["accuracy"]["values"] == [0.97, 0.9705, 0.9698]
    assert same["metrics"]["accuracy"]["n"] == 3
    assert same["metrics"]["accuracy"]["sd"] == pytest.approx(np.std([0.97, 0.9705, 0.9698], ddof=1))
    assert len(mlp["fit_seconds"]) == 7  # every run of the configuration, variants included
    nb = models["nb"]
    assert nb["deterministic"] is True and nb["same_seed"]["metrics"]["accuracy"]["sd"] == 0.0
    # One variant alone is no same-seed measurement.
    single = noise.summarize([_row("mlp", 0, 0.97), _row("mlp", 1, 0.971)], {"mlp": "h1"}, {"mlp": 0})
    assert "same_seed" not in single["mlp"]


def test_other_seeds_run_under_a_variant_pool_into_the_same_seed_spread():
    """sigma_num is one number for every seed: each other seed run twice adds a degree of freedom."""
    rows = [_row("mlp", seed, 0.97 + seed / 1000) for seed in range(5)]
    rows += [_row("mlp", 0, 0.9705, variant="onednn-off"), _row("mlp", 0, 0.9698, variant="threads-1")]
    rows += [_row("mlp", 1, 0.9712, variant="onednn-off"), _row("mlp", 2, 0.9716, variant="onednn-off")]
    same = noise.summarize(rows, {"mlp": "h1"}, {"mlp": 0})["mlp"]["same_seed"]
    accuracy = same["metrics"]["accuracy"]
    assert same["variants"] == ["default", "onednn-off", "threads-1"] and accuracy["n"] == 3  # the default seed's own
    assert accuracy["sd"] == pytest.approx(np.std([0.97, 0.9705, 0.9698], ddof=1))
    squares = 2 * np.var([0.97, 0.9705, 0.9698], ddof=1) + np.var([0.971, 0.9712], ddof=1) + np.var([0.972, 0.9716], ddof=1)
    assert accuracy["pooled"] == {"sd": pytest.approx(np.sqrt(squares / 4)), "df": 4, "seeds": [0, 1, 2]}
    parsed = noise.parse({"schema": noise.SCHEMA_VERSION, "models": noise.summarize(rows, {"mlp": "h1"}, {"mlp": 0})}, "n")
    measured = parsed.get_same_seed("mlp", "accuracy")
    assert (measured.n, measured.df, measured.pooled_seeds) == (3, 4, 2) and measured.sd == pytest.approx(np.sqrt(squares / 4))
    assert measured.describe() == "3 numeric variants, pooled with 2 seeds' pairs (4 df)"
    assert measured.unpooled_sd == pytest.approx(accuracy["sd"])  # seed 0's own, kept beside the pooled
    assert parsed.get("mlp", "accuracy").n == 5  # the spread over seeds reads as before
    # One other seed's pair is a pool of two: an unpooled default seed stays as it was.
    alone = noise.summarize(rows[:7], {"mlp": "h1"}, {"mlp": 0})["mlp"]["same_seed"]["metrics"]["accuracy"]
    assert "pooled" not in alone


def test_the_last_row_of_a_run_wins():
    rows = [_row("mlp", 0, 0.90), _row("mlp", 1, 0.971), _row("mlp", 0, 0.50, variant="onednn-off")]
    rows += [_row("mlp", 0, 0.970, variant="default"), _row("mlp", 0, 0.9702, variant="onednn-off")]  # re-measured
    models = noise.summarize(rows, {"mlp": "h1"}, {"mlp": 0})
    assert models["mlp"]["seeds"]["accuracy"]["values"] == [0.970, 0.971]
    assert models["mlp"]["seeds"]["accuracy"]["n"] == 2
    assert models["mlp"]["same_seed"]["metrics"]["accuracy"]["values"] == [0.970, 0.9702]


def test_each_metric_counts_only_the_runs_that_have_it():
    rows = [_row("mlp", seed, 0.97) for seed in range(4)]  # older rows: accuracy and loss only
    rows += [_row("mlp", seed, 0.97, corruption_mean=0.80 + (seed - 4) / 100, ece=0.01) for seed in range(4, 7)]
    rows += [_row("mlp", 7, 0.97, corruption_mean=None)]  # measured but empty: not a value
    models = noise.summarize(rows, {"mlp": "h1"}, {"mlp": 0})
    seeds = models["mlp"]["seeds"]
    assert seeds["accuracy"]["n"] == 8 and seeds["loss"]["n"] == 8
    assert seeds["corruption_mean"]["n"] == 3 and seeds["corruption_mean"]["seeds"] == [4, 5, 6]
    assert seeds["corruption_mean"]["mean"] == pytest.approx(0.81) and seeds["ece"]["n"] == 3
    assert "uci_accuracy" not in seeds


def test_a_summary_round_trips_through_the_parser():
    rows = [_row("mlp", seed, 0.97 + seed / 1000, uci_accuracy=0.8) for seed in range(3)]
    rows += [_row("mlp", 0, 0.9704, variant=variant) for variant in ("onednn-off", "threads-1")]
    models = noise.summarize(rows, {"mlp": "h1"}, {"mlp": 0})
    parsed = noise.parse({"schema": noise.SCHEMA_VERSION, "models": models}, "noise.json")
    measured = parsed.get("mlp", "accuracy")
    assert (measured.n, measured.params_hash) == (3, "h1")
    assert measured.sd == pytest.approx(0.001)
    assert parsed.get("mlp", "uci_accuracy").n == 3 and parsed.get("cnn", "accuracy") is None
    same = parsed.get_same_seed("mlp", "accuracy")
    assert (same.seed, same.n, same.variants, same.params_hash) == (0, 3, ("default", "onednn-off", "threads-1"), "h1")
    assert same.sd == pytest.approx(np.std([0.97, 0.9704, 0.9704], ddof=1))
    assert parsed.get_same_seed("mlp", "uci_accuracy").n == 1  # the variants lack it: too few to judge by


def test_the_noise_model_names_models_measured_on_other_test_sets_and_a_file_that_does_not_say():
    rows = [_row("mlp", seed, 0.97, testsets="now") for seed in range(3)] + [_row("mlp", 3, 0.97)]  # one run before test sets
    rows += [_row("cnn", seed, 0.99, testsets="before") for seed in range(3)]
    models = noise.summarize(rows, {"mlp": "h1", "cnn": "h1"})
    assert models["mlp"]["testsets"] == [None, "now"] and models["cnn"]["testsets"] == ["before"]
    parsed = noise.parse({"schema": noise.SCHEMA_VERSION, "models": models}, "noise.json")
    assert noise.stale_for(parsed, "before").startswith("noise.json: mlp measured on other test sets than these (before)")
    problem = noise.stale_for(parsed, "now")
    assert "cnn measured on other test sets" in problem and "mlp" not in problem
    assert noise.stale_for(noise.parse({"schema": noise.SCHEMA_VERSION, "models": {"mlp": models["mlp"]}}, "n"), "now") == ""
    untold = {"mlp": {key: value for key, value in models["mlp"].items() if key != "testsets"}}
    assert "does not record the test sets" in noise.stale_for(noise.parse({"schema": noise.SCHEMA_VERSION, "models": untold}, "n"), "now")
    with pytest.raises(ArtifactError, match=r"models.mlp.testsets: expected a list of digests"):
        noise.parse({"schema": noise.SCHEMA_VERSION, "models": {"mlp": {**models["mlp"], "testsets": "now"}}}, "n")


def test_the_committed_noise_model_was_measured_on_the_test_sets_params_yaml_makes():
    """The gate warns when it is not (reports/gate.md); here the committed pair must agree. The digest is
    of the testsets stage's manifest, which the pipeline makes: skipped before it has run."""
    from pathlib import Path

    from mnist_pipeline.config import load_params
    from mnist_pipeline.reporting.gate import noise_data_problem

    params = load_params(Path("params.yaml"))
    if not (Path(params.paths.testsets_dir) / "manifest.json").exists():
        pytest.skip("no test sets made here yet (dvc repro testsets)")
    assert noise_data_problem(noise.load(Path(params.paths.noise_model)), Path(params.paths.testsets_dir)) == ""


def test_the_summary_table_shows_seeds_and_same_seed_spread():
    rows = [_row("mlp", seed, 0.97 + seed / 1000, corruption_mean=0.9) for seed in range(3)]
    rows += [_row("mlp", 0, 0.9704, variant="onednn-off"), _row("nb", None, 0.5558)]
    rows += [_row("cnn", seed, 0.99) for seed in range(2)] + [_row("cnn", seed, 0.9904, variant="onednn-off") for seed in range(2)]
    table = noise.format_summary(noise.summarize(rows, {"mlp": "h1", "nb": "h1", "cnn": "h1"}, {"mlp": 0, "nb": None, "cnn": 0}))
    lines = table.splitlines()
    assert lines[0] == (
        "| model | accuracy: seeds, mean ± sd (n) | accuracy: same seed, sd (V + seeds paired) "
        "| corruption_mean: seeds, mean ± sd (n) | corruption_mean: same seed, sd (V + seeds paired) |"
    )
    assert lines[2] == "| `mlp` | 97.10 ± 0.10 (3) | 0.03 (2) | 90.00 ± 0.00 (3) | - |"
    assert lines[3] == "| `nb` | 55.58 ± 0.00 (1) | - | - | - |"
    assert lines[4] == "| `cnn` | 99.00 ± 0.00 (2) | 0.03 (2 + 1) | - | - |"  # seed 1's pair pooled in


SEEDS = {"accuracy": {"n": 3, "mean": 0.9, "sd": 0.01}}
SAME = {"seed": 0, "variants": ["default", "onednn-off"], "metrics": {"accuracy": {"n": 2, "mean": 0.9, "sd": 0.001}}}


def _v2(**entry):
    return {"schema": 2, "models": {"m": {"deterministic": False, "params_hash": "h", "seeds": SEEDS} | entry}}


@pytest.mark.parametrize(
    "payload, complaint",
    [
        ([], "not a noise model of schema 1 or 2"),
        ({"schema": 3, "models": {}}, "not a noise model of schema 1 or 2"),
        ({"schema": True, "models": {}}, "not a noise model of schema 1 or 2"),
        ({"schema": 1, "models": []}, "'models' must be a mapping"),
        ({"schema": 1, "models": {"m": {"n": 0, "deterministic": False}}}, "models.m.n: expected a positive run count"),
        ({"schema": 1, "models": {"m": {"n": 3, "deterministic": "no"}}}, "models.m.deterministic"),
        ({"schema": 1, "models": {"m": {"n": 3, "deterministic": False, "accuracy": {"mean": 0.9}, "loss": {}}}}, "models.m.accuracy.sd"),
        ({"schema": 1, "models": {"m": {"n": 3, "deterministic": False, "accuracy": {"mean": 0.9, "sd": -0.1}, "loss": {"mean": 1, "sd": 0}}}}, "cannot be negative"),
        ({"schema": 1, "models": {"m": {"n": 3, "deterministic": False, "accuracy": {"mean": "x", "sd": 0.1}, "loss": {"mean": 1, "sd": 0}}}}, "models.m.accuracy.mean"),
        # schema 2
        ({"schema": 2, "models": {"m": {"deterministic": False}}}, "models.m.seeds: expected a mapping"),
        (_v2(seeds={"accuracy": [0.9]}), "models.m.seeds.accuracy: expected n, mean and sd"),
        (_v2(seeds={"accuracy": {"mean": 0.9, "sd": 0.01}}), "models.m.seeds.accuracy.n: expected a positive run count"),
        (_v2(seeds={"ece": {"n": 2, "mean": 0.9, "sd": -1}}), "models.m.seeds.ece.sd: a standard deviation cannot be negative"),
        (_v2(seeds={"accuracy": {"n": 2, "mean": None, "sd": 0}}), "models.m.seeds.accuracy.mean"),
        (_v2(same_seed=[]), "models.m.same_seed: expected a mapping"),
        (_v2(same_seed=SAME | {"seed": "0"}), "models.m.same_seed.seed: expected a seed"),
        (_v2(same_seed=SAME | {"variants": ["default"]}), "models.m.same_seed.variants: expected a list of 2 or more"),
        (_v2(same_seed=SAME | {"metrics": None}), "models.m.same_seed.metrics: expected a mapping"),
        (_v2(same_seed=SAME | {"metrics": {"accuracy": {"n": 0, "mean": 0.9, "sd": 0}}}), "models.m.same_seed.metrics.accuracy.n"),
        (_v2(same_seed=SAME | {"metrics": {"accuracy": {"n": 2, "mean": 0.9, "sd": float("inf")}}}), "same_seed.metrics.accuracy.sd"),
        (_v2(same_seed=SAME | {"metrics": {"accuracy": {"n": 2, "mean": 0.9, "sd": 0.001, "pooled": {"sd": 0.001, "df": 1, "seeds": [0, 1]}}}}),
         "same_seed.metrics.accuracy.pooled: expected the seeds pooled"),
        (_v2(same_seed=SAME | {"metrics": {"accuracy": {"n": 2, "mean": 0.9, "sd": 0.001, "pooled": {"sd": 0.001, "df": 2, "seeds": [1, 2]}}}}),
         "the default seed among them"),
        (_v2(same_seed=SAME | {"metrics": {"accuracy": {"n": 2, "mean": 0.9, "sd": 0.001, "pooled": {"sd": -1, "df": 2, "seeds": [0, 1]}}}}),
         "pooled.sd: a standard deviation cannot be negative"),
    ],
)
def test_a_malformed_noise_model_names_the_key(payload, complaint):
    with pytest.raises(ArtifactError, match=complaint):
        noise.parse(payload, "noise.json")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=5),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(payload=json_values)
def test_the_parser_rejects_anything_malformed_with_an_artifact_error(payload):
    try:
        parsed = noise.parse(payload, "noise.json")
    except ArtifactError:
        return
    # What it accepts is usable: finite statistics, non-negative spreads, positive counts.
    for metrics in [*parsed.models.values(), *parsed.same_seed.values()]:
        for measured in metrics.values():
            assert math.isfinite(measured.mean) and measured.sd >= 0 and measured.n >= 1


def test_the_parser_rejects_mangled_schema_2_files():
    """Schema 2's nesting is deeper than random payloads reach: mangle a valid file one key at a time."""
    valid = _v2(same_seed=SAME)
    noise.parse(valid, "noise.json")
    for path in (("seeds",), ("seeds", "accuracy"), ("same_seed",), ("same_seed", "metrics"), ("same_seed", "metrics", "accuracy")):
        for junk in (None, "x", -1, [], True, {"n": True, "mean": 0.9, "sd": 0.1}, {"n": 2, "mean": float("nan"), "sd": 0}):
            payload = json.loads(json.dumps(valid))
            parent = payload["models"]["m"]
            for key in path[:-1]:
                parent = parent[key]
            parent[path[-1]] = junk
            try:
                parsed = noise.parse(payload, "noise.json")
            except ArtifactError:
                continue
            assert all(m.n >= 1 and m.sd >= 0 for metrics in parsed.same_seed.values() for m in metrics.values())


@settings(max_examples=200, deadline=None)
@given(
    model=st.fixed_dictionaries({
        "n": st.integers(min_value=1, max_value=50),
        "deterministic": st.booleans(),
        "accuracy": st.fixed_dictionaries({"mean": st.floats(0, 1), "sd": st.floats(0, 0.1)}),
        "loss": st.fixed_dictionaries({"mean": st.floats(0, 10), "sd": st.floats(0, 1)}),
    })
)
def test_the_parser_accepts_every_well_formed_model(model):
    parsed = noise.parse({"schema": 1, "models": {"m": model}}, "noise.json")
    assert parsed.get("m", "accuracy").sd == model["accuracy"]["sd"]
    assert parsed.schema == 1 and parsed.same_seed == {}  # schema 1 measured no same-seed spread


stats = st.fixed_dictionaries({"n": st.integers(1, 50), "mean": st.floats(0, 1), "sd": st.floats(0, 0.1)})


@settings(max_examples=200, deadline=None)
@given(
    seeds=st.dictionaries(st.sampled_from(noise.SUMMARISED_METRICS), stats, max_size=4),
    same=st.one_of(st.none(), st.fixed_dictionaries({
        "seed": st.one_of(st.none(), st.integers(0, 100)),
        "variants": st.lists(st.text(max_size=8), min_size=2, max_size=6),
        "metrics": st.dictionaries(st.sampled_from(noise.SUMMARISED_METRICS), stats, max_size=4),
    })),
)
def test_the_parser_accepts_every_well_formed_schema_2_model(seeds, same):
    entry = {"deterministic": False, "params_hash": "h", "seeds": seeds} | ({} if same is None else {"same_seed": same})
    parsed = noise.parse({"schema": 2, "models": {"m": entry}}, "noise.json")
    for metric, values in seeds.items():
        assert (parsed.get("m", metric).n, parsed.get("m", metric).sd) == (values["n"], values["sd"])
    for metric, values in (same or {}).get("metrics", {}).items():
        assert parsed.get_same_seed("m", metric).sd == values["sd"] and parsed.get_same_seed("m", metric).seed == same["seed"]


def test_load_names_a_missing_or_damaged_file(tmp_path):
    with pytest.raises(ArtifactError, match="noise model not found.*seed_spread.py"):
        noise.load(tmp_path / "noise.json")
    (tmp_path / "noise.json").write_text("{")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        noise.load(tmp_path / "noise.json")


def _measured(n, sd, deterministic=False):
    return noise.ModelNoise("m", "accuracy", n, 0.98, sd, deterministic, "h")


def test_the_tolerance_is_the_t_quantile_of_a_two_run_difference():
    from scipy.stats import t

    assert noise.tolerance(_measured(10, 0.001), 0.01, 0.0) == pytest.approx(t.ppf(0.99, 9) * 0.001 * math.sqrt(2))
    # Fewer seeds: a less certain sd, a wider tolerance; a deterministic model: the resolution.
    assert noise.tolerance(_measured(5, 0.001), 0.01, 0.0) > noise.tolerance(_measured(20, 0.001), 0.01, 0.0)
    assert noise.tolerance(_measured(1, 0.0, deterministic=True), 0.01, 0.0007) == 0.0007
    assert noise.tolerance(_measured(20, 1e-6), 0.01, 0.0007) == 0.0007  # never below the resolution
    assert noise.per_model_alpha(0.01, 8) == 0.00125


def _same(n, sd):
    return noise.SameSeedNoise("m", "accuracy", 0, n, 0.98, sd, ("v",) * n, "h")


def test_the_same_seed_tolerance_is_the_t_quantile_of_two_runs_numerics_noise():
    from scipy.stats import t

    assert noise.same_seed_tolerance(_same(6, 0.0005), 0.00125, 0.0) == pytest.approx(t.ppf(1 - 0.00125, 5) * 0.0005 * math.sqrt(2))
    assert noise.same_seed_tolerance(_same(6, 0.0005), 0.00125, 0.0) == pytest.approx(7.93 * 0.0005, rel=1e-3)  # the docstring's factor
    assert noise.same_seed_tolerance(_same(6, 0.0), 0.01, 0.001) == 0.001  # bit-identical variants: the resolution
    assert noise.same_seed_tolerance(_same(6, 1e-6), 0.01, 0.001) == 0.001
    with pytest.raises(ValueError, match="at least 2 variants"):
        noise.same_seed_tolerance(_same(1, 0.001), 0.01, 0.0)


@pytest.mark.parametrize("against", ["mean", "run"])
@pytest.mark.parametrize("runs", [5, 10, 20])
def test_the_derived_tolerance_has_the_stated_false_alarm_rate(runs, against):
    """Monte Carlo of the whole procedure: measure mean and sd from ``runs`` seeds, then judge a fresh
    run against that mean, or against one other fresh run.

    Over many repetitions, the share of fresh runs that fall more than the tolerance below the
    reference must match alpha: the derivation is neither loose nor tight.
    """
    from scipy.stats import t

    rng = np.random.default_rng(0)
    alpha, sigma, trials = 0.05, 0.001, 200_000
    seeds = rng.normal(0.98, sigma, size=(trials, runs))
    means, sds = seeds.mean(axis=1), seeds.std(axis=1, ddof=1)
    spread = math.sqrt(1 + 1 / runs) if against == "mean" else math.sqrt(2)
    tolerances = t.ppf(1 - alpha, runs - 1) * sds * spread
    reference = means if against == "mean" else rng.normal(0.98, sigma, size=trials)
    now = rng.normal(0.98, sigma, size=trials)
    false_alarms = np.mean(now < reference - tolerances)
    assert false_alarms == pytest.approx(alpha, rel=0.05)
    # The library computes exactly these tolerances.
    assert noise.tolerance(_measured(runs, float(sds[0])), alpha, 0.0, against=against) == pytest.approx(tolerances[0])


@pytest.mark.parametrize(("variants", "pairs"), [(3, 0), (6, 0), (6, 9)])
def test_the_same_seed_tolerance_has_the_stated_false_alarm_rate(variants, pairs):
    """A seed's offset, however large, is shared by the two runs of it: only their numerics noise differs.
    Other seeds run twice (``pairs``) add one degree of freedom each to the pooled s_num, whatever their offsets."""
    rng = np.random.default_rng(1)
    alpha, sigma_num, offset, trials = 0.05, 0.0005, -0.006, 200_000
    runs = offset + rng.normal(0, sigma_num, size=(trials, variants))
    other_seeds = rng.normal(0, 0.002, size=(trials, pairs, 1)) + rng.normal(0, sigma_num, size=(trials, pairs, 2))
    squares = runs.var(axis=1, ddof=1) * (variants - 1) + other_seeds.var(axis=2, ddof=1).sum(axis=1)
    s_num = np.sqrt(squares / (variants - 1 + pairs))
    baseline, now = (0.98 + offset + rng.normal(0, sigma_num, size=trials) for _ in range(2))
    tolerances = noise.critical_t(alpha, variants - 1 + pairs) * s_num * math.sqrt(2)
    assert np.mean(now < baseline - tolerances) == pytest.approx(alpha, rel=0.05)
    measured = noise.SameSeedNoise("m", "accuracy", 0, variants, 0.98, float(s_num[0]), ("v",) * variants, "h", pairs, pairs)
    assert noise.same_seed_tolerance(measured, alpha, 0.0) == pytest.approx(tolerances[0])


def test_the_committed_noise_model_covers_every_model_in_params():
    from conftest import REPO_ROOT
    from mnist_pipeline.config import load_params
    from mnist_pipeline.models.base import params_hash

    params = load_params(REPO_ROOT / "params.yaml")
    measured = noise.load(REPO_ROOT / params.paths.noise_model)
    payload = json.loads((REPO_ROOT / params.paths.noise_model).read_text())
    assert measured.schema in noise.READABLE_SCHEMAS
    for name, model in params.models.items():
        entry = payload["models"][name]
        assert entry["params_hash"] == params_hash(model, without_seed=True), f"{name}: noise measured for other params"
        accuracy = measured.get(name, "accuracy")
        if hasattr(model, "seed"):
            assert accuracy.n >= 10 and not accuracy.deterministic, name
            assert accuracy.n >= 20 or entry["fit_seconds_median"] >= 30, name
        else:
            assert accuracy.deterministic, name
    assert payload["machine"]["cpu"] and payload["versions"]["tensorflow"]


def test_every_floor_sits_far_below_the_measured_noise():
    """A floor is a backstop: no reseed may come near it (6 sd below the mean, and below every run)."""
    from conftest import REPO_ROOT
    from mnist_pipeline.config import load_params

    params = load_params(REPO_ROOT / "params.yaml")
    payload = json.loads((REPO_ROOT / params.paths.noise_model).read_text())
    for name, floors in params.gate.floors.items():
        entry = payload["models"][name]
        accuracy = entry["seeds"]["accuracy"] if payload["schema"] >= 2 else entry["accuracy"]
        floor = floors["accuracy"]
        assert floor < accuracy["min"], name
        assert floor <= accuracy["mean"] - 6 * accuracy["sd"], name
