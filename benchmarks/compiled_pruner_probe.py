"""How much of the ``domain``-mode step cost a compiled pruner node removes (a probe for a
decision, not a library feature).

Builds ``compiled_pruner_probe.cpp`` (the library's :class:`RowsPrune` — FC on e_d, eqs. 4–8,
r^l — as one C++ autograd node with hand-written loops; needs a C++ compiler, ~30 s the first
time), checks it against the library's node (values exactly, gradients to float rounding), then
times training steps of the plain DNN, the library's domain mode and domain mode with the C++
node, on the same batches, in interleaved rounds, as ``benchmarks/step_time.py`` does.

    python benchmarks/compiled_pruner_probe.py --batch 256 --rounds 30
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_time import benchmark_model, features, make_batches, paired_ratio, time_models, variants  # noqa: E402

from adasparse.experiment import set_threads  # noqa: E402
from adasparse.layers.fused_pruning import FORMULATION_IDS, RowsPrune  # noqa: E402
from adasparse.layers.pruner import PruneContext  # noqa: E402

SOURCE = Path(__file__).with_suffix(".cpp")


def build_extension():
    from torch.utils.cpp_extension import load

    if shutil.which("c++") is None and shutil.which("g++") is None:
        raise SystemExit("compiled_pruner_probe: no C++ compiler (c++/g++) on PATH; the probe needs one")
    return load(name="adasparse_compiled_pruner_probe", sources=[str(SOURCE)], extra_cflags=["-O3", "-march=native"])


def check_against_library(ext, widths=(128, 64, 32), rows=256, dim=48) -> None:
    """Same π, r^l and gradients as :class:`RowsPrune` for the three formulations (raises if not)."""
    from adasparse.config import PrunerConfig
    from adasparse.layers.pruner import DomainAdaptivePruner

    layer_mean = DomainAdaptivePruner(dim, list(widths), [3], PrunerConfig()).layer_mean
    gen = torch.Generator().manual_seed(0)
    e_d = torch.randn(rows, dim, generator=gen)
    weight = torch.randn(sum(widths), dim, generator=gen) * 0.3
    bias = torch.randn(sum(widths), generator=gen) * 0.3
    for name, form in FORMULATION_IDS.items():
        results = []
        for node in ("library", "compiled"):
            leaves = [t.clone().requires_grad_() for t in (e_d, weight, bias)]
            if node == "library":
                out = RowsPrune.apply(*leaves, layer_mean, list(widths), form, 0.7, 2.0, 0.25)[: len(widths) + 1]
            else:
                out = ext.rows_prune(*leaves, list(widths), form, 0.7, 2.0, 0.25)
            # a loss that weights every output entry differently, so every gradient path is exercised
            loss = sum((o * torch.linspace(-1, 1, o.numel()).reshape(o.shape)).sum() for o in out)
            loss.backward()
            results.append(([o.detach() for o in out], [t.grad for t in leaves]))
        (lib_out, lib_grad), (cpp_out, cpp_grad) = results
        for a, b in zip(lib_out, cpp_out):
            if not torch.equal(a, b):
                raise SystemExit(f"compiled_pruner_probe: {name} outputs differ from RowsPrune (max {float((a - b).abs().max()):.3g})")
        for a, b in zip(lib_grad, cpp_grad):
            if not torch.allclose(a, b, rtol=1e-4, atol=1e-5):
                raise SystemExit(f"compiled_pruner_probe: {name} gradients differ from RowsPrune (max {float((a - b).abs().max()):.3g})")
    print("compiled node: same π and r^l as RowsPrune, gradients equal to float rounding (3 formulations)")


class CompiledContext(PruneContext):
    """A :class:`PruneContext` whose domain-mode factors come from the compiled node (per row)."""

    def __init__(self, pruner, e_d, domain_ids, alpha, ext):  # the state the parent sets on its per-row path
        c = pruner.cfg
        self.pruner, self.alpha, self.inverse, self._kept = pruner, alpha, None, []
        out = ext.rows_prune(e_d.float().contiguous(), pruner.domain_proj.weight, pruner.domain_proj.bias,
                             pruner.widths, FORMULATION_IDS[c.formulation], alpha, c.beta, c.epsilon)
        n = len(pruner.widths)
        self._factors, self._ratios = tuple(out[:n]), out[n]
        self._pi = [f.detach() for f in self._factors]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--formulation", default="fusion", choices=sorted(FORMULATION_IDS))
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--rounds", type=int, default=30)
    args = p.parse_args()
    set_threads()
    t0 = time.perf_counter()
    ext = build_extension()
    print(f"built/loaded the probe in {time.perf_counter() - t0:.1f} s; torch {torch.__version__}, {torch.get_num_threads()} threads")
    check_against_library(ext)

    feats = features(2_000_000)
    batches = make_batches(feats, args.batch, 16)
    cfgs = variants(feats, "dnn")
    pruned = cfgs[f"adasparse {args.formulation}/domain"]
    compiled = benchmark_model(pruned)
    compiled.pruner.begin = lambda e_d, ids, a, _p=compiled.pruner: CompiledContext(_p, e_d, ids, a, ext)
    models = {
        "dnn (plain)": benchmark_model(cfgs["dnn (plain)"]),
        f"{args.formulation}/domain (library)": benchmark_model(pruned),
        f"{args.formulation}/domain (compiled node)": compiled,
    }
    times = time_models(models, batches, args.steps, args.rounds)
    base = times["dnn (plain)"]
    print(f"\nbatch {args.batch}, median of {args.rounds} interleaved rounds × {args.steps} steps")
    print(f"{'variant':<34} {'ms/step':>8} {'vs plain':>9} {'paired':>7}")
    for name, t in times.items():
        paired = paired_ratio(t, base)
        print(f"{name:<34} {statistics.median(t) * 1e3:>8.3f} {statistics.median(t) / statistics.median(base):>8.3f}x {paired:>6.3f}x")


if __name__ == "__main__":
    main()
