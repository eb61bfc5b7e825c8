"""Data-pipeline figures, measured side by side in one run:

1. generator throughput (``adasparse generate`` on local Ray), rows/s;
2. Ray Data ingest (read + time filter + encode, streamed to numpy batches) rows/s versus plain
   pyarrow reading and encoding the same shards in one process on the same cores
   (goal ≥ 0.5×), for the whole stream and after its start-up (time to the first batch), for
   the first stream of a fresh local cluster and for a second stream in the same cluster;
3. peak memory of the whole process tree (driver + Ray workers, PSS) while streaming 1M and
   10M rows (goal: ≤ 1.2× — the proof that ingest streams);
4. IJCAI-18 converter throughput and peak memory at 1M and 10M rows.

Each measured pass runs in a fresh subprocess so that peaks do not carry over.

    python benchmarks/ingest.py --sizes 1000000,10000000

``--batch-cost`` measures instead what cutting training batches costs, in CPU time per row of
the consuming process and of the whole machine: Ray Data's own ``iter_batches(batch,
...)`` against ``pipelines.train.batching.split_batches`` (large chunks from
Ray Data, batches cut and shuffled in the consumer), alternating, on generated rows:

    python benchmarks/ingest.py --batch-cost --sizes 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil


class PeakMemory:
    """Samples the PSS of this process and all its descendants (Ray workers included)."""

    def __init__(self, interval: float = 0.2):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()

    def _sample(self) -> int:
        me = psutil.Process()
        total = 0
        for p in [me] + me.children(recursive=True):
            try:
                total += p.memory_full_info().pss
            except (psutil.Error, OSError):
                pass
        return total

    def __enter__(self):
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self._sample())


def _child(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    if out.returncode:
        sys.stderr.write(out.stderr[-4000:])
        raise SystemExit(f"benchmark step {args} failed")
    return json.loads(out.stdout.strip().splitlines()[-1])


def step_generate(out: str, rows: int) -> dict:
    from pipelines.data.generate import generate
    from pipelines.runtime.ray_env import init_ray

    init_ray("local", num_cpus=os.cpu_count())
    t0 = time.perf_counter()
    res = generate(out, rows=rows)
    return {"rows": res["rows"], "seconds": time.perf_counter() - t0}


def _stream(src) -> dict:
    """One pass over every row (split_batches of 4096 rows): rows, seconds, first batch, rate after it."""
    from pipelines.train.batching import split_batches
    from pipelines.data.reading import read_split

    t0 = time.perf_counter()
    rows, first, first_rows = 0, None, 0
    for b in split_batches(read_split(src, "all", None), 4096):
        if first is None:
            first, first_rows = time.perf_counter(), len(b["label"])
        rows += len(b["label"])
    end = time.perf_counter()
    return {"rows": rows, "seconds": end - t0, "first_batch_s": first - t0,
            "steady_rows_per_s": (rows - first_rows) / max(end - first, 1e-9)}


def step_ray_ingest(spec_path: str, sample_memory: bool) -> dict:
    from contextlib import nullcontext

    from pipelines.data.sources import open_source
    from pipelines.runtime.ray_env import init_ray
    from pipelines.data.spec import load_spec

    init_ray("local", num_cpus=os.cpu_count())
    src = open_source(load_spec(spec_path))
    # the memory sampler reads every process's smaps 5 times a second, which takes CPU from
    # the stream: speed and memory are measured in separate passes
    mem = PeakMemory() if sample_memory else None
    with mem or nullcontext():
        cold = _stream(src)
    if sample_memory:
        return {**cold, "peak_bytes": mem.peak}
    # A fresh cluster's first stream also waits for Ray to start the read tasks' worker
    # processes; a second stream in the same cluster (every later epoch, every later job on a
    # running cluster) finds them warm. Start-up (time to the first batch) is reported apart.
    return {**cold, "warm": _stream(src)}


def step_pyarrow(spec_path: str) -> dict:
    import pyarrow.parquet as pq

    from pipelines.data.sources import open_source
    from pipelines.data.spec import load_spec
    from pipelines.data.encoding import encode_table

    src = open_source(load_spec(spec_path))
    t0 = time.perf_counter()
    rows = 0
    for f in src.files:
        for batch in pq.ParquetFile(f).iter_batches(batch_size=65536, columns=src.spec.columns):
            import pyarrow as pa

            rows += len(encode_table(pa.Table.from_batches([batch]), src.spec)["label"])
    return {"rows": rows, "seconds": time.perf_counter() - t0}


def step_convert(raw: str, out: str) -> dict:
    from pipelines.data.convert_ijcai18 import convert

    with PeakMemory() as mem:
        t0 = time.perf_counter()
        res = convert(raw, out)
        secs = time.perf_counter() - t0
    return {"rows": res["rows"], "seconds": secs, "peak_bytes": mem.peak}


def _machine_cpu_s() -> float:
    """CPU seconds spent by the whole machine so far (busy time of every core, /proc/stat)."""
    with open("/proc/stat") as fh:
        v = [int(x) for x in fh.readline().split()[1:]]
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


def batch_cost(spec_path: str, rounds: int = 2) -> None:
    """Prints µs of CPU per row (consumer process, machine) and rows/s of both batch paths."""
    from pipelines.data.arrow_columns import arrow_to_columns
    from pipelines.train.batching import split_batches
    from pipelines.data.reading import read_split
    from pipelines.data.sources import open_source
    from pipelines.data.time_split import time_cuts
    from pipelines.runtime.ray_env import init_ray
    from pipelines.data.spec import load_spec

    def ray_batches(it, batch):
        for t in it.iter_batches(batch_size=batch, batch_format="pyarrow"):
            yield arrow_to_columns(t)

    init_ray("local", num_cpus=os.cpu_count())
    src = open_source(load_spec(spec_path))
    cuts = time_cuts(src)
    _ = sum(len(b["label"]) for b in split_batches(read_split(src, "train", cuts), 65536))  # warm the read workers
    for r in range(rounds):
        for batch in (256, 8192):
            for name, fn in (("Ray Data iter_batches", ray_batches), ("split_batches", split_batches)):
                it = read_split(src, "train", cuts).iterator()
                c0, p0, t0 = _machine_cpu_s(), time.process_time(), time.perf_counter()
                rows = sum(len(b["label"]) for b in fn(it, batch))
                secs = time.perf_counter() - t0
                print(f"round {r + 1} batch {batch:>5} {name:<38}: {rows / secs:>10,.0f} rows/s | CPU per row: consumer "
                      f"{1e6 * (time.process_time() - p0) / rows:.2f} us, machine {1e6 * (_machine_cpu_s() - c0) / rows:.2f} us", flush=True)
    import ray

    ray.shutdown()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="1000000,10000000")
    p.add_argument("--workdir", default=None, help="where to write the data (default: a temp dir, removed)")
    p.add_argument("--step", nargs="+", help=argparse.SUPPRESS)
    p.add_argument("--batch-cost", action="store_true", help="measure the cost of cutting training batches instead")
    args = p.parse_args()
    if args.step:
        name, *rest = args.step
        print(json.dumps({"generate": lambda: step_generate(rest[0], int(rest[1])), "ray": lambda: step_ray_ingest(rest[0], rest[1] == "memory"),
                          "pyarrow": lambda: step_pyarrow(rest[0]), "convert": lambda: step_convert(rest[0], rest[1])}[name]()))
        return
    from pipelines.data.convert_ijcai18 import write_sample

    sizes = [int(s) for s in args.sizes.split(",")]
    if args.batch_cost:
        with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
            _child(["--step", "generate", f"{tmp}/gen", str(sizes[0])])
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
            batch_cost(f"{tmp}/gen/spec.yaml")
        return
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        rows_out = []
        for n in sizes:
            d = Path(tmp) / f"gen{n}"
            g = _child(["--step", "generate", str(d), str(n)])
            r = _child(["--step", "ray", str(d / "spec.yaml"), "speed"])
            r["peak_bytes"] = _child(["--step", "ray", str(d / "spec.yaml"), "memory"])["peak_bytes"]
            a = _child(["--step", "pyarrow", str(d / "spec.yaml")])
            raw = Path(tmp) / f"ijcai{n}.txt"
            write_sample(str(raw), n)
            c = _child(["--step", "convert", str(raw), str(Path(tmp) / f"conv{n}")])
            raw.unlink()
            rows_out.append((n, g, r, a, c))
            pa_rate = a["rows"] / a["seconds"]
            w = r["warm"]
            print(
                f"{n:>11,} rows | generate {g['rows'] / g['seconds']:>9,.0f} rows/s | pyarrow loop {pa_rate:>9,.0f} rows/s | "
                f"Ray Data ingest, fresh cluster: {r['rows'] / r['seconds']:>9,.0f} rows/s ({(r['rows'] / r['seconds']) / pa_rate:.2f}x; "
                f"first batch after {r['first_batch_s']:.1f} s, then {r['steady_rows_per_s']:>9,.0f} rows/s, "
                f"{r['steady_rows_per_s'] / pa_rate:.2f}x) | second stream: {w['rows'] / w['seconds']:>9,.0f} rows/s "
                f"({(w['rows'] / w['seconds']) / pa_rate:.2f}x; first batch after {w['first_batch_s']:.1f} s, "
                f"then {w['steady_rows_per_s']:>9,.0f} rows/s, {w['steady_rows_per_s'] / pa_rate:.2f}x) | "
                f"ingest peak {r['peak_bytes'] / 2**20:,.0f} MiB | convert {c['rows'] / c['seconds']:>9,.0f} rows/s, peak {c['peak_bytes'] / 2**20:,.0f} MiB",
                flush=True,
            )
        if len(rows_out) > 1:
            (n0, _, r0, _, c0), (n1, _, r1, _, c1) = rows_out[0], rows_out[-1]
            print(
                f"peak memory {n1:,} vs {n0:,} rows: ingest {r1['peak_bytes'] / r0['peak_bytes']:.2f}x, "
                f"converter {c1['peak_bytes'] / c0['peak_bytes']:.2f}x"
            )


if __name__ == "__main__":
    main()
