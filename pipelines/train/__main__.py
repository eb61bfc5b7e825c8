"""``python -m pipelines.train ...``: the training job (as under ``ray job submit``)."""

import sys

from pipelines.train.driver import main

sys.exit(main())
