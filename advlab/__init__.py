"""advlab: learn a CNN and fool it.

Train convolutional networks on real image data with the classic overfitting controls, attack them
with FGSM/PGD (through torchattacks), track every run in MLflow and tell the story in PDF reports.
"""

__version__ = "0.1.0"
