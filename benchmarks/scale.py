"""The training job's stages at growing row counts: where a run's time and memory go at 1M, 10M
and 100M rows (issue 29).

For each ``--rows`` count: generated data (``adasparse generate``, the default preset; its time is
printed, not counted), then the real job, ``adasparse train`` as a user runs it (a private local
Ray, the library's defaults unless given), then ``adasparse export`` of the run. The stages come
from the run's own ``metrics.json`` (``timeline``: wall-clock stamps since the process started;
``history``: each epoch's training, dev evaluation and report + checkpoint), so what is printed is
what every run records. While the job runs, its process tree is sampled every ``--sample-s``:

* driver peak RSS (the command's process), per-worker peak RSS (the Ray Train workers, found by
  their process title), the whole tree's peak RSS;
* object store: the growth of ``/dev/shm``'s used bytes (Ray's object store lives there; the pages
  it touched), peak over baseline;
* bytes: the tree's ``rchar``/``wchar`` (every read and write a process made, files and IPC alike),
  the dataset's bytes on disk and the run directory's at the end (checkpoints, metrics).

Rows/s per core of a pass is its rows ÷ its seconds ÷ the cores it may use (the driver-side passes
run Ray tasks on every core of the machine; an epoch's training uses the workers' CPUs).

    python benchmarks/scale.py --rows 1000000,10000000
    python benchmarks/scale.py --rows 100000000 --dir /big/disk   # once, not in CI
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

BIN = Path(sys.executable).parent


def du(path: Path) -> int:
    """Bytes of the files under ``path``."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def shm_used() -> int:
    try:
        return shutil.disk_usage("/dev/shm").used
    except OSError:
        return 0


class TreeSampler:
    """Peak memory of a process tree by role, and its I/O counters, sampled from outside."""

    def __init__(self, root: psutil.Process):
        self.root = root
        self.driver_rss = self.worker_rss = self.tree_rss = 0
        self.shm_base, self.shm_peak = shm_used(), 0
        self.io: dict[int, tuple[int, int]] = {}  # pid → (rchar, wchar), last seen

    def sample(self) -> None:
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        total = 0
        for p in procs:
            try:
                rss = p.memory_info().rss
                io = p.io_counters()
                title = " ".join(p.cmdline()[:1])
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            total += rss
            self.io[p.pid] = (io.read_chars, io.write_chars)
            if p.pid == self.root.pid:
                self.driver_rss = max(self.driver_rss, rss)
            elif "RayTrainWorker" in title:
                self.worker_rss = max(self.worker_rss, rss)
        self.tree_rss = max(self.tree_rss, total)
        self.shm_peak = max(self.shm_peak, shm_used() - self.shm_base)

    @property
    def read_chars(self) -> int:
        return sum(r for r, _ in self.io.values())

    @property
    def write_chars(self) -> int:
        return sum(w for _, w in self.io.values())


def run_sampled(cmd: list[str], env: dict, every: float) -> tuple[float, TreeSampler, str]:
    """Run ``cmd``, sampling its process tree; its wall seconds, the sampler and its output."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        sampler = TreeSampler(psutil.Process(proc.pid))
        while proc.poll() is None:
            sampler.sample()
            time.sleep(every)
        wall = time.perf_counter() - t0
        log.seek(0)
        out = log.read()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:2])} failed ({proc.returncode}):\n{out[-3000:]}")
    return wall, sampler, out


def stages(metrics: dict, wall: float) -> list[tuple[str, float, int | None]]:
    """(stage, seconds, rows it passed over or None) from a run's metrics.json."""
    t = metrics["timeline"]
    train_rows = metrics["domains"]["train_rows"]
    total_rows = train_rows + metrics["dev"]["rows"] + metrics["test"]["rows"]

    def span(a: str, b: str) -> float:
        return t[b] - t[a] if a in t and b in t else float("nan")

    up = "ray_up" if "ray_up" in t else "identified"

    out = [
        ("process start, imports, spec", t["started"], None),
        ("listing and footers", span("started", "listed"), None),
        ("output check and run identity", span("listed", "identified"), None),
        # a run trained in process on a small dataset starts no Ray: 0 s
        ("local Ray start", span("identified", "ray_up") if "ray_up" in t else 0.0, None),
        ("validation pass", span(up, "checked"), total_rows),
        ("time split pass", span("checked" if "checked" in t else up, "split"), total_rows),
        ("domain vocabulary pass", span("split", "vocabulary"), train_rows),
        ("trainer built", span("vocabulary", "fit_started"), None),
        ("worker group start", span("fit_started", "worker_entered"), None),
        ("worker set-up to the first epoch", span("worker_entered", "epochs_started"), None),
    ]
    for h in metrics["history"]:
        e = h["epoch"]
        out.append((f"epoch {e}: first batch", h.get("first_batch_s", float("nan")), None))
        out.append((f"epoch {e}: training", h["train_s"], h.get("rows_all_workers")))
        out.append((f"epoch {e}: dev evaluation", h["dev_eval_s"], metrics["dev"].get("rows")))
        out.append((f"epoch {e}: report and checkpoint", h["epoch_end_s"], None))
    out += [
        ("test evaluation", span("epochs_ended", "tested"), metrics["test"].get("rows")),
        ("fit end (last report, worker group down)", span("tested", "fit_ended"), None),
        ("results written, Ray down, exit", wall - t["fit_ended"], None),
    ]
    return out


def measure(rows: int, base: Path, opts: argparse.Namespace) -> dict:
    env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
    data = base / f"data-{rows}"
    if not (data / "spec.yaml").exists():
        t0 = time.perf_counter()
        subprocess.run([str(BIN / "adasparse"), "generate", "--rows", str(rows), "--out", str(data)], env=env,
                       check=True, capture_output=True, text=True)
        print(f"{rows:,} rows generated in {time.perf_counter() - t0:.0f} s ({du(data) / 2**20:,.0f} MiB)", flush=True)
    name, runs = f"r{rows}", base / "runs"
    shutil.rmtree(runs / name, ignore_errors=True)
    cmd = [str(BIN / "adasparse"), "train", "--data", str(data / "spec.yaml"), "--epochs", str(opts.epochs),
           "--workers", str(opts.workers), "--out", str(runs), "--name", name, *opts.train_args]
    wall, sampler, _ = run_sampled(cmd, env, opts.sample_s)
    metrics = json.loads((runs / name / "metrics.json").read_text())
    t0 = time.perf_counter()
    export = base / f"export-{rows}"
    shutil.rmtree(export, ignore_errors=True)
    subprocess.run([str(BIN / "adasparse"), "export", str(runs / name), "--out", str(export)], env=env, check=True,
                   capture_output=True, text=True)
    export_s = time.perf_counter() - t0
    return {
        "rows": rows, "wall_s": wall, "stages": stages(metrics, wall), "export_s": export_s,
        "driver_rss": sampler.driver_rss, "worker_rss": sampler.worker_rss, "tree_rss": sampler.tree_rss,
        "shm_peak": sampler.shm_peak, "read_chars": sampler.read_chars, "write_chars": sampler.write_chars,
        "data_bytes": du(data), "run_bytes": du(runs / name), "export_bytes": du(export),
    }


def per_core(rows: int | None, seconds: float, cores: float) -> str:
    if not rows or not seconds or seconds != seconds:
        return ""
    return f"{rows / seconds / cores:,.0f}"


def print_table(results: list[dict], cores: int, workers: int) -> None:
    heads = " | ".join(f"{r['rows']:,} rows: s | rows/s/core" for r in results)
    print(f"\n| stage | {heads} |")
    print("|---|" + "---:|---:|" * len(results))
    names = [s for s, _, _ in results[0]["stages"]]
    for i, name in enumerate(names):
        cells = []
        for r in results:
            stage = r["stages"][i] if i < len(r["stages"]) else (name, float("nan"), None)
            _, sec, n = stage
            use = workers if name.startswith("epoch") and "training" in name else cores
            cells.append(f"{sec:.2f} | {per_core(n, sec, use)}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    mib = 2 ** 20

    def line(label: str, key: str, scale: float = mib, fmt: str = "{:,.0f} MiB") -> None:
        print(f"| {label} | " + " | ".join(fmt.format(r[key] / scale) + " | " for r in results) + "|")

    line("export (s)", "export_s", 1, "{:.1f}")
    line("wall time of the command (s)", "wall_s", 1, "{:.1f}")
    line("driver peak RSS", "driver_rss")
    line("per-worker peak RSS", "worker_rss")
    line("process tree peak RSS", "tree_rss")
    line("object store (/dev/shm growth) peak", "shm_peak")
    line("bytes read by the tree (rchar)", "read_chars")
    line("bytes written by the tree (wchar)", "write_chars")
    line("dataset on disk", "data_bytes")
    line("run directory at the end", "run_bytes")
    line("export directory", "export_bytes")


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="1000000,10000000", help="row counts, comma-separated")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--dir", default=None, help="where data, runs and exports go (default: a temporary directory, removed)")
    ap.add_argument("--sample-s", type=float, default=0.25, help="seconds between samples of the process tree")
    ap.add_argument("--json", default=None, help="also write the results here")
    args, rest = ap.parse_known_args(argv)
    args.train_args = rest  # anything else goes to adasparse train (e.g. --batch-size 4096)
    cores = psutil.cpu_count()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(args.dir) if args.dir else Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        results = [measure(int(n), base, args) for n in args.rows.split(",")]
    print(f"{cores} cores; adasparse train --workers {args.workers} --epochs {args.epochs} {' '.join(rest)}")
    print_table(results, cores, args.workers)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
