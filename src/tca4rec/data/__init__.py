"""Datasets: the in-memory ``RecDataset``, the release-format reader/writer, synthetic data,
raw-data preparation (Amazon 2018 and generic interaction logs) and summary statistics."""

from tca4rec.data.dataset import SPLITS, RecDataset, Split
from tca4rec.data.formats import load_dataset, save_dataset

__all__ = ["SPLITS", "RecDataset", "Split", "load_dataset", "save_dataset"]
