"""What the pipeline concludes: the cross-model report, every figure, the metric gate and its noise model."""
