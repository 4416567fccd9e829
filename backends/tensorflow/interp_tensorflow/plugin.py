"""Registration of the TensorFlow backend (light: never imports TensorFlow or Keras).

Models are claimed from ``frameworks`` by interp-core's default claim; ``.keras``, ``.h5`` and
``.hdf5`` files (in Keras's safe mode unless trusted) and weights into Keras models are loaded
by :mod:`interp_tensorflow.loading`, imported only for them.
"""

from __future__ import annotations

from interp_core.backend import BackendRegistration
from interp_core.backend.registration import loads_files, loads_weights, registers

#: File suffixes this adapter loads with ``keras.models.load_model``.
MODEL_FILES = (".keras", ".h5", ".hdf5")

interp_core_register_backends = registers(BackendRegistration(
    name="tensorflow",
    factory="interp_tensorflow.backend:TensorFlowBackend",
    frameworks=("keras", "tensorflow", "tf_keras"),
    install_hint="pip install tensorflow",
    demo="interp_tensorflow.demo:build",
))
interp_core_load_model = loads_files(MODEL_FILES, "interp_tensorflow.loading:load_keras_model")
interp_core_load_weights = loads_weights(("keras", "tensorflow", "tf_keras"),
                                         "interp_tensorflow.loading:load_weights")
