"""Where a run's metrics go besides its history.

- :mod:`.tensorboard`: TensorBoard events per stage (``output.tensorboard``).
- ``output.tracking``: experiment trackers. :mod:`.session` opens a command's tracking (a
  parent MLflow run, a W&B group) and one tracked run per stage; :mod:`.mlflow_runs` and
  :mod:`.wandb_runs` talk to the trackers' own clients; :mod:`.trials` hands a search's
  trials to Ray Tune's MLflow and W&B callbacks; :mod:`.reach` checks the trackers answer
  before anything trains; :mod:`.params` flattens the resolved job into parameters.

mlflow and wandb are imported only when a job configures them.
"""

from raydistill.tracking.tensorboard import (
    TENSORBOARD_DIR,
    TensorBoardLogger,
    scalar_metrics,
    tensorboard_dir,
)

__all__ = ["TENSORBOARD_DIR", "TensorBoardLogger", "scalar_metrics", "tensorboard_dir"]
