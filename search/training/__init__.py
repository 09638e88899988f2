"""Training: the weight-sharing supernet, its pretrained start, the teacher, and the training loops."""
