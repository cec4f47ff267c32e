"""Split inference: a CNN cut layer-wise into a head and a tail that run on two phones."""
