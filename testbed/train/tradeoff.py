"""`run.py train`: butterfly units trained at the topology's cut, and their accuracy against bytes per request.

As in the butterfly papers, the unsplit network is trained once; every reduced channel count is then
fine-tuned from it with its butterfly unit inserted, each with the same budget (optionally distilled
from the unsplit network). The output folder gets:

- `accuracy.csv` and `accuracy.png`: top-1 on the held-out split against the mean bytes one request
  sends, for the unsplit network (raw pixels, JPEG), the plain split (no butterfly) and every butterfly
  unit, each through every codec in `train.codecs` (at model.codec.zstd_level);
- `train_log.csv`: the loss of every training step;
- `unsplit.pt` (a plain state_dict) and `butterfly_<split>_c<channels>.pt` (split checkpoints), which an
  experiment loads through `model.weights`.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from testbed.config.schema import Topology
from testbed.model.split_model import SplitModel, build_backbone, build_split_model, save_checkpoint
from testbed.results.folder import CsvLog
from testbed.train.datasets import load_data
from testbed.train.training import Budget, evaluate_full, evaluate_jpeg, evaluate_split, to_tensors, train

COLUMNS = ("variant", "channels", "codec", "top1", "bytes_per_request")
LOG_COLUMNS = ("variant", "channels", "step", "loss")


def run_training(topo: Topology, out: Path, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Train, evaluate, write the output folder; returns the accuracy rows."""
    t, m = topo.train, topo.model
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    data = load_data(t.data, t.input_size, t.seed, t.test_fraction)
    x, y = to_tensors(data.train.images, data.train.labels)
    x_test, y_test = to_tensors(data.test.images, data.test.labels)
    log(f"data {t.data}: {len(data.train)} train / {len(data.test)} test images, {len(data.classes)} classes, "
        f"{t.input_size}x{t.input_size}")
    budget = Budget(t.epochs, t.batch_size, t.lr, t.max_steps_per_epoch, t.seed, t.shift_px)
    steps = CsvLog(out / "train_log.csv", LOG_COLUMNS)
    rows: list[dict[str, Any]] = []
    try:
        log(f"unsplit {m.arch} from scratch, {t.epochs} epochs")
        net = build_backbone(None, m.seed, len(data.classes), m.arch, t.input_size).train()
        _log_steps(steps, "unsplit", 0, train(net, net.parameters(), x, y, budget, log=log))
        net.eval()
        torch.save(net.state_dict(), out / "unsplit.pt")
        rows.append(_row("unsplit", 3, "raw", evaluate_full(net, x_test, y_test), data.test.images[0].nbytes))
        jpeg = evaluate_jpeg(net, data.test.images, y_test, m.jpeg_quality)
        rows.append(_row("unsplit", 3, f"jpeg{m.jpeg_quality}", jpeg.top1, jpeg.bytes_per_request))
        plain = build_split_model(None, m.seed, m.split, 1, t.input_size, len(data.classes), m.arch)
        plain.full.load_state_dict(net.state_dict())  # the same cut, with the butterfly taken out
        no_butterfly = replace(plain, reduction=nn.Identity(), restoration=nn.Identity(),
                               reduced_channels=plain.channels)
        rows += _codec_rows("split", no_butterfly, x_test, y_test, t.codecs, m.codec.zstd_level)
        log(f"  unsplit top-1 {rows[0]['top1']:.4f} ({time.perf_counter() - t_start:.0f} s so far)")
        # what the other cuts of an experiment reach, kept with every checkpoint (the reproduction table shows it)
        reference = {"device_only": rows[0]["top1"], "cloud_only": jpeg.top1,
                     "split": {r["codec"]: r["top1"] for r in rows if r["variant"] == "split"}}

        finetune = replace(budget, epochs=t.finetune_epochs)
        for c in t.channels:
            log(f"butterfly at {m.split}, {plain.channels} -> {c} channels: fine-tune ({t.train_scope}) "
                f"{t.finetune_epochs} epochs" + (", distilled" if t.distill else ""))
            sm = build_split_model(None, m.seed, m.split, c, t.input_size, len(data.classes), m.arch)
            sm.full.load_state_dict(net.state_dict())
            set_scope(sm, t.train_scope)
            losses = train(sm.forward, sm.as_module().parameters(), x, y, finetune, teacher=net if t.distill else None,
                           temperature=t.distill_temperature, distill_weight=t.distill_weight, log=log)
            _log_steps(steps, "butterfly", c, losses)
            sm.as_module().eval()
            variant = _codec_rows("butterfly", sm, x_test, y_test, t.codecs, m.codec.zstd_level)
            rows += variant
            save_checkpoint(sm, out / f"butterfly_{m.split}_c{c}.pt", input_size=t.input_size, data=t.data,
                            classes=data.classes, accuracy={r["codec"]: r["top1"] for r in variant},
                            reference_accuracy=reference)
            log("  top-1 " + ", ".join(f"{r['codec']} {r['top1']:.4f}" for r in variant)
                + f" ({time.perf_counter() - t_start:.0f} s so far)")
    finally:
        steps.close()
        if rows:
            write_csv(rows, out / "accuracy.csv")
            plot(rows, out / "accuracy.png", f"{topo.name}: {t.data}, cut after {m.split}")
    log(f"trained in {time.perf_counter() - t_start:.0f} s")
    return rows


def set_scope(sm: SplitModel, scope: str) -> None:
    """Train mode and gradients for what fine-tuning updates; frozen parts keep their BatchNorm statistics."""
    sm.as_module().train().requires_grad_(True)
    frozen = {"all": [], "butterfly_tail": [sm.head], "butterfly": [sm.full]}[scope]
    for module in frozen:
        module.eval().requires_grad_(False)


def _codec_rows(variant: str, sm: SplitModel, x: torch.Tensor, y: torch.Tensor, codecs: Sequence[str],
                zstd_level: int) -> list[dict[str, Any]]:
    suffix = f"+zstd{zstd_level}" if zstd_level else ""
    rows = []
    for dtype in codecs:
        score = evaluate_split(sm, x, y, dtype, zstd_level)
        rows.append(_row(variant, sm.reduced_channels, dtype + suffix, score.top1, score.bytes_per_request))
    return rows


def _row(variant: str, channels: int, codec: str, top1: float, nbytes: float) -> dict[str, Any]:
    return {"variant": variant, "channels": channels, "codec": codec, "top1": round(top1, 4),
            "bytes_per_request": round(nbytes, 1)}


def _log_steps(log: CsvLog, variant: str, channels: int, losses: list[float]) -> None:
    log.append([{"variant": variant, "channels": channels, "step": i, "loss": round(v, 5)}
                for i, v in enumerate(losses)])


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def format_table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'variant':<10}{'channels':>9}  {'codec':<16}{'top1':>7}{'bytes/request':>15}"]
    lines += [f"{r['variant']:<10}{r['channels']:>9}  {r['codec']:<16}{r['top1']:>7.4f}{r['bytes_per_request']:>15,.1f}"
              for r in rows]
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    """Accuracy against bytes per request (log scale): one line per variant and codec, channels labelled."""
    import matplotlib  # matplotlib: only when a figure is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # matplotlib: only when a figure is drawn

    fig, ax = plt.subplots(figsize=(8, 5))
    series: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        series.setdefault(f"{r['variant']} {r['codec']}" if r["variant"] != "unsplit" else "unsplit", []).append(r)
    for label, points in series.items():
        points = sorted(points, key=lambda r: r["bytes_per_request"])
        xs, ys = [r["bytes_per_request"] for r in points], [r["top1"] for r in points]
        ax.plot(xs, ys, marker="o", linestyle="-" if label.startswith("butterfly") else "", label=label)
        for r in points:
            note = r["codec"] if r["variant"] == "unsplit" else f"c={r['channels']}"
            ax.annotate(note, (r["bytes_per_request"], r["top1"]), textcoords="offset points", xytext=(4, -10),
                        fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("bytes per request (mean, one frame)")
    ax.set_ylabel("top-1 accuracy (held-out split)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
