"""The vocabulary shared by modules: one spelling of each name that more than one module uses.

File names inside a run folder and a model folder, split names and the bundled data sets' names. Standard
library only, so the runtime and the training half import it alike.

    runs/cnn4-fashion-mnist/        config.json  metrics.csv  best.pt  last.pt  results.json
    export/cnn4-fashion-mnist/      model.onnx  model.int8.onnx  report.json  report.md  COMMAND
"""
from __future__ import annotations

# --- a model folder: what `edgefashion export` writes ---------------------------------------------------------
FP32_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
MODEL_FILES = (FP32_FILE, INT8_FILE)  # FP32 first: tables read as pairs in this order
INT8_SUFFIX = ".int8.onnx"  # how an INT8 file is told from an FP32 one by its name alone
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
COMMAND_FILE = "COMMAND"  # the command line that made the folder, for bundled models

# --- a run folder: what `edgefashion train` writes ------------------------------------------------------------
BEST_CHECKPOINT = "best.pt"
LAST_CHECKPOINT = "last.pt"
CHECKPOINTS = (BEST_CHECKPOINT, LAST_CHECKPOINT)  # a run folder's model: best, else last
RESULTS_JSON = "results.json"
CONFIG_JSON = "config.json"
METRICS_CSV = "metrics.csv"

# --- splits ---------------------------------------------------------------------------------------------------
TRAIN, VAL, TEST, ALL = "train", "val", "test", "all"
SPLITS = (TRAIN, VAL, TEST)  # what a data set is divided into
EVAL_SPLITS = (TEST, VAL, TRAIN, ALL)  # what `eval --split` scores (test first: the default)

# --- bundled data sets ----------------------------------------------------------------------------------------
FASHION_MNIST = "fashion-mnist"
CLOTHING_SMALL = "clothing-small"
DATASETS = (FASHION_MNIST, CLOTHING_SMALL)
