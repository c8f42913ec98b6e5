"""The paper's framework outside RL: is training with tGELU + output-layer clip + SGD consistent?

    python scripts/supervised_consistency.py [--seeds 10] [--out results/supervised]

Two real data sets that scikit-learn ships (no download; the ``supervised`` extra):

* ``digits``: 8x8 handwritten digits, 1,797 images, 10 classes; cross-entropy classification;
* ``diabetes``: 442 patients, 10 features, disease progression after a year; MSE regression on the
  standardised target, error reported as RMSE in the target's own units.

Each is split once (25% test, ``random_state=0``, stratified for digits) and standardised with the
training split's statistics; a seed then changes only the initial weights and the minibatch order.
Every variant trains the same MLP (``QNetwork``: 64-64 hidden units, output layer ``.head``) for
the same number of epochs:

* ``framework``: tGELU(-1, 1), SGD, the output layer's gradient clipped to norm 1 each step
  (``OutputGradClip``);
* ``relu-sgd``, ``gelu-sgd``: the same SGD without the clip; ``relu-adam``: Adam at 1e-3.

The SGD variants run at two step sizes, 0.05 and 0.01 (the name says which); nothing is tuned per
variant.

Measured per run: the test metric after the last epoch; the full training loss after every epoch;
the L2 norm of each step's whole parameter change. Reported over seeds: test metric mean, std,
min and max; the variance of update norms (over the steps of a run, averaged over runs); the
training loss's roughness (mean |ln L(e+1) - ln L(e)| over consecutive epochs, the definition the
sweep report uses for TD losses) and the share of epochs whose loss rose; the spread of the final
training loss across seeds. Writes ``report.md``, ``report.json`` and ``loss_curves.png``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

from dqn_stable import OutputGradClip, QNetwork
from dqn_stable.diagnostics import RunningStats
from dqn_stable.report import roughness

TASKS = {
    # name: (loader, kind, epochs, batch size, metric)
    "digits": ("load_digits", "classification", 60, 64, "test accuracy"),
    "diabetes": ("load_diabetes", "regression", 200, 32, "test RMSE"),
}
VARIANTS = {
    # name: (activation, optimizer, lr, output clip lambda or None); SGD at two step sizes
    "framework-sgd0.05": ("tgelu", "sgd", 0.05, 1.0),
    "relu-sgd0.05": ("relu", "sgd", 0.05, None),
    "gelu-sgd0.05": ("gelu", "sgd", 0.05, None),
    "framework-sgd0.01": ("tgelu", "sgd", 0.01, 1.0),
    "relu-sgd0.01": ("relu", "sgd", 0.01, None),
    "gelu-sgd0.01": ("gelu", "sgd", 0.01, None),
    "relu-adam1e-3": ("relu", "adam", 1e-3, None),
}
HIDDEN = (64, 64)
SPLIT_SEED = 0


def load_task(name: str) -> dict:
    """Train/test tensors, standardised with the training split's mean and std."""
    try:
        from sklearn import datasets
        from sklearn.model_selection import train_test_split
    except ImportError:
        sys.exit("error: scikit-learn is missing; run: pip install -e '.[supervised]'")
    loader, kind, *_ = TASKS[name]
    x, y = getattr(datasets, loader)(return_X_y=True)
    stratify = y if kind == "classification" else None
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, random_state=SPLIT_SEED, stratify=stratify)
    mean, std = x_train.mean(0), x_train.std(0)
    std[std == 0] = 1.0  # digits has pixels that are always 0
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    task = {"kind": kind, "y_scale": 1.0}
    if kind == "regression":
        y_mean, y_std = y_train.mean(), y_train.std()
        y_train, y_test = (y_train - y_mean) / y_std, (y_test - y_mean) / y_std
        task["y_scale"] = float(y_std)
        task["outputs"] = 1
        as_y = lambda v: torch.tensor(v, dtype=torch.float32).unsqueeze(1)  # noqa: E731
    else:
        task["outputs"] = int(y.max()) + 1
        as_y = lambda v: torch.tensor(v, dtype=torch.int64)  # noqa: E731
    as_x = lambda v: torch.tensor(v, dtype=torch.float32)  # noqa: E731
    task.update(x_train=as_x(x_train), y_train=as_y(y_train), x_test=as_x(x_test),
                y_test=as_y(y_test))
    return task


def train_one(task: dict, task_name: str, variant: str, seed: int) -> dict:
    activation, optimizer_name, lr, clip = VARIANTS[variant]
    _, kind, epochs, batch_size, _ = TASKS[task_name]
    torch.manual_seed(seed)
    model = QNetwork((task["x_train"].shape[1],), task["outputs"], HIDDEN, activation)
    params = list(model.parameters())
    if optimizer_name == "sgd":
        optimizer = torch.optim.SGD(params, lr=lr)
    else:
        optimizer = torch.optim.Adam(params, lr=lr)
    if clip is not None:
        OutputGradClip(optimizer, model.head, clip)
    loss_fn = nn.CrossEntropyLoss() if kind == "classification" else nn.MSELoss()
    x, y = task["x_train"], task["y_train"]
    order = torch.Generator().manual_seed(seed)
    update_norms = RunningStats()
    epoch_losses = []
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=order).split(batch_size):
            before = [p.detach().clone() for p in params]
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(x[idx]), y[idx]).backward()
            optimizer.step()
            with torch.no_grad():
                change = torch._foreach_sub([p.detach() for p in params], before)
                update_norms.add(torch.linalg.vector_norm(torch.stack(
                    torch._foreach_norm(change))).item())
        with torch.no_grad():
            epoch_losses.append(loss_fn(model(x), y).item())
    with torch.no_grad():
        out = model(task["x_test"])
        if kind == "classification":
            metric = (out.argmax(1) == task["y_test"]).float().mean().item()
        else:
            metric = math.sqrt(nn.functional.mse_loss(out, task["y_test"]).item()) * task["y_scale"]
    rises = sum(b > a for a, b in itertools.pairwise(epoch_losses))
    return {
        "task": task_name, "variant": variant, "seed": seed, "metric": metric,
        "final_train_loss": epoch_losses[-1], "epoch_losses": epoch_losses,
        "update_norm_var": update_norms.variance, "updates": update_norms.count,
        "loss_roughness": roughness(list(enumerate(epoch_losses))),
        "loss_rise_share": rises / (len(epoch_losses) - 1),
    }


def summarise(runs: list[dict]) -> dict:
    metrics = [r["metric"] for r in runs]
    finals = [r["final_train_loss"] for r in runs]
    return {
        "runs": len(runs), "metric_mean": statistics.mean(metrics),
        "metric_std": statistics.pstdev(metrics), "metric_min": min(metrics),
        "metric_max": max(metrics),
        "final_train_loss_mean": statistics.mean(finals),
        "final_train_loss_std": statistics.pstdev(finals),
        "update_norm_var": statistics.mean(r["update_norm_var"] for r in runs),
        "loss_roughness": statistics.mean(r["loss_roughness"] for r in runs),
        "loss_rise_share": statistics.mean(r["loss_rise_share"] for r in runs),
        "seeds": [r["seed"] for r in runs],
    }


def markdown(summary: dict, args: argparse.Namespace, seconds: float) -> str:
    lines = [
        "# The framework in supervised learning: spread across seeds",
        "",
        f"Command: `python scripts/supervised_consistency.py --seeds {args.seeds} --out "
        f"{args.out}` ({seconds:.0f} s, torch {torch.__version__}, 1 thread, "
        f"{platform.machine()}).",
        "",
        "Each row is one variant on one data set over seeds "
        f"{summary['seeds_used'][0]}..{summary['seeds_used'][-1]} "
        f"({len(summary['seeds_used'])} runs); a seed changes the initial weights and the "
        "minibatch order, never the split. MLP 64-64 (`QNetwork`), the same epochs and batch "
        "for every variant, nothing tuned per variant; the name gives the optimizer and its "
        "step size; `framework` is tGELU(-1, 1) + SGD + output-layer clip (lambda 1, "
        "`OutputGradClip`), the others have no clip.",
        "",
        "* std, min, max: of the test metric over seeds (population std);",
        "* update-norm var: variance of the L2 norm of each step's whole parameter change, over "
        "the steps of a run, averaged over runs;",
        "* roughness: mean |ln L(e+1) - ln L(e)| over consecutive epochs of the full training "
        "loss, averaged over runs; loss rises: share of epochs whose training loss went up;",
        "* final loss std: spread of the last epoch's training loss over seeds.",
        "",
    ]
    for task_name, (_, _, epochs, batch, metric) in TASKS.items():
        lines += [
            f"## {task_name} ({metric}; {epochs} epochs, batch {batch})",
            "",
            f"| variant | {metric} mean | std | min | max | final loss mean | final loss std | "
            "update-norm var | roughness | loss rises |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for variant in VARIANTS:
            s = summary["groups"][f"{task_name}/{variant}"]
            digits = 4 if task_name == "digits" else 2
            lines.append(
                f"| {variant} | {s['metric_mean']:.{digits}f} | {s['metric_std']:.{digits}f} | "
                f"{s['metric_min']:.{digits}f} | {s['metric_max']:.{digits}f} | "
                f"{s['final_train_loss_mean']:.4f} | {s['final_train_loss_std']:.4f} | "
                f"{s['update_norm_var']:.2e} | {s['loss_roughness']:.4f} | "
                f"{s['loss_rise_share']:.1%} |")
        lines.append("")
    lines += ["![training loss per epoch, every seed](loss_curves.png)", ""]
    return "\n".join(lines)


def figure(runs: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(VARIANTS), len(TASKS), sharey="col", sharex="col",
                             squeeze=False, figsize=(5 * len(TASKS), 2.3 * len(VARIANTS)))
    for j, task_name in enumerate(TASKS):
        for i, variant in enumerate(VARIANTS):
            ax = axes[i][j]
            for r in runs:
                if (r["task"], r["variant"]) == (task_name, variant):
                    ax.plot(range(1, len(r["epoch_losses"]) + 1), r["epoch_losses"], lw=0.8,
                            alpha=0.8)
            ax.set_yscale("log")
            ax.set_title(f"{task_name}: {variant}", fontsize=10)
            if i == len(VARIANTS) - 1:
                ax.set_xlabel("epoch")
            ax.set_ylabel("training loss")
            ax.grid(alpha=0.3)
    fig.suptitle("Training loss per epoch, one line per seed")
    fig.tight_layout(rect=(0, 0, 1, 0.98))  # room for the suptitle
    fig.savefig(out / "loss_curves.png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10, help="seeds per (data set, variant)")
    parser.add_argument("--out", type=Path, default=Path("results/supervised"))
    args = parser.parse_args(argv)
    if args.seeds < 2:
        parser.error(f"--seeds must be >= 2 to measure a spread, got {args.seeds}")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        sys.exit("error: matplotlib is missing; run: pip install -e '.[supervised]'")
    torch.set_num_threads(1)
    start = time.perf_counter()
    runs = []
    for task_name in TASKS:
        task = load_task(task_name)
        for variant in VARIANTS:
            for seed in range(args.seeds):
                runs.append(train_one(task, task_name, variant, seed))
            last = [r["metric"] for r in runs[-args.seeds:]]
            print(f"{task_name:8s} {variant:17s} metric {statistics.mean(last):.4f} "
                  f"+- {statistics.pstdev(last):.4f}", flush=True)
    groups = {}
    for task_name in TASKS:
        for variant in VARIANTS:
            groups[f"{task_name}/{variant}"] = summarise(
                [r for r in runs if (r["task"], r["variant"]) == (task_name, variant)])
    summary = {"groups": groups, "seeds_used": list(range(args.seeds)),
               "hidden": list(HIDDEN), "variants": VARIANTS,
               "tasks": {k: {"epochs": v[2], "batch": v[3], "metric": v[4]}
                         for k, v in TASKS.items()}}
    seconds = time.perf_counter() - start
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps({**summary, "runs": runs}, indent=1) + "\n")
    (args.out / "report.md").write_text(markdown(summary, args, seconds))
    figure(runs, args.out)
    print(f"wrote {args.out}/report.md, report.json, loss_curves.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
