"""One training step per numerics candidate, timed the way the calibration times it.

    python -m bench.training_step                                 # resnet18, 64 px, batch 128, eager
    python -m bench.training_step --image-size 96 --compile       # the compiled candidates too

Each candidate is timed by the calibration's own trial (engine/calibration_trial.py: a copy of the
model from the same weights, 1 warm-up step, the median of 2 timed steps) on one batch of random
MNIST-shaped images, `--repeats` times in this process; printed are the median of its seconds per
step, the first warm-up's excess (compile time, for compiled candidates) and the loss. This is what answers
"does torch.compile pay on this CPU?" without running whole jobs: a compiled candidate pays on a job
of N steps when setup + N x its step is below N x the eager step.
"""

from __future__ import annotations

import argparse
import statistics


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--architecture", default="resnet18")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--frozen-blocks", type=int, default=0)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--compile", action="store_true", help="also time the compiled candidates")
    p.add_argument("--device", default="cpu")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    import torch

    from bench.common import machine_line
    from engine.calibrate import Candidate
    from engine.calibration_trial import TrainingStepTrial
    from engine.models import build_model
    from engine.preprocess import InputSpec
    from engine.spec import Hyperparameters

    device = torch.device(a.device)
    torch.manual_seed(0)
    trial = TrainingStepTrial(
        build_model(a.architecture, 10),
        frozen_blocks=a.frozen_blocks,
        images=torch.randint(0, 256, (a.batch_size, 1, 28, 28), dtype=torch.uint8),
        labels=torch.arange(a.batch_size) % 10,
        spec=InputSpec(image_size=a.image_size, channels=1, mean=(0.1307,), std=(0.3081,)),
        hyperparameters=Hyperparameters(),
        device=device,
    )
    candidates = [Candidate(p, channels_last=cl) for p in ("fp32", "bf16") for cl in (True, False)]
    if a.compile:
        candidates += [Candidate(p, compile=True) for p in ("fp32", "bf16")]
    print(machine_line(a.device))
    print(f"{a.architecture} at {a.image_size} px, batch {a.batch_size}, frozen blocks {a.frozen_blocks}")
    print(f"{'candidate':32s} {'s/step':>8s} {'setup s':>8s} {'loss':>8s}")
    for candidate in candidates:
        runs = [trial(candidate) for _ in range(a.repeats)]
        step = statistics.median(r.seconds_per_step for r in runs)
        setup = runs[0].setup_seconds  # later repeats may reuse the compiled code
        print(f"{candidate.name:32s} {step:8.3f} {setup:8.1f} {runs[0].loss:8.4f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
