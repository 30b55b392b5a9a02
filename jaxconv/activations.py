"""Placeholder: being written."""
activation = elu = gelu = leaky_relu = relu = sigmoid = silu = softplus = tanh = None
