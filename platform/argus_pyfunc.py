"""The ARGUS pyfunc, logged as MLflow models-from-code (this file travels with the model).

Loading runs this file and rebuilds the model from two plain artifacts (``state_dict``:
tensors loaded with ``weights_only=True``; ``config``: JSON), so nothing is unpickled.
Input: a DataFrame column ``item_id`` (int64); output: item vectors (N, d) float32.
"""
import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd


class ArgusPyfunc(mlflow.pyfunc.PythonModel):
    """The ARGUS item tower; ``self.model`` is the full ``ArgusModel`` (user tower: ``model.user_vectors``)."""

    def load_context(self, context) -> None:
        import torch

        from argusrank.models.argus import ArgusModel
        from argusrank.models.config import ArgusConfig

        conf = json.loads(Path(context.artifacts["config"]).read_text())
        self.model = ArgusModel(ArgusConfig.from_dict(conf))
        state = torch.load(context.artifacts["state_dict"], map_location="cpu", weights_only=True)
        self.model.load_state_dict(state)
        self.model.eval()

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> np.ndarray:
        import torch

        ids = torch.as_tensor(np.asarray(model_input["item_id"], dtype=np.int64))
        with torch.no_grad():
            return self.model.item_vectors(ids).float().cpu().numpy()


mlflow.models.set_model(ArgusPyfunc())
