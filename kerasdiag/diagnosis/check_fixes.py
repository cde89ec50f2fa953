"""The fixes of the checks before and around training, which name no symptom of the table.

The data checks, the input baseline, batch independence, the learning-rate range test and
the doctor's judgements without probe data each name one fix of their own. Kept apart from
the symptom table (:mod:`kerasdiag.diagnosis.symptoms`, which re-exports every name here) so
that the table holds only what the rules name; each fix is still written in one place.
"""

from __future__ import annotations

# kerasdiag.checks.data
LEAKAGE_FIX = (
    "remove the duplicated examples from the validation/test split (or from training), "
    "de-duplicate the data before splitting it, and split by source (file, person, "
    "recording) when examples come in near-identical groups"
)

SHIFT_FIX = (
    "draw validation and test from the same distribution: split them from one shuffled pool "
    "(stratified by class), or, when the test set is what you must do well on, carve the "
    "validation split out of data like it; check that both get the same preprocessing"
)

# kerasdiag.checks.sanity.baseline
INPUT_UNUSED_FIX = (
    "find where the input is lost: a first layer frozen at zero or a layer that discards its "
    "input (a Lambda returning a constant, a mask or multiply by 0), inputs not wired to the "
    "output (a functional model built from the wrong tensor), constant inputs (normalisation "
    "that divides by a huge std, a data pipeline that yields zeros), labels that do not "
    "belong to their inputs; or a learning rate so low nothing is learned in a few steps"
)

# kerasdiag.checks.sanity.batch_independence
BATCH_MIXING_FIX = (
    "a layer combines different examples of the batch: look for a reshape where a transpose "
    "was meant (e.g. (batch, time, features) -> (time, batch, features)), a transpose or a "
    "reduction (sum, mean, max, softmax) over axis 0, or a custom layer that normalises over "
    "the batch in inference mode; keep axis 0 the batch axis in every op"
)

# kerasdiag.checks.lr_range: what to change when the configured rate is far from the suggestion ({lr}: the suggestion).
LR_TOO_HIGH_FIX = (
    "lower the learning rate to the suggestion (optimizer.lr={lr}, or optimizer.lr=auto)"
)

LR_TOO_LOW_FIX = (
    "raise the learning rate to the suggestion (optimizer.lr={lr}, or optimizer.lr=auto)"
)

# What to change when the loss never falls over the whole range.
NO_DROP_FIX = (
    "the loss did not fall at any learning rate: check that the model learns at all "
    "(sanity.overfit=true), that the labels belong to their inputs, and that the data is "
    "normalised (data.normalize=true); or widen the range (end_lr) or take more steps"
)

# kerasdiag.callbacks.weight_checks: initialisation far off, and no probe data
INIT_TOO_LARGE_FIX = (
    "initialise by activation: He for ReLU-like units (kernel_initializer='he_normal', "
    "variance 2/n_in), Glorot for tanh/sigmoid ('glorot_uniform'); a hand-set "
    "RandomNormal(stddev=...) ignores the fan-in (model.kernel_initializer=null picks it)"
)

INIT_TOO_SMALL_FIX = (
    "initialise by activation: He for ReLU-like units (variance 2/n_in), Glorot for "
    "tanh/sigmoid; a tiny or constant initialisation shrinks the signal layer by layer and "
    "leaves units identical (model.kernel_initializer=null picks the right one)"
)

NO_PROBE_HINT = (
    "pass a probe batch, TrainingDoctor(x_train[:32], y_train[:32]), or the monitors already "
    "in your fit (monitors=[GradientMonitor(...), ActivationHistograms(...)])"
)
