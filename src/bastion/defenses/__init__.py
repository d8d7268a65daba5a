"""Defenses: inference-time defenses (``bastion.defenses.inference``) wrap a model as an ``nn.Module``;
training methods (``bastion.defenses.training``, adversarial training) are step functions and a loop."""
