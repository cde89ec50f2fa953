"""The plain Keras script a user would write instead of ``python scripts/train.py``.

The default recipe's job by hand: scikit-learn's digits, a stratified test and validation split,
standardised with the training statistics, the same MLP (64 ReLU units, L2 1e-4), Adam, 20
epochs of batch 32, the best epoch by validation accuracy kept (ModelCheckpoint +
EarlyStopping restoring it), and a test score. ``bench_default_run.py`` times it against
kerasdiag's default run, whole processes side by side.

    python benchmarks/plain_keras_digits.py OUT_DIR
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402


def main(out_dir: str) -> None:
    keras.utils.set_random_seed(0)
    digits = load_digits()
    x, y = digits.images.astype("float32")[..., None], digits.target
    x_rest, x_test, y_rest, y_test = train_test_split(
        x, y, test_size=0.2, stratify=y, random_state=0
    )
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=0.15, stratify=y_rest, random_state=0
    )
    mean, std = x_train.mean(axis=0), x_train.std(axis=0) + 1e-7
    x_train, x_val, x_test = ((a - mean) / std for a in (x_train, x_val, x_test))

    model = keras.Sequential(
        [
            keras.Input(x_train.shape[1:]),
            keras.layers.Flatten(),
            keras.layers.Dense(
                64, activation="relu", kernel_regularizer=keras.regularizers.L2(1e-4)
            ),
            keras.layers.Dense(10, kernel_regularizer=keras.regularizers.L2(1e-4)),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    os.makedirs(out_dir, exist_ok=True)
    model.fit(
        x_train,
        y_train,
        batch_size=32,
        epochs=20,
        validation_data=(x_val, y_val),
        callbacks=[
            keras.callbacks.ModelCheckpoint(
                os.path.join(out_dir, "best.keras"), monitor="val_accuracy", save_best_only=True
            ),
            keras.callbacks.EarlyStopping(
                monitor="val_accuracy", patience=5, restore_best_weights=True
            ),
            keras.callbacks.CSVLogger(os.path.join(out_dir, "metrics.csv")),
        ],
        verbose=2,
    )
    loss, accuracy = model.evaluate(x_test, y_test, verbose=0)
    print(f"test loss {loss:.4f}, test accuracy {accuracy:.4f}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "plain_keras_run")
