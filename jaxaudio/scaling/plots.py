"""Scaling curves: predicted throughput and efficiency per accelerator, measured points on top."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from jaxaudio.scaling.hlo import KINDS  # noqa: E402

_STYLE = {"dp": ("tab:blue", "o"), "fsdp": ("tab:orange", "s"), "dp_fsdp": ("tab:green", "^"), "tp": ("tab:red", "D")}


def _by_strategy(points):
    out: dict[str, list[dict]] = {}
    for p in points:
        out.setdefault(p["strategy"], []).append(p)
    return {k: sorted(v, key=lambda p: p["devices"]) for k, v in out.items()}


def plot_scaling(result: dict, path) -> None:
    """Two rows (throughput, efficiency) x one column per accelerator; lines = predicted per strategy,
    filled markers = measured on the matching chip."""
    series = _by_strategy(result["points"])
    chips = list(result["points"][0]["predicted"])
    fig, axes = plt.subplots(2, len(chips), figsize=(3.2 * len(chips), 6.4), squeeze=False, sharex=True)
    for col, chip in enumerate(chips):
        top, bottom = axes[0][col], axes[1][col]
        for strategy, pts in series.items():
            color, marker = _STYLE.get(strategy, ("gray", "x"))
            n = [p["devices"] for p in pts]
            top.plot(n, [p["predicted"][chip]["throughput"] for p in pts], color=color, marker=marker,
                     markerfacecolor="none", label=f"{strategy} (predicted)")
            bottom.plot(n, [p["predicted"][chip]["efficiency"] for p in pts], color=color, marker=marker,
                        markerfacecolor="none")
            measured = [p for p in pts if p.get("measured_throughput") and result.get("measured_accelerator") == chip]
            if measured:
                top.scatter([p["devices"] for p in measured], [p["measured_throughput"] for p in measured],
                            color=color, marker=marker, s=50, zorder=3, label=f"{strategy} (measured)")
                bottom.scatter([p["devices"] for p in measured], [p["measured_efficiency"] for p in measured],
                               color=color, marker=marker, s=50, zorder=3)
        top.set_title(chip)
        top.set_xscale("log", base=2)
        top.set_yscale("log")
        effs = [p["predicted"][chip]["efficiency"] for p in result["points"]]
        effs += [p["measured_efficiency"] for p in result["points"] if p.get("measured_efficiency")]
        bottom.set_ylim(0, max(1.05, 1.05 * max(effs)))
        bottom.set_xlabel("devices")
        bottom.axhline(1.0, color="black", linewidth=0.5, linestyle=":")
        bottom.set_xticks(sorted({p["devices"] for p in result["points"]}))
        bottom.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        top.grid(True, which="both", alpha=0.3)
        bottom.grid(True, alpha=0.3)
    axes[0][0].set_ylabel("samples / s")
    axes[1][0].set_ylabel("weak-scaling efficiency")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False)
    fig.suptitle(f"{result['case']}: predicted step time, {result['per_device_batch']} samples/device, "
                 f"MFU {result['mfu_assumption']:.0%} assumed (HLO compiled on {result['platform']})")
    fig.tight_layout(rect=(0, 0.05, 1, 0.96))
    fig.savefig(path, dpi=110, format="png")  # path or binary file
    plt.close(fig)


def plot_collectives(result: dict, path) -> None:
    """Collective payload per device per step (MB) against devices, one panel per strategy, stacked by kind."""
    series = _by_strategy(result["points"])
    fig, axes = plt.subplots(1, len(series), figsize=(3.6 * len(series), 3.6), squeeze=False, sharey=True)
    colors = dict(zip(KINDS, ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple")))
    for ax, (strategy, pts) in zip(axes[0], series.items()):
        x = list(range(len(pts)))
        bottom = [0.0] * len(pts)
        for kind in KINDS:
            values = [p["collective_bytes"][kind] / 1e6 for p in pts]
            if any(values):
                ax.bar(x, values, bottom=bottom, color=colors[kind], label=kind)
                bottom = [b + v for b, v in zip(bottom, values)]
        ax.set_xticks(x, [str(p["devices"]) for p in pts])
        ax.set_title(strategy)
        ax.set_xlabel("devices")
        ax.grid(True, axis="y", alpha=0.3)
    axes[0][0].set_ylabel("MB per device per step")
    handles = {}
    for ax in axes[0]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=len(handles), frameon=False)
    fig.suptitle(f"{result['case']}: collective payload from the optimized HLO")
    fig.tight_layout(rect=(0, 0.08, 1, 0.93))
    fig.savefig(path, dpi=110, format="png")  # path or binary file
    plt.close(fig)
