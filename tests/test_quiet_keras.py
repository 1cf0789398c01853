"""A healthy CPU run's Keras stage prints no line that looks like an error (issue 23)."""

from __future__ import annotations

import os
import subprocess
import sys

from mnist_pipeline.models.quiet_keras import STARTUP_NOTICES

# TensorFlow 2.21's own lines on a machine without a GPU, as printed before the change.
NOTICES = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796645781.225583   13035 port.cc:153] oneDNN custom operations are on. You may see slightly "
    "different numerical results due to floating-point round-off errors from different computation orders. To turn "
    "them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.",
    "I0000 00:00:1796645781.225998   13035 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.",
    "I0000 00:00:1796645781.291144   13035 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use available "
    "CPU instructions in performance-critical operations.",
    "To enable the following instructions: AVX2 AVX512F AVX512_VNNI AVX512_BF16 FMA, in other operations, rebuild "
    "TensorFlow with the appropriate compiler flags.",
]


def test_only_the_known_start_up_notices_are_dropped():
    assert all(STARTUP_NOTICES.fullmatch(line) for line in NOTICES)
    for kept in (
        "E0000 00:00:1796645784.506419   13035 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error",
        "I0000 00:00:1796645781.225998   13035 other.cc:31] something new",
        "Traceback (most recent call last):",
        "UserWarning: something in keras' own import",
    ):
        assert not STARTUP_NOTICES.fullmatch(kept), kept


def test_building_and_fitting_a_keras_model_prints_no_tensorflow_notice():
    code = (
        "import numpy as np\n"
        "from mnist_pipeline.models.quiet_keras import keras\n"
        "model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])\n"
        "model.compile('adam', 'mse')\n"
        "model.fit(np.zeros((8, 4)), np.zeros((8, 2)), verbose=0)\n"
        "import sys; print('still printing', file=sys.stderr)\n"
    )
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "still printing", done.stderr
