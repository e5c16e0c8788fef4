"""Free functions where the predictor meets the response: deviance, optimiser."""
