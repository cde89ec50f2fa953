"""TrainingDoctor: does it name every planted fault, stay quiet on healthy runs, and cost <= 2%?

    python benchmarks/bench_doctor.py [--epochs 10] [--repetitions 8] [--skip-zoo] [--control]

1. The fault zoo (``tests/doctor_zoo.py``): each recipe trains a small model on real data
   (sklearn digits, the CIFAR-10 sample) with one planted fault, or none. The table shows,
   per recipe, whether the planted symptom was named, at which optimizer step and how many
   steps after the fault was planted, and every other symptom named; healthy recipes list
   their false findings. A healthy CIFAR convnet (the project's cifar_softmax recipe, 3
   epochs) is judged on the in-training symptoms only: after 3 epochs its training error is
   ~55%, which the bias/variance table rightly calls high bias, so its curve findings are printed, not counted.
   Targets: every fault detected, no false finding.
2. Overhead: ``model.fit`` of the cifar_softmax convnet on the CIFAR-10 sample (Adam 1e-3,
   batch 128, the recipe's tf.data pipeline, validation every epoch) for ``--epochs``, plain
   against the same fit with a standalone ``TrainingDoctor`` on a probe batch of the runs'
   default size (32 examples) at its default budget. The whole fit is timed, first epoch included, so the doctor's
   one-time costs (TensorFlow's first eager calls in its first probe) count. The order
   rotates between repetitions; the median of the per-pair ratios is the result (target
   <= 1.02). Process CPU time (all threads) is shown too, and the time the doctor measured
   for its own probes and weight checks, which the machine's mood disturbs far less: this
   VM runs identical epochs in ~1.3 s or ~2.4 s at random, so a whole fit moves by +-15%
   between repetitions. ``--control`` adds a second plain side: its ratio to the first is
   what the noise alone gives.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import doctor_zoo  # noqa: E402
from _timing import print_ratios, side_by_side  # noqa: E402
from doctor_zoo import CIFAR_SAMPLE, FAULTS, HEALTHY, Recipe  # noqa: E402

from kerasdiag.callbacks import TrainingDoctor  # noqa: E402
from kerasdiag.callbacks.factory import MONITOR_DEFAULTS, probe_batch  # noqa: E402
from kerasdiag.config import load_config  # noqa: E402
from kerasdiag.data import load_dataset  # noqa: E402
from kerasdiag.diagnosis import TRAINING_SYMPTOMS  # noqa: E402
from kerasdiag.modeling.factory import build_model  # noqa: E402
from kerasdiag.training.pipeline import fit  # noqa: E402


def healthy_cifar() -> tuple:
    cfg = load_config(["recipe=cifar_softmax", f"data.path={CIFAR_SAMPLE}"])
    data = load_dataset(cfg.data)
    return build_model(cfg, data), data


HEALTHY_CIFAR = Recipe(
    "cifar_softmax (3 ep)", None, "the project's CIFAR convnet recipe", healthy_cifar,
    epochs=3, batch_size=128,
)  # fmt: skip


def zoo_table() -> tuple[int, int]:
    """Run the zoo, print the table; returns (faults missed, false findings)."""
    print(
        f"{'recipe':<22}{'planted':<23}{'named':<7}{'step':>6}{'steps to':>9}{'s':>6}  also named"
    )
    print(f"{'':<22}{'':<23}{'':<7}{'':>6}{'detect':>9}")
    missed = false = 0
    for recipe in FAULTS:
        result = doctor_zoo.run(recipe)
        finding = result.first(recipe.symptom)
        others = sorted(result.symptoms - {recipe.symptom})
        if finding is None:
            missed += 1
            cells = ("no", "-", "-")
        else:
            cells = ("yes", finding.step, finding.step - recipe.fault_step)
        print(f"{recipe.name:<22}{recipe.symptom:<23}{cells[0]:<7}{cells[1]:>6}{cells[2]:>9}"
              f"{result.seconds:>6.1f}  {', '.join(others) or '-'}")  # fmt: skip
    print()
    print(f"{'healthy recipe':<68}{'false findings':>15}{'s':>6}  names")
    for recipe in [*HEALTHY, HEALTHY_CIFAR]:
        result = doctor_zoo.run(recipe)
        symptoms = sorted(result.symptoms)
        if recipe is HEALTHY_CIFAR:
            counted = [s for s in symptoms if s in TRAINING_SYMPTOMS]
            after = sorted(set(symptoms) - set(counted))
            note = f"{', '.join(counted) or '-'} (after training, not counted: {', '.join(after) or '-'})"
        else:
            counted, note = symptoms, ", ".join(symptoms) or "-"
        false += len(counted)
        label = f"{recipe.name}: {recipe.fault}"
        print(f"{label:<68}{len(counted):>15}{result.seconds:>6.1f}  {note}")
    print(f"\nfaults detected: {len(FAULTS) - missed}/{len(FAULTS)}; false findings: {false}")
    return missed, false


def overhead(epochs: int, repetitions: int, control: bool) -> float:
    cfg = load_config(
        ["recipe=cifar_softmax", f"data.path={CIFAR_SAMPLE}", f"trainer.epochs={epochs}",
         "trainer.verbose=0", "trainer.early_stopping.enabled=false"]
    )  # fmt: skip
    data = load_dataset(cfg.data)
    x_probe, y_probe = probe_batch(data, MONITOR_DEFAULTS["probe_size"])

    def variant(with_doctor: bool):
        def run(marks) -> TrainingDoctor | None:
            model = build_model(cfg, data)
            doctor = TrainingDoctor(x_probe, y_probe, verbose=0) if with_doctor else None
            fit(cfg, model, data, [marks, doctor] if doctor else [marks])
            return doctor

        return run

    variants = {"plain": variant(False), "doctor": variant(True)}
    if control:
        variants["plain (control)"] = variant(False)
    shares = []
    print(f"\n{'rep':>4}  {'side':<16}{'wall s':>8}{'cpu s':>8}{'probes':>7}{'own s':>7}"
          f"{'own %':>7}  findings")  # fmt: skip

    def each(rep, name, t, doctor):
        own = ""
        if doctor is not None:
            shares.append(doctor.probe_seconds / t.wall)
            names = ", ".join(sorted({f.symptom for f in doctor.findings})) or "-"
            own = f"{doctor.probes:>7}{doctor.probe_seconds:>7.2f}{shares[-1]:>7.1%}  {names}"
        print(f"{rep:>4}  {name:<16}{t.wall:>8.2f}{t.cpu:>8.2f}{own}", flush=True)

    times = side_by_side(variants, repetitions, each)
    result = print_ratios(times, "plain")["doctor"]
    print(f"target <= 1.02; the doctor's own probes and checks: {statistics.median(shares):.1%} "
          f"of its fit (median)")  # fmt: skip
    return result.wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repetitions", type=int, default=8)
    parser.add_argument("--skip-zoo", action="store_true")
    parser.add_argument("--control", action="store_true", help="add a second plain side")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores\n")
    if not args.skip_zoo:
        zoo_table()
    overhead(args.epochs, args.repetitions, args.control)


if __name__ == "__main__":
    main()
