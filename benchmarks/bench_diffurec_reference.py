"""DiffuRec: this plugin against the reference code (WHUIR/DiffuRec), side by side in one run.

The reference code is not part of this project; clone it and pass its ``src`` folder:

    git clone https://github.com/WHUIR/DiffuRec ../DiffuRec
    python -m benchmarks.bench_diffurec_reference --reference ../DiffuRec/src

1. Same function: the reference model is built with its own defaults (main.py) and given
   this plugin's weights; in eval mode, with the same uncertainty draws, both approximators
   predict x0 for the same histories and noised targets (the reference pads on the left,
   RecBole on the right; neither uses positions, so the values must agree).
2. Speed: training steps (forward, backward, Adam) on the same batches, and the full
   reverse chain for the same users, alternating between the two on this machine.

The reference runs with ``schedule_sampler_name='uniform'``: its default ``lossaware``
sampler is never updated by its trainer (the call is commented out), so it samples
uniformly anyway, and it uses ``np.int``, which numpy >= 1.24 removed.

Writes benchmarks/diffurec_reference.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import statistics
import sys
import time
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Callable, Dict, List

if __name__ == "__main__" and not __package__:
    raise SystemExit(
        "run it as a module from the repository root: "
        "python -m benchmarks.bench_diffurec_reference --reference <clone>/src"
    )

import torch  # noqa: E402
from recbole.data import create_dataset  # noqa: E402
from recbole.utils import init_seed  # noqa: E402

from recbole_diffrec.config import Config  # noqa: E402
from recbole_diffrec.convert import ensure_release_converted  # noqa: E402
from recbole_diffrec.data import data_preparation  # noqa: E402

from .runner import ROOT  # noqa: E402

# The reference's own modules, in import order: each imports the earlier ones by bare name.
REFERENCE_MODULES = ("step_sample", "diffurec", "model")
DATASETS = {
    "amazon-beauty": ROOT / "properties" / "dataset" / "amazon-beauty.yaml",
    "amazon-toys": ROOT / "properties" / "dataset" / "amazon-toys.yaml",
}


def reference_args(n_items: int, config) -> SimpleNamespace:
    """The reference main.py defaults, sized like the plugin model."""
    return SimpleNamespace(
        hidden_size=config["hidden_size"],
        max_len=config["MAX_ITEM_LIST_LENGTH"],
        dropout=config["dropout"],
        emb_dropout=config["emb_dropout"],
        num_blocks=config["n_layers"],
        schedule_sampler_name="uniform",
        diffusion_steps=config["steps"],
        lambda_uncertainty=config["lambda_uncertainty"],
        noise_schedule="trunc_lin",
        rescale_timesteps=True,
        item_num=n_items - 1,  # the reference adds the padding item itself
    )


@torch.no_grad()
def copy_plugin_weights(reference, plugin) -> None:
    """Give the reference model the plugin model's parameters."""
    hidden = plugin.hidden_size
    xstart = reference.diffu.xstart_model
    reference.item_embeddings.weight.copy_(plugin.item_embedding.weight)
    reference.LayerNorm.weight.copy_(plugin.emb_norm.weight)
    reference.LayerNorm.bias.copy_(plugin.emb_norm.bias)
    xstart.time_embed.load_state_dict(plugin.time_embed.state_dict())
    xstart.norm_diffu_rep.weight.copy_(plugin.out_norm.weight)
    xstart.norm_diffu_rep.bias.copy_(plugin.out_norm.bias)
    for ref_block, block in zip(
        xstart.att.transformer_blocks, plugin.transformer.layers
    ):
        for i, linear in enumerate(ref_block.attention.linear_layers):
            linear.weight.copy_(
                block.attention.qkv.weight[i * hidden : (i + 1) * hidden]
            )
            linear.bias.copy_(block.attention.qkv.bias[i * hidden : (i + 1) * hidden])
        ref_block.attention.w_layer.load_state_dict(block.attention.out.state_dict())
        ref_block.feed_forward.w_1.load_state_dict(block.feed_forward_in.state_dict())
        ref_block.feed_forward.w_2.load_state_dict(block.feed_forward_out.state_dict())
        for ref_norm, norm in (
            (ref_block.input_sublayer.norm, block.attention_norm),
            (ref_block.output_sublayer.norm, block.feed_forward_norm),
        ):
            ref_norm.weight.copy_(norm.weight)
            ref_norm.bias.copy_(norm.bias)


def left_padded(item_seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Index that moves RecBole's right-padded rows to the reference's left padding."""
    width = item_seq.shape[1]
    return (torch.arange(width).unsqueeze(0) - (width - lengths).unsqueeze(1)) % width


@torch.no_grad()
def x0_difference(reference, plugin, batch) -> Dict[str, float]:
    """Both approximators on one batch, eval mode, the same uncertainty draws."""
    reference.eval()
    plugin.eval()
    item_seq, lengths = batch[plugin.ITEM_SEQ], batch[plugin.ITEM_SEQ_LEN]
    index = left_padded(item_seq, lengths)
    scale = torch.normal(
        plugin.lambda_uncertainty,
        plugin.lambda_uncertainty,
        size=(*item_seq.shape, plugin.hidden_size),
    )
    x_t = torch.randn(len(item_seq), plugin.hidden_size)
    t = torch.randint(0, plugin.diffusion.steps, (len(item_seq),))
    normal = torch.normal
    try:
        torch.normal = lambda *args, **kwargs: scale
        ours = plugin.approximate_x0(
            plugin.encode_history(item_seq), plugin._masks(item_seq), lengths, x_t, t
        )
        torch.normal = lambda *args, **kwargs: scale.gather(
            1, index.unsqueeze(-1).expand_as(scale)
        )
        ref_seq = item_seq.gather(1, index)
        item_rep = reference.LayerNorm(reference.item_embeddings(ref_seq))
        theirs, _ = reference.diffu.xstart_model(
            item_rep,
            x_t,
            reference.diffu._scale_timesteps(t),
            (ref_seq > 0).float(),
        )
    finally:
        torch.normal = normal
    return {
        "max_abs_difference": float((ours - theirs).abs().max()),
        "max_abs_x0": float(theirs.abs().max()),
    }


def timed(step: Callable[[], None]) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def load_reference(source: Path) -> ModuleType:
    """The reference's ``model`` module. Its modules import each other as top-level names,
    so each is loaded from ``source`` and registered under its bare name first."""
    for name in REFERENCE_MODULES:
        path = source / f"{name}.py"
        if not path.is_file():
            raise SystemExit(
                f"--reference: {source} has no {name}.py; allowed: the src/ folder of a "
                "clone of https://github.com/WHUIR/DiffuRec"
            )
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules["model"]


def build_pair(args, reference_model: ModuleType):
    """The plugin model on the dataset, the reference model with its weights, the
    training batches and the plugin's config."""
    config = Config(
        "DiffuRec",
        args.dataset,
        [str(DATASETS[args.dataset])],
        {"show_progress": False, "state": "WARNING", "eval_batch_size": args.users},
    )
    init_seed(2020, True)
    ensure_release_converted(config)
    train, _, test = data_preparation(config, create_dataset(config))
    plugin = config.model_class(config, train.dataset)
    settings = reference_args(plugin.n_items, config)
    reference = reference_model.Att_Diffuse_model(
        reference_model.create_model_diffu(settings), settings
    )
    copy_plugin_weights(reference, plugin)
    batches = []
    for batch in train:
        batches.append(batch)
        if len(batches) > args.batches:
            break
    return config, plugin, reference, batches, next(iter(test))[0]


def training_steps(model, loss, batches, learning_rate: float) -> Callable[[], None]:
    """Forward, backward and Adam on every batch but the first (kept for fidelity)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)

    def run() -> None:
        model.train()
        for batch in batches[1:]:
            optimizer.zero_grad()
            loss(batch).backward()
            optimizer.step()

    return run


def tasks(config, plugin, reference, batches, users) -> Dict[str, Dict[str, Callable]]:
    """The timed steps of both models: training batches and the full reverse chain."""

    def reference_loss(batch):
        index = left_padded(batch[plugin.ITEM_SEQ], batch[plugin.ITEM_SEQ_LEN])
        target = batch[plugin.POS_ITEM_ID].unsqueeze(-1)
        _, rep, _, _, _, _ = reference(
            batch[plugin.ITEM_SEQ].gather(1, index), target, train_flag=True
        )
        return reference.loss_diffu_ce(rep, target)

    ref_users = users[plugin.ITEM_SEQ].gather(
        1, left_padded(users[plugin.ITEM_SEQ], users[plugin.ITEM_SEQ_LEN])
    )

    @torch.no_grad()
    def plugin_inference() -> None:
        plugin.eval()
        plugin.full_sort_predict(users)

    @torch.no_grad()
    def reference_inference() -> None:
        reference.eval()
        _, rep, _, _, _, _ = reference(
            ref_users, users[plugin.ITEM_ID].unsqueeze(-1), train_flag=False
        )
        reference.diffu_rep_pre(rep)

    rate = config["learning_rate"]
    return {
        "training": {
            "plugin": training_steps(plugin, plugin.calculate_loss, batches, rate),
            "reference": training_steps(reference, reference_loss, batches, rate),
        },
        "inference": {"plugin": plugin_inference, "reference": reference_inference},
    }


def median_seconds(runs: Dict[str, Dict[str, Callable]], rounds: int, per_unit) -> List:
    """Rows ``(task, reference s, plugin s, speed-up)``, alternating the two models."""
    rows = []
    for task, pair in runs.items():
        seconds: Dict[str, List[float]] = {"plugin": [], "reference": []}
        for _ in range(rounds):
            for who in ("reference", "plugin"):
                seconds[who].append(timed(pair[who]))
        ref = statistics.median(seconds["reference"]) / per_unit[task]
        ours = statistics.median(seconds["plugin"]) / per_unit[task]
        rows.append((task, ref, ours, ref / ours))
    return rows


def report(args, config, fidelity, rows, users: int) -> str:
    unit = {
        "training": f"s per batch of {config['train_batch_size']} (forward, backward, Adam)",
        "inference": f"s per {users} users ({config['steps']} reverse steps)",
    }
    lines = [
        "# DiffuRec: plugin vs reference code",
        "",
        f"`python -m benchmarks.bench_diffurec_reference --reference {args.reference}"
        f" --dataset {args.dataset}`, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}; both models in "
        f"one process, timings alternate ({args.rounds} rounds, median).",
        "",
        f"Same function: with the plugin's weights, in eval mode and with the same "
        f"uncertainty draws, the x0 predictions differ by at most "
        f"{fidelity['max_abs_difference']:.1e} (largest |x0| {fidelity['max_abs_x0']:.2f}).",
        "",
        "| task | unit | reference | plugin | speed-up |",
        "|---|---|---|---|---|",
    ]
    for task, ref, ours, ratio in rows:
        lines.append(
            f"| {task} | {unit[task]} | {ref:.2f} | {ours:.2f} | {ratio:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_diffurec_reference",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument(
        "--reference", required=True, help="the src/ folder of a WHUIR/DiffuRec clone"
    )
    parser.add_argument("--dataset", default="amazon-beauty", choices=sorted(DATASETS))
    parser.add_argument(
        "--batches", type=int, default=10, help="training batches timed"
    )
    parser.add_argument("--rounds", type=int, default=2, help="alternations per timing")
    parser.add_argument(
        "--users", type=int, default=512, help="users in the timed inference batch"
    )
    parser.add_argument(
        "--out", default=str(ROOT / "benchmarks" / "diffurec_reference.md")
    )
    args = parser.parse_args()
    sys.argv = sys.argv[:1]  # RecBole's Config reads the command line too

    reference_model = load_reference(Path(args.reference).resolve())
    config, plugin, reference, batches, users = build_pair(args, reference_model)
    fidelity = x0_difference(reference, plugin, batches[0])
    runs = tasks(config, plugin, reference, batches, users)
    per_unit = {"training": len(batches) - 1, "inference": 1}
    rows = median_seconds(runs, args.rounds, per_unit)
    text = report(args, config, fidelity, rows, len(users))
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
