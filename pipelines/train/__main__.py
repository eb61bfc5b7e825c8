"""``python -m pipelines.train ...``: the training job (as under ``ray job submit``)."""

from pipelines.runtime.exit_status import exit_process
from pipelines.train.driver import main

exit_process(main())
