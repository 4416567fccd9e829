"""Registration of the TensorFlow backend (light: never imports TensorFlow or Keras).

Models are claimed from ``frameworks`` by interp-core's default claim; ``.keras``, ``.h5`` and
``.hdf5`` files (in Keras's safe mode unless trusted) and weights into Keras models are loaded
by :mod:`interp_tensorflow.loading`, imported only for them.
"""

from __future__ import annotations

from interp_core.backend.hookspecs import (
    BackendRegistration,
    loads_files,
    loads_weights,
    registers,
)

#: Everything interp-core knows of this adapter, said once (``KNOWN_FRAMEWORKS`` copies the
#: facts for install hints; ``tests/test_registry.py`` checks the copy).
REGISTRATION = BackendRegistration(
    name="tensorflow",
    factory="interp_tensorflow.backend:TensorFlowBackend",
    frameworks=("keras", "tensorflow", "tf_keras"),
    install_hint="pip install tensorflow",
    demo="interp_tensorflow.demo:build",
    demo_vit="interp_tensorflow.demo_vit:build",
    model_files=(".keras", ".h5", ".hdf5"),  # loaded with keras.models.load_model
    distribution="interp-tensorflow",
)

interp_core_register_backends = registers(REGISTRATION)
interp_core_load_model = loads_files(REGISTRATION.model_files,
                                     "interp_tensorflow.loading:load_keras_model")
interp_core_load_weights = loads_weights(REGISTRATION.frameworks,
                                         "interp_tensorflow.loading:load_weights")
