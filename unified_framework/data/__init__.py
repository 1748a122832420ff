"""Sample data: a synthetic implant phantom with ground truth and images shipped by packages.

Examples
--------
>>> from unified_framework.data import make_implant_phantom, list_samples, load_sample
>>> image, labels = make_implant_phantom((48, 48, 48), seed=3)
>>> [s.name for s in list_samples()][:2]
['implant', 'implant-labels']
"""

from .pair import RegistrationPair, make_registration_pair
from .phantom import CLASS_NAMES, GREY_VALUES, make_implant_phantom
from .samples import PHANTOM_SPACING, Sample, list_samples, load_sample

__all__ = [
    "CLASS_NAMES",
    "GREY_VALUES",
    "PHANTOM_SPACING",
    "RegistrationPair",
    "Sample",
    "list_samples",
    "load_sample",
    "make_implant_phantom",
    "make_registration_pair",
]
