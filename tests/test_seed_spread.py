"""``benchmarks/seed_spread.py``: the plain campaign's plan, and the campaign shared by workers through one Optuna study.

No training: ``run_in_child`` is replaced by a fake that appends a made-up row (as the child
does) and records the run. A model's default run reports a fit of ``FIT[model]`` seconds, so the
seeds' count follows ``seeds_to_measure``: 6 (instead of 20) for a fast model, 3 (instead of 10)
for a slow one.
"""

from __future__ import annotations

import collections
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import REPO_ROOT, keep_models
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.models.base import params_hash

FIT = {"mlp": 40.0, "sgd": 2.0}  # mlp slow, sgd fast; gaussian_nb has no seed
VARIANTS = ["default", "onednn-off", "threads-1", "onednn-off-threads-1", "threads-4", "onednn-off-threads-4"]


def load_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("seed_spread_under_test", REPO_ROOT / "benchmarks" / "seed_spread.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def spread(tmp_path, monkeypatch):
    """The script, run in ``tmp_path`` (a trimmed params.yaml, a fake test-sets manifest), its children faked.

    ``spread.calls`` lists each (model, seed, variant) the fake ran; ``spread.fail_on`` makes it
    raise (as a failed training does) on that run, once.
    """
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    keep_models(raw, {name: raw["models"][name] for name in ("mlp", "sgd", "gaussian_nb")})
    raw["sweep"] |= {"heartbeat_s": 1, "grace_s": 3}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    manifest = tmp_path / raw["paths"]["testsets_dir"] / "manifest.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text('{"params": {"fake": true}, "sha256": {}}')
    for split, count in (("train", 540), ("validation", 60)):  # how many digits each model fits on is part of a run
        folder = tmp_path / raw["paths"][f"processed_{split}_dir"]
        folder.mkdir(parents=True)
        np.save(folder / "labels.npy", np.zeros(count, dtype=np.uint8))
    monkeypatch.chdir(tmp_path)
    module = load_script()
    monkeypatch.setattr(module, "SEEDS_IF_FAST", 6)  # fewer runs, the same rule
    monkeypatch.setattr(module, "SEEDS_IF_SLOW", 3)
    module.calls, module.fail_on, lock = [], set(), threading.Lock()
    params = module.load_params()

    def fake_run_in_child(name, seed, variant, runs_path, train_only):
        from mnist_pipeline.data.testsets import manifest_digest

        time.sleep(0.02)
        if (name, seed, variant) in module.fail_on:
            module.fail_on.discard((name, seed, variant))
            raise PipelineError(f"{name} seed {seed} ({variant}): the training process failed (1)")
        model = params.model(name)
        fit = FIT.get(name, 1.0) if seed == getattr(model, "seed", None) and variant == "default" else 1.0
        if seed is not None and variant == "default" and seed == model.seed:
            folder = module.model_folder(name, model, seed, variant)  # what the child keeps: plain mode reads its fit time
            folder.mkdir(parents=True, exist_ok=True)
            (folder / module.FIT_FILE).write_text(json.dumps({"fit_seconds": fit}))
        row = {"model": name, "type": model.type, "params_hash": params_hash(model, without_seed=True), "seed": seed, "variant": variant,
               **{metric: 0.9 for metric in module.ROW_METRICS}, "testsets": manifest_digest(manifest.parent),
               "fit_digits": module.fit_digits(model, params.paths),
               "fit_seconds": fit, "epochs": 1, "machine": {"cpu": "fake", "cpu_count": 1}, "versions": {}}
        with lock:
            module.append_run(runs_path, row)
            module.calls.append((name, seed, variant))
        return row

    monkeypatch.setattr(module, "run_in_child", fake_run_in_child)
    module.url = f"sqlite:///{tmp_path / 'campaign.db'}"
    module.runs_path = tmp_path / raw["paths"]["noise_runs"]
    return module


def expected_plan(seeds_of_mlp=3, seeds_of_sgd=6) -> list[tuple]:
    """Per model: the default seed under every variant, the other seeds, then each of those again with oneDNN off (pooled)."""
    plan = []
    for name, seeds in (("mlp", seeds_of_mlp), ("sgd", seeds_of_sgd)):
        plan += [(name, 0, variant) for variant in VARIANTS] + [(name, seed, "default") for seed in range(1, seeds)]
        plan += [(name, seed, "onednn-off") for seed in range(1, seeds)]
    return plan + [("gaussian_nb", None, "default")]


def rows_by_run(spread) -> collections.Counter:
    return collections.Counter((row["model"], row["seed"], row["variant"]) for row in spread.read_runs(spread.runs_path))


def workers(spread, count: int, *extra: str) -> list[int]:
    """``count`` workers of the campaign ``test``, as threads; their exit statuses."""
    codes = [None] * count

    def work(index: int) -> None:
        codes[index] = spread.main(["--study", "test", "--storage", spread.url, *extra])

    threads = [threading.Thread(target=work, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return codes


def test_plain_mode_plans_the_default_seed_under_every_variant_then_the_seeds(spread):
    assert spread.main([]) == 0
    assert spread.calls == expected_plan()  # mlp's default fit (40 s) came first: 3 seeds; sgd's (2 s): 6
    assert spread.main([]) == 0 and len(spread.calls) == len(expected_plan())  # all done: nothing rerun
    assert json.loads(Path("noise/noise.json").read_text())["models"].keys() == {"mlp", "sgd", "gaussian_nb"}


def test_two_workers_share_the_plan_each_run_done_once_and_merged_once(spread):
    assert workers(spread, 2) == [0, 0]
    assert sorted(spread.calls, key=str) == sorted(expected_plan(), key=str)  # mlp's seeds 3..5 were dropped: it is slow
    assert rows_by_run(spread) == collections.Counter(expected_plan())  # each worker's merge added none twice
    # Another machine's summary: the study's rows merged into its own, empty, runs file.
    spread.runs_path.rename(spread.runs_path.with_suffix(".elsewhere"))
    assert spread.main(["--summarize-only", "--study", "test", "--storage", spread.url]) == 0
    assert rows_by_run(spread) == collections.Counter(expected_plan())
    assert spread.main(["--summarize-only", "--study", "test", "--storage", spread.url]) == 0
    assert rows_by_run(spread) == collections.Counter(expected_plan())


def test_a_restart_does_only_the_runs_left(spread):
    assert spread.main(["--models", "sgd", "--seeds", "2"]) == 0  # first without --study: sgd's default seed (6 runs) and seed 1
    local = list(spread.calls)
    spread.fail_on.add(("sgd", 3, "default"))
    assert workers(spread, 1, "--seeds", "4") == [2]  # a training fails: the worker stops with its error
    before = list(spread.calls)
    assert len(before) > len(local) and not set(before[len(local):]) & set(local)  # the local runs file's runs count as done
    assert workers(spread, 2, "--seeds", "4") == [0, 0]
    after = spread.calls[len(before):]
    assert ("sgd", 3, "default") in after and not set(after) & set(before)
    assert collections.Counter(spread.calls) == collections.Counter(expected_plan(4, 4))  # each run done once
    assert rows_by_run(spread) == collections.Counter(expected_plan(4, 4))


def test_the_run_of_a_dead_worker_is_done_by_another(spread):
    import optuna
    from optuna.trial import TrialState

    from mnist_pipeline.sweep import storage as sweep_storage

    args = ["--models", "sgd", "gaussian_nb", "--seeds", "2"]
    spread.fail_on.add(("sgd", 0, "default"))  # the first worker queues the plan and stops at its first run
    assert workers(spread, 1, *args) == [2]
    settings = spread.load_params().sweep.model_copy(update={"study_name": "test"})
    storage = sweep_storage.open_storage(spread.url, settings)
    study = optuna.load_study(study_name="test", storage=storage)
    with pytest.warns(UserWarning, match="Heartbeat"):
        dead = study.ask()  # a worker takes the next run, beats once, and dies
    storage.record_heartbeat(dead._trial_id)
    taken = dead.user_attrs[spread.RUN_ATTR]
    started = time.monotonic()
    assert workers(spread, 1, *args) == [0]  # does the rest, waits for the silent run until its grace is over, then does it
    assert time.monotonic() - started >= settings.grace_period
    assert study._storage.get_trial(dead._trial_id).state == TrialState.FAIL
    ran = collections.Counter(spread.calls)
    assert ran[(taken["model"], taken["seed"], taken["variant"])] == 1
    plan = [("sgd", 0, variant) for variant in VARIANTS] + [("sgd", 1, "default"), ("sgd", 1, "onednn-off"), ("gaussian_nb", None, "default")]
    assert sorted(ran, key=str) == sorted(plan, key=str) and set(ran.values()) == {1}
    assert rows_by_run(spread) == collections.Counter(plan)


def test_errors_name_the_params_that_differ_the_storage_and_a_missing_campaign(spread, caplog):
    assert workers(spread, 1, "--models", "gaussian_nb") == [0]
    raw = yaml.safe_load(Path("params.yaml").read_text())
    raw["models"]["gaussian_nb"]["var_smoothing"] = 1.0e-5
    Path("params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    assert workers(spread, 1) == [2]
    assert "planned with other params for ['gaussian_nb']" in caplog.text
    assert spread.main(["--study", "test", "--storage", "postgresql+psycopg://u:secret@127.0.0.1:9/db"]) == 2
    assert "PostgreSQL at 127.0.0.1:9, password hidden" in caplog.text and "secret" not in caplog.text
    assert spread.main(["--summarize-only", "--study", "nope", "--storage", spread.url]) == 2
    assert "has no campaign 'nope'" in caplog.text


def test_a_run_fitted_on_other_digits_is_redone_and_left_out_of_the_summary(spread):
    """A model whose training digits changed (the validation split took 6,000 of them) is not the model measured."""
    model = spread.load_params().model("sgd")
    stale = {"model": "sgd", "type": "sgd", "params_hash": params_hash(model, without_seed=True), "seed": 0, "variant": "default",
             "accuracy": 0.1, "fit_digits": 60_000, "testsets": "whatever", "fit_seconds": 1.0, "machine": {"cpu": "x", "cpu_count": 1}}
    spread.append_run(spread.runs_path, stale)
    # A row recorded before the split has no fit_digits: it fitted on all 60,000 training digits.
    assert spread.recorded_fit_digits({k: v for k, v in stale.items() if k != "fit_digits"}, model) == 60_000
    assert spread.main(["--models", "sgd"]) == 0
    assert ("sgd", 0, "default") in spread.calls  # redone
    noise = json.loads(Path("noise/noise.json").read_text())
    assert 0.1 not in noise["models"]["sgd"]["seeds"]["accuracy"]["values"]


def test_no_variants_measures_the_seeds_under_the_default_numerics_only(spread):
    assert spread.main(["--models", "sgd", "--no-variants"]) == 0
    assert spread.calls == [("sgd", seed, "default") for seed in range(6)]
