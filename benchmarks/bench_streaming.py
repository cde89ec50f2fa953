"""Streaming an image folder: kerasdiag's tf.data pipeline against Keras'
``image_dataset_from_directory`` on the same folder of 64x64 PNGs.

    python benchmarks/bench_streaming.py [--sizes 1000 12000] [--root /tmp/kd-stream]

The folders are written once from the CIFAR-10 sample (upscaled to 64x64; beyond its 5,000
images, flipped and shifted copies), one subfolder per class. Printed side by side:

1. decode throughput: images per second of one pass over the folder, kerasdiag's streamed
   training split against ``image_dataset_from_directory`` (same batch size, both prefetched);
2. input idle time: the share of a training loop's wall time spent waiting for the next batch
   (the same convnet, ``train_on_batch``), for either pipeline;
3. one epoch as a whole process: wall time and peak RSS of ``scripts/train.py`` (the
   cifar_softmax convnet, one epoch, with sanity stages and monitors off, then on) against a
   plain script training the same convnet for one epoch on ``image_dataset_from_directory``
   (validation and test scored), for each folder size.

Targets (issue): peak memory of the 12,000-image epoch within ~150 MB of the 1,000-image
one; whole-process wall within 1.2x of the plain script's.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from _timing import CIFAR_SAMPLE  # noqa: E402

SIZE = 64
BATCH = 64
MODEL = ["recipe=cifar_softmax", "data=image_folder", f"data.image_size=[{SIZE},{SIZE}]",
         f"data.batch_size={BATCH}", "trainer.epochs=1", "trainer.verbose=0"]  # fmt: skip

# The plain side: the same convnet (kerasdiag's builder, so the layers are identical) trained
# one epoch on Keras' own folder pipeline, scored on validation and test as a run is.
PLAIN = f"""
import sys, keras, tensorflow as tf
from types import SimpleNamespace
from kerasdiag.config import load_config
from kerasdiag.modeling.factory import build_model
folder, n = sys.argv[1], int(sys.argv[2])
cfg = load_config(sys.argv[3:])
kw = dict(image_size=({SIZE}, {SIZE}), batch_size={BATCH}, seed=0, verbose=False)
train, val = keras.utils.image_dataset_from_directory(
    folder, validation_split=0.2, subset="both", **kw)
norm = keras.layers.Normalization(axis=-1)
norm.adapt(train.take(20).map(lambda x, y: x))
prep = lambda x, y: (norm(x), y)
train = train.map(prep, tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
val = val.map(prep, tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
data = SimpleNamespace(input_shape=({SIZE}, {SIZE}, 3), num_classes=10, y_train=range(int(0.8 * n)))
model = build_model(cfg, data)
model.fit(train, validation_data=val, epochs=1, verbose=0)
model.evaluate(val, verbose=0)
"""


def write_folder(root: Path, count: int) -> Path:
    """``count`` 64x64 PNGs in ten class folders, from the CIFAR-10 sample (written once)."""
    import tensorflow as tf

    from kerasdiag.data.cifar import CIFAR10_CLASSES, load_cifar10_folder

    folder = root / f"images{count}"
    if (folder / ".complete").is_file():
        return folder
    x, y, _, _ = load_cifar10_folder(CIFAR_SAMPLE)
    big = tf.cast(tf.image.resize(x, (SIZE, SIZE)), tf.uint8).numpy()
    for name in CIFAR10_CLASSES:
        (folder / name).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        image = big[i % len(big)]
        variant = i // len(big)
        if variant % 2:
            image = image[:, ::-1]
        if variant >= 2:
            image = np.roll(image, variant, axis=(0, 1))
        path = folder / CIFAR10_CLASSES[y[i % len(big)]] / f"{i:06d}.png"
        path.write_bytes(tf.io.encode_png(image).numpy())
    (folder / ".complete").write_text("")
    return folder


def _keras_folder(folder: Path):
    import keras
    import tensorflow as tf

    ds = keras.utils.image_dataset_from_directory(
        str(folder), image_size=(SIZE, SIZE), batch_size=BATCH, seed=0, verbose=False
    )
    return ds.prefetch(tf.data.AUTOTUNE)


def _kerasdiag_folder(folder: Path):
    from kerasdiag.config import load_config
    from kerasdiag.data import load_dataset

    cfg = load_config([*MODEL, f"data.path={folder}"])
    data = load_dataset(cfg.data)
    started = time.perf_counter()
    data.prepare()  # the streaming pass (bad files, normalisation, hashes): once per run
    scan = time.perf_counter() - started
    return data, data.training_batches(BATCH, epochs=1, seed=0), scan


def throughput(folder: Path) -> None:
    data, ours, scan = _kerasdiag_folder(folder)
    theirs = _keras_folder(folder)
    n = sum(len(data.files[s]) for s in ("train", "val", "test"))
    print(f"\n{folder.name}: decode throughput, one pass (images/s)")
    print(f"  kerasdiag streaming pass before training: {n / scan:8.0f}  ({scan:.1f} s)")
    for name, ds, count in (("kerasdiag training stream", ours, len(data.y_train)),
                            ("image_dataset_from_directory", theirs, n)):  # fmt: skip
        started = time.perf_counter()
        for _ in ds:
            pass
        seconds = time.perf_counter() - started
        print(f"  {name:40s}: {count / seconds:8.0f}  ({seconds:.1f} s)")
    print(f"{folder.name}: input idle time while training (share of the loop's wall time)")
    from kerasdiag.config import load_config
    from kerasdiag.modeling.factory import build_model

    cfg = load_config([*MODEL, f"data.path={folder}"])
    for name, ds in (("kerasdiag", ours), ("image_dataset_from_directory", theirs)):
        model = build_model(cfg, data)
        waited = stepped = 0.0
        iterator = iter(ds)
        model.train_on_batch(*next(iterator))  # tracing
        while True:
            started = time.perf_counter()
            batch = next(iterator, None)
            got = time.perf_counter()
            if batch is None:
                break
            model.train_on_batch(*batch)
            stepped += time.perf_counter() - got
            waited += got - started
        print(f"  {name:40s}: {waited / (waited + stepped):6.1%} idle "
              f"({waited:.1f} s waiting, {stepped:.1f} s in steps)")  # fmt: skip


def _process(command: list[str]) -> tuple[float, float, int]:
    """Wall seconds, peak RSS (MB) and exit code of a child process.

    The peak comes from GNU time (``/usr/bin/time -f %M``), which forks the command from its
    own small process: Linux keeps across ``exec`` the peak of the process that forked, so
    ``wait4``'s ``ru_maxrss`` of a child of this benchmark (1.3 GB after the throughput
    part) would read at least 1.3 GB whatever the child used.
    """
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    gnu_time = shutil.which("time") or "/usr/bin/time"
    with tempfile.NamedTemporaryFile("r") as peak:
        started = time.perf_counter()
        proc = subprocess.run([gnu_time, "-f", "%M", "-o", peak.name, *command], cwd=REPO,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
        wall = time.perf_counter() - started
        kilobytes = float(peak.read().strip().splitlines()[-1])
    if proc.returncode:
        print(proc.stderr.decode()[-2000:])
    return wall, kilobytes / 1024, proc.returncode


def whole_runs(folders: dict[int, Path]) -> None:
    print("\none epoch as a whole process: wall s / peak RSS MB")
    header = f"  {'images':>7}  {'plain Keras':>16}  {'kerasdiag off':>16}  {'kerasdiag on':>16}"
    print(header + "  wall ratio off / on")
    rows = {}
    for count, folder in folders.items():
        with tempfile.TemporaryDirectory() as tmp:
            plain = _process([sys.executable, "-c", PLAIN, str(folder), str(count), *MODEL,
                              f"data.path={folder}"])  # fmt: skip
            off = _process([sys.executable, "scripts/train.py", *MODEL, f"data.path={folder}",
                            "sanity=off", "monitors=off", f"hydra.run.dir={tmp}/off"])  # fmt: skip
            on = _process([sys.executable, "scripts/train.py", *MODEL, f"data.path={folder}",
                           f"hydra.run.dir={tmp}/on"])  # fmt: skip
        rows[count] = (plain, off, on)
        cells = "  ".join(f"{w:7.1f} / {m:6.0f}" for w, m, _ in (plain, off, on))
        print(f"  {count:>7}  {cells}  {off[0] / plain[0]:.2f} / {on[0] / plain[0]:.2f}")
    small = min(rows)
    for large in sorted(rows)[1:]:
        print(f"  peak RSS, {large} minus {small} images (MB): " + ", ".join(
            f"{name} {rows[large][i][1] - rows[small][i][1]:+.0f}"
            for i, name in enumerate(("plain Keras", "kerasdiag off", "kerasdiag on"))
        ))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 12000])
    parser.add_argument("--root", type=Path, default=Path("/tmp/kd-stream"))
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args()
    folders = {n: write_folder(args.root, n) for n in args.sizes}
    if not args.skip_throughput:
        throughput(folders[max(folders)])
    whole_runs(folders)


if __name__ == "__main__":
    main()
