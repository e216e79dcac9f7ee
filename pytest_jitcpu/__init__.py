"""pytest-jitcpu: prove that a PyTorch / Hugging Face model runs correctly and fast on CPU under
TorchScript tracing and IPEX, in its own test suite and in CI."""

from .compare import Tolerance, compare
from .engine import check
from .record import CheckResult, Record
from .settings import DTYPES, MODES, STATUSES, Settings, UsageError

__all__ = [
    "DTYPES",
    "MODES",
    "STATUSES",
    "CheckResult",
    "Record",
    "Settings",
    "Tolerance",
    "UsageError",
    "check",
    "compare",
]
__version__ = "0.1.0"
