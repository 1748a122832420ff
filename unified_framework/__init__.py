"""MDLMA unified framework: segmentation, registration and HPC workflows for large 3D bio-images."""

import logging

__version__ = "0.1.0"

# Library code logs, never prints; applications decide where logs go.
logging.getLogger(__name__).addHandler(logging.NullHandler())
