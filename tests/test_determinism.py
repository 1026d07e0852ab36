"""Identical reruns: two runs of each plugin model with the same seed in one process give
the same validation curve and test metrics on CPU."""

import pytest

from conftest import FAST, PAPER_PROTOCOL_YAML, ROOT, make_release, release_settings
from recbole_diffrec import run

SEQUENCE_YAML = str(ROOT / "properties" / "dataset" / "amazon-beauty.yaml")
SEQ_TINY = {
    "state": "WARNING",
    "show_progress": False,
    "hidden_size": 32,
    "n_layers": 1,
    "n_heads": 2,
    "MAX_ITEM_LIST_LENGTH": 10,
    "train_batch_size": 64,
    "eval_batch_size": 256,
    "steps": 24,
    "epochs": 2,
}
SVD = {"item_emb_source": "svd", "item_emb_svd_dim": 16}
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
            **SEQ_TINY,
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
