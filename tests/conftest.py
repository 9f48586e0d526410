"""Shared test set-up: the project folder on sys.path, TensorFlow in TF1 graph mode (once)."""
import os
import sys

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if PROJECT_DIR not in sys.path:
    sys.path.insert(0, PROJECT_DIR)

import nst_utils  # noqa: E402

tf = nst_utils.import_tf()
