import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# the suite's teacher and data caches live in a fresh folder of its own, not in the user's ~/.cache/maskedkd
os.environ.setdefault("MASKEDKD_CACHE", tempfile.mkdtemp(prefix="maskedkd-test-cache-"))

import torch  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile("ci", deadline=None, max_examples=25, derandomize=True, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
