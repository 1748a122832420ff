"""The ``mdlma`` command line: one module per verb.

Each module in this package that defines ``register(subparsers)`` adds one top-level
verb. ``register`` builds the argparse sub-parser and sets ``func`` (called with the
parsed namespace, returning an exit status). Verb modules import heavy libraries
(torch, streamlit, ...) inside their handlers so that ``mdlma --help`` stays fast.
"""
