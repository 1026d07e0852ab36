"""An ordinary RecBole training script running the plugin's DiffRec.

Compared with a stock RecBole script only the imports changed: Config, data_preparation
and Trainer come from recbole_diffrec, and the model class is the plugin's.
"""

import sys

from recbole.data import create_dataset
from recbole.utils import init_logger, init_seed

from recbole_diffrec import (
    Config,
    Trainer,
    data_preparation,
)  # was: recbole.config / recbole.data / recbole.trainer
from recbole_diffrec.models.diffrec import DiffRec

# Quick settings so the example finishes in seconds; drop them for the model's defaults.
settings = {
    "epochs": 2,
    "steps": 5,
    "dims_dnn": [64],
    "train_batch_size": 64,
    "show_progress": False,
}

config = Config(model=DiffRec, dataset="ml-100k", config_dict=settings)
init_seed(config["seed"], config["reproducibility"])
init_logger(config)

dataset = create_dataset(config)
train_data, valid_data, test_data = data_preparation(config, dataset)

model = DiffRec(config, train_data.dataset).to(config["device"])
trainer = Trainer(config, model)
best_valid_score, best_valid_result = trainer.fit(train_data, valid_data, saved=True)
test_result = trainer.evaluate(test_data, load_best_model=True)

print("best valid:", dict(best_valid_result))
print("test:", dict(test_result))
sys.exit(0 if test_result["recall@10"] > 0 else 1)
