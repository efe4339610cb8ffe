"""Evaluation: the scenario classifier, forget rate and retain accuracy, Table 1 (``table``), attacks
(``membership``, ``relearn``, both together in ``robustness``)."""

from .classifier import Classifier, ClassifierTrainConfig, load_classifier, save_classifier, train_classifier

__all__ = ["Classifier", "ClassifierTrainConfig", "load_classifier", "save_classifier", "train_classifier"]
