"""Markdown tables and plots built from evaluation records."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from distill.evaluate.records import architecture_label, inputs_label, mixed_precision, newest_per_cell
from distill.io.atomic import atomic_write, atomic_write_bytes


def _cell(record: dict | None) -> str:
    if record is None:
        return "–"
    return f"{100 * record['mean']:.1f} ± {100 * record['std']:.1f} (n={record['runs']})"


def gap_closed(distilled: float, random: float, full: float) -> float | None:
    """Fraction of the random-subset-to-full-dataset gap a distilled set closes (1 = as good as full)."""
    if full - random <= 1e-12:
        return None
    return (distilled - random) / (full - random)


def network_label(record: dict) -> str:
    """The architecture column: `architecture_label`, with ", ZCA inputs" for whitened inputs and ", bf16 mixed"
    for networks trained in mixed precision (each set beside the baselines trained as it was)."""
    whitened = inputs_label(record) == "ZCA"
    return (
        architecture_label(record)
        + (", ZCA inputs" if whitened else "")
        + (", bf16 mixed" if mixed_precision(record) else "")
    )


def results_table(records: list[dict], title: str, header_note: str = "") -> str:
    """A markdown table: per (IPC, architecture and inputs, method) distilled soft / hard, random, full and
    gap closed, each set beside the baselines on its own inputs. Where several records fill one cell, the
    newest is shown."""
    records = newest_per_cell(records)
    by_key: dict = defaultdict(dict)
    random_, full = {}, {}
    for r in records:
        arch = network_label(r)
        if r["set"] == "distilled":
            by_key[(r["ipc"], arch, r["method"], r.get("selection") or "–")][r["labels"]] = r
        elif r["set"] == "random":
            random_[(r["ipc"], arch)] = r
        elif r["set"] == "full":
            full[arch] = r
    for ipc, arch in random_:
        if not any(k[0] == ipc and k[1] == arch for k in by_key):
            by_key[(ipc, arch, "—", "–")] = {}
    lines = [f"# {title}", ""]
    if header_note:
        lines += [header_note, ""]
    lines += [
        "Test accuracy in % (mean ± std over n runs with distinct seeds). Selection rule: how the "
        "distilled set was picked among its iterations (a set picked on the test split, as the papers do, "
        "is optimistic).",
        "",
        "| IPC | architecture | method | selection rule | distilled (soft labels) | distilled (hard labels) | "
        "random subset | full dataset | gap closed |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for ipc, arch, method, rule in sorted(by_key, key=lambda k: (k[0] or 0, k[1], k[2], k[3])):
        cells = by_key[(ipc, arch, method, rule)]
        rnd, ful = random_.get((ipc, arch)), full.get(arch)
        best = cells.get("soft") or cells.get("hard")
        gap = gap_closed(best["mean"], rnd["mean"], ful["mean"]) if best and rnd and ful else None
        lines.append(
            f"| {ipc} | {arch} | {method} | {rule} | {_cell(cells.get('soft'))} | {_cell(cells.get('hard'))} | "
            f"{_cell(rnd)} | {_cell(ful)} | {'–' if gap is None else f'{100 * gap:.0f} %'} |"
        )
    commits = sorted({(r.get("git_commit") or "?")[:10] for r in records})
    machines = sorted({r["machine"] for r in records if r.get("machine")})
    seconds = sum(r.get("wall_seconds", 0.0) for r in records)
    lines += [
        "",
        f"Records: {len(records)} ({seconds:.0f} s of evaluation in all); commits: {', '.join(commits)}"
        + (f"; machines: {'; '.join(machines)}." if machines else "."),
    ]
    return "\n".join(lines) + "\n"


def write_table(path: Path, records: list[dict], title: str, header_note: str = "") -> Path:
    return atomic_write_bytes(path, results_table(records, title, header_note).encode())


def plot_accuracy_vs_ipc(path: Path, records: list[dict], title: str) -> Path | None:
    """accuracy-vs-IPC PNG (one line per method and label mode, plus random); None if fewer than 2 IPCs."""
    records = newest_per_cell(records)
    series: dict = defaultdict(dict)
    for r in records:
        if r["set"] == "distilled":
            series[f"{r['method']} ({r['labels']} labels), {r['architecture']}"][r["ipc"]] = r
        elif r["set"] == "random":
            series[f"random subset, {r['architecture']}"][r["ipc"]] = r
    if max((len(points) for points in series.values()), default=0) < 2:
        return None
    from matplotlib.figure import Figure  # no pyplot: the caller's matplotlib backend stays as it was

    figure = Figure(figsize=(6, 4))
    axis = figure.subplots()
    for name, points in sorted(series.items()):
        ipcs = sorted(points)
        axis.errorbar(
            ipcs,
            [100 * points[i]["mean"] for i in ipcs],
            yerr=[100 * points[i]["std"] for i in ipcs],
            marker="o",
            capsize=3,
            label=name,
        )
    for r in records:
        if r["set"] == "full":
            axis.axhline(100 * r["mean"], linestyle="--", color="grey", label=f"full dataset, {r['architecture']}")
    axis.set_xscale("log")
    axis.set_xlabel("images per class (IPC)")
    axis.set_ylabel("test accuracy (%)")
    axis.set_title(title)
    axis.legend(fontsize=7)
    figure.tight_layout()
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=120))
    return path
