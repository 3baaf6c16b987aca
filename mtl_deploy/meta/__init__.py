"""Meta-learning: few-shot models, MAML-family, Reptile and metric algorithms, meta-training, evaluation and adaptation."""
