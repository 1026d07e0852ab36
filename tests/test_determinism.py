"""Identical reruns: two runs of each plugin model with the same seed in one process give
the same validation curve and test metrics on CPU."""

import pytest

from conftest import (
    FAST,
    PAPER_PROTOCOL_YAML,
    SEQ_TINY,
    SEQUENCE_YAML,
    SVD,
    make_release,
    release_settings,
)
from recbole_diffrec import run

MODELS = {
    "DiffRec": {},
    "LDiffRec": SVD,
    "TDiffRec": {},
    "LTDiffRec": SVD,
    "DiffuRec": {},
    "SeqDiffRec": {},
}


def job(workdir, model):
    if model in ("DiffuRec", "SeqDiffRec"):
        from recbole_diffrec.synthetic import generate_sequences, write_sequences

        path = write_sequences(
            generate_sequences(60, 30, 6, 12, follow=0.9, seed=0),
            workdir / "gen.jsonl",
        )
        settings = {
            # the models' own dropout kept: it draws random numbers too
            **{k: v for k, v in SEQ_TINY.items() if not k.endswith("dropout")},
            "epochs": 2,
            "sequence_file": str(path),
            "data_path": str(workdir / "data"),
        }
        return "gen-seq", [SEQUENCE_YAML], settings
    folder = workdir / "release"
    make_release(folder, users=200, items=120)
    settings = release_settings(folder, workdir, **FAST, **MODELS[model])
    return "toy", [PAPER_PROTOCOL_YAML], settings


@pytest.mark.parametrize("model", list(MODELS))
def test_same_seed_same_metrics(workdir, model):
    dataset, files, settings = job(workdir, model)
    first, second = (
        run(model, dataset, files, {**settings, "checkpoint_dir": f"saved{i}"})
        for i in range(2)
    )
    assert len(first["valid_curve"]) == settings["epochs"]
    assert first["valid_curve"] == second["valid_curve"]
    assert first["best_valid_result"] == second["best_valid_result"]
    assert first["test_result"] == second["test_result"]
