"""effnas: search EfficientNet scaling coefficients and architectures, then build model families."""

__version__ = "0.1.0"
