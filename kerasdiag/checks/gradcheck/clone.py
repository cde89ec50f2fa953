"""A float64 copy of a model, a layer or a loss, for gradient checks.

In float32 the arithmetic alone gives relative errors near 1e-2, which hides real bugs. A
float64 check needs more than ``keras.config.set_floatx``: every layer's config names its
dtype policy, Input layers name their dtype, and Keras losses cast predictions to their own
dtype (float32 by default). ``clone_float64`` rewrites every floating dtype in the serialized
config to float64, rebuilds the model (custom layers through their ``get_config``), copies the
weights, and refuses to return anything that is not float64 throughout. The user's model,
weights and dtypes are never touched.

Example:
    >>> import keras
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> clone = clone_float64(model)
    >>> [v.dtype for v in clone.weights], [v.dtype for v in model.weights]
    (['float64', 'float64'], ['float32', 'float32'])
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Iterator
from typing import Any

import keras
import numpy as np
from keras.src.saving import serialization_lib

FLOAT64 = "float64"
_CONFIGURABLE = (
    keras.regularizers.Regularizer,
    keras.initializers.Initializer,
    keras.constraints.Constraint,
    keras.layers.Layer,
)
_FLOAT_NAMES = {"float16", "bfloat16", "float32", "float64", "mixed_float16", "mixed_bfloat16"}


@contextlib.contextmanager
def float64_defaults() -> Iterator[None]:
    """Layers and losses created inside default to float64 (floatx and the dtype policy)."""
    floatx, policy = keras.config.floatx(), keras.config.dtype_policy()
    keras.config.set_floatx(FLOAT64)
    keras.config.set_dtype_policy(FLOAT64)
    try:
        yield
    finally:
        keras.config.set_floatx(floatx)
        keras.config.set_dtype_policy(policy)


def as_float64_config(config: Any) -> Any:
    """``config`` with every floating ``dtype`` (string or dtype policy) set to float64.

    Integer dtypes (token ids for an Embedding) stay as they are.
    """
    if isinstance(config, list):
        return [as_float64_config(c) for c in config]
    if not isinstance(config, dict):
        return config
    out = {}
    for key, value in config.items():
        if key == "dtype" and _is_float_dtype(value):
            out[key] = FLOAT64
        else:
            out[key] = as_float64_config(value)
    return out


def _is_float_dtype(value: Any) -> bool:
    if isinstance(value, str):
        return value in _FLOAT_NAMES
    if isinstance(value, dict) and "DTypePolicy" in str(value.get("class_name", "")):
        name = value.get("config", {}).get("name", "")
        return name in _FLOAT_NAMES
    return False


def _custom_objects(obj: Any) -> dict[str, Any]:
    """The classes and functions a config may name, so user-defined layers, regularizers,
    initializers, constraints and activations rebuild without registration.

    Keras' own classes are left out: they deserialize by their module, and in the scope a
    name such as ``Add`` (the layer) would shadow the operation of the same name that a
    functional graph records for ``x + 3.0`` (keras.applications' MobileNetV3)."""
    layers = [obj, *obj._flatten_layers()] if hasattr(obj, "_flatten_layers") else [obj]
    found: dict[str, Any] = {}
    for item in layers:
        values = [v for v in vars(item).values() if isinstance(v, _CONFIGURABLE)]
        for cls in (type(item), *map(type, values)):
            if not _is_keras(cls):
                found[cls.__name__] = cls
        for value in vars(item).values():
            if inspect.isfunction(value) and not _is_keras(value):
                found[value.__name__] = value
    return found


class CannotClone(ValueError):
    """The object cannot be rebuilt from its config (a custom layer without ``get_config``,
    a subclassed model whose constructor takes Python objects)."""


# The restore functions of the models turned float64 in place by the innermost
# ``float64_scope`` (None: no scope, an object that cannot be cloned raises CannotClone).
_IN_PLACE: list[list[Any]] = []


@contextlib.contextmanager
def float64_scope() -> Iterator[None]:
    """Within the block, a model that cannot be cloned (:class:`CannotClone`) is turned
    float64 in place by :func:`clone_float64` instead (:func:`float64_in_place`), and put
    back as it was when the block ends: any model a user can ``fit`` can be checked."""
    restores: list[Any] = []
    _IN_PLACE.append(restores)
    try:
        yield
    finally:
        _IN_PLACE.pop()
        for restore in reversed(restores):
            restore()


def in_float64_scope(check: Callable[..., Any]) -> Callable[..., Any]:
    """``check`` run inside :func:`float64_scope`: a model-level gradient check of a model
    that cannot be cloned checks the model itself, put back as it was when it returns."""

    @functools.wraps(check)
    def scoped(*args: Any, **kwargs: Any) -> Any:
        with float64_scope():
            return check(*args, **kwargs)

    return scoped


def float64_in_place(model: Any) -> Any:
    """Make ``model`` compute in float64 itself; returns the function that puts it back.

    Every layer's dtype policy becomes float64 and every floating variable gets a new
    float64 value holding its current value; the function restores the policies and the
    original variables (the same objects, so their values are exactly as they were,
    whatever was done to the float64 ones meanwhile: a warm-up trains them).
    """
    layers = [model, *model._flatten_layers()]
    policies = [(layer, layer._dtype_policy) for layer in layers]
    saved: list[tuple[Any, Any, Any]] = []
    seen: set[int] = set()
    for v in model.variables:
        if id(v) in seen or "float" not in str(v.dtype):
            continue
        seen.add(id(v))
        value = np.asarray(keras.ops.convert_to_numpy(v), dtype=np.float64)
        saved.append((v, v._dtype, v._value))
        v._dtype = FLOAT64
        v._initialize(value)

    def restore() -> None:
        for layer, policy in policies:
            layer._dtype_policy = policy
        for v, dtype, value in saved:
            v._dtype, v._value = dtype, value

    for layer, policy in policies:
        if policy.compute_dtype in _FLOAT_NAMES or policy.variable_dtype in _FLOAT_NAMES:
            layer._dtype_policy = keras.DTypePolicy(FLOAT64)
    return restore


def _is_keras(obj: Any) -> bool:
    return getattr(obj, "__module__", "").split(".")[0] == "keras"


def _rebuild(obj: Any) -> Any:
    try:
        # A layer holding a Python callable without get_config fails here already.
        config = serialization_lib.serialize_keras_object(obj)
        # The clone is never trained through compile(); its compile config (optimizer, loss,
        # metrics) may name custom objects that do not deserialize, so it is left out.
        config.pop("compile_config", None)
        config = as_float64_config(config)
        with float64_defaults(), keras.saving.custom_object_scope(_custom_objects(obj)):
            return serialization_lib.deserialize_keras_object(config, safe_mode=False)
    except Exception as exc:  # Keras raises many types for objects it cannot rebuild
        raise CannotClone(
            f"cannot clone {type(obj).__name__} {getattr(obj, 'name', '')!r} to float64 "
            f"({type(exc).__name__}: {exc}); custom layers must implement get_config() "
            "returning every constructor argument"
        ) from exc


def clone_float64(model: keras.Model | keras.layers.Layer, build_input: Any = None) -> Any:
    """A float64 copy of ``model`` (or a layer) holding its current weights.

    ``build_input`` is called through the copy when the config alone does not build it
    (subclassed models, layers never called). A layer that was never built keeps the
    copy's freshly initialised weights. Inside :func:`float64_scope`, a model that cannot be
    rebuilt (:class:`CannotClone`) is turned float64 in place and put back when the scope
    ends.
    """
    try:
        clone = _rebuild(model)
    except CannotClone:
        if not _IN_PLACE or not isinstance(model, keras.Model):
            raise
        if not model.built and build_input is not None:
            model(build_input)
        _IN_PLACE[-1].append(float64_in_place(model))
        check_float64(model)
        return model
    if not clone.built or len(clone.weights) != len(model.weights):
        if build_input is None:
            raise ValueError(
                f"cannot build the float64 copy of {model.name!r}: pass example inputs"
            )
        with float64_defaults():
            clone(build_input)
    if model.built:
        _copy_weights(model, clone)
    check_float64(clone)
    return clone


def _copy_weights(source: Any, target: Any) -> None:
    src, dst = source.weights, target.weights
    if len(src) != len(dst) or any(
        tuple(a.shape) != tuple(b.shape) for a, b in zip(src, dst, strict=True)
    ):
        raise ValueError(
            f"the float64 copy of {source.name!r} does not have the original's weights "
            f"({len(dst)} vs {len(src)} variables); does get_config() return every argument?"
        )
    for a, b in zip(src, dst, strict=True):
        b.assign(np.asarray(keras.ops.convert_to_numpy(a), dtype=b.dtype))


def check_float64(obj: Any) -> None:
    """Raise ValueError naming every layer or variable of ``obj`` not computed in float64."""
    bad = []
    layers = [obj, *obj._flatten_layers()] if hasattr(obj, "_flatten_layers") else [obj]
    for layer in layers:
        policy = layer.dtype_policy
        for dtype in (policy.compute_dtype, policy.variable_dtype):
            if dtype in _FLOAT_NAMES and dtype != FLOAT64:
                bad.append(f"layer {layer.name} ({policy.name})")
                break
    for v in obj.weights:
        if "float" in str(v.dtype) and str(v.dtype) != FLOAT64:
            bad.append(f"variable {v.path} ({v.dtype})")
    if bad:
        raise ValueError(
            "the gradient-check copy must be float64 throughout, but these are not: "
            + ", ".join(bad)
            + "; a custom layer must pass **kwargs (dtype) on to Layer.__init__"
        )


def float64_loss(loss: Any) -> Any:
    """``loss`` computing in float64: a Keras Loss object is copied with a float64 dtype.

    Keras losses cast ``y_pred`` to their own dtype (float32 unless set), which would undo a
    float64 model. Names resolve through ``keras.losses.get``; plain functions compute in
    their inputs' dtype and are returned unchanged.
    """
    if isinstance(loss, str):
        loss = keras.losses.get(loss)
    if isinstance(loss, keras.losses.Loss):
        # A shallow copy: Loss has no public dtype setter, custom losses often lack a
        # get_config that round-trips, and copy.copy would pickle through the Keras saver.
        clone = object.__new__(type(loss))
        clone.__dict__.update(loss.__dict__)
        clone._dtype_policy = keras.DTypePolicy(FLOAT64)
        clone._dtype = FLOAT64
        if clone.dtype != FLOAT64:
            raise ValueError(f"cannot make loss {loss!r} compute in float64")
        return clone
    if callable(loss):
        return loss
    raise ValueError(f"loss must be a Keras loss, a loss name or a function, got {loss!r}")
