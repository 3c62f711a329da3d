"""The timed scenarios, one module each, each declaring ``SCENARIO`` (see
``harness.scenarios.declaration``): what it shows, how its observations are summarized and
how its report section reads. The report imports every module here, so they stay pure at
import time; the kernel-side run code of the shipped ones lives in ``harness.scenarios.job``
and ``harness.scenarios.windows``."""
