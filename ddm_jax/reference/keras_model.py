"""The original networks rebuilt in `tf_keras` (Keras 2 semantics), for parity tests and benchmarks.

Built from the layer tables of docs/model.md with the upstream's layer defaults (LeakyReLU's alpha 0.3,
`padding='same'`), so the weight files they write have the released files' layout.
Needs the optional packages `tensorflow-cpu` and `tf-keras`.
"""

from __future__ import annotations

import numpy as np

from ddm_jax.config import DDMConfig, RegressorConfig


def _keras():
    try:
        import tf_keras
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("the Keras reference needs `pip install tensorflow-cpu tf-keras`") from err
    return tf_keras


def _conv_stack(layers, x, convs):
    for spec in convs:
        x = layers.Conv1D(spec.features, spec.kernel, strides=spec.stride, padding="same",
                          use_bias=spec.bias)(x)
        x = layers.LeakyReLU()(x)
    return layers.Flatten()(x)


def build_ddm(config: DDMConfig = DDMConfig(), agn_branch_first: bool = True):
    """The DDM as a functional Keras model: outputs SF spectrum, AGN spectrum, SF_Prob, AGN_Prob, Tot_Prob.

    `agn_branch_first` only changes the order in which layers are created (and so their
    auto-generated names), never the topology: tests use it to show that the converter
    depends on neither.
    """
    keras = _keras()
    layers = keras.layers
    inputs = keras.Input((config.n_bins, 1))
    h = _conv_stack(layers, inputs, config.convs)
    for units, rate in zip(config.trunk_units, config.trunk_dropout):
        h = layers.Dropout(rate)(layers.LeakyReLU()(layers.Dense(units)(h)))

    def branch(name):
        hidden = layers.Dropout(config.branch_dropout)(layers.LeakyReLU()(layers.Dense(config.branch_units)(h)))
        return hidden, layers.Dense(config.n_bins, name=name)(hidden)

    if agn_branch_first:
        agn_hidden, agn_spectrum = branch("AGN_spectrum")
        sf_hidden, sf_spectrum = branch("SF_spectrum")
    else:
        sf_hidden, sf_spectrum = branch("SF_spectrum")
        agn_hidden, agn_spectrum = branch("AGN_spectrum")
    # Upstream also builds two mass heads that reach no output: not part of the model or its file.
    for _ in range(2):
        layers.Dense(1)(h)
    both = layers.Concatenate()([sf_hidden, agn_hidden])

    def head(name):
        x = both
        for units in config.head_units:
            x = layers.Dropout(config.head_dropout)(layers.LeakyReLU()(layers.Dense(units)(x)))
        return layers.Dense(1, name=name)(x)

    sf_prob, agn_prob = head("SF_Prob"), head("AGN_Prob")
    total = layers.Dense(1, name="Tot_Prob")(layers.LeakyReLU()(layers.Add()([sf_prob, agn_prob])))
    return keras.Model(inputs, [sf_spectrum, agn_spectrum, sf_prob, agn_prob, total])


def build_regressor(config: RegressorConfig = RegressorConfig()):
    """The line-ratio regressor as a Keras model with eight linear outputs."""
    keras = _keras()
    layers = keras.layers
    inputs = keras.Input((config.n_bins, 1))
    h = _conv_stack(layers, inputs, config.convs)
    h = layers.LeakyReLU()(layers.LeakyReLU()(layers.Dense(config.dense_units[0])(h)))
    h = layers.Dropout(config.dropout)(layers.LeakyReLU()(layers.Dense(config.dense_units[1])(h)))
    return keras.Model(inputs, layers.Dense(config.n_outputs)(h))


def randomize_weights(model, seed: int) -> None:
    """Fan-in-scaled normal kernels and non-zero normal biases, so every weight is exercised."""
    rng = np.random.default_rng(seed)
    weights = []
    for w in model.get_weights():
        if w.ndim == 1:
            weights.append(rng.normal(0.0, 0.1, w.shape).astype(np.float32))
        else:
            fan_in = int(np.prod(w.shape[:-1]))
            weights.append(rng.normal(0.0, 1.0 / np.sqrt(fan_in), w.shape).astype(np.float32))
    model.set_weights(weights)


def predict(model, spectra: np.ndarray, batch_size: int = 256):
    """Keras `predict` on (B, n_bins) spectra; a list of arrays, one per output."""
    outputs = model.predict(np.asarray(spectra, np.float32)[..., None], batch_size=batch_size, verbose=0)
    return outputs if isinstance(outputs, list) else [outputs]
