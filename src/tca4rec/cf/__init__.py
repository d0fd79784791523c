"""Collaborative-filtering model zoo: MostPop, SASRec, BERT4Rec, GRU4Rec, Caser.

``cf.zoo`` registers every model; ``build_cf_model`` / ``CF_MODELS`` find them
by name. ``train_cf`` trains one on a dataset's train rows, ``load_cf_run`` /
``evaluate_cf`` / ``topk`` use a trained run folder.
"""

from tca4rec.cf.base import CF_MODELS, CFConfig, CFModel, register_cf_model
from tca4rec.cf.run import evaluate_cf, load_cf_run, topk
from tca4rec.cf.train import train_cf
from tca4rec.cf.zoo import build_cf_model, cf_model_class

__all__ = ["CF_MODELS", "CFConfig", "CFModel", "build_cf_model", "cf_model_class", "evaluate_cf", "load_cf_run",
           "register_cf_model", "topk", "train_cf"]
