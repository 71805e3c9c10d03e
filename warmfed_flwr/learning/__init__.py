"""The learning code, free of Flower: classifiers (models.py, pretrained.py), their training (training.py) and
dynamic self-distillation (dsd.py)."""
