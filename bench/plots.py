"""Figures of ``bench/compare.py``, drawn from ``compare.json`` alone (matplotlib, Agg backend).

    python bench/plots.py bench/results/compare.json        # PNGs next to the JSON

Writes, next to the JSON:

* ``compare_accuracy_vs_sparsity.png``: TFLM test accuracy against zeros among the stored weight
  integers, every path, one panel per model (the authors' PyTorch points of
  reference points of :data:`REFERENCE` as open grey markers on the MLP panel);
* ``compare_accuracy_vs_size.png``: TFLM test accuracy against the executable ``.tflite`` bytes
  (smaller of plain and LUT-compressed) and against the stored bytes (the weight integers coded
  with the smaller of the project's CABAC-style coder and lzma, + biases + scales), log scale;
* ``compare_instructions.png``: TFLM test accuracy against instructions per inference
  (callgrind): TFLM's reference kernels on every path, and the FantastIC4 runtime's CER and CSC
  kernels where the model runs on it;
* ``compare_histograms_<model>.png``: per layer, the float kernel before quantization and the
  quantized kernel after (counts per centroid), centroids marked;
* ``compare_relevance_<model>.png``: the stored ECQx relevance of one layer;
* ``compare_ecq_vs_ecqx.png``: ECQ and ECQx at the same Lambda, accuracy and zeros per bit width.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np

__all__ = ["render", "REFERENCE", "main"]

#: Reference points (mnist_mlp, same split), measured on this kind of machine with the authors' code
#: and with tfmot's paths.
#: ``bytes`` is the authors' DeepCABAC bitstream (stored) or the .tflite size (executable).
REFERENCE: Dict[str, List[Dict[str, Any]]] = {
    "authors": [  # the authors' PyTorch ECQ/ECQx, 10 epochs (ECQx 2-bit: 3 epochs), DeepCABAC bytes
        {"label": "ECQ 4b L0.02", "method": "ecq", "bits": 4, "acc": 0.938, "zeros": 0.248, "H": 2.42, "bytes": 68018},
        {"label": "ECQ 4b L0.05", "method": "ecq", "bits": 4, "acc": 0.932, "zeros": 0.497, "H": 2.23, "bytes": 53728},
        {"label": "ECQ 4b L0.1", "method": "ecq", "bits": 4, "acc": 0.922, "zeros": 0.725, "H": 1.57, "bytes": 36241},
        {"label": "ECQ 4b L0.2", "method": "ecq", "bits": 4, "acc": 0.910, "zeros": 0.880, "H": 0.86, "bytes": 19378},
        {"label": "ECQx 4b L0.05", "method": "ecqx", "bits": 4, "acc": 0.925, "zeros": 0.558, "H": 2.24, "bytes": 56936},
        {"label": "ECQ 3b L0.05", "method": "ecq", "bits": 3, "acc": 0.937, "zeros": 0.497, "H": 1.71, "bytes": 46341},
        {"label": "ECQ 2b L0.05", "method": "ecq", "bits": 2, "acc": 0.929, "zeros": 0.908, "H": 0.53, "bytes": 14710},
        {"label": "ECQx 2b L0.05", "method": "ecqx", "bits": 2, "acc": 0.938, "zeros": 0.941, "H": 0.38, "bytes": 10178},
    ],
    "tfmot": [  # tfmot paths on TFLM, .tflite bytes; lzma of the flatbuffer where given
        {"label": "float32", "acc": 0.941, "zeros": 0.0, "tflite": 942648},
        {"label": "int8 QAT", "acc": 0.946, "zeros": 0.013, "tflite": 239064},
        {"label": "int4 QAT", "acc": 0.951, "zeros": 0.225, "tflite": 121688},
        {"label": "prune80+cluster16+PCQAT LUT", "acc": 0.937, "zeros": 0.837, "tflite": 122912, "lzma": 34580},
        {"label": "prune90+cluster16+PCQAT LUT", "acc": 0.930, "zeros": 0.900, "tflite": 122912, "lzma": 28140},
    ],
}

_STYLE = {  # path -> (marker, colour, label)
    "float": ("*", "black", "float32"),
    "int8": ("s", "tab:blue", "tfmot int8 QAT"),
    "int4": ("D", "tab:cyan", "tfmot int4 QAT"),
    "pcqat": ("^", "tab:orange", "tfmot prune+cluster+PCQAT"),
    "ecq": ("o", None, "ECQ"),
    "ecqx": ("P", None, "ECQx"),
}
_BITS_COLOURS = {2: "tab:red", 3: "tab:purple", 4: "tab:green", 5: "tab:brown", 6: "tab:pink", 7: "tab:olive", 8: "tab:gray"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: Path, dpi: int = 110) -> Path:
    """Lay out, write the PNG atomically (a crash leaves the old file or none) and close."""
    import io

    from ecqx_tf.io import atomic_write_bytes

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _acc(row) -> Any:
    return row["acc_tflm"] if row.get("acc_tflm") is not None else row.get("acc_keras")


def _exec_bytes(row) -> Any:
    sizes = [b for b in (row.get("tflite_bytes"), row.get("tflite_lut_bytes")) if b]
    return min(sizes) if sizes else None


def _stored_bytes(row) -> Any:
    """Stored size: the weight integers with the better of the two coders, + biases + scales."""
    sizes = [b for b in (row.get("stored_bytes"), row.get("stored_bytes_cabac")) if b]
    return min(sizes) if sizes else None


def _scatter_paths(ax, rows: Sequence[dict], xkey, xscale: float = 1.0) -> None:
    seen = set()
    for r in rows:
        x = xkey(r)
        y = _acc(r)
        if x is None or y is None:
            continue
        marker, colour, name = _STYLE[r["path"]]
        if r["path"] in ("ecq", "ecqx"):
            colour = _BITS_COLOURS.get(r["bits"], "k")
            name = f"{name} {r['bits']}-bit"
        label = name if name not in seen else None
        seen.add(name)
        ax.scatter(x * xscale, 100 * y, marker=marker, s=55 if r["path"] != "float" else 120,
                   color=colour, label=label,
                   linewidths=1.5, zorder=3, alpha=0.9)


def _models(results) -> List[str]:
    """Models in the order they were run (the JSON writer sorts keys)."""
    order = list((results.get("args") or {}).get("models") or [])
    return [m for m in order if m in results["models"]] + [m for m in results["models"] if m not in order]


def plot_accuracy_vs_sparsity(results, out: Path) -> Path:
    plt = _plt()
    models = _models(results)
    fig, axes = plt.subplots(1, len(models), figsize=(6.5 * len(models), 4.8), squeeze=False)
    for ax, m in zip(axes[0], models):
        rows = [r for r in results["rows"] if r["model"] == m]
        _scatter_paths(ax, rows, lambda r: r.get("sparsity"), 100)
        if m == "mnist_mlp":
            ref = REFERENCE["authors"]
            ax.scatter([100 * p["zeros"] for p in ref], [100 * p["acc"] for p in ref], marker="o", s=55,
                       facecolors="none", edgecolors="grey", label="authors' PyTorch ECQ/ECQx (ref.)", zorder=2)
            t = REFERENCE["tfmot"]
            ax.scatter([100 * p["zeros"] for p in t], [100 * p["acc"] for p in t], marker="s", s=45,
                       facecolors="none", edgecolors="lightgrey", label="tfmot paths (ref.)", zorder=2)
        ax.set_title(f"{m}: accuracy vs zeros")
        ax.set_xlabel("zeros among stored weight integers (%)")
        ax.set_ylabel("test accuracy on TFLM (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best", framealpha=0.6)
    return _save(plt, fig, out / "compare_accuracy_vs_sparsity.png", dpi=110)


def plot_accuracy_vs_size(results, out: Path) -> Path:
    plt = _plt()
    models = _models(results)
    fig, axes = plt.subplots(len(models), 2, figsize=(13, 4.6 * len(models)), squeeze=False)
    for row_axes, m in zip(axes, models):
        rows = [r for r in results["rows"] if r["model"] == m]
        ax = row_axes[0]
        _scatter_paths(ax, rows, _exec_bytes)
        if m == "mnist_mlp":
            t = REFERENCE["tfmot"]
            ax.scatter([p["tflite"] for p in t], [100 * p["acc"] for p in t], marker="s", s=45, facecolors="none",
                       edgecolors="grey", label="tfmot paths (ref.)", zorder=2)
        ax.set_title(f"{m}: executable size (TFLM)")
        ax.set_xlabel(".tflite bytes (smaller of plain / LUT-compressed), log")
        ax = row_axes[1]
        _scatter_paths(ax, rows, _stored_bytes)
        if m == "mnist_mlp":
            ref = REFERENCE["authors"]
            ax.scatter([p["bytes"] for p in ref], [100 * p["acc"] for p in ref], marker="o", s=55, facecolors="none",
                       edgecolors="grey", label="authors' ECQ/ECQx, DeepCABAC bytes (ref.)", zorder=2)
            t = [p for p in REFERENCE["tfmot"] if "lzma" in p]
            ax.scatter([p["lzma"] for p in t], [100 * p["acc"] for p in t], marker="^", s=45, facecolors="none",
                       edgecolors="grey", label="PCQAT, lzma of the flatbuffer (ref.)", zorder=2)
        ax.set_title(f"{m}: stored size (not executable)")
        ax.set_xlabel("min(CABAC, lzma)(weight integers) + biases + scales, bytes, log")
        for ax in row_axes:
            ax.set_xscale("log")
            ax.set_ylabel("test accuracy on TFLM (%)")
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=7, loc="best", framealpha=0.6)
    return _save(plt, fig, out / "compare_accuracy_vs_size.png", dpi=110)


def plot_histograms(results, model: str, out: Path) -> Path:
    plt = _plt()
    figs = results["figures"].get(model) or {}
    hists = figs.get("histograms") or []
    rel = figs.get("relevance") or {}
    fig, axes = plt.subplots(len(hists), 2, figsize=(12, 2.6 * len(hists)), squeeze=False)
    for (a0, a1), h in zip(axes, hists):
        edges = np.asarray(h["edges"])
        a0.stairs(h["before_counts"], edges, fill=True, color="tab:blue", alpha=0.6)
        a0.set_title(f"{h['layer']}: float kernel before quantization", fontsize=9)
        width = h["step"] * 0.8 if h["step"] > 0 else 0.01
        a1.bar(h["centroids"], h["after_counts"], width=width, color="tab:green")
        a1.set_title(f"{h['layer']}: after {rel.get('method', '').upper()} {h['bits']}-bit "
                     f"(L={rel.get('Lambda')}), count per centroid", fontsize=9)
        for ax in (a0, a1):
            for c in h["centroids"]:
                ax.axvline(c, color="tab:red", lw=0.6, ls="--", alpha=0.7)
            ax.set_yscale("log")
            ax.set_xlim(min(edges[0], min(h["centroids"])) - h["step"], max(edges[-1], max(h["centroids"])) + h["step"])
            ax.set_xlabel("weight value (red dashes: centroids)", fontsize=8)
            ax.set_ylabel("count (log)", fontsize=8)
    return _save(plt, fig, out / f"compare_histograms_{model}.png", dpi=100)


def plot_relevance(results, model: str, out: Path) -> Path:
    plt = _plt()
    r = (results["figures"].get(model) or {}).get("relevance") or {}
    title = f"{model} {r.get('layer')}: stored {str(r.get('method', '')).upper()} relevance " \
            f"({r.get('bits')}-bit, L={r.get('Lambda')})"
    if "per_input_relevance" in r:
        shape = r["image_shape"]
        fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
        im = axes[0].imshow(np.asarray(r["per_input_relevance"]).reshape(shape), cmap="hot")
        axes[0].set_title("summed relevance of the weights\nleaving each input pixel", fontsize=9)
        fig.colorbar(im, ax=axes[0], fraction=0.046)
        im = axes[1].imshow(100 * np.asarray(r["per_input_zero_fraction"]).reshape(shape), cmap="viridis", vmin=0, vmax=100)
        axes[1].set_title("% of those weights assigned to zero", fontsize=9)
        fig.colorbar(im, ax=axes[1], fraction=0.046)
    elif "relevance" in r:
        rel = np.asarray(r["relevance"]).reshape(r["shape"])
        ints = np.asarray(r["integers"]).reshape(r["shape"])
        if rel.ndim == 4:  # conv kernel HWIO: one image per (input 0, output) filter
            n = rel.shape[3]
            fig, axes = plt.subplots(2, n, figsize=(1.8 * n, 4.0), squeeze=False)
            vmax = float(np.abs(rel).max()) or 1.0
            kmax = max(1, int(np.abs(ints).max()))
            for o in range(n):
                axes[0][o].imshow(rel[:, :, :, o].sum(axis=2), cmap="hot", vmin=0, vmax=vmax)
                axes[0][o].set_title(f"filter {o}", fontsize=8)
                axes[1][o].imshow(ints[:, :, 0, o], cmap="coolwarm", vmin=-kmax, vmax=kmax)
                for ax in (axes[0][o], axes[1][o]):
                    ax.set_xticks([])
                    ax.set_yticks([])
            axes[0][0].set_ylabel("relevance", fontsize=8)
            axes[1][0].set_ylabel("integer k", fontsize=8)
        else:
            fig, axes = plt.subplots(1, 2, figsize=(10, 4))
            im = axes[0].imshow(rel.reshape(rel.shape[0], -1), aspect="auto", cmap="hot")
            fig.colorbar(im, ax=axes[0])
            axes[1].imshow(ints.reshape(ints.shape[0], -1), aspect="auto", cmap="coolwarm")
    else:
        fig, axes = plt.subplots(1, 1, figsize=(5, 2))
        axes.text(0.5, 0.5, "no relevance recorded", ha="center")
    fig.suptitle(title, fontsize=10)
    return _save(plt, fig, out / f"compare_relevance_{model}.png", dpi=110)


def plot_ecq_vs_ecqx(results, out: Path) -> Path:
    plt = _plt()
    models = _models(results)
    fig, axes = plt.subplots(len(models), 2, figsize=(12, 4.2 * len(models)), squeeze=False)
    for (a0, a1), m in zip(axes, models):
        rows = [r for r in results["rows"] if r["model"] == m and r["path"] in ("ecq", "ecqx") and _acc(r) is not None]
        lambdas = sorted({r["Lambda"] for r in rows})
        colours = plt.cm.viridis(np.linspace(0, 0.85, max(1, len(lambdas))))
        for lam, col in zip(lambdas, colours):
            for method, ls, mk in (("ecq", "-", "o"), ("ecqx", "--", "P")):
                sel = sorted((r for r in rows if r["Lambda"] == lam and r["path"] == method), key=lambda r: r["bits"])
                if not sel:
                    continue
                bits = [r["bits"] for r in sel]
                a0.plot(bits, [100 * _acc(r) for r in sel], ls=ls, marker=mk, color=col, label=f"{method.upper()} L={lam:g}")
                a1.plot(bits, [100 * r["sparsity"] for r in sel], ls=ls, marker=mk, color=col, label=f"{method.upper()} L={lam:g}")
        fl = [r for r in results["rows"] if r["model"] == m and r["path"] == "float" and _acc(r) is not None]
        if fl:
            a0.axhline(100 * _acc(fl[0]), color="black", lw=0.8, ls=":", label="float32")
        a0.set_title(f"{m}: TFLM test accuracy, ECQ (solid) vs ECQx (dashed)")
        a0.set_ylabel("accuracy (%)")
        a1.set_title(f"{m}: zeros, ECQ (solid) vs ECQx (dashed)")
        a1.set_ylabel("zeros (%)")
        for ax in (a0, a1):
            ax.set_xlabel("bits")
            ax.set_xticks(sorted({r["bits"] for r in rows}) or [4])
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    return _save(plt, fig, out / "compare_ecq_vs_ecqx.png", dpi=110)


def plot_instructions(results, out: Path) -> Path:
    """Accuracy against instructions per inference: TFLM (filled, per path) and the FantastIC4
    runtime's CER (open squares) and CSC (open diamonds) kernels on the same integers."""
    plt = _plt()
    models = [m for m in _models(results) if any(r.get("ir_tflm") for r in results["rows"] if r["model"] == m)]
    fig, axes = plt.subplots(1, max(1, len(models)), figsize=(8.5 * max(1, len(models)), 4.8), squeeze=False)
    for ax, m in zip(axes[0], models):
        rows = [r for r in results["rows"] if r["model"] == m]
        _scatter_paths(ax, rows, lambda r: r.get("ir_tflm"))
        for key, marker, name in (("ir_f4_cer", "s", "FantastIC4 CER (same integers)"),
                                  ("ir_f4_csc", "D", "FantastIC4 CSC (same integers)")):
            pts = [(r[key], _acc(r)) for r in rows if r.get(key) and _acc(r) is not None]
            if pts:
                ax.scatter([p[0] for p in pts], [100 * p[1] for p in pts], marker=marker, s=40, facecolors="none",
                           edgecolors="k", linewidths=1.0, label=name, zorder=2)
        ax.set_xscale("log")
        ax.set_title(f"{m}: instructions per inference (valgrind callgrind)")
        ax.set_xlabel("instructions per inference, log")
        ax.set_ylabel("test accuracy on TFLM (%)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), framealpha=0.6)
    return _save(plt, fig, out / "compare_instructions.png", dpi=110)


def render(results: Dict[str, Any], out: Path) -> List[Path]:
    """Draw every figure into ``out``; returns the paths written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = [plot_accuracy_vs_sparsity(results, out), plot_accuracy_vs_size(results, out)]
    if any(r.get("ir_tflm") for r in results["rows"]):
        written.append(plot_instructions(results, out))
    for m in _models(results):
        figs = results["figures"].get(m) or {}
        if figs.get("histograms"):
            written.append(plot_histograms(results, m, out))
        if figs.get("relevance"):
            written.append(plot_relevance(results, m, out))
    if any(r["path"] in ("ecq", "ecqx") for r in results["rows"]):
        written.append(plot_ecq_vs_ecqx(results, out))
    return written


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 1:
        print("usage: python bench/plots.py path/to/compare.json", file=sys.stderr)
        return 2
    path = Path(argv[0])
    results = json.loads(path.read_text())
    for p in render(results, path.parent):
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
