"""A streamed image folder sharded over two worker processes on 127.0.0.1
(``MultiWorkerMirroredStrategy``, ``TF_CONFIG``): each worker reads its shard of every
epoch through the strategy's input context, and across the cluster each training example
is read once in the epoch."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from kerasdiag.data.cifar import CIFAR10_CLASSES, load_cifar10_folder

from conftest import REPO

WORKER = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf
    from kerasdiag.config import load_config
    from kerasdiag.data import load_dataset
    from kerasdiag.data.splits import row_hashes

    folder, out = sys.argv[1], sys.argv[2]
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    cfg = load_config(["data=image_folder", f"data.path={folder}", "data.normalize=false"])
    data = load_dataset(cfg.data)
    data.prepare()

    def shard(context):
        batch = context.get_per_replica_batch_size(16)
        return data.training_batches(batch, epochs=1, seed=3, input_context=context)

    stream = strategy.distribute_datasets_from_function(shard)
    seen = []
    for x, y in stream:
        for part in strategy.experimental_local_results(x):
            seen += [row_hashes(part.numpy().astype(np.uint8)).tolist()]
    hashes = [h for batch in seen for h in batch]
    everything = row_hashes(data._decode_all(data.files["train"])).tolist()
    json.dump({"seen": hashes, "train": everything}, open(out, "w"))
    """
)


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _cifar_folder(cifar_dir, folder, per_class: int):
    """``per_class`` real CIFAR-10 images of each of two classes, as PNGs in class folders."""
    x, y, _, _ = load_cifar10_folder(cifar_dir)
    for c in (0, 1):
        (folder / CIFAR10_CLASSES[c]).mkdir(parents=True)
        for i in np.flatnonzero(y == c)[:per_class]:
            path = folder / CIFAR10_CLASSES[c] / f"{i:05d}.png"
            path.write_bytes(tf.io.encode_png(x[i]).numpy())
    return folder


def _start_workers(command_for) -> list[subprocess.Popen]:
    """Two processes, worker 0 and 1 of one TF_CONFIG cluster on 127.0.0.1; ``command_for``
    gives each index its command line."""
    cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(2)]}
    procs = []
    for index in range(2):
        config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO),
               "TF_CONFIG": json.dumps(config)}  # fmt: skip
        procs.append(subprocess.Popen(command_for(index), env=env, cwd=REPO, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))  # fmt: skip
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
    return procs


def test_two_workers_read_each_training_image_once_per_epoch(tmp_path, cifar_dir):
    folder = _cifar_folder(cifar_dir, tmp_path / "images", 40)
    outs = [tmp_path / f"worker{index}.json" for index in range(2)]
    _start_workers(lambda index: [sys.executable, "-c", WORKER, str(folder), str(outs[index])])
    results = [json.loads(out.read_text()) for out in outs]
    train = sorted(map(tuple, results[0]["train"]))
    assert len(train) == len(set(train))  # the sample's images are distinct
    seen = [sorted(map(tuple, r["seen"])) for r in results]
    assert seen[0] and seen[1] and not set(seen[0]) & set(seen[1])  # disjoint shards
    # the epoch: every training image once across the cluster
    assert sorted(seen[0] + seen[1]) == train


def test_uneven_shards_yield_the_same_number_of_batches(tmp_path, cifar_dir):
    # 2 x 41 images: the training split does not divide into two shards of whole batches.
    # A worker with fewer batches would leave the other waiting in the all-reduce.
    from kerasdiag.config import load_config
    from kerasdiag.data import load_dataset
    from kerasdiag.data.splits import row_hashes

    folder = _cifar_folder(cifar_dir, tmp_path / "images", 41)
    cfg = load_config(["data=image_folder", f"data.path={folder}", "data.normalize=false"])
    data = load_dataset(cfg.data)
    n = len(data.y_train)
    assert n % 16  # uneven
    shards = []
    for shard in (0, 1):
        context = tf.distribute.InputContext(2, shard, 2)
        epochs = [
            [row_hashes(x.astype(np.uint8)).tolist() for x, _ in
             data.training_batches(8, epochs=e + 1, first_epoch=e, input_context=context)
             .as_numpy_iterator()]
            for e in (0, 1)
        ]  # fmt: skip
        shards.append(epochs)
    steps = -(-n // 16)  # what one device takes at the global batch of 16
    for e in (0, 1):
        assert len(shards[0][e]) == len(shards[1][e]) == steps
        seen = {tuple(h) for s in shards for batch in s[e] for h in batch}
        train = {tuple(h) for h in row_hashes(data._decode_all(data.files["train"])).tolist()}
        assert seen == train  # every example at least once in the epoch


@pytest.mark.slow
def test_train_script_on_two_workers_streams_a_folder(tmp_path, cifar_dir):
    # The command line under MultiWorkerMirroredStrategy on a streamed folder whose training
    # split does not divide evenly: both workers finish (none waits for a missing batch) and,
    # started with different seeds, write the same curves (synchronised training).
    folder = _cifar_folder(cifar_dir, tmp_path / "images", 41)
    _start_workers(lambda index: [
        sys.executable, str(REPO / "scripts" / "train.py"), "data=image_folder",
        f"data.path={folder}", "data.batch_size=16", "trainer.strategy=multiworker",
        "trainer.epochs=2", f"trainer.seed={index + 1}", "sanity=off", "monitors=off",
        "trainer.verbose=0", f"hydra.run.dir={tmp_path / f'worker{index}'}"])  # fmt: skip
    curves = [(tmp_path / f"worker{i}" / "metrics.csv").read_text() for i in (0, 1)]
    assert curves[0] == curves[1] and len(curves[0].splitlines()) == 3  # header + 2 epochs
