"""The model and its training (torch): nets, bounds, data, the training loop and the methods;
imports nothing above the base."""
