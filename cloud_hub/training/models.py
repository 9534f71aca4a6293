"""The three candidate architectures: `lstm`, `gru` and `two_branch`.

All take two named inputs, `window` [steps, 7] (normalised vitals, oldest first) and
`static` [4] (normalised demographics and time in ICU), and give one sigmoid output,
`risk`. The gateway maps tensors by these names, not by position.

Recurrent layers use `unroll=True`: over a fixed window the loop becomes plain ops,
which full int8 TFLite conversion needs (without it the converter segfaults or
emits TensorList ops the builtin set lacks; see docs/ARCHITECTURE.md "Known pitfalls").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from contracts.vitals import STATIC_FEATURES, VITAL_NAMES

if TYPE_CHECKING:
    import keras

ARCHITECTURES = ("lstm", "gru", "two_branch")


def _recurrent(kind: str, units: int, name: str) -> keras.layers.Layer:
    import keras

    layer = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU}[kind]
    return layer(units, unroll=True, name=name)


def build_model(
    arch: str,
    steps: int,
    units: int = 32,
    n_features: int = len(VITAL_NAMES),
    n_static: int = len(STATIC_FEATURES),
    dropout: float = 0.1,
) -> keras.Model:
    """An uncompiled Keras model of architecture `arch` for windows of `steps` hours."""
    import keras

    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose from {', '.join(ARCHITECTURES)}")
    if steps < 1 or units < 1:
        raise ValueError(f"steps and units must be >= 1, got steps={steps}, units={units}")
    window = keras.Input(shape=(steps, n_features), name="window")
    static = keras.Input(shape=(n_static,), name="static")
    if arch in ("lstm", "gru"):
        # Static features repeated over time so the recurrent layer sees them every step.
        repeated = keras.layers.RepeatVector(steps, name="static_over_time")(static)
        x = keras.layers.Concatenate(axis=-1, name="window_and_static")([window, repeated])
        x = _recurrent(arch, units, name=arch)(x)
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    else:
        w = _recurrent("gru", units, name="window_gru")(window)
        s = keras.layers.Dense(max(units // 2, 4), activation="relu", name="static_dense")(static)
        x = keras.layers.Concatenate(name="fuse")([w, s])
        x = keras.layers.Dense(units, activation="relu", name="fused_dense")(x)
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    risk = keras.layers.Dense(1, activation="sigmoid", name="risk")(x)
    return keras.Model(inputs={"window": window, "static": static}, outputs=risk, name=arch)
