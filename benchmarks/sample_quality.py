"""What sample quality costs: features per second of the extractors, one in-loop evaluation (SampleQuality) beside
the epoch it follows, and the precision/recall/density/coverage pass at 10,000 x 10,000 within memory.

    python benchmarks/sample_quality.py --threads 2                    # everything, about two minutes on 2 cores
    python benchmarks/sample_quality.py --threads 2 --skip-loop --n 2000 --dims 84

(1) extractor features/s: `lenet` (the shipped MNIST5k weights) and `resnet` (random weights: speed only) on 32 px
    batches of 256; `inception` (random weights of its layout) on a few images, since it runs at 299 px.
(2) one in-loop evaluation: `gon-lightning fit --config quickstart` for one full epoch with `SampleQuality`
    (`--num-samples`, default 1000), the callback's evaluation timed beside the epoch's training time.
(3) the k-NN pass of precision, recall, density and coverage (and every figure, `score_samples`, for the first
    size) on N x N random features of each size in `--dims`, each in a fresh process whose peak resident memory
    above what it held before the pass is reported beside what one full N x N float64 distance matrix would take.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def best_rate(run, count: int, rounds: int = 3) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return count / best


def extractor_rates(threads: int, inception_images: int) -> None:
    from gon_lightning.metrics import extract
    from gon_lightning.metrics.extractors import (
        SHIPPED_WEIGHTS,
        ClassifierFeatures,
        SmallResNet,
        load_classifier,
    )

    lenet = load_classifier(SHIPPED_WEIGHTS[("lenet", "MNIST5kDataModule")])
    resnet = ClassifierFeatures("resnet", SmallResNet(3, 10).eval(), "random").requires_grad_(False)
    grey, colour = torch.rand(2048, 1, 32, 32), torch.rand(512, 3, 32, 32)
    print(f"(1) features/s on {threads} thread(s), batches of 256:")
    print(f"    lenet      {best_rate(lambda: extract(lenet, grey), len(grey)):9.0f} img/s (32 px grey)")
    print(f"    resnet     {best_rate(lambda: extract(resnet, colour), len(colour)):9.0f} img/s (32 px colour)")
    with tempfile.TemporaryDirectory() as folder:
        from torch_fidelity import feature_extractor_inceptionv3 as fidelity

        load = torch.nn.Module.load_state_dict
        fidelity.load_state_dict_from_url = lambda *a, **k: {}
        torch.nn.Module.load_state_dict = lambda self, state, *a, **k: None
        network = fidelity.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
        torch.nn.Module.load_state_dict = load
        torch.save(network.state_dict(), Path(folder) / "inception.pth")
        from gon_lightning.metrics import load_extractor

        inception = load_extractor("inception", weights=Path(folder) / "inception.pth")
        few = torch.rand(inception_images, 3, 32, 32)
        rate = best_rate(lambda: extract(inception, few, batch_size=16), len(few), rounds=2)
        print(f"    inception  {rate:9.1f} img/s (32 px colour, resized to 299)")


def in_loop_cost(threads: int, num_samples: int, root: Path) -> None:
    import pytorch_lightning as pl

    from gon_lightning.callbacks import SampleQuality
    from gon_lightning.cli import main

    measured: dict[str, float] = {}
    original = SampleQuality.measure

    def timed(self, trainer, pl_module):
        start = time.perf_counter()
        try:
            return original(self, trainer, pl_module)
        finally:
            measured["evaluation"] = time.perf_counter() - start

    class EpochTimer(pl.Callback):
        def on_train_epoch_start(self, trainer, pl_module) -> None:
            measured["start"] = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            measured["training"] = time.perf_counter() - measured["start"]

    SampleQuality.measure = timed
    args = ["--config", str(ROOT / "configs" / "quickstart.yaml"), f"--data.root={root / 'data'}"]
    args += [f"--runs_root={root / 'runs'}", "--trainer.max_epochs=1", "--trainer.logger=CSVLogger"]
    args += ["--trainer.limit_val_batches=0", "--trainer.enable_progress_bar=false"]
    args += ["--trainer.callbacks+=SampleQuality", "--trainer.callbacks.every_n_epochs=1"]
    args += [f"--trainer.callbacks.num_samples={num_samples}"]
    cli = main(args, run=False)
    cli.trainer.callbacks.append(EpochTimer())
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    SampleQuality.measure = original
    share = measured["evaluation"] / measured["training"]
    print(f"(2) one in-loop evaluation of {num_samples} samples (paper GON, MNIST5k, lenet, {threads} thread(s)):")
    print(f"    evaluation {measured['evaluation']:.2f} s; the epoch's training {measured['training']:.2f} s "
          f"(62 batches of 64): {share:.0%} of it")  # fmt: skip


def peak_resident_mib() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def resident_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def knn_pass(n: int, dims: int, score: int) -> None:
    """Run in a fresh process: print JSON with the times and memory (peak reset to the current use first)."""
    from gon_lightning.metrics import precision_recall_density_coverage, score_samples

    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(n, dims, generator=g), torch.randn(n, dims, generator=g) + 0.1
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident size
    baseline = resident_mib()
    start = time.perf_counter()
    precision_recall_density_coverage(real, fake)
    prdc_s = time.perf_counter() - start
    prdc_peak = peak_resident_mib()
    start = time.perf_counter()
    if score:
        score_samples(real, fake, "bench")
    score_s = time.perf_counter() - start if score else None
    print(json.dumps({"baseline": baseline, "peak": prdc_peak, "prdc_s": prdc_s, "score_s": score_s}))


def knn_costs(n: int, dims: list[int], threads: int) -> None:
    print(f"(3) N = {n} real x {n} fake features, {threads} thread(s) (resident memory of a fresh process):")
    for d in dims:
        score = int(d == dims[0])  # every figure for the first size only: KID at d 2048 takes minutes on a CPU
        command = [sys.executable, __file__, "--knn-pass", str(n), str(d), str(score), "--threads", str(threads)]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        figures = json.loads(done.stdout.strip().splitlines()[-1])
        features_mb = 2 * n * d * 4 / 2**20
        matrix_mb = n * n * 8 / 2**20
        print(
            f"    d {d:5d}: P/R/D/C {figures['prdc_s']:6.1f} s, peak {figures['peak'] - figures['baseline']:5.0f} MiB "
            f"above the process holding its {features_mb:.0f} MiB of features (one full {n} x {n} float64 "
            f"distance matrix: {matrix_mb:.0f} MiB)"
            + (f"; every figure (score_samples) {figures['score_s']:.1f} s" if figures["score_s"] is not None else "")
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n", type=int, default=10_000, help="real and fake features of the k-NN pass")
    parser.add_argument("--dims", type=int, nargs="+", default=[84, 2048], help="feature sizes of the k-NN pass")
    parser.add_argument("--num-samples", type=int, default=1000, help="samples of the in-loop evaluation")
    parser.add_argument("--inception-images", type=int, default=16, help="images of the Inception rate")
    parser.add_argument("--skip-loop", action="store_true", help="leave out (2), the one-epoch fit")
    parser.add_argument("--knn-pass", type=int, nargs=3, metavar=("N", "D", "SCORE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.knn_pass:
        knn_pass(*args.knn_pass)
        return
    extractor_rates(args.threads, args.inception_images)
    if not args.skip_loop:
        with tempfile.TemporaryDirectory() as folder:
            in_loop_cost(args.threads, args.num_samples, Path(folder))
    knn_costs(args.n, args.dims, args.threads)


if __name__ == "__main__":
    main()
